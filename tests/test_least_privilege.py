"""Issue 8: no path to rights that nobody could grant — each reproduction of the audit, refused.

1. delegation of permissions the granter lacks (a rank-0 role with owner-only rights);
2. grant-carrying rules at scopes other than ``rank``;
3. rollback and ``flask policy import`` re-introducing a state validation rejects;
4. targets that name nobody passing rank checks (decision API and assignable roles);
5. a teacher pulling owners and admins into their group.

Plus the verifier itself: the shipped packs pass, exceptions count only with their reason, and a
policy that fails verification in the database is not served silently (``/readyz`` 503).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from flask import Flask
from flask.testing import FlaskClient

from app.authz import delegation
from app.authz.engine import RuleChange
from app.authz.packs import PackSet, Rule, load_packs, parse_rule_line
from app.extensions import authz, db
from app.policy import store as policy_store
from tests.factories import uid, web_client
from tests.test_decision_api import World, get, world  # noqa: F401 - fixture
from tests.test_decision_api import post as api_post
from tests.test_policy_api import (  # noqa: F401 - fixtures
    TEACHER_ANY_ROLE,
    Editors,
    as_user,
    change,
    editors,
    post,
    restore_pack_rows,
)

ROOT = Path(__file__).resolve().parent.parent
PACKS = load_packs(ROOT / "policy", ROOT / "model.conf")
COHOST_BILLING = "p, 100, role:classroom:cohost, manage_billing, any, -, allow"
COHOST_DELETE = "p, 100, role:classroom:cohost, delete_organization, any, -, allow"
COHOST_LINK = "g4, pack:classroom, role:classroom:cohost"  # a new role's rules apply where its pack reaches it
REVIEWER_GROUP_ASSIGN = "p, 85, role:simulations:reviewer, assign_roles, group, -, allow"


def edited(packset: PackSet, pack_id: str, add: list[str] = (), roles: list[dict] = ()) -> PackSet:  # type: ignore[assignment]
    """The shipped packs with rules added to one pack (and roles added to its document)."""
    from app.authz.packs import packset_from_documents

    docs = {pid: dict(p.document) for pid, p in packset.packs.items()}
    if roles:
        docs[pack_id]["roles"] = [*docs[pack_id]["roles"], *roles]
    rules: list[Rule] = packset.all_rules() + [r for r in (parse_rule_line(x) for x in add) if r]
    return packset_from_documents(docs, rules, packset.model_text)


# -- the verifier --------------------------------------------------------------------------------------
def test_shipped_packs_pass_the_verifier() -> None:
    reports = delegation.verify(PACKS)
    assert {r.pack for r in reports} == set(PACKS.packs)
    assert all(r.ok for r in reports), [v.describe(PACKS.packs[r.pack]) for r in reports for v in r.violations]
    table = {(g.role, g.granted) for r in reports if r.pack == "classroom" for g in r.grants}
    # Admins grant learner and teacher; owners everything, owner by the seed's exception.
    assert {("admin", "learner"), ("admin", "teacher"), ("owner", "owner"), ("owner", "admin")} <= table
    assert ("admin", "admin") not in table and ("teacher", "learner") not in table


def test_delegation_of_rights_the_granter_lacks_is_a_counterexample() -> None:
    """Reproduction 1: a rank-0 'cohost' with billing and deletion; admins may grant rank 0."""
    bad = edited(PACKS, "classroom", [COHOST_LINK, COHOST_BILLING, COHOST_DELETE], [{"id": "cohost", "rank": 0}])
    report = delegation.verify_pack(bad, "classroom")
    found = [v for v in report.violations if v.kind == "delegation" and v.role == "admin" and v.other == "cohost"]
    assert found, [v.describe(bad.packs["classroom"]) for v in report.violations]
    missing = {a for a, _, _ in found[0].missing}
    assert missing <= {"delete_organization", "manage_billing"} and missing
    text = found[0].describe(bad.packs["classroom"])
    assert "role:classroom:admin" in text and "role:classroom:cohost" in text  # the rule lines responsible


def test_grant_rules_at_any_scope_are_analysed() -> None:
    """Reproduction 2: assign_roles at scope 'group' lets a reviewer grant owner in a group they teach."""
    bad = edited(PACKS, "simulations", [REVIEWER_GROUP_ASSIGN])
    report = delegation.verify_pack(bad, "simulations")
    kinds = {(v.kind, v.other) for v in report.violations if v.role == "reviewer"}
    assert ("grant_rank", "owner") in kinds and ("delegation", "owner") in kinds, kinds
    grant = next(g for g in report.grants if g.role == "reviewer" and g.granted == "owner")
    assert grant.scopes == ("group",)


def test_exception_without_its_reason_does_not_count() -> None:
    docs = {pid: dict(p.document) for pid, p in PACKS.packs.items()}
    docs["classroom"]["grants"] = [{"role": "owner", "may_grant": ["owner"], "may_manage": ["owner"], "why": " "}]
    from app.authz.packs import packset_from_documents

    bad = packset_from_documents(docs, PACKS.all_rules(), PACKS.model_text)
    kinds = {(v.kind, v.role, v.other) for v in delegation.verify_pack(bad, "classroom").violations}
    assert ("grant_rank", "owner", "owner") in kinds and ("manage_rank", "owner", "owner") in kinds


def test_cli_verify_prints_the_table_and_pass(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["policy", "verify"])
    assert result.exit_code == 0, result.output
    assert "PASS classroom" in result.output and "owner  may grant owner" in result.output
    assert result.output.rstrip().endswith(f"{len(PACKS.packs)} passed, 0 failed")


def test_cli_verify_and_import_refuse_a_bad_policy(app: Flask, tmp_path: Path) -> None:
    """Reproduction 3 (import): teachers changing roles at scope 'any' is refused, nothing written."""
    pdir = tmp_path / "policy"
    shutil.copytree(Path(app.config["POLICY_DIR"]), pdir)
    csv = pdir / "classroom.csv"
    csv.write_text(csv.read_text(encoding="utf-8") + TEACHER_ANY_ROLE + "\n", encoding="utf-8")
    runner = app.test_cli_runner()
    result = runner.invoke(args=["policy", "verify", "classroom", "--dir", str(pdir)])
    assert result.exit_code == 1
    assert "FAIL classroom" in result.output
    assert "teacher (rank 1) could change_user_roles granting owner" in result.output
    app.config["POLICY_DIR"] = str(pdir)
    rev = policy_store.current_revision(db.session())
    result = runner.invoke(args=["policy", "import"])
    assert result.exit_code == 1 and "escalation: teacher" in result.output, result.output
    assert policy_store.current_revision(db.session()) == rev
    assert not policy_store.rule_exists(db.session(), tuple(x.strip() for x in TEACHER_ANY_ROLE.split(",")))


def test_import_refuses_files_whose_policy_tests_fail(app: Flask, tmp_path: Path) -> None:
    pdir = tmp_path / "policy"
    shutil.copytree(Path(app.config["POLICY_DIR"]), pdir)
    csv = pdir / "simulations.csv"
    line = "p, 90, role:simulations:learner, view_dashboard, any, -, allow\n"
    csv.write_text(csv.read_text(encoding="utf-8").replace(line, ""), encoding="utf-8")
    app.config["POLICY_DIR"] = str(pdir)
    result = app.test_cli_runner().invoke(args=["policy", "import"])
    assert result.exit_code == 1 and "policy test fails: simulations_test::table view_dashboard" in result.output


# -- the policy API ------------------------------------------------------------------------------------
def test_validate_and_apply_refuse_the_cohost_edit(client: FlaskClient, editors: Editors) -> None:  # noqa: F811
    headers = as_user(client, editors.users["admin"])
    proposal = {
        "changes": [
            {"op": "add_role", "pack": "classroom", "role": {"id": "cohost", "rank": 0}},
            change("add", COHOST_LINK),
            change("add", COHOST_BILLING),
            change("add", COHOST_DELETE),
        ]
    }
    status, out = post(client, "/v1/policy/validate", headers, proposal)
    assert status == 200 and out["valid"] is False
    assert any("delegation: admin may grant cohost" in p and "manage_billing" in p for p in out["problems"]), out
    rev = policy_store.current_revision(db.session())
    status, out = post(client, "/v1/policy/apply", headers, proposal)
    assert status == 422 and policy_store.current_revision(db.session()) == rev


def test_validate_refuses_a_group_scoped_grant_rule(client: FlaskClient, editors: Editors) -> None:  # noqa: F811
    headers = as_user(client, editors.users["admin"])
    status, out = post(client, "/v1/policy/apply", headers, {"changes": [change("add", REVIEWER_GROUP_ASSIGN)]})
    assert status == 422
    assert any("escalation: reviewer (rank 2) could assign_roles granting owner" in p for p in out["problems"]), out


def test_rollback_to_a_state_validation_rejects_is_refused(client: FlaskClient, editors: Editors) -> None:  # noqa: F811
    """Reproduction 3 (rollback): a bad revision written around the checks (an old version, a direct
    database edit), fixed by an edit; rolling back to it is verified like any edit and refused."""
    session = db.session()
    bad = tuple(x.strip() for x in TEACHER_ANY_ROLE.split(","))
    handle = policy_store.begin_write(session, "import", None, "a policy from before the verifier")
    policy_store.add_changes(session, handle, [RuleChange("add", bad)])
    session.commit()
    bad_revision = handle.number
    headers = as_user(client, editors.users["admin"])
    status, out = post(client, "/v1/policy/apply", headers, {"changes": [change("remove", TEACHER_ANY_ROLE)]})
    assert status == 201, out
    rev = policy_store.current_revision(db.session())
    status, out = post(client, "/v1/policy/rollback", headers, {"to_revision": bad_revision})
    assert status == 422, out
    assert any("escalation: teacher" in p for p in out["problems"]), out
    assert policy_store.current_revision(db.session()) == rev
    assert not authz.check(
        editors.users["teacher"].key, "ws:cls", "change_user_roles"
    ).allowed  # the teacher still changes nobody's role


def test_readyz_fails_on_a_stored_policy_that_fails_verification(client: FlaskClient, app: Flask) -> None:
    assert client.get("/readyz").get_json()["checks"]["verification"] == "pass"
    session = db.session()
    handle = policy_store.begin_write(session, "import", None, "written around the checks")
    bad = tuple(x.strip() for x in TEACHER_ANY_ROLE.split(","))
    policy_store.add_changes(session, handle, [RuleChange("add", bad)])
    session.commit()
    authz.reload()
    resp = client.get("/readyz")
    assert resp.status_code == 503 and resp.get_json()["checks"]["verification"] == "fail"
    assert any("teacher" in p for p in authz.verification_problems())


# -- targets that name nobody ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pack", "action", "new_role"),
    [
        ("classroom", "change_user_roles", "teacher"),
        ("classroom", "remove_users", None),
        ("classroom", "transfer_ownership", "owner"),
        ("simulations", "assign_roles", "trainer"),
        ("academy", "assign_roles", "learner"),
    ],
)
def test_rank_checks_on_targets_that_name_nobody_deny(
    client: FlaskClient,
    world: World,  # noqa: F811
    pack: str,
    action: str,
    new_role: str | None,
) -> None:
    """Reproduction 4: '*', 'user:*', '', a role key, an unknown id or email never pass a rank check."""
    actor = {"classroom": "classroom.owner", "simulations": "simulations.owner", "academy": "academy.company_admin"}
    if pack == "academy" and action not in {a.id for a in PACKS.packs["academy"].actions}:
        pytest.skip("academy has no assign_roles action")
    attrs: dict[str, object] = {"new_role": new_role} if new_role else {}
    real = {"classroom": "classroom.learner", "simulations": "simulations.learner", "academy": "academy.learner"}
    body = {
        "subject": world.uid(actor[pack]),
        "workspace": f"{pack}-demo",
        "action": action,
        "resource": {"type": "member", "attributes": {**attrs, "member": world.uid(real[pack])}},
    }
    status, out = api_post(client, "/v1/check", world.token, body)
    assert status == 200 and out["allowed"] is True, out  # the same check on a real member is granted
    for nobody in ("*", "user:*", "", f"role:{pack}:owner", 987654, "nobody@example.com", "outsider@example.com"):
        body["resource"]["attributes"]["member"] = nobody  # type: ignore[index]
        status, out = api_post(client, "/v1/check", world.token, body)
        # fail closed: a target naming nobody is no target, denied as such (never a 422, never allowed)
        assert status == 200 and out["allowed"] is False and out["reason"] == "unknown_member", (nobody, out)


def test_assignable_roles_for_a_target_that_names_nobody_is_empty(client: FlaskClient, world: World) -> None:  # noqa: F811
    owner = world.uid("classroom.owner")
    status, out = get(
        client, "/v1/assignable-roles", world.token, actor=owner, workspace="classroom-demo", any_target="true"
    )
    assert status == 200 and out["roles"]
    for nobody in ("*", "user:*", "role:classroom:owner", "987654", "nobody@example.com"):
        status, out = get(
            client, "/v1/assignable-roles", world.token, actor=owner, workspace="classroom-demo", target=nobody
        )
        assert status == 200 and out["roles"] == [], (nobody, out)


# -- a teacher's group ----------------------------------------------------------------------------------
CLS = "/api/workspaces/classroom-demo"



def test_teacher_cannot_pull_owners_or_admins_into_their_group(demo: Flask) -> None:
    """Reproduction 5: the teacher adds learners only; owners, admins and teachers are refused."""
    wc = web_client(demo, "teacher@classroom.example")
    for email in ("owner@classroom.example", "admin@classroom.example", "owner2@classroom.example"):
        resp = wc.post(f"{CLS}/groups/morning/learners", json={"user_ids": [uid(email)]})
        assert resp.status_code == 403 and resp.get_json()["reason"] == "rank_limit", (email, resp.get_json())
        assert not authz.engine.g3.has_link(f"user:{uid(email)}", "group:morning", "ws:classroom-demo")
    # All or nothing: a learner and an owner together are refused as a whole.
    both = [uid("learner2@classroom.example"), uid("owner@classroom.example")]
    assert wc.post(f"{CLS}/groups/morning/learners", json={"user_ids": both}).status_code == 403
    assert not authz.engine.g3.has_link(f"user:{both[0]}", "group:morning", "ws:classroom-demo")
    resp = wc.post(f"{CLS}/groups/morning/learners", json={"user_ids": [both[0]]})
    assert resp.status_code == 200, resp.get_json()
    # An admin puts anyone in a group; the teacher still gets no rights over them.
    admin = web_client(demo, "admin@classroom.example")
    owner = uid("owner2@classroom.example")
    assert admin.post(f"{CLS}/groups/morning/learners", json={"user_ids": [owner]}).status_code == 200
    teacher = f"user:{uid('teacher@classroom.example')}"
    for action in ("view_learner_details", "access_learner_performance_data", "manage_learners"):
        facts = {"type": "member", "group": "group:morning", "member": f"user:{owner}"}
        from app.authz import ResourceFacts

        decision = authz.check(teacher, "ws:classroom-demo", action, ResourceFacts(**facts))
        assert not decision.allowed and decision.reason == "rank_limit", action


def test_demo_yaml_still_names_the_exceptions() -> None:
    """The skills account manager's appointment power is an exception with its reason, listed by the verifier."""
    doc = yaml.safe_load((ROOT / "policy" / "skills.yaml").read_text(encoding="utf-8"))
    am = next(g for g in doc["grants"] if g["role"] == "account_manager")
    assert "owner" in am["may_grant"] and am["why"].strip()


def test_rollback_sees_every_later_revision_not_the_first_batch(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """The revision log is read in batches elsewhere; a rollback must not stop at the first one."""
    from pathlib import Path as _Path

    from app.policy import edits as policy_edits

    monkeypatch.setattr(policy_store.revision_log_after, "__defaults__", (3,))  # a batch of 3
    session = db.session()
    start = policy_store.current_revision(session)
    for i in range(5):  # five fact revisions, then the edit to undo
        handle = policy_store.begin_write(session, "test-setup", None, f"fact {i}")
        policy_store.add_changes(session, handle, [RuleChange("add", ("g4", f"ws:batch{i}", "pack:classroom"))])
        session.commit()
    model = _Path(app.config["MODEL_PATH"]).read_text(encoding="utf-8")
    rule = "p, 80, role:simulations:reviewer, view_ai_spend, any, -, allow"
    policy_edits.apply(session, [policy_edits.Edit("add", rule)], model, None, message="to undo")
    session.commit()
    d = policy_edits.rollback(session, start, model)
    session.commit()
    assert [c.op for c in d.changes] == ["remove"] and d.changes[0].rule[3] == "view_ai_spend"
    assert not policy_store.rule_exists(session, tuple(x.strip() for x in rule.split(",")))
