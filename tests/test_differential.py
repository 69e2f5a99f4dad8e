"""The fast decision path gives exactly stock pycasbin's answer, and a reason that fits it.

A small world of every pack (workspaces, members with one or two roles, platform roles, groups,
teams, switched-off features) and random requests: members and strangers, unknown workspaces,
platform domains, actions of other packs, every scope, forged ``role`` facts. ``PolicyEngine``
is compared with a plain ``casbin.Enforcer`` built by ``build_plain_enforcer`` over the same
``model.conf``, rules and facts, rebuilt from scratch after every change batch.

Between rounds both receive the same random changes, which cover everything ``apply`` accepts:
memberships (also of a foreign pack's role or a role no pack defines), platform roles in ``*``
(also workspace roles held there), group and team links, feature switches, workspaces losing and
regaining their pack, p-rules removed, restored and invented (random role, action, scope,
feature, effect, priority), and the role hierarchy itself (pack ``g`` lines removed, and new ones
added between any two roles of a pack, cycles included). A share of the attempted changes are
ones the writers refuse (links between users, workspace-scoped or cross-pack inheritance, group
links in ``*``, pattern domains, chained or second packs): ``apply`` must refuse each with
``InvalidRuleError``, atomically, and the writers' ``check_rule_shape`` must refuse it too.

Compared per request: ``allowed`` with ``enforce_ex``, and the reason with an independent
diagnosis (:func:`_reference_reason`) from the plain enforcer's matched rule, its own role
managers and the facts — not from the engine's indexes or memo; for one request in four, also
the rule ``explain`` names with the rule ``enforce_ex`` matched. Zero disagreements allowed.

Cost: the plain enforcer takes ~1.4 ms per request (88 % of the time; rebuilding it per state
another 7 %), so the chunks are sized for CI: 80,000 requests over 400 states, about two minutes
on one core. ``DIFF_PER_CHUNK`` deepens a local run (``DIFF_PER_CHUNK=20000``: 400,000).
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.authz import AccessRequest, InvalidRuleError, PolicyEngine, Reason, RuleChange
from app.authz.conditions import Props
from app.authz.enforcer import build_plain_enforcer
from app.authz.packs import SCOPES, Pack, Rule, load_packs
from app.authz.types import ResourceFacts
from app.policy.store import check_rule_shape
from bench.world import World, build_world, random_request

ROOT = Path(__file__).resolve().parent.parent
PACKSET = load_packs(ROOT / "policy", ROOT / "model.conf")
PACKS = list(PACKSET.packs.values())
WORKSPACES = 14  # two per pack: memo keys collide across workspaces
CHUNKS = 20
PER_CHUNK = int(os.environ.get("DIFF_PER_CHUNK", "4000"))  # 20 × 4,000 = 80,000 requests
ROUND = 200  # requests between two change batches: 20 states per chunk, 400 in all

pytestmark = pytest.mark.slow

_SCOPE_REASON = {
    "assignee": Reason.NOT_ASSIGNEE.value,
    "owner": Reason.NOT_OWNER.value,
    "member_of": Reason.OUTSIDE_GROUP.value,
    "group": Reason.OUTSIDE_GROUP.value,
    "into_group": Reason.OUTSIDE_GROUP.value,
    "team": Reason.OUTSIDE_TEAM.value,
    "rank": Reason.RANK_LIMIT.value,
}


def _platform_links() -> list[Rule]:
    return [("g4", f"platform:{p.id}", p.key) for p in PACKS]


@dataclass
class State:
    """What both sides hold: pack rules (order matters for equal priorities) and facts."""

    p_rules: list[Rule]
    hierarchy: set[Rule]
    facts: set[Rule]
    home: dict[str, str] = field(default_factory=dict)  # ws -> its pack key (for restoring g4)

    def apply(self, change: RuleChange) -> None:
        rule = change.rule
        if rule[0] == "p":
            if change.op == "add" and rule not in self.p_rules:
                self.p_rules.append(rule)
            elif change.op == "remove" and rule in self.p_rules:
                self.p_rules.remove(rule)
            return
        inheritance = rule[0] == "g" and rule[1].startswith("role:")
        structural = inheritance or (rule[0] == "g4" and rule[1].startswith("pack:"))
        target = self.hierarchy if structural else self.facts
        if change.op == "add":
            target.add(rule)
        else:
            target.discard(rule)

    def has(self, rule: Rule) -> bool:
        return rule in self.p_rules or rule in self.hierarchy or rule in self.facts

    def plain(self) -> Any:
        rules = [*sorted(self.hierarchy), *self.p_rules, *sorted(self.facts), *_platform_links()]
        return build_plain_enforcer(PACKSET.model_text, PACKSET.packs, rules)


def _initial_state(facts: Iterable[Rule]) -> State:
    facts = set(facts)
    return State(
        p_rules=[r for r in PACKSET.all_rules() if r[0] == "p"],
        hierarchy={r for r in PACKSET.all_rules() if r[0] in ("g", "g4")},  # inheritance, pack → role links
        facts=facts,
        home={r[1]: r[2] for r in facts if r[0] == "g4"},
    )


class Index:
    """The facts of one state as the reference diagnosis reads them (rebuilt per state)."""

    def __init__(self, state: State) -> None:
        self.pack: dict[str, Pack] = {}
        by_key = {p.key: p for p in PACKS}
        for rule in [*state.facts, *_platform_links()]:
            if rule[0] == "g4" and rule[2] in by_key:
                self.pack[rule[1]] = by_key[rule[2]]
        self.roles: dict[tuple[str, str], list[str]] = {}
        for rule in state.facts:
            if rule[0] == "g":
                self.roles.setdefault((rule[1], rule[3]), []).append(rule[2])
        for roles in self.roles.values():
            roles.sort()

    def current_role(self, member: str, ws: str) -> str:
        if ws.startswith("platform:"):  # platform roles of that pack, held in "*"
            held = [r for r in self.roles.get((member, "*"), ()) if r.startswith(f"role:{ws[9:]}:")]
            return held[0] if member and held else ""
        roles = self.roles.get((member, ws))
        return roles[0] if member and roles else ""


def _reference_reason(plain: Any, index: Index, req: AccessRequest, allowed: bool, matched: list[str]) -> str:
    """Why stock Casbin denied (or "granted"): from its matched rule, role managers and the facts.

    The codes follow docs/decision-api.md: a workspace with no pack, an action not of its pack,
    no role of the pack (direct, in the workspace or in ``*``), then among the rules of the action
    the subject's roles reach (stock Casbin's own ``g``): none, all switched off, a target member
    who is not one, an explicit deny, or the first allow rule (priority order) whose scope failed.
    """
    if allowed:
        return Reason.GRANTED.value
    dom, sub, act, obj = req.domain, req.subject, req.action, req.obj
    pack = index.pack.get(dom)
    if pack is None:
        return Reason.UNKNOWN_WORKSPACE.value
    if pack.action(act) is None:
        return Reason.UNKNOWN_ACTION.value
    prefix = f"role:{pack.id}:"
    direct = [*index.roles.get((sub, dom), ()), *index.roles.get((sub, "*"), ())]
    if not any(r.startswith(prefix) for r in direct):
        return Reason.NO_ROLE.value
    g, g2, g3, g4, g5 = (plain.rm_map[t] for t in ("g", "g2", "g3", "g4", "g5"))
    # priority order (stable); each row: priority, sub, act, scope, feature, eft
    rows = [list(r) for r in plain.model["p"]["p"].policy]
    candidates = [r for r in rows if r[2] == act and g4.has_link(dom, r[1]) and g.has_link(sub, r[1], dom)]
    if not candidates:
        return Reason.NOT_PERMITTED.value
    live = [r for r in candidates if r[4] == "-" or not g5.has_link(dom, r[4])]
    if not live:
        return Reason.FEATURE_OFF.value
    if obj.member and not obj.role:  # model.conf: a target member with no current role names nobody
        return Reason.UNKNOWN_MEMBER.value
    if obj.grantee == sub:  # model.conf: nobody grants themselves anything
        return Reason.SELF_CHANGE.value
    if matched:
        live = [r for r in live if int(r[0]) < int(matched[0])]
        if not any(r[5] == "allow" and r[3] != "any" for r in live):
            return Reason.DENIED_BY_POLICY.value
    for r in live:
        if r[5] == "allow" and r[3] != "any":
            if r[3] == "rank" and obj.member == sub:
                return Reason.SELF_CHANGE.value
            if r[3] == "rank" and not obj.member and not obj.grantee and obj.target != "any":
                return "target_required"
            if (
                r[3] in ("group", "into_group")
                and obj.member
                and g2.has_link(sub, obj.group, dom)
                and (r[3] == "into_group" or g3.has_link(obj.member, obj.group, dom))
            ):
                return Reason.RANK_LIMIT.value
            if r[3].startswith("when:"):  # an attribute condition (CEL) that did not hold
                return Reason.CONDITION_NOT_MET.value
            return _SCOPE_REASON.get(r[3], Reason.NOT_PERMITTED.value)
    return Reason.NOT_PERMITTED.value


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


def _role(pack: Pack, rnd: random.Random) -> str:
    roll = rnd.random()
    if roll < 0.06:
        return pack.role_key("ghost")  # a role the pack does not define
    if roll < 0.12:
        other = rnd.choice(PACKS)  # a foreign pack's role
        return other.role_key(rnd.choice(other.roles).id)
    return pack.role_key(rnd.choice(pack.roles if roll < 0.2 else pack.workspace_roles).id)


def _toggle(state: State, rule: Rule) -> RuleChange:
    return RuleChange("remove" if state.has(rule) else "add", rule)


def _random_change(world: World, state: State, rnd: random.Random) -> RuleChange:
    """One change apply accepts, drawn over every kind of rule."""
    ws = rnd.choice(list(world.pack_of))
    pack = PACKSET.packs[world.pack_of[ws]]
    people = list(world.members[ws]) or ["user:u0"]
    roll = rnd.random()
    if roll < 0.30:  # membership
        return _toggle(state, ("g", rnd.choice(people), _role(pack, rnd), ws))
    if roll < 0.38:  # platform role (or a workspace role held in every workspace)
        other = rnd.choice(PACKS)
        holder = rnd.choice([*world.platform_users, *people])
        roles = other.platform_roles if other.platform_roles and rnd.random() < 0.7 else other.roles
        return _toggle(state, ("g", holder, other.role_key(rnd.choice(roles).id), "*"))
    if roll < 0.58:  # group or team link
        scope = rnd.choice([*world.scopes[ws], "group:s0", "team:s0", "group:extra"])
        return _toggle(state, (rnd.choice(("g2", "g3")), rnd.choice(people), scope, ws))
    if roll < 0.66 and pack.features:  # feature switch
        return _toggle(state, ("g5", ws, rnd.choice(pack.features).id))
    if roll < 0.70:  # a workspace loses its pack, or one that lost it regains it
        lost = [w for w in world.pack_of if not state.has(("g4", w, state.home[w]))]
        if lost and rnd.random() < 0.7:
            ws = rnd.choice(lost)
        return _toggle(state, ("g4", ws, state.home[ws]))
    if roll < 0.78:  # p-rule removed or restored
        if rnd.random() < 0.5 and state.p_rules:
            return RuleChange("remove", rnd.choice(state.p_rules))
        gone = [r for r in PACKSET.all_rules() if r[0] == "p" and r not in state.p_rules]
        if gone:
            return RuleChange("add", rnd.choice(gone))
    if roll < 0.82:  # an invented p-rule
        prio = str(rnd.choice([1, 5, 50, 70, 80, 85, 90, 100, 200]))
        feature = rnd.choice(pack.features).id if pack.features and rnd.random() < 0.25 else "-"
        rule = (
            "p",
            prio,
            pack.role_key(rnd.choice(pack.roles).id),
            rnd.choice(pack.actions).id,
            rnd.choice(SCOPES),
            feature,
            "deny" if rnd.random() < 0.3 else "allow",
        )
        return _toggle(state, rule)
    if roll < 0.86:  # a pack → role link removed or added (the transitive g4 of the matcher)
        return _toggle(state, ("g4", pack.key, pack.role_key(rnd.choice([*pack.roles, *pack.roles[:1]]).id)))
    # the role hierarchy: a pack line removed, or a new line between two roles of one pack
    if rnd.random() < 0.45 and state.hierarchy:
        return RuleChange("remove", rnd.choice(sorted(state.hierarchy)))
    a, b = rnd.sample(pack.roles, 2) if len(pack.roles) > 1 else (pack.roles[0], pack.roles[0])
    return _toggle(state, ("g", pack.role_key(a.id), pack.role_key(b.id), "*"))


# Per pack: actions with a scoped or feature-gated rule, where the rarer reasons live.
_FOCUS = {
    p.id: sorted({r[3] for r in p.rules if r[0] == "p" and (r[4] not in ("any", "assignee", "owner") or r[5] != "-")})
    for p in PACKS
}


# Properties the packs' conditions read (authzen_cert's status/role/soft, simulations' in_use), with
# values that hold, fail, and have the wrong type: both sides call the same ``when`` on the same facts,
# so what is compared is the memo keyed by the conditions' answers and the reasons.
_PROPS = [
    Props(resource={"status": "archived"}),
    Props(resource={"status": "active"}, subject={"role": "admin"}),
    Props(resource={"status": "archived"}, subject={"role": "admin"}),
    Props(action={"soft": True}),
    Props(action={"soft": "true"}),
    Props(resource={"in_use": False}),
    Props(resource={"in_use": True}),
]


def _request(world: World, state: State, rnd: random.Random) -> AccessRequest:
    """Mostly bench.world's random request; one in five aims at rank, group, team and feature rules;
    one in three carries properties for the packs' conditions."""
    req = _unpropped(world, state, rnd)
    if rnd.random() < 0.33:
        obj = dataclasses.replace(req.obj, props=rnd.choice(_PROPS))
        return AccessRequest(req.subject, req.domain, obj, req.action)
    return req


def _unpropped(world: World, state: State, rnd: random.Random) -> AccessRequest:
    if rnd.random() < 0.8:
        return random_request(world, rnd)
    ws = rnd.choice(list(world.pack_of))
    pack = PACKSET.packs[world.pack_of[ws]]
    people = list(world.members[ws]) or ["user:u0"]
    subject = rnd.choice(people)
    action = rnd.choice(_FOCUS[pack.id] or [a.id for a in pack.actions])
    scope = rnd.choice(world.scopes[ws] or ["group:s0"])
    member = subject if rnd.random() < 0.15 else rnd.choice([*people, "user:stranger1"])
    roll = rnd.random()
    if roll < 0.25:  # an invitation / a grant to someone who is not (or is) a member yet, or to oneself
        member, grantee = "", rnd.choice([subject, "newcomer", "user:stranger1", *people])
    elif roll < 0.35:  # a grant naming its member as grantee too (group/team links, role changes)
        grantee = member
    else:
        grantee = ""
    if roll > 0.85:
        member = ""  # no target at all: rank rules need target "any", asked explicitly
    obj = ResourceFacts(
        type="member",
        member=member,
        group=scope if scope.startswith("group:") else "",
        team=scope if scope.startswith("team:") else "",
        new_role=pack.role_key(rnd.choice(pack.roles).id) if rnd.random() < 0.8 else "",
        grantee=grantee,
        target="any" if rnd.random() < 0.3 else "",
    )
    return AccessRequest(subject, ws, obj, action)


def _refused_change(world: World, state: State, rnd: random.Random) -> tuple[RuleChange, bool]:
    """A change the engine must refuse, and whether the writers' rule check refuses it too."""
    wss = list(world.pack_of)
    ws, other_ws = rnd.sample(wss, 2)
    op = rnd.choice(("add", "remove"))
    pack = PACKSET.packs[world.pack_of[ws]]
    foreign = rnd.choice([p for p in PACKS if p.id != pack.id])
    people = list(world.members[ws]) or ["user:u0"]
    user = rnd.choice(people)
    role = pack.role_key(rnd.choice(pack.roles).id)
    kinds: list[tuple[Rule, bool]] = [
        (("g", role, pack.role_key(rnd.choice(pack.roles).id), ws), True),  # workspace-scoped inheritance
        (("g", user, rnd.choice(people), ws), True),  # user → user
        (("g", foreign.role_key(rnd.choice(foreign.roles).id), role, "*"), True),  # cross-pack inheritance
        (("g", user, role, f"{ws}*"), True),  # a pattern domain
        (("g", user, role, f"platform:{pack.id}"), True),  # a role in a platform domain
        (("g", role, user, "*"), True),  # a role inheriting a user
        ((rnd.choice(("g2", "g3")), user, rnd.choice(world.scopes[ws] or ["group:s0"]), "*"), True),
        (("g2", user, user, ws), True),  # a user managing a user
        (("g4", ws, other_ws), True),  # a workspace under a workspace
        (("g5", ws, other_ws), True),
        (("p", "1", role, pack.key, pack.actions[0].id, "any", "-", "allow"), True),  # the old 7-value p-line
        (("g4", ws, role), True),  # a workspace straight to a role
        (("g4", pack.key, foreign.role_key(rnd.choice(foreign.roles).id)), True),  # a pack to a foreign role
        (("g4", pack.key, foreign.key), True),  # a pack under a pack
        (("g4", f"platform:{pack.id}", pack.key), True),  # platform domains' packs are the engine's own
        (("g", user, role, pack.key), True),  # a role held in a pack "domain"
    ]
    if state.has(("g4", ws, state.home[ws])):
        kinds.append((("g4", ws, foreign.key), False))  # a second pack: refused by state, not by shape
    rule, by_shape = rnd.choice(kinds)
    return RuleChange("add" if not by_shape else op, rule), by_shape


@dataclass
class Tally:
    """Counts of one chunk."""

    requests: int = 0
    allowed: int = 0
    states: int = 1
    changes: int = 0
    refused: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    disagreements: list[str] = field(default_factory=list)


def _compare(engine: PolicyEngine, plain: Any, index: Index, reqs: Iterable[AccessRequest], tally: Tally) -> None:
    for req in reqs:
        got = engine.check(req)
        obj = req.obj
        # The target's current role: the member's, else the grantee's (model.conf)
        who = obj.member or (obj.grantee if obj.grantee != "newcomer" else "")
        role = index.current_role(who, req.domain)
        resolved = ResourceFacts(
            obj.type,
            obj.id,
            obj.assignee,
            obj.owner,
            obj.member,
            obj.group,
            obj.team,
            role,
            obj.new_role,
            obj.grantee,
            obj.target,
            obj.props,
        )
        allowed, matched = plain.enforce_ex(req.subject, req.domain, resolved, req.action)
        reason = _reference_reason(
            plain, index, AccessRequest(req.subject, req.domain, resolved, req.action), bool(allowed), matched
        )
        tally.requests += 1
        tally.allowed += bool(allowed)
        tally.reasons[reason] = tally.reasons.get(reason, 0) + 1
        if (got.allowed, got.reason) != (bool(allowed), reason):
            tally.disagreements.append(f"{req} -> engine {got.allowed}/{got.reason}, casbin {allowed}/{reason}")
        elif tally.requests % 4 == 0:  # explain names the rule Casbin matched
            rule = engine.explain(req).rule
            if rule != (("p", *matched) if matched else None):
                tally.disagreements.append(f"{req} -> engine matched {rule}, casbin {matched}")


def _run_chunk(chunk: int, per_chunk: int) -> Tally:
    world, fact_list = _world(seed=chunk)
    state = _initial_state(fact_list)
    engine = PolicyEngine(PACKSET, fact_list, revision=1)
    rnd = random.Random(1000 + chunk)
    tally = Tally()
    plain = state.plain()
    index = Index(state)
    done = 0
    while done < per_chunk:
        n = min(ROUND, per_chunk - done)
        _compare(engine, plain, index, (_request(world, state, rnd) for _ in range(n)), tally)
        done += n
        if done >= per_chunk:
            break
        for _ in range(rnd.randint(0, 2)):
            bad, by_shape = _refused_change(world, state, rnd)
            good = _random_change(world, state, rnd)
            before = engine.revision
            with pytest.raises(InvalidRuleError):
                engine.apply(rnd.sample([bad, good], 2), before + 1)
            assert engine.revision == before
            assert bool(check_rule_shape(bad.rule)) == by_shape, bad
            tally.refused += 1
        changes: list[RuleChange] = []
        for _ in range(rnd.randint(1, 6)):
            ch = _random_change(world, state, rnd)
            if all(c.rule != ch.rule for c in changes):
                changes.append(ch)
        assert all(check_rule_shape(c.rule) == [] for c in changes), changes
        engine.apply(changes, engine.revision + 1)
        for ch in changes:
            state.apply(ch)
        tally.changes += len(changes)
        tally.states += 1
        plain = state.plain()
        index = Index(state)
    return tally


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_fast_path_equals_plain_pycasbin(chunk: int) -> None:
    """PER_CHUNK random requests over changing states: answers and reasons equal stock Casbin's."""
    started = time.perf_counter()
    tally = _run_chunk(chunk, PER_CHUNK)
    elapsed = time.perf_counter() - started
    print(
        f"chunk {chunk}: {tally.requests} requests, {tally.allowed} allowed, {tally.states} states, "
        f"{tally.changes} changes, {tally.refused} refused, {len(tally.disagreements)} disagreements, "
        f"{len(tally.reasons)} reasons (target_required {tally.reasons.get('target_required', 0)}, "
        f"self_change {tally.reasons.get('self_change', 0)}), {elapsed:.1f}s"
    )
    assert not tally.disagreements, f"{len(tally.disagreements)} disagreements, first: {tally.disagreements[:5]}"
    # the generator reaches the target contract's reasons (issue 21): grantee, target any, no target
    assert tally.reasons.get("target_required", 0) > 0 and tally.reasons.get("self_change", 0) > 0, tally.reasons
    assert 0.05 * tally.requests < tally.allowed < 0.95 * tally.requests  # the sample exercises both answers
    assert len(tally.reasons) >= 8, tally.reasons  # and most reasons


def test_the_reference_reason_can_disagree() -> None:
    """The comparison is not vacuous: an engine that lost a switched-off feature is caught."""
    world, facts = _world(seed=7)
    off = next(r for r in facts if r[0] == "g5")
    state = _initial_state(facts)
    engine = PolicyEngine(PACKSET, [r for r in facts if r != off])
    pack = PACKSET.packs[world.pack_of[off[1]]]
    actions = [a.id for a in pack.actions if a.feature == off[2]]
    people = list(world.members[off[1]])
    reqs = [AccessRequest(u, off[1], ResourceFacts(), a) for u in people for a in actions]
    tally = Tally()
    _compare(engine, state.plain(), Index(state), reqs, tally)
    assert tally.disagreements


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
    state = _initial_state(facts)
    plain = state.plain()
    ws = next(w for w, p in world.pack_of.items() if p == "simulations")
    owner = next(u for u, r in world.members[ws].items() if r.endswith(":owner"))
    req = AccessRequest(owner, ws, ResourceFacts(), "view_ai_spend")
    assert engine.check(req).allowed and plain.enforce(owner, ws, ResourceFacts(), "view_ai_spend")
    req = AccessRequest("user:nobody", ws, ResourceFacts(), "view_ai_spend")
    assert not engine.check(req).allowed
    assert _reference_reason(plain, Index(state), req, False, []) == engine.check(req).reason == "no_role"
