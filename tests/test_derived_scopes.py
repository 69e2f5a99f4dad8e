"""Derived relationships: a check that names a member but leaves out the group or team is decided on
the scopes the policy stores, and answers exactly what naming a stored scope would.

Oracle (independent of the engine's indexes and memo): stock pycasbin over the same model.conf, rules
and facts, asked the request as sent and once per scope that the raw facts say the subject manages
(``g2``) and the member belongs to (``g3``) in that workspace; allowed iff one of those answers allows.
The requests come from the differential test's generator (every pack, members, strangers, grants, rank
and group/team rules) with the group and the team blanked; the engine's reason on a denial is the one
``check`` gives for the request as sent.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from app.authz import AccessRequest, PolicyEngine
from app.authz.types import ResourceFacts
from bench.world import World
from tests.test_differential import PACKSET, _initial_state, _request, _world

REQUESTS = 1500
# per pack, the actions some rule scopes to a group or a team
SCOPED = {
    pack.id: sorted(
        {
            r[3]
            for r in PACKSET.all_rules()
            if r[0] == "p" and r[4] in ("group", "team") and r[2] in {pack.role_key(x.id) for x in pack.roles}
        }
    )
    for pack in PACKSET.packs.values()
}


def _stored_scopes(facts: set[tuple[str, ...]], req: AccessRequest) -> list[str]:
    managed = {r[2] for r in facts if r[0] == "g2" and r[1] == req.subject and r[3] == req.domain}
    return sorted(s for s in managed if ("g3", req.obj.member, s, req.domain) in facts)


def _aimed(world: World, facts: list[tuple[str, ...]], rnd: random.Random) -> AccessRequest:
    """A manager of a group or team asking about someone in a scope of theirs, or anyone else."""
    _, sub, scope, dom = rnd.choice([r for r in facts if r[0] == "g2" and SCOPED[world.pack_of[r[3]]]])
    pack = PACKSET.packs[world.pack_of[dom]]
    inside = [r[1] for r in facts if r[0] == "g3" and r[2] == scope and r[3] == dom]
    member = rnd.choice(inside if inside and rnd.random() < 0.6 else [*world.members[dom], "user:stranger1"])
    obj = ResourceFacts(type="member", member=member, new_role=pack.role_key(rnd.choice(pack.roles).id))
    actions = SCOPED[pack.id] if SCOPED[pack.id] and rnd.random() < 0.8 else [a.id for a in pack.actions]
    return AccessRequest(sub, dom, obj, rnd.choice(actions))


def _filled(obj: ResourceFacts, scope: str) -> ResourceFacts:
    return dataclasses.replace(obj, group=scope) if scope.startswith("group:") else dataclasses.replace(obj, team=scope)


@pytest.mark.parametrize("seed", [3, 11])
def test_deriving_answers_what_naming_the_stored_scope_would(seed: int) -> None:
    world, facts = _world(seed)
    state = _initial_state(facts)
    engine = PolicyEngine(PACKSET, facts, revision=1)
    plain = state.plain()
    rnd = random.Random(seed)
    derived_allows = asked = 0
    while asked < REQUESTS:
        req = _request(world, state, rnd) if rnd.random() < 0.5 else _aimed(world, facts, rnd)
        if not req.obj.member.startswith("user:"):
            continue
        asked += 1
        obj = dataclasses.replace(engine.resolve(req).obj, group="", team="")
        req = AccessRequest(req.subject, req.domain, obj, req.action)
        expected = plain.enforce(req.subject, req.domain, obj, req.action) or any(
            plain.enforce(req.subject, req.domain, _filled(obj, s), req.action)
            for s in _stored_scopes(state.facts, req)
        )
        got = engine.decide(req)
        assert got.allowed == expected, req
        if not got.allowed:
            assert got.reason == engine.check(req).reason, req
        elif not engine.check(req).allowed:
            derived_allows += 1
    # the generator reaches the derivation, or this test would prove nothing
    assert derived_allows >= 100, derived_allows


def test_a_named_scope_is_never_replaced() -> None:
    world, facts = _world(5)
    engine = PolicyEngine(PACKSET, facts, revision=1)
    managed = [r for r in facts if r[0] == "g2"]
    assert managed
    for _, sub, scope, dom in managed[:50]:
        kind = "group" if scope.startswith("group:") else "team"
        other = f"{kind}:elsewhere"
        for rule in (r for r in facts if r[0] == "g3" and r[2] == scope and r[3] == dom):
            obj = ResourceFacts(type="member", member=rule[1], **{kind: other})
            for action in [a.id for a in PACKSET.packs[world.pack_of[dom]].actions]:
                req = AccessRequest(sub, dom, obj, action)
                assert engine.decide(req) == engine.check(req)
