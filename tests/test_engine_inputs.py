"""Issue 8, reproduction 6: the engine and stock Casbin agree on every input the engine accepts.

``PolicyEngine.apply`` used to accept facts no writer produces and then answer differently from
stock pycasbin: a workspace-scoped inheritance line was answered from the memo in another
workspace (fail-open), a user→user link and a cross-pack inheritance were denied by the "no role
of this pack" short-cut although Casbin allows them. The engine now refuses, with
``InvalidRuleError``, every rule the writers' validation (``policy_store.check_rule_shape``)
refuses: one check, ``packs.validate_rule``, for both. Each case below also shows that the
answers stay exactly stock Casbin's for the facts the engine kept.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.authz import AccessRequest, InvalidRuleError, PolicyEngine, ResourceFacts, RuleChange
from app.authz.enforcer import build_plain_enforcer
from app.authz.packs import Rule, load_packs
from app.policy.store import check_rule_shape

ROOT = Path(__file__).resolve().parent.parent
PACKSET = load_packs(ROOT / "policy", ROOT / "model.conf")

BASE: list[Rule] = [
    ("g4", "ws:a", "pack:classroom"),
    ("g4", "ws:b", "pack:classroom"),
    ("g4", "ws:s", "pack:simulations"),
    ("g", "user:1", "role:classroom:learner", "ws:a"),
    ("g", "user:1", "role:classroom:learner", "ws:b"),
    ("g", "user:2", "role:classroom:admin", "ws:a"),
    ("g", "user:2", "role:classroom:admin", "ws:b"),
    ("g", "user:3", "role:simulations:owner", "ws:s"),
    ("g", "user:4", "role:classroom:teacher", "ws:a"),
    ("g", "user:4", "role:classroom:teacher", "ws:b"),
    ("g2", "user:4", "group:m", "ws:a"),
    ("g3", "user:5", "group:m", "ws:a"),
    ("g", "user:5", "role:classroom:learner", "ws:a"),
]
NONE = ResourceFacts()
GROUP_Z = ResourceFacts(group="group:z")
# Requests each case is probed with: (subject, workspace, action, resource).
PROBES = [
    ("user:1", "ws:a", "create_groups", NONE),
    ("user:1", "ws:b", "create_groups", NONE),
    ("user:2", "ws:b", "create_groups", NONE),
    ("user:3", "ws:s", "view_ai_spend", NONE),
    ("user:4", "ws:b", "manage_learners", GROUP_Z),
    ("user:4", "ws:a", "manage_learners", ResourceFacts(group="group:m", member="user:5")),
    ("user:7", "ws:a", "create_groups", NONE),
    ("user:8", "ws:a", "view_ai_spend", NONE),
    ("user:8", "ws:c", "create_groups", NONE),
    ("user:9", "ws:a", "create_groups", NONE),
]


def _plain(facts: list[Rule]) -> object:
    platform = [("g4", f"platform:{p.id}", p.key) for p in PACKSET.packs.values()]
    return build_plain_enforcer(PACKSET.model_text, PACKSET.packs, [*PACKSET.all_rules(), *facts, *platform])


def _disagreements(engine: PolicyEngine, facts: list[Rule]) -> list[str]:
    plain = _plain(facts)
    out = []
    for sub, dom, act, obj in PROBES:
        req = AccessRequest(sub, dom, obj, act)
        got = engine.check(req)
        want = bool(plain.enforce(sub, dom, engine.resolve(req).obj, act))
        if got.allowed != want:
            out.append(f"{sub} {dom} {act}: engine {got.allowed} ({got.reason}), casbin {want}")
    return out


# Each input made the engine disagree with stock Casbin at commit ea58d48.
DIVERGING: dict[str, list[Rule]] = {
    # answered from the memo in ws:b (fail-open): learner may create groups in every classroom
    "workspace-scoped inheritance": [("g", "role:classroom:learner", "role:classroom:admin", "ws:a")],
    # Casbin: user:9 inherits user:2's admin role; the engine said no_role
    "user to user link": [("g", "user:9", "user:2", "ws:a")],
    # Casbin: a simulations owner in a classroom workspace is a classroom admin; engine: no_role
    "cross-pack inheritance": [
        ("g", "role:simulations:owner", "role:classroom:admin", "*"),
        ("g", "user:7", "role:simulations:owner", "ws:a"),
    ],
    # (was a p-rule of pack classroom with a simulations subject; p-rules carry no pack since the
    # six-value p-line) a classroom pack reaching a simulations role: its rules would apply in ws:a
    "pack linked to a foreign role": [
        ("g4", "pack:classroom", "role:simulations:owner"),
        ("g", "user:7", "role:simulations:owner", "ws:a"),
    ],
    # a workspace straight to a role: that role's rules would apply there whatever the pack
    "workspace linked to a role": [
        ("g4", "ws:a", "role:simulations:owner"),
        ("g", "user:7", "role:simulations:owner", "ws:a"),
    ],
    # the engine's role manager treats '*' as every domain for g2 too; stock Casbin only for g (fail-open)
    "teacher of a group in every workspace": [("g2", "user:4", "group:z", "*")],
    # Casbin applies both packs' rules; the engine used the first pack only
    "second pack for a workspace": [
        ("g4", "ws:a", "pack:simulations"),
        ("g", "user:8", "role:simulations:owner", "ws:a"),
    ],
    # Casbin follows g4 transitively; the engine read direct links only
    "workspace linked to a workspace": [
        ("g4", "ws:c", "ws:a"),
        ("g", "user:8", "role:classroom:admin", "ws:c"),
    ],
    # a domain with '*' in it is a key_match pattern for stock Casbin: every ws:a... domain
    "pattern domain": [("g", "user:9", "role:classroom:admin", "ws:a*")],
}


@pytest.mark.parametrize("name", list(DIVERGING))
def test_apply_refuses_what_the_writers_refuse(name: str) -> None:
    """Each diverging input is refused by apply, atomically; the answers stay stock Casbin's."""
    engine = PolicyEngine(PACKSET, BASE, revision=1)
    for sub, dom, act, obj in PROBES:  # warm the memo, as a live engine would have it
        engine.check(AccessRequest(sub, dom, obj, act))
    with pytest.raises(InvalidRuleError):
        engine.apply([RuleChange("add", rule) for rule in DIVERGING[name]], 2)
    assert engine.revision == 1
    assert _disagreements(engine, BASE) == []


@pytest.mark.parametrize("name", list(DIVERGING))
def test_loading_refuses_what_the_writers_refuse(name: str) -> None:
    """The same facts in the database at start-up: the engine is not built (never served silently)."""
    with pytest.raises(InvalidRuleError):
        PolicyEngine(PACKSET, [*BASE, *DIVERGING[name]])


@pytest.mark.parametrize("name", [n for n in DIVERGING if n != "second pack for a workspace"])
def test_the_writers_refuse_the_same_rules(name: str) -> None:
    """One validation: the writers' rule check refuses at least one rule of every refused change."""
    assert any(check_rule_shape(rule) for rule in DIVERGING[name])


def test_a_second_pack_is_refused_by_state_not_shape() -> None:
    """g4 ws → pack is a valid shape; a workspace that already has another pack refuses it."""
    engine = PolicyEngine(PACKSET, BASE)
    assert check_rule_shape(("g4", "ws:a", "pack:simulations")) == []
    with pytest.raises(InvalidRuleError, match="one pack"):
        engine.apply([RuleChange("add", ("g4", "ws:a", "pack:simulations"))], 2)
    engine.apply([RuleChange("add", ("g4", "ws:a", "pack:classroom"))], 2)  # the same pack again: no-op
    engine.apply([RuleChange("remove", ("g4", "ws:a", "pack:classroom"))], 3)
    engine.apply([RuleChange("add", ("g4", "ws:a", "pack:simulations"))], 4)  # after removal: fine
    assert engine.pack_of("ws:a") is PACKSET.packs["simulations"]


def test_a_refused_batch_changes_nothing() -> None:
    """A valid change next to a refused one is not applied either (all or nothing)."""
    engine = PolicyEngine(PACKSET, BASE, revision=1)
    good = ("g", "user:9", "role:classroom:admin", "ws:a")
    with pytest.raises(InvalidRuleError):
        engine.apply([RuleChange("add", good), RuleChange("add", ("g", "user:9", "user:2", "ws:a"))], 2)
    assert not engine.check(AccessRequest("user:9", "ws:a", NONE, "create_groups")).allowed


# Odd but accepted: each is a shape the writers may write; the engine must then agree with Casbin.
ACCEPTED: dict[str, list[Rule]] = {
    "inheritance change in '*'": [("g", "role:classroom:learner", "role:classroom:admin", "*")],
    "inheritance cycle": [("g", "role:classroom:learner", "role:classroom:owner", "*")],
    "inheritance removed": [],
    "a foreign pack's role in a workspace": [("g", "user:7", "role:simulations:owner", "ws:a")],
    "a workspace role held in '*'": [("g", "user:8", "role:classroom:admin", "*")],
    "a role the pack does not define": [
        ("g", "user:9", "role:classroom:ghost", "ws:a"),
        ("g", "role:classroom:ghost", "role:classroom:admin", "*"),
    ],
    "a workspace with no pack yet": [("g", "user:8", "role:classroom:admin", "ws:c")],
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_accepted_odd_inputs_agree_with_casbin(name: str) -> None:
    """Warm memo, then the change: every probe still gets stock Casbin's answer."""
    engine = PolicyEngine(PACKSET, BASE, revision=1)
    for sub, dom, act, obj in PROBES:
        engine.check(AccessRequest(sub, dom, obj, act))
    changes = [RuleChange("add", rule) for rule in ACCEPTED[name]]
    pack_rules = list(PACKSET.all_rules())
    if name == "inheritance removed":
        gone = ("g", "role:classroom:admin", "role:classroom:teacher", "*")
        changes = [RuleChange("remove", gone)]
        pack_rules.remove(gone)
    engine.apply(changes, 2)
    facts = [*BASE, *ACCEPTED[name]]
    platform = [("g4", f"platform:{p.id}", p.key) for p in PACKSET.packs.values()]
    plain = build_plain_enforcer(PACKSET.model_text, PACKSET.packs, [*pack_rules, *facts, *platform])
    for sub, dom, act, obj in PROBES:
        req = AccessRequest(sub, dom, obj, act)
        want = bool(plain.enforce(sub, dom, engine.resolve(req).obj, act))
        assert engine.check(req).allowed == want, (name, req)


_PIECES = [
    "user:1", "user:2", "user:a b", "user:", "user:*", "role:classroom:admin", "role:classroom:learner",
    "role:simulations:owner", "role:x", "ws:a", "ws:b", "ws:a*", "ws:", "*", "platform:classroom",
    "group:m", "team:t", "group:", "pack:classroom", "pack:Nope", "leaderboard", "Leader", "", "a,b", "x\ny",
]


_VALID: list[Rule] = [
    ("g", "user:1", "role:classroom:admin", "ws:a"),
    ("g", "user:2", "role:classroom:learner", "ws:b"),
    ("g", "user:3", "role:simulations:owner", "*"),
    ("g", "role:classroom:admin", "role:classroom:learner", "*"),
    ("g2", "user:1", "group:m", "ws:a"),
    ("g3", "user:2", "team:t", "ws:b"),
    ("g4", "ws:a", "pack:classroom"),
    ("g5", "ws:b", "leaderboard"),
    ("p", "1", "role:classroom:admin", "create_groups", "any", "-", "allow"),
]


def test_the_loading_fast_path_accepts_exactly_what_rule_problems_accepts() -> None:
    """FactCheck remembers what it accepted; on a random stream it never differs from rule_problems."""
    import random

    from app.authz.shapes import FactCheck, rule_problems

    rnd = random.Random(8)
    check = FactCheck()
    accepted = 0
    for _ in range(30_000):
        template = list(rnd.choice(_VALID))
        for i in range(len(template)):  # each field, sometimes: another valid field, or junk
            if rnd.random() < 0.12:
                template[i] = rnd.choice(_PIECES if rnd.random() < 0.5 else [t[i % len(t)] for t in _VALID])
        if rnd.random() < 0.03:
            template = template[:-1] if rnd.random() < 0.5 else [*template, "ws:a"]
        rule = tuple(template)
        try:
            check.check(rule)
            ok = True
        except InvalidRuleError:
            ok = False
        assert ok == (rule_problems(rule) == []), rule
        accepted += ok
    assert accepted > 500  # the stream reaches the remembered fast path


@pytest.mark.parametrize("name", list(DIVERGING))
def test_the_store_refuses_them_before_anything_commits(app: object, name: str) -> None:
    """Through policy_store.add_changes (every service's writer): 422 for a shape, 409 for a second pack."""
    from app.errors import ConflictError, ValidationError
    from app.extensions import authz, db
    from app.policy import store as policy_store
    from tests.factories import create_workspace

    ws = create_workspace("aa", "classroom")
    rules = [tuple(ws.key if v == "ws:a" else v for v in rule) for rule in DIVERGING[name]]
    head = authz.engine.revision
    session = db.session()
    handle = policy_store.begin_write(session, "test")
    with pytest.raises(ConflictError if name == "second pack for a workspace" else ValidationError):
        policy_store.add_changes(session, handle, [RuleChange("add", rule) for rule in rules])
    session.rollback()
    assert authz.engine.revision == head
