"""The policy-editor API over HTTP: meta-policy checks, read, validate, preview, apply, rollback, tokens, CLI."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask, g
from flask.testing import FlaskClient
from sqlalchemy import and_, delete, insert, or_, select

from app.authz.engine import RuleChange
from app.extensions import authz, db
from app.identity import sessions
from app.models import AuditEvent, CasbinRule, Membership, PolicyPack, User, Workspace
from app.policy import store as policy_store
from app.policy import tokens
from tests.factories import create_workspace

REVIEWER_AI_SPEND = "p, 80, role:simulations:reviewer, view_ai_spend, any, -, allow"
TEACHER_ANY_ROLE = "p, 90, role:classroom:teacher, change_user_roles, any, -, allow"


@pytest.fixture(autouse=True)
def restore_pack_rows(app: Flask, backend: str) -> Iterator[None]:
    """PostgreSQL is reset between tests for facts only; put pack rules and documents back exactly (same ids)."""
    if backend != "postgres":
        yield
        return
    rules_t, packs_t = CasbinRule.__table__, PolicyPack.__table__
    pack_rows = or_(
        rules_t.c.ptype == "p", and_(rules_t.c.ptype == "g", rules_t.c.v2 == "*", rules_t.c.v0.like("role:%"))
    )
    with db.engine.begin() as conn:
        rules = [dict(r._mapping) for r in conn.execute(select(rules_t).where(pack_rows))]
        docs = [dict(r._mapping) for r in conn.execute(select(packs_t))]
    yield
    db.session.rollback()
    with db.engine.begin() as conn:
        conn.execute(delete(rules_t).where(pack_rows))
        conn.execute(insert(rules_t), rules)
        conn.execute(delete(packs_t))
        conn.execute(insert(packs_t), docs)


@dataclass
class Editors:
    """The policy workspace with one user per meta-role, and two pack workspaces with members."""

    users: dict[str, User]
    ws: dict[str, Workspace]


@pytest.fixture
def editors(app: Flask) -> Editors:
    ws = {
        slug: create_workspace(slug, pack)
        for slug, pack in (
            ("service", "service"),
            ("sim-a", "simulations"),
            ("sim-b", "simulations"),
            ("cls", "classroom"),
        )
    }
    people = {
        "viewer": ("service", "policy_viewer"),
        "editor": ("service", "policy_editor"),
        "admin": ("service", "policy_admin"),
        "rev1": ("sim-a", "reviewer"),
        "rev2": ("sim-b", "reviewer"),
        "own1": ("sim-a", "owner"),
        "teacher": ("cls", "teacher"),
        "outsider": (None, None),
    }
    users = {n: User(email=f"{n}@example.com", password_hash="!", display_name=n) for n in people}
    db.session.add_all(users.values())
    db.session.flush()
    session = db.session()
    handle = policy_store.begin_write(session, "test-setup")
    changes = []
    for name, (slug, role) in people.items():
        if slug is None:
            continue
        w = ws[slug]
        session.add(Membership(workspace_id=w.id, user_id=users[name].id, role=role))
        changes.append(RuleChange("add", ("g", users[name].key, f"role:{w.pack}:{role}", w.key)))
    policy_store.add_changes(session, handle, changes)
    session.commit()
    return Editors(users, ws)


def signin(client: FlaskClient, user: User) -> str:
    """Sign the client in as user (session cookie); returns the CSRF token for changes."""
    sessions.start(db.session(), user)  # a server-side session row: the cookie alone signs nobody in
    db.session.commit()
    with client.session_transaction() as s:
        s["_user_id"] = user.get_id()
        s["_fresh"] = True
    # The app fixture keeps one app context for the whole test, and flask-login caches the
    # user in flask.g: forget the previous one.
    g.pop("_login_user", None)
    resp = client.get("/v1/policy/session")
    assert resp.status_code == 200, resp.get_json()
    token = resp.get_json()["csrf_token"]
    assert isinstance(token, str) and token
    return token


def as_user(client: FlaskClient, user: User) -> dict[str, str]:
    return {"X-CSRFToken": signin(client, user)}


def post(client: FlaskClient, url: str, headers: dict[str, str], body: object) -> tuple[int, dict]:
    resp = client.post(url, json=body, headers=headers)
    return resp.status_code, resp.get_json()


def change(op: str, rule: str | list[str], **kw: object) -> dict:
    return {"op": op, "rule": rule, **kw}


# -- access --------------------------------------------------------------------------------------
def test_meta_policy_guards_every_endpoint(client: FlaskClient, editors: Editors) -> None:
    resp = client.get("/v1/policy/model")
    assert resp.status_code == 401 and resp.mimetype == "application/problem+json"
    signin(client, editors.users["outsider"])
    resp = client.get("/v1/policy/model")
    assert resp.status_code == 403 and resp.get_json()["type"].endswith("/forbidden")
    headers = as_user(client, editors.users["viewer"])
    assert client.get("/v1/policy/model").status_code == 200
    proposal = {"changes": [change("add", REVIEWER_AI_SPEND)]}
    assert post(client, "/v1/policy/validate", headers, proposal)[0] == 403
    headers = as_user(client, editors.users["editor"])
    assert post(client, "/v1/policy/validate", headers, proposal)[0] == 200
    assert post(client, "/v1/policy/apply", headers, proposal)[0] == 403
    assert client.get("/v1/policy/tokens").status_code == 403
    info = client.get("/v1/policy/session").get_json()
    expected = ["read_policy", "read_policy_audit", "propose_policy_change", "comment_change_request"]
    assert info["permissions"] == expected


def test_changes_need_the_csrf_token(client: FlaskClient, editors: Editors) -> None:
    signin(client, editors.users["admin"])
    status, out = post(client, "/v1/policy/validate", {}, {"changes": [change("add", REVIEWER_AI_SPEND)]})
    assert status == 400 and out["type"].endswith("/csrf-failed")


# -- reading -------------------------------------------------------------------------------------
def test_read_model_and_filtered_rules(client: FlaskClient, editors: Editors) -> None:
    signin(client, editors.users["viewer"])
    out = client.get("/v1/policy/model").get_json()
    assert {"simulations", "academy", "classroom", "skills", "service"} <= set(out["packs"])
    assert "[matchers]" in out["model"] and out["revision"] == authz.engine.revision
    assert out["packs"]["classroom"]["grants"][0]["role"] == "owner"
    g = client.get("/v1/policy/rules", query_string={"pack": "classroom", "type": "g"}).get_json()
    assert g["count"] == len(g["rules"]) > 0 and all(r[0] == "g" and "classroom" in r[1] for r in g["rules"])
    teacher = client.get(
        "/v1/policy/rules", query_string={"pack": "classroom", "role": "teacher", "type": "p"}
    ).get_json()
    assert teacher["rules"] and all(r[2] == "role:classroom:teacher" for r in teacher["rules"])
    same = client.get("/v1/policy/rules", query_string={"role": "role:classroom:teacher", "type": "p"}).get_json()
    assert same["rules"] == teacher["rules"]
    bad = client.get("/v1/policy/rules", query_string={"type": "x"})
    assert bad.status_code == 422 and bad.get_json()["errors"]


# -- validate / preview ----------------------------------------------------------------------------
def test_validate_lists_every_problem(client: FlaskClient, editors: Editors) -> None:
    headers = as_user(client, editors.users["editor"])
    proposal = {
        "changes": [
            change("add", "p, 90, role:classroom:wizard, create_groups, any, -, allow"),
            change("add", "p, 90, role:classroom:teacher, cast_spells, any, -, allow"),
            change("add", ["g", "role:classroom:learner", "role:classroom:owner", "*"]),
            change("remove", "p, 1, role:classroom:owner, create_groups, any, -, allow"),
            change("add", "g, user:1, role:classroom:owner, ws:cls"),
            change("add", "p, 90, role:classroom:teacher, create_groups, anywhere, -, allow"),
        ]
    }
    status, out = post(client, "/v1/policy/validate", headers, proposal)
    assert status == 200 and out["valid"] is False
    text = "\n".join(out["problems"])
    for needle in (
        "unknown role role:classroom:wizard",
        "unknown action cast_spells",
        "inheritance cycle",
        "no such rule",
        "only pack rules",
        "unknown scope",
    ):
        assert needle in text, (needle, text)
    status, out = post(client, "/v1/policy/validate", headers, {"changes": [change("add", REVIEWER_AI_SPEND)]})
    assert out == {"valid": True, "revision": authz.engine.revision, "problems": []}


def test_escalating_change_is_refused_by_preview_and_apply(client: FlaskClient, editors: Editors) -> None:
    """A teacher allowed to change roles without the rank scope could make anyone an owner."""
    headers = as_user(client, editors.users["admin"])
    proposal = {"changes": [change("add", TEACHER_ANY_ROLE)]}
    status, out = post(client, "/v1/policy/preview", headers, proposal)
    assert status == 422 and out["type"].endswith("/validation-failed")
    assert any("escalation: teacher" in p and "owner" in p for p in out["problems"]), out["problems"]
    rev = authz.engine.revision
    status, out = post(client, "/v1/policy/apply", headers, proposal)
    assert status == 422 and authz.engine.revision == rev
    assert policy_store.current_revision(db.session()) == rev


def test_inheritance_escalation_is_refused(client: FlaskClient, editors: Editors) -> None:
    """A new rank-0 role inheriting admin could use admin's rank rules to grant teacher: escalation."""
    headers = as_user(client, editors.users["editor"])
    proposal = {
        "changes": [
            {"op": "add_role", "pack": "classroom", "role": {"id": "helper", "rank": 0}},
            change("add", "g, role:classroom:helper, role:classroom:admin, *"),
        ]
    }
    status, out = post(client, "/v1/policy/validate", headers, proposal)
    assert out["valid"] is False
    assert any("escalation: helper (rank 0) could change_user_roles granting" in p for p in out["problems"]), out[
        "problems"
    ]


def test_scoped_grant_on_a_denied_seed_cell_is_refused(client: FlaskClient, editors: Editors) -> None:
    """Issue 21, reproduction 8: seed 003 has Teacher ❌ Remove Users; a group-scoped allow used to apply."""
    headers = as_user(client, editors.users["admin"])
    rule = "p, 90, role:classroom:teacher, remove_users, group, -, allow"
    rev = authz.engine.revision
    status, out = post(client, "/v1/policy/apply", headers, {"changes": [change("add", rule)], "message": "repro 8"})
    assert status == 422, out
    cell = "policy test fails: classroom_test::table remove_users [teacher] in every scope, a learner member"
    assert any(p.startswith(cell) and p.endswith("expected deny, got allow (granted)") for p in out["problems"]), out
    assert authz.engine.revision == rev  # nothing applied


def test_change_breaking_policy_tests_is_refused(client: FlaskClient, editors: Editors) -> None:
    headers = as_user(client, editors.users["editor"])
    rule = "p, 90, role:simulations:learner, view_dashboard, any, -, allow"
    status, out = post(client, "/v1/policy/validate", headers, {"changes": [change("remove", rule)]})
    assert out["valid"] is False
    assert any(p.startswith("policy test fails: simulations_test::table view_dashboard") for p in out["problems"])


def test_preview_flips_and_impact(client: FlaskClient, editors: Editors) -> None:
    headers = as_user(client, editors.users["editor"])
    status, out = post(client, "/v1/policy/preview", headers, {"changes": [change("add", REVIEWER_AI_SPEND)]})
    assert status == 200, out
    assert out["packs"] == ["simulations"]
    flips = [(f["role"], f["action"], f["before"], f["after"], f["change"]) for f in out["flips"]]
    assert flips == [("reviewer", "view_ai_spend", "—", "✅", "gain")]
    assert out["flips"][0]["users"] == 2 and out["flips"][0]["workspaces"] == 2
    assert out["impact"] == [
        {
            "pack": "simulations",
            "action": "view_ai_spend",
            "gain_users": 2,
            "gain_workspaces": 2,
            "lose_users": 0,
            "lose_workspaces": 0,
        }
    ]
    # Removing a reviewer permission: reviewers lose it, and so do owners (they inherit reviewer).
    rule = "p, 80, role:simulations:reviewer, override_grades, any, -, allow"
    status, out = post(client, "/v1/policy/preview", headers, {"changes": [change("remove", rule)]})
    if status == 200:  # the packs' tests may pin this cell; then the refusal is the right answer
        lost = {(f["role"], f["change"]) for f in out["flips"]}
        assert ("reviewer", "lose") in lost and ("owner", "lose") in lost
    else:
        assert status == 422 and any("policy test fails" in p for p in out["problems"])


# -- apply / rollback ----------------------------------------------------------------------------
def test_apply_is_one_audited_revision_seen_by_decisions(client: FlaskClient, editors: Editors) -> None:
    headers = as_user(client, editors.users["admin"])
    token = tokens.create_token(db.session(), "svc", all_workspaces=True)[1]  # (a revision of its own)
    db.session.commit()
    rev = authz.engine.revision
    status, out = post(
        client,
        "/v1/policy/apply",
        headers,
        {"changes": [change("add", REVIEWER_AI_SPEND)], "message": "reviewers see AI spend", "expected_revision": rev},
    )
    assert status == 201, out
    assert out == {"revision": rev + 1, "changes": 1, "documents": []}
    assert policy_store.current_revision(db.session()) == rev + 1
    check = client.post(
        "/v1/check",
        json={"subject": "rev1@example.com", "workspace": "sim-a", "action": "view_ai_spend", "min_revision": rev + 1},
        headers={"Authorization": f"Bearer {token}"},
    ).get_json()
    assert check == {"allowed": True, "reason": "granted", "revision": rev + 1}
    audit = db.session.query(AuditEvent).filter_by(action="policy.edit").one()
    assert audit.revision == rev + 1 and audit.actor_id == editors.users["admin"].id
    assert audit.after["added"] == [REVIEWER_AI_SPEND.split(", ")] and audit.before["removed"] == []
    revs = client.get("/v1/policy/revisions", query_string={"limit": 2}).get_json()
    assert revs["items"][0] == {
        **revs["items"][0],
        "id": rev + 1,
        "kind": "policy-edit",
        "message": "reviewers see AI spend",
    }
    one = client.get(f"/v1/policy/revisions/{rev + 1}").get_json()
    assert one["changes"] == [{"op": "add", "rule": REVIEWER_AI_SPEND.split(", "), "pack": "simulations"}]
    assert client.get("/v1/policy/revisions/999999").status_code == 404
    # Stale expected_revision: 409, nothing written.
    status, out = post(
        client,
        "/v1/policy/apply",
        headers,
        {"changes": [change("remove", REVIEWER_AI_SPEND)], "expected_revision": rev},
    )
    assert status == 409 and out["revision"] == rev + 1
    assert policy_store.current_revision(db.session()) == rev + 1


def test_replace_and_new_action_then_rollback(client: FlaskClient, editors: Editors) -> None:
    headers = as_user(client, editors.users["admin"])
    start = authz.engine.revision
    new_rule = "p, 70, role:simulations:owner, export_reports, any, -, allow"
    proposal = {
        "changes": [
            {"op": "add_action", "pack": "simulations", "action": {"id": "export_reports", "label": "Export reports"}},
            change("add", new_rule),
            change(
                "replace",
                "p, 80, role:simulations:reviewer, override_grades, any, -, allow",
                **{"with": "p, 75, role:simulations:reviewer, override_grades, any, -, allow"},
            ),
        ],
        "message": "reports",
    }
    status, out = post(client, "/v1/policy/apply", headers, proposal)
    assert status == 201, out
    assert out["documents"] == ["simulations"] and out["changes"] == 3
    eng = authz.engine
    assert eng.revision == start + 1 and eng.packset.packs["simulations"].action("export_reports") is not None
    own1 = editors.users["own1"].key
    assert authz.check(own1, "ws:sim-a", "export_reports").allowed
    model = client.get("/v1/policy/model").get_json()
    assert "export_reports" in [a["id"] for a in model["packs"]["simulations"]["actions"]]
    # Roll back: the action and its rule are gone, the replaced rule is back, as a new revision.
    status, out = post(client, "/v1/policy/rollback", headers, {"to_revision": start, "message": "undo reports"})
    assert status == 201, out
    assert out["revision"] == start + 2 and out["documents"] == ["simulations"]
    eng = authz.engine
    assert eng.revision == start + 2 and eng.packset.packs["simulations"].action("export_reports") is None
    rules = {tuple(r) for r in eng.packset.packs["simulations"].rules}
    assert ("p", "80", "role:simulations:reviewer", "override_grades", "any", "-", "allow") in rules
    assert authz.check(own1, "ws:sim-a", "export_reports").reason == "unknown_action"
    status, out = post(client, "/v1/policy/rollback", headers, {"to_revision": start + 5})
    assert status == 422
    status, out = post(client, "/v1/policy/rollback", headers, {"to_revision": start + 1})
    assert status == 201  # rolling back the rollback restores the edit
    assert authz.engine.packset.packs["simulations"].action("export_reports") is not None


def test_add_role_document_only(client: FlaskClient, editors: Editors) -> None:
    headers = as_user(client, editors.users["admin"])
    proposal = {
        "changes": [
            {"op": "add_role", "pack": "classroom", "role": {"id": "assistant", "rank": 1, "label": "Assistant"}}
        ]
    }
    status, out = post(client, "/v1/policy/apply", headers, proposal)
    assert status == 201 and out["changes"] == 0 and out["documents"] == ["classroom"]
    assert authz.engine.packset.packs["classroom"].role("assistant") is not None
    status, out = post(client, "/v1/policy/validate", headers, proposal)
    assert out["valid"] is False and "already exists" in out["problems"][0]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"changes": []},
        {"changes": [{"op": "explode"}]},
        {"changes": [{"op": "add", "rule": 5}]},
        {"changes": [{"op": "add", "rule": REVIEWER_AI_SPEND}], "expected_revision": "1"},
        {"changes": [{"op": "add", "rule": REVIEWER_AI_SPEND}], "extra": True},
    ],
)
def test_malformed_proposals_are_422(client: FlaskClient, editors: Editors, body: dict) -> None:
    headers = as_user(client, editors.users["admin"])
    status, out = post(client, "/v1/policy/apply", headers, body)
    assert status == 422 and out["errors"], out


# -- tokens ------------------------------------------------------------------------------------------
def test_tokens_over_the_policy_api(client: FlaskClient, editors: Editors) -> None:
    headers = as_user(client, editors.users["admin"])
    assert post(client, "/v1/policy/tokens", headers, {"name": "billing"})[0] == 422  # no binding
    assert post(client, "/v1/policy/tokens", headers, {"name": "b", "platform": "x", "all_workspaces": True})[0] == 422
    status, out = post(client, "/v1/policy/tokens", headers, {"name": "billing", "workspaces": ["sim-a"]})
    assert status == 201 and out["token"].startswith("lat_") and out["binding"] == "ws:sim-a", out
    secret = out["token"]
    listed = client.get("/v1/policy/tokens").get_json()["items"]
    assert [t["name"] for t in listed] == ["billing"] and "token" not in listed[0]
    assert listed[0]["binding"] == "ws:sim-a" and listed[0]["migrated"] is False and listed[0]["feed"] is False
    status, out = post(client, "/v1/policy/tokens", headers, {"name": "feeder", "workspaces": ["sim-a"], "feed": True})
    assert status == 201 and out["feed"] is True
    assert client.get("/v1/snapshot", headers={"Authorization": f"Bearer {out['token']}"}).status_code == 200
    assert client.get("/v1/snapshot", headers={"Authorization": f"Bearer {secret}"}).status_code == 403
    assert post(client, "/v1/policy/tokens", headers, {"name": "billing", "all_workspaces": True})[0] == 409
    assert post(client, "/v1/policy/tokens", headers, {"name": "bad name!", "all_workspaces": True})[0] == 422
    body = {"subject": "own1@example.com", "workspace": "sim-a", "action": "view_ai_spend"}
    assert client.post("/v1/check", json=body, headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    elsewhere = {**body, "workspace": "service"}
    assert client.post("/v1/check", json=elsewhere, headers={"Authorization": f"Bearer {secret}"}).status_code == 403
    resp = client.delete("/v1/policy/tokens/billing", headers=headers)
    assert resp.status_code == 200 and resp.get_json()["revoked_at"]
    assert client.post("/v1/check", json=body, headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    assert client.delete("/v1/policy/tokens/nope", headers=headers).status_code == 404


# -- CLI twins ---------------------------------------------------------------------------------------
def test_policy_cli_diff_export_import(app: Flask, editors: Editors, tmp_path: Path) -> None:
    """diff (files vs database), export (database → files), import (files → database, one revision)."""
    from app.policy import edits as policy_edits

    src = Path(app.config["POLICY_DIR"])
    pdir = tmp_path / "policy"
    shutil.copytree(src, pdir)
    app.config["POLICY_DIR"] = str(pdir)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["policy", "diff"])
    assert result.exit_code == 0 and "no differences" in result.output, result.output
    model = Path(app.config["MODEL_PATH"]).read_text(encoding="utf-8")
    policy_edits.apply(db.session(), [policy_edits.Edit("add", REVIEWER_AI_SPEND)], model, None, message="cli test")
    db.session.commit()
    result = runner.invoke(args=["policy", "diff"])
    assert result.exit_code == 1 and f"- {REVIEWER_AI_SPEND}" in result.output, result.output
    result = runner.invoke(args=["policy", "export"])
    assert result.exit_code == 0 and "simulations.csv" in result.output, result.output
    assert REVIEWER_AI_SPEND in (pdir / "simulations.csv").read_text(encoding="utf-8")
    assert runner.invoke(args=["policy", "diff"]).exit_code == 0
    # Edit the files, import: one revision, the engine follows.
    csv = pdir / "simulations.csv"
    csv.write_text(csv.read_text(encoding="utf-8").replace(REVIEWER_AI_SPEND + "\n", ""), encoding="utf-8")
    rev = policy_store.current_revision(db.session())
    result = runner.invoke(args=["policy", "import"])
    assert result.exit_code == 0 and f"imported as revision {rev + 1}" in result.output, result.output
    assert not authz.check(editors.users["rev1"].key, "ws:sim-a", "view_ai_spend").allowed
    assert "nothing to import" in runner.invoke(args=["policy", "import"]).output
