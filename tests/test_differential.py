"""The fast decision path gives exactly stock pycasbin's answer, on random requests.

A small world of every pack (workspaces, members with one or two roles, platform roles,
groups, teams, switched-off features) and random requests: members and strangers, unknown
workspaces, platform domains, actions of other packs, every scope, forged ``role`` facts.
``PolicyEngine.check`` is compared with a plain ``casbin.Enforcer`` built by
``build_plain_enforcer`` over the same ``model.conf``, rules and facts. Between rounds both
receive the same random changes (memberships, scopes, features, and p-rules), so the memo's
invalidation is compared too. Zero disagreements are allowed.

The plain enforcer costs about a millisecond per request, so the 100,000 requests are split
into chunks that pytest-xdist spreads over workers.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from app.authz import AccessRequest, PolicyEngine, RuleChange
from app.authz.enforcer import build_plain_enforcer
from app.authz.packs import Rule, load_packs
from app.authz.types import ResourceFacts
from bench.world import World, build_world, random_request

ROOT = Path(__file__).resolve().parent.parent
PACKSET = load_packs(ROOT / "policy", ROOT / "model.conf")
WORKSPACES = 30
CHUNKS = 20
PER_CHUNK = int(__import__("os").environ.get("DIFF_PER_CHUNK", "5000"))  # 20 × 5,000 = 100,000
ROUND = 500  # requests between two batches of changes

pytestmark = pytest.mark.slow


def _world(seed: int) -> tuple[World, list[Rule]]:
    world = build_world(PACKSET, WORKSPACES, members=8, seed=seed)
    rnd = random.Random(seed)
    facts = list(world.facts)
    for ws, pack_id in world.pack_of.items():
        pack = PACKSET.packs[pack_id]
        if pack.features and rnd.random() < 0.6:
            for feat in rnd.sample(pack.features, min(len(pack.features), rnd.randint(1, 6))):
                rule = ("g5", ws, feat.id)
                if rule not in facts:
                    facts.append(rule)
    return world, facts


def _platform_links() -> list[Rule]:
    return [("g4", f"platform:{p.id}", p.key) for p in PACKSET.packs.values()]


def _plain(facts: list[Rule], p_rules: list[Rule]) -> object:
    rules = [r for r in PACKSET.all_rules() if r[0] != "p"] + p_rules + list(facts) + _platform_links()
    return build_plain_enforcer(PACKSET.model_text, PACKSET.packs, rules)


def _current_role(facts: set[Rule], member: str, ws: str) -> str:
    roles = sorted(r[2] for r in facts if r[0] == "g" and r[1] == member and r[3] == ws)
    return roles[0] if roles else ""


def _random_change(world: World, facts: set[Rule], p_rules: list[Rule], rnd: random.Random) -> RuleChange:
    wss = list(world.pack_of)
    roll = rnd.random()
    if roll < 0.06 and p_rules:
        rule = rnd.choice(p_rules)
        return RuleChange("remove", rule)
    if roll < 0.10:
        gone = [r for r in PACKSET.all_rules() if r[0] == "p" and r not in p_rules]
        if gone:
            return RuleChange("add", rnd.choice(gone))
    ws = rnd.choice(wss)
    pack = PACKSET.packs[world.pack_of[ws]]
    people = list(world.members[ws]) or ["user:u0"]
    if roll < 0.55:
        rule: Rule = ("g", rnd.choice(people), pack.role_key(rnd.choice(pack.workspace_roles).id), ws)
    elif roll < 0.85:
        scope = rnd.choice(world.scopes[ws] or ["group:s0"])
        rule = (rnd.choice(("g2", "g3")), rnd.choice(people), scope, ws)
    elif pack.features:
        rule = ("g5", ws, rnd.choice(pack.features).id)
    else:
        rule = ("g", rnd.choice(people), pack.role_key(rnd.choice(pack.workspace_roles).id), ws)
    return RuleChange("remove" if rule in facts else "add", rule)


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_fast_path_equals_plain_pycasbin(chunk: int) -> None:
    """PER_CHUNK random requests, zero disagreements, with changes between rounds."""
    started = time.perf_counter()
    world, fact_list = _world(seed=chunk)
    facts = set(fact_list)
    p_rules = [r for r in PACKSET.all_rules() if r[0] == "p"]
    engine = PolicyEngine(PACKSET, fact_list, revision=1)
    plain = _plain(sorted(facts), p_rules)
    rnd = random.Random(1000 + chunk)
    disagreements: list[str] = []
    allowed = 0
    for n in range(PER_CHUNK):
        if n and n % ROUND == 0:
            changes = []
            for _ in range(rnd.randint(1, 6)):
                ch = _random_change(world, facts, p_rules, rnd)
                if any(c.rule == ch.rule for c in changes):
                    continue
                changes.append(ch)
                if ch.rule[0] == "p":
                    if ch.op == "add":
                        p_rules.append(ch.rule)
                    else:
                        p_rules.remove(ch.rule)
                elif ch.op == "add":
                    facts.add(ch.rule)
                else:
                    facts.discard(ch.rule)
            engine.apply(changes, engine.revision + 1)
            plain = _plain(sorted(facts), p_rules)
        req = random_request(world, rnd)
        got = engine.check(req)
        obj = req.obj
        role = _current_role(facts, obj.member, req.domain) if obj.member else ""
        resolved = ResourceFacts(
            obj.type, obj.id, obj.assignee, obj.owner, obj.member, obj.group, obj.team, role, obj.new_role
        )
        want = bool(plain.enforce(req.subject, req.domain, resolved, req.action))  # type: ignore[attr-defined]
        allowed += want
        if got.allowed != want:
            disagreements.append(f"{req} -> fast {got}, plain {want}")
    elapsed = time.perf_counter() - started
    print(f"chunk {chunk}: {PER_CHUNK} requests, {allowed} allowed, {elapsed:.1f}s")
    assert not disagreements, f"{len(disagreements)} disagreements, first: {disagreements[:5]}"
    assert 0.05 * PER_CHUNK < allowed < 0.95 * PER_CHUNK  # the sample exercises both answers


def test_reasons_are_stable_under_the_memo() -> None:
    """A memoized decision keeps the reason Casbin's first answer was diagnosed with."""
    world, facts = _world(seed=99)
    engine = PolicyEngine(PACKSET, facts)
    fresh_engines: dict[int, PolicyEngine] = {}
    rnd = random.Random(5)
    for i in range(3_000):
        req = random_request(world, rnd)
        warm = engine.check(req)
        if i // 500 not in fresh_engines:
            fresh_engines[i // 500] = PolicyEngine(PACKSET, facts)
        fresh = fresh_engines[i // 500]
        fresh._memo.clear()
        cold = fresh.check(req)
        assert (warm.allowed, warm.reason) == (cold.allowed, cold.reason), req


def test_one_request_by_hand() -> None:
    """Sanity: the plain reference and the engine agree on an obvious grant and denial."""
    world, facts = _world(seed=3)
    engine = PolicyEngine(PACKSET, facts)
    plain = _plain(facts, [r for r in PACKSET.all_rules() if r[0] == "p"])
    ws = next(w for w, p in world.pack_of.items() if p == "simulations")
    owner = next(u for u, r in world.members[ws].items() if r.endswith(":owner"))
    req = AccessRequest(owner, ws, ResourceFacts(), "view_ai_spend")
    assert engine.check(req).allowed and plain.enforce(owner, ws, ResourceFacts(), "view_ai_spend")  # type: ignore[attr-defined]
    req = AccessRequest("user:nobody", ws, ResourceFacts(), "view_ai_spend")
    assert not engine.check(req).allowed
