"""Property: whenever the escalation verifier passes a pack, nobody can obtain a right no granter held.

Hypothesis generates random edits of a pack (new roles with random ranks and parents, rules with
random scopes on random actions, grant-carrying ones favoured). For every edited pack the verifier
passes, an exhaustive search over a small workspace — every actor × grant-carrying action × target ×
role granted, in every situation, three steps deep — replays each grant Casbin allows and checks
that the grantee, after the grant, holds no permission the granter did not hold before it (in the
same situations, over third parties), unless the pack's ``grants:`` exception names that role.

Everyone in the small workspace has the same relations (manages and belongs to ``group:a`` and
``team:a``), as the verifier's probe subjects do: the verifier compares roles, and group or team
assignments are separate grants. The same search on packs the verifier rejects finds the
counterexample (the search has teeth).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.authz import AccessRequest, PolicyEngine, RuleChange, delegation
from app.authz.packs import SCOPES, Pack, PackError, PackSet, Rule, load_packs, packset_from_documents
from app.authz.types import ResourceFacts

ROOT = Path(__file__).resolve().parent.parent
PACKS = load_packs(ROOT / "policy", ROOT / "model.conf")
WS = "ws:search"
USERS = ("user:s0", "user:s1", "user:s2")
DEPTH = 3
EXAMPLES = int(os.environ.get("SEARCH_EXAMPLES", "80"))


@dataclass
class Stats:
    """What the property run did (printed at the end of the module)."""

    edits: int = 0
    malformed: int = 0  # edits the pack loader refused (the strategy's own fault: kept rare, asserted)
    refused: int = 0
    passed: int = 0
    states: int = 0
    grants: int = 0
    violations: list[str] = field(default_factory=list)


STATS = Stats()


def _resources(user: str, pack: Pack, grants: set[str], others: tuple[str, ...]) -> Iterator[tuple[str, ResourceFacts]]:
    """Every situation the search compares, for one subject: self-relative and over third parties."""
    yield "any", ResourceFacts()
    yield "assignee", ResourceFacts(assignee=user)
    yield "owner", ResourceFacts(owner=user)
    yield "group", ResourceFacts(group="group:a")
    yield "team", ResourceFacts(team="team:a")
    roles = [""] + [pack.role_key(r.id) for r in pack.roles]
    for other in others:
        for unit in ({}, {"group": "group:a"}, {"team": "team:a"}):
            yield f"{other}{unit}", ResourceFacts(member=other, **unit)
    for new in roles[1:]:
        yield f"new:{new}", ResourceFacts(new_role=new)
        for other in others:
            for unit in ({}, {"group": "group:a"}, {"team": "team:a"}):
                yield f"{other}{unit}:{new}", ResourceFacts(member=other, new_role=new, **unit)


class World:
    """A small workspace of one pack: three people, each with a workspace role, same relations."""

    def __init__(self, packset: PackSet, pack: Pack) -> None:
        self.pack = pack
        self.grants = delegation.grant_actions(pack)
        facts: list[Rule] = [("g4", WS, pack.key)]
        for u in USERS:
            facts += [(g, u, unit, WS) for g in ("g2", "g3") for unit in ("group:a", "team:a")]
        self.engine = PolicyEngine(packset, facts)
        self.current: dict[str, str] = {}
        self._holds: dict[tuple[tuple[str, ...], str, tuple[str, ...]], frozenset[tuple[str, str]]] = {}
        self.exceptions = {
            pack.role_key(g.role): {pack.role_key(r) for r in g.may_grant} for g in pack.grants if g.why.strip()
        }

    def set_state(self, state: tuple[str, ...]) -> None:
        changes = []
        for user, role in zip(USERS, state):
            old = self.current.get(user)
            if old == role:
                continue
            if old:
                changes.append(RuleChange("remove", ("g", user, old, WS)))
            changes.append(RuleChange("add", ("g", user, role, WS)))
            self.current[user] = role
        if changes:
            self.engine.apply(changes, self.engine.revision + 1)

    def allowed(self, user: str, action: str, obj: ResourceFacts) -> bool:
        return self.engine.check(AccessRequest(user, WS, obj, action)).allowed

    def holds(self, user: str, others: tuple[str, ...]) -> frozenset[tuple[str, str]]:
        """(action, situation) pairs the user is allowed now (remembered per state)."""
        key = (tuple(self.current[u] for u in USERS), user, others)
        hit = self._holds.get(key)
        if hit is None:
            hit = self._holds[key] = frozenset(self._compute_holds(user, others))
        return hit

    def _compute_holds(self, user: str, others: tuple[str, ...]) -> set[tuple[str, str]]:
        out = set()
        for act in self.pack.actions:
            for label, obj in _resources(user, self.pack, self.grants, others):
                if obj.new_role and act.id not in self.grants:
                    continue
                if self.allowed(user, act.id, obj):
                    out.add((act.id, label))
        return out

    def moves(self) -> Iterator[tuple[str, str, str, str]]:
        """(actor, action, target, role granted) that Casbin allows in the current state."""
        for actor in USERS:
            for action in sorted(self.grants):
                for target in USERS:
                    for role in self.pack.workspace_roles:
                        key = self.pack.role_key(role.id)
                        if key == self.current[target]:
                            continue
                        for unit in ({}, {"group": "group:a"}, {"team": "team:a"}):
                            obj = ResourceFacts(member=target, new_role=key, **unit)
                            if self.allowed(actor, action, obj):
                                yield actor, action, target, key
                                break


def search(packset: PackSet, pack_id: str, depth: int = DEPTH) -> list[str]:
    """Every grant sequence up to depth from each starting state; returns counterexamples found."""
    pack = packset.packs[pack_id]
    world = World(packset, pack)
    roles = [pack.role_key(r.id) for r in pack.workspace_roles]
    top = roles[-1]
    starts = {tuple([top, r, roles[0]]) for r in roles} | {tuple([top, top, r]) for r in roles}
    seen: set[tuple[str, ...]] = set()
    frontier = sorted(starts)
    found: list[str] = []
    for _ in range(depth):
        nxt: list[tuple[str, ...]] = []
        for state in frontier:
            if state in seen:
                continue
            seen.add(state)
            STATS.states += 1
            world.set_state(state)
            for actor, action, target, role in list(world.moves()):
                STATS.grants += 1
                others = tuple(u for u in USERS if u not in (actor, target))
                before = world.holds(actor, others)
                after_state = tuple(role if u == target else world.current[u] for u in USERS)
                world.set_state(after_state)
                after = world.holds(target, others)
                world.set_state(state)
                gained = after - before
                if gained and role not in world.exceptions.get(world.current[actor], set()):
                    act, where = sorted(gained)[0]
                    found.append(
                        f"{pack_id}: {world.current[actor]} grants {role} via {action}; grantee gains {act} ({where})"
                    )
                    if len(found) >= 5:
                        return found
                nxt.append(after_state)
        frontier = nxt
    return found


# -- random edits ------------------------------------------------------------------------------------
SEARCH_PACKS = ("classroom", "simulations", "academy")


@st.composite
def edits(draw: st.DrawFn) -> tuple[str, PackSet | None]:
    pack_id = draw(st.sampled_from(SEARCH_PACKS))
    pack = PACKS.packs[pack_id]
    docs = {pid: dict(p.document) for pid, p in PACKS.packs.items()}
    rules = PACKS.all_rules()
    role_ids = [r.id for r in pack.workspace_roles]
    if draw(st.booleans()):
        new = "extra"
        rank = draw(st.integers(min_value=0, max_value=max(r.rank for r in pack.roles) + 1))
        docs[pack_id]["roles"] = [*docs[pack_id]["roles"], {"id": new, "rank": rank}]
        parent = draw(st.sampled_from([None, *role_ids]))
        rules.append(("g4", pack.key, pack.role_key(new)))  # the pack reaches its new role
        if parent:
            rules.append(("g", pack.role_key(new), pack.role_key(parent), "*"))
        role_ids.append(new)
    grant_acts = sorted(delegation.grant_actions(pack))
    actions = [a.id for a in pack.actions]
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        act = draw(st.sampled_from(grant_acts) if draw(st.booleans()) else st.sampled_from(actions))
        # p = priority, sub, act, scope, feature, eft (model.conf's six values)
        rule = (
            "p",
            str(draw(st.sampled_from([55, 75, 85, 95]))),
            pack.role_key(draw(st.sampled_from(role_ids))),
            act,
            draw(st.sampled_from(SCOPES)),
            "-",
            draw(st.sampled_from(["allow", "allow", "allow", "deny"])),
        )
        if rule not in rules:
            rules.append(rule)
    try:
        return pack_id, packset_from_documents(docs, rules, PACKS.model_text)
    except PackError:
        return pack_id, None  # counted: the property must search real edits, not the shipped pack


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(edits())
def test_verified_packs_let_nobody_gain_what_no_granter_held(case: tuple[str, PackSet | None]) -> None:
    pack_id, packset = case
    STATS.edits += 1
    if packset is None:
        STATS.malformed += 1
        return
    if delegation.problems(packset, [pack_id]):
        STATS.refused += 1
        return
    STATS.passed += 1
    found = search(packset, pack_id, depth=2)
    STATS.violations += found
    assert not found, found


def test_shipped_packs_searched() -> None:
    for pack_id in SEARCH_PACKS:
        assert search(PACKS, pack_id) == [], pack_id


def test_the_search_finds_what_the_verifier_refuses() -> None:
    """The cohost of issue 8 (rank 0, billing and deletion): the search finds it, the verifier too."""
    docs = {pid: dict(p.document) for pid, p in PACKS.packs.items()}
    docs["classroom"]["roles"] = [*docs["classroom"]["roles"], {"id": "cohost", "rank": 0}]
    rules = PACKS.all_rules() + [
        ("g4", "pack:classroom", "role:classroom:cohost"),
        ("p", "100", "role:classroom:cohost", "delete_organization", "any", "-", "allow"),
    ]
    bad = packset_from_documents(docs, rules, PACKS.model_text)
    assert delegation.problems(bad, ["classroom"])
    found = search(bad, "classroom", depth=1)
    assert any("role:classroom:admin grants role:classroom:cohost" in f and "delete_organization" in f for f in found)


def test_zz_report() -> None:
    """The counts of this module's run (for the closing note); the property must have searched."""
    print(
        f"\nsearch: {STATS.edits} random edits ({STATS.malformed} malformed), {STATS.refused} refused by the verifier, "
        f"{STATS.passed} passed; "
        f"{STATS.states} states searched, {STATS.grants} grants replayed, {len(STATS.violations)} violations"
    )
    if STATS.edits:
        # Until issue 21 every edit had 8 values and fell back to the shipped pack: nothing was searched.
        assert STATS.malformed <= STATS.edits // 5, STATS
        assert STATS.refused > 0 and STATS.passed > 0 and STATS.states > 0 and not STATS.violations, STATS
