"""The escalation verifier's pieces, one at a time (fast: ``make mutation`` runs these first).

The verifier as a whole is pinned by ``policy/verifier-tests`` (tests/test_verifier_cases.py) and
compared with brute force (tests/test_verifier_oracle.py); here: what the folded matcher is read
as, the value classes enumerated, and the exact text of counterexamples.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from app.authz import delegation
from app.authz.delegation import OTHER, SUB, WS, Reads, Violation
from app.authz.packs import load_packs

ROOT = Path(__file__).resolve().parent.parent
PACKS = load_packs(ROOT / "policy", ROOT / "model.conf")
CLASSROOM = PACKS.packs["classroom"]
ACADEMY = PACKS.packs["academy"]


def _reads(*atoms: str) -> Reads:
    reads = Reads()
    for text in atoms:
        delegation._classify(ast.parse(text, mode="eval").body, reads)
    return reads


def test_atoms_are_classified_by_what_they_read() -> None:
    reads = _reads(
        "r_obj.assignee == r_sub",
        "r_sub != r_obj.owner",
        'r_obj.member == ""',
        'r_obj.target == "any"',
        "g5(r_dom, 'leaderboard')",
        "g2(r_sub, r_obj.group, r_dom)",
        "g3(r_sub, r_obj.team, r_dom)",
        "g3(r_obj.member, r_obj.group, r_dom)",
        "rankAbove('role:classroom:admin', r_obj.role)",
        "mayGrant('role:classroom:admin', r_obj.new_role)",
    )
    assert reads.problems == []
    assert reads.features == {"leaderboard"}
    assert reads.uses == {
        "assignee": {"sub"},
        "owner": {"sub"},
        "member": {"const:", "in:group"},
        "target": {"const:any"},
        "group": {"g2:sub", "in:member"},
        "team": {"g3:sub"},
        "role": {"arg"},
        "new_role": {"arg"},
    }


def test_atoms_it_cannot_enumerate_are_refused() -> None:
    for text in (
        "g2(r_obj.member, r_obj.group, r_dom)",  # the target's management of a unit
        "g3(r_obj.assignee, r_obj.group, r_dom)",  # a user field's membership
        "g3(r_sub, r_obj.member, r_dom)",  # not a unit
        "g3(r_sub, r_obj.group, 'ws:x')",  # another domain
        "r_obj.member == r_obj.owner",  # two fields
        "r_obj.member == 3",  # a non-string constant
        "r_obj.member < r_sub",  # an order
        "g5(r_dom, r_obj.type)",  # a feature from the request
        "g(r_obj.member, 'role:x', r_dom)",  # the target's roles
        "keyMatch(r_obj.id, 'x')",  # a function of a field that is no role
        "r_obj.member",  # a bare value
    ):
        reads = _reads(text)
        assert reads.problems and "does not enumerate" in reads.problems[0], text


def _uses(**uses: set[str]) -> Reads:
    return Reads(uses={k: set(v) for k, v in uses.items()})


def test_field_values_are_the_classes_the_atoms_distinguish() -> None:
    d = delegation._domain
    assert d("assignee", {"sub"}, CLASSROOM, False) == ["", SUB]
    assert d("assignee", {"sub", "const:"}, CLASSROOM, False) == ["", SUB, OTHER]
    assert d("owner", {"sub", "const:x"}, CLASSROOM, False) == ["", SUB, "x"]
    assert d("group", {"g2:sub"}, CLASSROOM, False) == ["group:mine", "group:joined", "group:both", "group:other"]
    assert d("team", {"g2:sub", "const:"}, CLASSROOM, True) == ["", "team:other"]
    assert d("new_role", {"arg"}, CLASSROOM, False) == ["", *(CLASSROOM.role_key(r.id) for r in CLASSROOM.roles)]
    assert d("target", {"const:any"}, CLASSROOM, False) == ["", "any"]
    assert d("target", {"const:", "const:any"}, CLASSROOM, False) == ["", "any", "verify"]
    # Targets: every role (or one), non-members, in and out of the units whose membership is read.
    every = d("member", {"const:"}, CLASSROOM, False, every_role=True)
    roles = ("learner", "teacher", "admin", "owner", "nobody")
    assert every == ["", SUB, *(f"user:verify-target-{r}-00" for r in roles)]
    one = d("member", {"const:"}, CLASSROOM, False, every_role=False)
    assert one == ["", SUB, "user:verify-target-learner-00", "user:verify-target-nobody-00"]
    grouped = d("member", {"in:group"}, CLASSROOM, False, every_role=False)
    assert grouped == ["", SUB, *(f"user:verify-target-{r}-{b}" for r in ("learner", "nobody") for b in ("00", "10"))]
    both = d("member", {"in:group", "in:team"}, CLASSROOM, False, every_role=False)
    assert len(both) == 2 + 2 * 4
    platform = d("member", {"const:"}, ACADEMY, True, every_role=True)
    assert platform == ["", SUB, "user:verify-target-nobody-00", "user:verify-platform-operator"]
    assert delegation.every_role_read(_uses(role={"const:"})) is False
    assert delegation.every_role_read(_uses(role={"const:", "arg"})) is True
    assert delegation.every_role_read(_uses()) is False


def test_situations_are_the_product_simplest_first() -> None:
    reads = _uses(assignee={"sub"}, new_role={"arg"}, role={"const:"})
    sits = delegation.situations(reads, CLASSROOM, False)
    keys = [CLASSROOM.role_key(r.id) for r in CLASSROOM.roles]
    assert len(sits) == 2 * 5 and sits[0] == ()
    assert sits[1:5] == [(("new_role", k),) for k in keys]
    assert sits[5] == (("assignee", SUB),) and sits[-1] == (("assignee", SUB), ("new_role", keys[-1]))
    assert delegation.feature_states(["b", "a"]) == [(), ("a",), ("b",), ("a", "b")]
    assert delegation.feature_states([]) == [()]


def test_reads_of_refuses_too_many_features_and_unknown_fields() -> None:
    plan = delegation._Prober(PACKS, CLASSROOM, delegation.Report("classroom")).plan
    limit = delegation.FEATURES_LIMIT
    many = [("10", "role:classroom:admin", "x", "any", f"f{n}", "allow") for n in range(limit + 1)]
    reads = delegation.reads_of(plan, "x", many)
    assert reads.problems == [f"its rules name 13 features (2^13 states; limit {delegation.FEATURES_LIMIT})"]
    ok = delegation.reads_of(plan, "x", many[: delegation.FEATURES_LIMIT])
    assert ok.problems == [] and len(ok.features) == delegation.FEATURES_LIMIT
    rule = ("80", "role:classroom:admin", "change_user_roles", "rank", "-", "allow")
    rank = delegation.reads_of(plan, "change_user_roles", [rule])
    assert rank.problems == [] and {"member", "role", "new_role"} <= set(rank.uses)


def test_situations_are_described_by_feature_state_and_facts() -> None:
    desc = delegation.describe_situation
    assert desc(WS, (), (), CLASSROOM) == "every feature on; no resource facts"
    assert desc(WS, ("a", "b"), (("assignee", SUB),), CLASSROOM) == "features off: a, b; assignee: themselves"
    facts = (
        ("owner", OTHER),
        ("member", "user:verify-target-admin-11"),
        ("group", "group:mine"),
        ("team", "team:other"),
        ("new_role", "role:classroom:owner"),
        ("target", "any"),
    )
    assert desc(WS, (), facts, CLASSROOM) == (
        "every feature on; owner: someone else; member: a member holding admin (in the group and team); "
        "group: one they manage; team: one they neither manage nor belong to; new_role: owner; target: 'any'"
    )
    assert desc("platform:academy", (), (("member", "user:verify-platform-operator"),), ACADEMY) == (
        "every feature on; in platform:academy; member: a holder of operator"
    )
    assert desc(WS, (), (("member", "user:verify-target-nobody-01"), ("group", "group:joined")), CLASSROOM) == (
        "every feature on; member: a non-member (in the team); group: one they belong to"
    )
    assert desc(WS, (), (("member", "user:verify-target-learner-00"), ("team", "team:both")), CLASSROOM) == (
        "every feature on; member: a member holding learner; team: one they manage and belong to"
    )
    assert desc(WS, (), (("member", "user:elsewhere"), ("group", "x")), CLASSROOM) == (
        "every feature on; member: 'user:elsewhere'; group: 'x'"
    )


def test_counterexamples_print_exactly() -> None:
    v = Violation("grant_rank", "admin", "change_user_roles", "owner", rules=("p, 1, r",), when="every feature on")
    assert v.describe(CLASSROOM) == (
        "classroom: escalation: admin (rank 2) could change_user_roles granting owner (rank 3: equal or higher rank) "
        "[every feature on] (rule: p, 1, r)"
    )
    v = Violation("manage_rank", "admin", "remove_users", "admin", rules=("a", "b"))
    assert v.describe(CLASSROOM) == (
        "classroom: escalation: admin (rank 2) could remove_users on members holding admin (rank 2: equal or higher "
        "rank) (rule: a; b)"
    )
    v = Violation("grant_rank", "ghost", "x", "spook")
    assert v.describe(CLASSROOM) == (
        "classroom: escalation: ghost (rank ?) could x granting spook (rank ?: equal or higher rank)"
    )
    v = Violation("manage_rank", "ghost", "x", "spook")
    assert v.describe(CLASSROOM).endswith("on members holding spook (rank ?: equal or higher rank)")
    missing = tuple((f"act{n}", f"sit{n}", f"line{n}") for n in range(2))
    v = Violation("delegation", "admin", "invite_users", "cohost", missing, 2, ("p, 80, x",), when="w")
    assert v.describe(CLASSROOM) == (
        "classroom: delegation: admin may grant cohost through invite_users [w] (rule: p, 80, x), but cohost would "
        "gain what admin lacks: act0 [sit0] [line0]; act1 [sit1] [line1]"
    )
    assert Violation("delegation", "admin", "a", "c", missing[:1], 2).describe(CLASSROOM).endswith(
        "lacks: act0 [sit0] [line0] and 1 more action"
    )
    assert Violation("delegation", "admin", "a", "c", missing[:1], 3).describe(CLASSROOM).endswith(
        "lacks: act0 [sit0] [line0] and 2 more actions"
    )
    v = Violation("undecidable", "", "x", "", when="why not")
    assert v.describe(CLASSROOM) == "classroom: verifier cannot decide x: why not"


def test_grant_and_manage_actions_come_from_the_pack() -> None:
    assert delegation.grant_actions(CLASSROOM) == {
        "change_user_roles",
        "invite_users",
        "create_sub_admins",
        "transfer_ownership",
    }
    assert delegation.manage_actions(CLASSROOM) == delegation.grant_actions(CLASSROOM) | {"remove_users"}
    skills = PACKS.packs["skills"]
    # Skills' remove operation is its assign action: it grants and manages.
    assert delegation.grant_actions(skills) == {"create_edit_deactivate_users_assign_roles"}
    assert delegation.manage_actions(skills) == {"create_edit_deactivate_users_assign_roles"}
    assert delegation.grant_actions(PACKS.packs["todo"]) == set() == delegation.manage_actions(PACKS.packs["todo"])


def test_the_first_witness_is_the_lowest_situation() -> None:
    assert delegation._lowest(0b1000) == 3 and delegation._lowest(0b1010) == 1 and delegation._lowest(1) == 0


def test_render_aligns_the_table_and_lists_every_scope() -> None:
    grant = delegation.Grant("ab", "invite_users", "teacher", ("any", "rank"), ())
    report = delegation.Report("classroom", grants=[grant])
    out = delegation.render(PACKS, [report])
    assert "\n  ab    may grant teacher          via invite_users [any, rank]\n  PASS classroom\n" in out


def test_problems_skip_unknown_packs_and_go_on() -> None:
    from app.authz.packs import packset_from_documents, parse_rule_line

    rule = parse_rule_line("p, 75, role:classroom:admin, remove_users, any, -, allow")
    assert rule is not None
    docs = {pid: dict(p.document) for pid, p in PACKS.packs.items()}
    bad = packset_from_documents(docs, [*PACKS.all_rules(), rule], PACKS.model_text)
    lines = delegation.problems(bad, ["no-such-pack", "classroom"])
    assert lines and all(line.startswith("classroom: escalation: admin") for line in lines)


def test_the_cache_key_is_the_content_not_its_order() -> None:
    import datetime

    from app.authz.packs import Pack, PackSet

    pack = PACKS.packs["todo"]
    reordered = Pack(**{**pack.__dict__, "document": dict(reversed(list(pack.document.items())))})
    other = PackSet({**PACKS.packs, "todo": reordered}, PACKS.model_text)
    assert delegation._fingerprint(other, "todo") == delegation._fingerprint(PACKS, "todo")
    dated = Pack(**{**pack.__dict__, "document": {**pack.document, "reviewed": datetime.date(2026, 12, 6)}})
    key = delegation._fingerprint(PackSet({**PACKS.packs, "todo": dated}, PACKS.model_text), "todo")
    assert key != delegation._fingerprint(PACKS, "todo")  # YAML dates and other values are part of the key


def test_what_it_cannot_decide_is_a_counterexample(monkeypatch: pytest.MonkeyPatch) -> None:
    """Too many features on one action, or too many situations: refused (a problem), never sampled."""
    from app.authz.packs import packset_from_documents

    docs = {pid: dict(p.document) for pid, p in PACKS.packs.items()}
    names = [f"f{n}" for n in range(delegation.FEATURES_LIMIT + 1)]
    docs["classroom"]["features"] = [{"id": f, "label": f} for f in names]
    rules = [("p", "60", "role:classroom:owner", "manage_billing", "any", f, "allow") for f in names]
    later = ("p", "75", "role:classroom:admin", "transfer_ownership", "any", "-", "allow")  # an action after it
    packset = packset_from_documents(docs, [*PACKS.all_rules(), *rules, later], PACKS.model_text)
    report = delegation.verify_pack(packset, "classroom")
    found = [(v.kind, v.role, v.action, v.other) for v in report.violations]
    assert found[0] == ("undecidable", "", "manage_billing", "")
    assert ("grant_rank", "admin", "transfer_ownership", "owner") in found
    assert delegation.problems(packset, ["classroom"])[0] == (
        "classroom: verifier cannot decide manage_billing: its rules name 13 features (2^13 states; limit 12)"
    )
    monkeypatch.setattr(delegation, "COMBOS_LIMIT", 3)
    report = delegation.verify_pack(PACKS, "todo")
    assert report.violations and all(v.kind == "undecidable" for v in report.violations)
    assert report.violations[0].describe(PACKS.packs["todo"]).endswith("situations (limit 3)")
    assert report.violations[0].describe(PACKS.packs["todo"]).startswith("todo: verifier cannot decide ")
