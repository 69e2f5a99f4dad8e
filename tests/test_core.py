"""The decision core without Flask: identifiers, pack validation, explain, changes, failing closed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from app.authz import AccessRequest, PolicyEngine, ResourceFacts, RuleChange
from app.authz.identifiers import InvalidIdentifierError, role_key, user_key, ws_key
from app.authz.packs import PackError, build_pack, find_cycle, load_packs, parse_rule_line
from app.authz.rolemanager import IndexedRoleManager

ROOT = Path(__file__).resolve().parent.parent
PACKSET = load_packs(ROOT / "policy", ROOT / "model.conf")
SIM = PACKSET.packs["simulations"]

FACTS = [
    ("g4", "ws:a", "pack:simulations"),
    ("g4", "ws:b", "pack:simulations"),
    ("g", "user:1", "role:simulations:owner", "ws:a"),
    ("g", "user:2", "role:simulations:learner", "ws:a"),
    ("g", "user:3", "role:simulations:trainer", "ws:a"),
]


def req(sub: str, dom: str, act: str, **obj: str) -> AccessRequest:
    return AccessRequest(sub, dom, ResourceFacts(**obj), act)


@pytest.fixture
def engine() -> PolicyEngine:
    return PolicyEngine(PACKSET, FACTS, revision=7)


@pytest.mark.parametrize("bad", ["*", "a,b", "a b", "x\ny", "", "-lead", "a" * 129, None, 3.5])
def test_identifiers_reject_unsafe_values(bad: object) -> None:
    with pytest.raises(InvalidIdentifierError):
        user_key(bad)
    with pytest.raises(InvalidIdentifierError):
        ws_key(bad)


def test_identifiers_prefix_safe_values() -> None:
    assert user_key(42) == "user:42"
    assert ws_key("acme-1") == "ws:acme-1"
    assert role_key("classroom", "admin") == "role:classroom:admin"


def test_decisions_carry_the_revision(engine: PolicyEngine) -> None:
    d = engine.check(req("user:1", "ws:a", "view_ai_spend"))
    assert d.allowed and d.reason == "granted" and d.revision == 7


def test_explain_gives_rule_and_role_path(engine: PolicyEngine) -> None:
    d = engine.explain(req("user:1", "ws:a", "view_dashboard"))
    assert d.allowed
    assert d.rule == ("p", "90", "role:simulations:learner", "view_dashboard", "any", "-", "allow")
    assert d.role_path[0] == "user:1" and d.role_path[-1] == "role:simulations:learner"
    assert d.role_path[1] == "role:simulations:owner"
    assert len(d.role_path) == 4  # user → owner → (trainer|reviewer) → learner


def test_explain_deny_has_the_deny_rule(engine: PolicyEngine) -> None:
    facts = [*FACTS, ("g", "user:9", "role:simulations:reviewer", "ws:a")]
    eng = PolicyEngine(PACKSET, facts)
    d = eng.explain(req("user:9", "ws:a", "launch_own_simulations", assignee="user:9"))
    assert not d.allowed and d.reason == "denied_by_policy"
    assert d.rule is not None and d.rule[-1] == "deny"


def test_role_change_applies_incrementally(engine: PolicyEngine) -> None:
    assert not engine.check(req("user:2", "ws:a", "view_ai_spend")).allowed
    engine.apply(
        [
            RuleChange("remove", ("g", "user:2", "role:simulations:learner", "ws:a")),
            RuleChange("add", ("g", "user:2", "role:simulations:owner", "ws:a")),
        ],
        8,
    )
    d = engine.check(req("user:2", "ws:a", "view_ai_spend"))
    assert d.allowed and d.revision == 8
    engine.apply([RuleChange("remove", ("g", "user:2", "role:simulations:owner", "ws:a"))], 9)
    assert engine.check(req("user:2", "ws:a", "view_ai_spend")).reason == "no_role"


def test_p_rule_change_clears_the_memo(engine: PolicyEngine) -> None:
    assert engine.check(req("user:3", "ws:a", "create_and_edit_courses")).allowed
    rule = ("p", "80", "role:simulations:trainer", "create_and_edit_courses", "any", "-", "allow")
    engine.apply([RuleChange("remove", rule)], 8)
    assert not engine.check(req("user:3", "ws:a", "create_and_edit_courses")).allowed
    # the owner still has it? No: owners inherit it from trainer only.
    assert not engine.check(req("user:1", "ws:a", "create_and_edit_courses")).allowed


def test_unknown_workspaces_leave_no_trace(engine: PolicyEngine) -> None:
    """Checks into unknown workspaces are refused before Casbin and allocate nothing."""
    size = len(engine.g.links)
    for i in range(500):
        assert engine.check(req("user:1", f"ws:nope{i}", "view_dashboard")).reason == "unknown_workspace"
    assert len(engine.g.links) == size


def test_internal_error_means_deny(engine: PolicyEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("matcher exploded")

    monkeypatch.setattr(engine.enforcer, "enforce_indexed", boom)
    engine._memo.clear()
    d = engine.check(req("user:1", "ws:a", "view_dashboard"))
    assert not d.allowed and d.reason == "error"


def test_wrong_types_are_invalid_requests(engine: PolicyEngine) -> None:
    bad = AccessRequest("user:1", "ws:a", ResourceFacts(assignee=5), "view_dashboard")  # type: ignore[arg-type]
    assert engine.check(bad).reason == "invalid_request"
    assert engine.check(req("user:1", "ws:a", "View-Dashboard")).reason == "invalid_request"
    assert engine.check(req("user:1", "ws:a", "launch_own_simulations", assignee="bob")).reason == "invalid_request"


def test_pack_validation_lists_every_problem() -> None:
    doc = dict(SIM.document)
    rules = [
        *SIM.rules,
        ("p", "70", "role:simulations:ghost", "view_dashboard", "any", "-", "allow"),
        ("p", "70", "role:simulations:owner", "fly", "any", "-", "allow"),
        ("g", "role:simulations:learner", "role:simulations:owner", "*"),
    ]
    with pytest.raises(PackError) as err:
        build_pack(doc, rules)
    text = str(err.value)
    assert "unknown role role:simulations:ghost" in text
    assert "unknown action fly" in text
    assert "inheritance cycle" in text


def test_find_cycle() -> None:
    assert find_cycle({"a": ["b"], "b": ["c"]}) == []
    assert find_cycle({"a": ["b"], "b": ["a"]}) in (["a", "b", "a"], ["b", "a", "b"])


def test_parse_rule_line_handles_comments_and_spaces() -> None:
    assert parse_rule_line("# x") is None
    assert parse_rule_line("  ") is None
    assert parse_rule_line("g, a,  b , *") == ("g", "a", "b", "*")


def test_role_manager_matches_pycasbin_semantics() -> None:
    rm = IndexedRoleManager(10)
    rm.add_link("u", "r1", "d1")
    rm.add_link("r1", "r2", "*")
    assert rm.has_link("u", "r2", "d1")
    assert not rm.has_link("u", "r2", "d2")
    assert rm.has_link("x", "x", "d1")  # pycasbin: a name reaches itself
    rm.delete_link("u", "r1", "d1")
    assert not rm.has_link("u", "r2", "d1")
    assert rm.links.get("d1") is None  # nothing left behind


def test_cli_policy_test_reports_counts() -> None:
    """`flask policy test` runs every suite and ends with 'N passed, M failed'."""
    proc = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app:create_app", "policy", "test"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "FLASK_SQLALCHEMY_DATABASE_URI": "sqlite://", "FLASK_SECRET_KEY": "x" * 32},
    )
    last = proc.stdout.strip().splitlines()[-1]
    assert last.endswith(" failed") and " passed, " in last, proc.stdout + proc.stderr
    passed, failed = (int(x.split()[0]) for x in last.split(", "))
    assert passed > 100 and failed == 0, proc.stdout


def test_resolve_subject_refuses_odd_digits_and_overflow(app: object) -> None:
    """Non-ASCII digits and ids beyond the id range name nobody (no exception, no query error)."""
    from app.extensions import db
    from app.identity.users import resolve_subject

    session = db.session()
    for raw in ("²", "user:٣", "9223372036854775808", "2147483648", "0", "user:", "a\x00@b.c", -1, 2**40, True):
        assert resolve_subject(session, raw) is None
