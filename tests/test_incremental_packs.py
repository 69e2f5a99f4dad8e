"""Pack edits applied in place (``PolicyEngine.apply_packs``) answer exactly like a rebuild.

Random pack edits on the real ``policy/`` packs — p-rules added and removed, a role's rank and
inheritance changed, actions and roles added (with rules, and members holding the new role),
grant exceptions changed — are applied to one live engine holding a world of facts. After each
edit the engine must answer every one of many random requests exactly like an engine built from
scratch on the same packs and facts (allowed, reason, matched rule, role path, condition), and
like stock pycasbin (``build_plain_enforcer``, with the independent reason of
``tests/test_differential.py``). Refusals leave the engine untouched. Threads deciding while edits
are applied never see a mix: each answer is the one its revision's policy gives.
"""

from __future__ import annotations

import copy
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from app.authz import AccessRequest, InvalidRuleError, PolicyEngine, RuleChange
from app.authz.enforcer import build_plain_enforcer
from app.authz.packs import PackError, PackSet, Rule, packset_from_documents
from app.authz.types import ResourceFacts
from bench.world import World, build_world, random_request
from tests.test_differential import PACKSET, Index, State, Tally, _compare, _request

MODEL = PACKSET.model_text
EDITS = 60  # pack edits per seed
REQUESTS = 300  # random requests compared after each edit


@dataclass
class Policy:
    """What the edits change: the stored documents and pack rules (the database's view)."""

    documents: dict[str, dict[str, Any]]
    rules: list[Rule]
    facts: list[Rule]
    added_roles: list[tuple[str, str]] = field(default_factory=list)  # (pack, role id)
    added_actions: list[tuple[str, str]] = field(default_factory=list)

    def packset(self) -> PackSet:
        return packset_from_documents(self.documents, self.rules, MODEL)


def _start() -> Policy:
    return Policy(
        {pid: copy.deepcopy(dict(p.document)) for pid, p in PACKSET.packs.items()},
        PACKSET.all_rules(),
        [],
    )


def _roles(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(doc.get("roles") or []), *(doc.get("platform_roles") or [])]


def _edit(policy: Policy, world: World, rnd: random.Random) -> tuple[Policy, list[RuleChange]] | None:
    """One random pack edit: (the policy after it, the revision's changes); None if it does not load."""
    new = Policy(copy.deepcopy(policy.documents), list(policy.rules), list(policy.facts))
    new.added_roles, new.added_actions = list(policy.added_roles), list(policy.added_actions)
    pid = rnd.choice(sorted(new.documents))
    doc = new.documents[pid]
    roles = [r["id"] for r in _roles(doc)]
    actions = [a["id"] for a in doc.get("actions") or []]
    changes: list[RuleChange] = []

    def add(rule: Rule) -> None:
        if rule not in new.rules:
            new.rules.append(rule)
            changes.append(RuleChange("add", rule))

    def remove(rule: Rule) -> None:
        new.rules.remove(rule)
        changes.append(RuleChange("remove", rule))

    def p_rule(role: str, action: str) -> Rule:
        scope = rnd.choice(["any", "any", "rank", "group", "team", "assignee", "owner", "member_of", "into_group"])
        return ("p", str(rnd.randint(1, 30)), f"role:{pid}:{role}", action, scope, "-", rnd.choice(["allow", "deny"]))

    kind = rnd.choice(["add_p", "remove_p", "rank", "inherit", "uninherit", "action", "role", "grant"])
    mine = [r for r in new.rules if r[0] == "p" and r[2].startswith(f"role:{pid}:")]
    if kind == "add_p" or (kind == "remove_p" and not mine):
        role = rnd.choice(roles)
        add(("g4", f"pack:{pid}", f"role:{pid}:{role}"))
        add(p_rule(role, rnd.choice(actions)))
    elif kind == "remove_p":
        for rule in rnd.sample(mine, min(len(mine), rnd.randint(1, 4))):
            remove(rule)
    elif kind == "rank":
        role = rnd.choice(_roles(doc))
        role["rank"] = rnd.randint(0, 12)
    elif kind == "inherit":
        a, b = rnd.sample(roles, 2) if len(roles) > 1 else (roles[0], roles[0])
        add(("g", f"role:{pid}:{a}", f"role:{pid}:{b}", "*"))  # a cycle does not load: skipped
    elif kind == "uninherit":
        links = [r for r in new.rules if r[0] == "g" and r[1].startswith(f"role:{pid}:")]
        if not links:
            return None
        remove(rnd.choice(links))
    elif kind == "action":
        action = f"act_{rnd.randint(0, 10**6)}"
        doc.setdefault("actions", []).append({"id": action, "label": action})
        new.added_actions.append((pid, action))
        role = rnd.choice(roles)
        add(("g4", f"pack:{pid}", f"role:{pid}:{role}"))
        add(p_rule(role, action))
    elif kind == "role":
        role = f"r{rnd.randint(0, 10**6)}"
        doc.setdefault("roles", []).append({"id": role, "label": role, "rank": rnd.randint(0, 12)})
        new.added_roles.append((pid, role))
        add(("g4", f"pack:{pid}", f"role:{pid}:{role}"))
        add(p_rule(role, rnd.choice(actions)))
        parent = rnd.choice(roles)
        add(("g", f"role:{pid}:{role}", f"role:{pid}:{parent}", "*"))
        # two members of the pack's workspaces get the new role (a fact in the same revision)
        for ws in rnd.sample([w for w, p in world.pack_of.items() if p == pid], 1):
            user = f"user:new{rnd.randint(0, 10**6)}"
            fact = ("g", user, f"role:{pid}:{role}", ws)
            new.facts.append(fact)
            changes.append(RuleChange("add", fact))
            world.members[ws][user] = f"role:{pid}:{role}"
    else:  # a grant exception
        a, b = (rnd.choice(roles), rnd.choice(roles))
        doc["grants"] = [*(doc.get("grants") or []), {"role": a, "may_grant": [b], "why": "test"}]
    try:
        new.packset()
    except PackError:
        return None
    return new, changes


def _request_for(world: World, policy: Policy, rnd: random.Random) -> AccessRequest:
    """A random request; one in four names an added action or role."""
    if (policy.added_actions or policy.added_roles) and rnd.random() < 0.25:
        pid, name = rnd.choice([*policy.added_actions, *policy.added_roles])
        wss = [w for w, p in world.pack_of.items() if p == pid]
        ws = rnd.choice(wss)
        people = list(world.members[ws]) or ["user:u0"]
        actions = [a for p, a in policy.added_actions if p == pid] or ["x"]
        obj = ResourceFacts(type="member", member=rnd.choice(people), new_role=f"role:{pid}:{name}")
        action = name if (pid, name) in policy.added_actions else rnd.choice(actions)
        return AccessRequest(rnd.choice(people), ws, obj, action)
    return _request(world, _STATE, rnd) if rnd.random() < 0.5 else random_request(world, rnd)


_STATE = State([], set(), set())  # _request reads only the world


def _plain_and_index(policy: Policy, packset: PackSet, world_facts: list[Rule]) -> tuple[Any, Index]:
    facts = [*world_facts, *policy.facts]
    links = [("g4", f"platform:{p.id}", p.key) for p in packset.packs.values()]
    plain = build_plain_enforcer(MODEL, packset.packs, [*packset.all_rules(), *facts, *links])
    index = Index(State([], set(), set(facts)))
    by_key = {p.key: p for p in packset.packs.values()}
    index.pack = {r[1]: by_key[r[2]] for r in [*facts, *links] if r[0] == "g4" and r[2] in by_key}
    return plain, index


def _same(engine: PolicyEngine, scratch: PolicyEngine, req: AccessRequest) -> str | None:
    a, b = engine.explain(req), scratch.explain(req)
    got = (a.allowed, a.reason, a.rule, a.role_path, a.condition)
    want = (b.allowed, b.reason, b.rule, b.role_path, b.condition)
    return None if got == want else f"{req}: in place {got}, rebuilt {want}"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_pack_edits_in_place_equal_a_rebuild_and_pycasbin(seed: int) -> None:
    rnd = random.Random(seed)
    world = build_world(PACKSET, 14, members=8, seed=seed)
    engine = PolicyEngine(PACKSET, world.facts, revision=1)
    policy = _start()
    kinds: set[int] = set()
    edits = 0
    tally = Tally()
    while edits < EDITS:
        step = _edit(policy, world, rnd)
        if step is None:
            continue
        policy, changes = step
        packset = policy.packset()
        engine.apply_packs(packset, changes, engine.revision + 1)
        edits += 1
        kinds.add(len(changes))
        assert engine.packset is packset and engine.revision == edits + 1
        scratch = PolicyEngine(packset, [*world.facts, *policy.facts], revision=engine.revision)
        plain, index = _plain_and_index(policy, packset, world.facts)
        reqs = [_request_for(world, policy, rnd) for _ in range(REQUESTS)]
        wrong = [w for w in (_same(engine, scratch, r) for r in reqs) if w]
        assert not wrong, f"{len(wrong)} differ after edit {edits}, first: {wrong[:3]}"
        _compare(engine, plain, index, reqs, tally)
        assert not tally.disagreements, tally.disagreements[:3]
    assert policy.added_roles and policy.added_actions  # the edits reached documents
    assert 0.05 * tally.requests < tally.allowed < 0.95 * tally.requests
    assert len(tally.reasons) >= 6, tally.reasons


def test_added_role_and_rank_take_effect_in_place() -> None:
    """By hand: a new role with a rule and a member decides at once; a rank change moves mayGrant."""
    world = build_world(PACKSET, 4, members=4, seed=7)
    engine = PolicyEngine(PACKSET, world.facts, revision=1)
    ws = next(w for w, p in world.pack_of.items() if p == "classroom")
    policy = _start()
    doc = policy.documents["classroom"]
    doc["roles"].append({"id": "assistant", "label": "Assistant", "rank": 2})
    action = doc["actions"][0]["id"]
    rule = ("p", "5", "role:classroom:assistant", action, "any", "-", "allow")
    link = ("g4", "pack:classroom", "role:classroom:assistant")
    fact = ("g", "user:helper", "role:classroom:assistant", ws)
    policy.rules += [link, rule]
    req = AccessRequest("user:helper", ws, ResourceFacts(), action)
    assert not engine.check(req).allowed
    changes = [RuleChange("add", link), RuleChange("add", rule), RuleChange("add", fact)]
    engine.apply_packs(policy.packset(), changes, 2)
    got = engine.explain(req)
    assert got.allowed and got.rule == rule and got.revision == 2
    assert engine.members_of(ws)["user:helper"] == "role:classroom:assistant"


def _refusal(engine: PolicyEngine, packset: PackSet, changes: list[RuleChange], reqs: list[AccessRequest]) -> None:
    before = [engine.explain(r) for r in reqs]
    packs, revision = engine.packset, engine.revision
    with pytest.raises(InvalidRuleError):
        engine.apply_packs(packset, changes, revision + 1)
    assert engine.packset is packs and engine.revision == revision
    assert [engine.explain(r) for r in reqs] == before


def test_what_only_a_rebuild_can_do_is_refused_and_changes_nothing() -> None:
    world = build_world(PACKSET, 14, members=6, seed=3)
    engine = PolicyEngine(PACKSET, world.facts, revision=1)
    rnd = random.Random(3)
    reqs = [random_request(world, rnd) for _ in range(200)]
    policy = _start()
    # another model.conf
    _refusal(engine, PackSet(PACKSET.packs, MODEL + "\n# changed\n"), [], reqs)
    # a pack removed
    del policy.documents["todo"]
    policy.rules = [r for r in policy.rules if "todo" not in r[1] + r[2]]
    _refusal(engine, policy.packset(), [], reqs)
    # rules that do not follow from the changes (a rule in the packs, none in the revision)
    policy = _start()
    rule = next(r for r in policy.rules if r[0] == "p")
    policy.rules.remove(rule)
    _refusal(engine, policy.packset(), [], reqs)
    # a fact change the engine refuses (user → user link), with a valid pack change
    _refusal(
        engine,
        policy.packset(),
        [RuleChange("remove", rule), RuleChange("add", ("g", "user:a", "user:b", "ws:x"))],
        reqs,
    )
    # and the same edit applies once it is consistent
    engine.apply_packs(policy.packset(), [RuleChange("remove", rule)], 2)
    assert rule[1:] not in [tuple(r) for r in engine.enforcer.p_rules()]


def _answers(engine: PolicyEngine, reqs: list[AccessRequest]) -> list[tuple[bool, str]]:
    return [(d.allowed, d.reason) for d in (engine.check(r) for r in reqs)]


def test_deciding_threads_never_see_a_mix() -> None:
    """Four threads decide while two pack sets alternate forty times: every answer is the answer of
    the revision it carries, and nothing raises or errors."""
    world = build_world(PACKSET, 14, members=8, seed=11)
    rnd = random.Random(11)
    reqs = [random_request(world, rnd) for _ in range(400)]
    # B: every rank flipped and a third of the p-rules gone: many answers change
    policy = _start()
    for doc in policy.documents.values():
        for role in _roles(doc):
            role["rank"] = 20 - int(role["rank"])
        doc["grants"] = []
    dropped = [r for i, r in enumerate(policy.rules) if r[0] == "p" and i % 3 == 0]
    policy.rules = [r for r in policy.rules if r not in dropped]
    a, b = PACKSET, policy.packset()
    to_b = [RuleChange("remove", r) for r in dropped]
    to_a = [RuleChange("add", r) for r in dropped]
    expect = {
        "a": _answers(PolicyEngine(a, world.facts), reqs),
        "b": _answers(PolicyEngine(b, world.facts), reqs),
    }
    assert sum(x != y for x, y in zip(expect["a"], expect["b"], strict=True)) > 20  # the edit shows
    engine = PolicyEngine(a, world.facts, revision=0)
    stop = threading.Event()
    problems: list[str] = []
    seen = {"a": 0, "b": 0}

    def decide() -> None:
        while not stop.is_set():
            for i, req in enumerate(reqs):
                d = engine.check(req)
                which = "a" if d.revision % 2 == 0 else "b"
                seen[which] += 1
                if (d.allowed, d.reason) != expect[which][i]:
                    problems.append(f"{req} at {d.revision}: {d.allowed}/{d.reason}, want {expect[which][i]}")

    threads = [threading.Thread(target=decide) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        for n in range(1, 41):
            step: Callable[[], None] = (
                (lambda n=n: engine.apply_packs(b, to_b, n)) if n % 2 else (lambda n=n: engine.apply_packs(a, to_a, n))
            )
            step()
            threading.Event().wait(0.005)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not problems, problems[:3]
    assert seen["a"] > 0 and seen["b"] > 0
    assert _answers(engine, reqs) == expect["a"]  # 40 edits: back at A
