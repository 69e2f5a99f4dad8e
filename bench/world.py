"""Synthetic worlds: workspaces of every pack, members, groups, teams, switched-off features.

Used by the benchmarks (``W`` up to 100,000 workspaces × 10 members) and by the differential
test (a small world, many random requests). Deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from app.authz.packs import P_SCOPE, Pack, PackSet, Rule
from app.authz.types import RESOURCE_FIELDS, AccessRequest, ResourceFacts

GROUPS_PER_WS = 2
MULTI_BASE = 900_000_000  # user ids of people in two workspaces
PLATFORM_BASE = 990_000_000  # user ids of platform-role holders


@dataclass
class World:
    """Facts plus the indexes a request generator needs."""

    packset: PackSet
    facts: list[Rule] = field(default_factory=list)
    pack_of: dict[str, str] = field(default_factory=dict)  # ws key -> pack id
    members: dict[str, dict[str, str]] = field(default_factory=dict)  # ws -> user -> role key
    scopes: dict[str, list[str]] = field(default_factory=dict)  # ws -> group:/team: names
    platform_users: list[str] = field(default_factory=list)


def _scope_prefix(pack: Pack) -> str:
    return "team" if any(r[0] == "p" and r[P_SCOPE] == "team" for r in pack.rules) else "group"


def iter_world(packset: PackSet, workspaces: int, members: int = 10, seed: int = 1) -> Iterator[Rule]:
    """The facts of a world, streamed (for loading millions of rows without holding them twice)."""
    rnd = random.Random(seed)
    packs = [p for p in packset.packs.values()]
    for w in range(workspaces):
        pack = packs[w % len(packs)]
        ws = f"ws:w{w}"
        yield ("g4", ws, pack.key)
        roles = [r.id for r in pack.workspace_roles]
        prefix = _scope_prefix(pack)
        scopes = [f"{prefix}:s{i}" for i in range(GROUPS_PER_WS)]
        for m in range(members):
            # one owner-level member, the rest mostly low roles (as in real organisations)
            role = roles[-1] if m == 0 else roles[min(len(roles) - 1, int(rnd.expovariate(1.2)))]
            user = f"user:{w * members + m + 1}"
            yield ("g", user, pack.role_key(role), ws)
            if m % 5 == 1:
                yield ("g2", user, scopes[m % GROUPS_PER_WS], ws)
            elif m % 3 == 0:
                yield ("g3", user, scopes[m % GROUPS_PER_WS], ws)
        if pack.features and w % 10 == 3:
            yield ("g5", ws, rnd.choice(pack.features).id)


def build_world(packset: PackSet, workspaces: int, members: int = 10, seed: int = 1, extras: bool = True) -> World:
    """A world in memory, with its indexes; ``extras`` adds platform users and multi-workspace users."""
    world = World(packset)
    rnd = random.Random(seed + 7)
    for rule in iter_world(packset, workspaces, members, seed):
        world.facts.append(rule)
        if rule[0] == "g4":
            world.pack_of[rule[1]] = rule[2].split(":", 1)[1]
            world.members[rule[1]] = {}
            world.scopes[rule[1]] = []
        elif rule[0] == "g":
            world.members[rule[3]][rule[1]] = rule[2]
        elif rule[0] in ("g2", "g3") and rule[2] not in world.scopes[rule[3]]:
            world.scopes[rule[3]].append(rule[2])
    if extras:
        wss = list(world.pack_of)
        for pack in packset.packs.values():
            for role in pack.platform_roles:
                user = f"user:{PLATFORM_BASE + len(world.platform_users)}"
                world.facts.append(("g", user, pack.role_key(role.id), "*"))
                world.platform_users.append(user)
        for i in range(max(1, workspaces // 5)):
            # people in two workspaces, sometimes of different packs, sometimes two roles in one
            user = f"user:{MULTI_BASE + i}"
            for ws in rnd.sample(wss, min(2, len(wss))):
                pack = packset.packs[world.pack_of[ws]]
                role = pack.role_key(rnd.choice(pack.workspace_roles).id)
                world.facts.append(("g", user, role, ws))
                world.members[ws][user] = role
                if rnd.random() < 0.2:
                    second = pack.role_key(rnd.choice(pack.workspace_roles).id)
                    if second != role:
                        world.facts.append(("g", user, second, ws))
                        world.members[ws][user] = min(role, second)
                if world.scopes[ws] and rnd.random() < 0.5:
                    world.facts.append((rnd.choice(("g2", "g3")), user, rnd.choice(world.scopes[ws]), ws))
    return world


def random_request(world: World, rnd: random.Random, wss: list[str] | None = None) -> AccessRequest:
    """A random, valid-looking request: mostly members of the workspace, sometimes not."""
    wss = wss or list(world.pack_of)
    roll = rnd.random()
    if roll < 0.03:
        ws = f"ws:unknown{rnd.randrange(5)}"
        pack = rnd.choice(list(world.packset.packs.values()))
    elif roll < 0.06:
        pack = rnd.choice(list(world.packset.packs.values()))
        ws = f"platform:{pack.id}"
    else:
        ws = rnd.choice(wss)
        pack = world.packset.packs[world.pack_of[ws]]
    people = list(world.members.get(ws, {}))
    roll = rnd.random()
    if roll < 0.05 or not people:
        subject = rnd.choice(world.platform_users) if world.platform_users else "user:nobody"
    elif roll < 0.08:
        subject = f"user:stranger{rnd.randrange(10)}"
    elif roll < 0.12:
        subject = f"user:{rnd.randrange(1, len(world.pack_of) * 10)}"
    else:
        subject = rnd.choice(people)
    if rnd.random() < 0.04:
        other = rnd.choice(list(world.packset.packs.values()))
        action = rnd.choice(other.actions).id
    else:
        action = rnd.choice(pack.actions).id

    def someone() -> str:
        r = rnd.random()
        if r < 0.35:
            return subject
        if r < 0.85 and people:
            return rnd.choice(people)
        return f"user:stranger{rnd.randrange(10)}" if r < 0.95 else ""

    scopes = world.scopes.get(ws) or ["group:s0"]
    obj: dict[str, str] = {}
    if rnd.random() < 0.5:
        obj["type"] = rnd.choice(["member", "simulation", "course", "group"])
        obj["id"] = f"x{rnd.randrange(100)}"
    for name in ("assignee", "owner", "member"):
        if rnd.random() < 0.35:
            obj[name] = someone()
    names = [s.split(":", 1)[1] for s in scopes]
    if rnd.random() < 0.45:
        obj["group"] = "group:" + (rnd.choice(names) if rnd.random() < 0.9 else "nowhere")
    if rnd.random() < 0.35:
        obj["team"] = "team:" + (rnd.choice(names) if rnd.random() < 0.9 else "nowhere")
    if rnd.random() < 0.5:
        target_pack = pack if rnd.random() < 0.9 else rnd.choice(list(world.packset.packs.values()))
        obj["new_role"] = target_pack.role_key(rnd.choice(target_pack.roles).id)
    if rnd.random() < 0.15:
        # a stale or forged current role: the engine must ignore it and resolve the real one
        obj["role"] = pack.role_key(rnd.choice(pack.roles).id)
    return AccessRequest(subject, ws, ResourceFacts(**{k: v for k, v in obj.items() if k in RESOURCE_FIELDS}), action)
