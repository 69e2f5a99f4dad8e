"""The decision API over HTTP: check, explain, batch, permissions, assignable roles, who-can, errors."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

from app.authz.engine import RuleChange
from app.extensions import authz, db
from app.models import Membership, User, Workspace
from app.policy import store as policy_store
from app.policy import tokens
from tests.factories import add_member, create_workspace


def create_user(email: str) -> User:
    """A committed user without a usable password (argon2 would make these tests slow)."""
    user = User(email=email, password_hash="!", display_name=email.split("@")[0])
    db.session.add(user)
    db.session.commit()
    return user


def add_rules(*rules: tuple[str, ...]) -> int:
    """Commit facts (g2/g3/g5 ...) as one revision; returns it."""
    session = db.session()
    handle = policy_store.begin_write(session, "test-setup", None, "test facts")
    policy_store.add_changes(session, handle, [RuleChange("add", r) for r in rules])
    session.commit()
    return handle.number


def make_token(name: str = "svc") -> str:
    """A committed service token's secret."""
    _, secret = tokens.create_token(db.session(), name, all_workspaces=True)
    db.session.commit()
    return secret


@dataclass
class World:
    """Four workspaces (one per pack) and one user per interesting role."""

    ws: dict[str, Workspace]
    users: dict[str, User]
    token: str

    def uid(self, name: str) -> int:
        return int(self.users[name].id)

    def email(self, name: str) -> str:
        return str(self.users[name].email)


MEMBERS = {
    "simulations": ["owner", "trainer", "reviewer", "learner"],
    "academy": ["learner", "trainer", "content_manager", "company_admin"],
    "classroom": ["learner", "teacher", "admin", "owner"],
    "skills": ["member", "author", "access_manager", "curation_admin", "owner"],
}


@pytest.fixture
def world(app: Flask) -> World:
    """Built in a few commits: users at once, then every membership and fact as one revision."""
    ws = {pack: create_workspace(f"{pack}-demo", pack) for pack in MEMBERS}
    emails = {f"{pack}.{role}": f"{role}@{pack}.example" for pack, roles in MEMBERS.items() for role in roles}
    emails.update({"classroom.learner2": "learner2@classroom.example", "admin": "admin@platform.example"})
    emails["outsider"] = "outsider@example.com"
    users = {name: User(email=email, password_hash="!", display_name=name) for name, email in emails.items()}
    db.session.add_all(users.values())
    db.session.flush()
    memberships = [(f"{p}.{r}", p, r) for p, roles in MEMBERS.items() for r in roles]
    memberships.append(("classroom.learner2", "classroom", "learner"))
    rules: list[tuple[str, ...]] = []
    for name, pack, role in memberships:
        db.session.add(Membership(workspace_id=ws[pack].id, user_id=users[name].id, role=role, status="accepted"))
        rules.append(("g", users[name].key, f"role:{pack}:{role}", ws[pack].key))
    cls = ws["classroom"].key
    rules += [
        ("g", users["admin"].key, "role:simulations:admin", "*"),
        ("g2", users["classroom.teacher"].key, "group:morning", cls),
        ("g3", users["classroom.learner"].key, "group:morning", cls),
        ("g3", users["classroom.learner2"].key, "group:evening", cls),
    ]
    add_rules(*rules)
    return World(ws, users, make_token())


def post(client: FlaskClient, url: str, token: str | None, body: object, **kw: object) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kw.pop("headers", {}))  # type: ignore[arg-type]
    resp = client.post(url, json=body, headers=headers, **kw)  # type: ignore[arg-type]
    return resp.status_code, resp.get_json(force=True)


def get(client: FlaskClient, url: str, token: str, **params: object) -> tuple[int, dict]:
    resp = client.get(url, query_string=params, headers={"Authorization": f"Bearer {token}"})
    return resp.status_code, resp.get_json(force=True)


# -- all four packs ------------------------------------------------------------------------------
CASES = [
    # (user, workspace pack, action, resource, allowed, reason)
    ("simulations.owner", "simulations", "manage_billing_and_subscription", None, True, "granted"),
    ("simulations.reviewer", "simulations", "launch_own_simulations", None, False, "denied_by_policy"),
    ("academy.company_admin", "academy", "allocate_licenses", None, True, "granted"),
    ("academy.learner", "academy", "create_courses", None, False, "not_permitted"),
    ("classroom.owner", "classroom", "delete_organization", None, True, "granted"),
    ("classroom.learner", "classroom", "delete_organization", None, False, "not_permitted"),
    ("skills.author", "skills", "create_and_edit_learning_paths", None, True, "granted"),
    ("skills.member", "skills", "configure_hr_integrations", None, False, "not_permitted"),
]


def test_check_every_pack(client: FlaskClient, world: World) -> None:
    for user, pack, action, _, allowed, reason in CASES:
        body = {"subject": world.uid(user), "workspace": f"{pack}-demo", "action": action}
        status, out = post(client, "/v1/check", world.token, body)
        assert status == 200, out
        assert out == {"allowed": allowed, "reason": reason, "revision": authz.engine.revision}, (user, action)


def test_subject_forms_are_equivalent(client: FlaskClient, world: World) -> None:
    """Id, digit string, user:<id> and email (any case) name the same user."""
    uid = world.uid("simulations.owner")
    for subject in (uid, str(uid), f"user:{uid}", "Owner@Simulations.Example"):
        _, out = post(
            client,
            "/v1/check",
            world.token,
            {"subject": subject, "workspace": "simulations-demo", "action": "view_ai_spend"},
        )
        assert out["allowed"] is True, subject


def test_unknown_subject_is_denied_with_its_reason(client: FlaskClient, world: World) -> None:
    for subject in (999999, "nobody@example.com", "user:424242", "bob", "", "user:", 2**70):
        body = {"subject": subject, "workspace": "simulations-demo", "action": "view_dashboard"}
        status, out = post(client, "/v1/check", world.token, body)
        assert status == 200 and out["allowed"] is False and out["reason"] == "unknown_subject", subject


def test_unknown_workspace_and_action(client: FlaskClient, world: World) -> None:
    uid = world.uid("simulations.owner")
    _, out = post(
        client, "/v1/check", world.token, {"subject": uid, "workspace": "nowhere", "action": "view_dashboard"}
    )
    assert out["reason"] == "unknown_workspace"
    _, out = post(client, "/v1/check", world.token, {"subject": uid, "workspace": "simulations-demo", "action": "fly"})
    assert out["reason"] == "unknown_action"
    _, out = post(
        client, "/v1/check", world.token, {"subject": uid, "workspace": "classroom-demo", "action": "create_groups"}
    )
    assert out["reason"] == "no_role"


INVALID = [
    {"workspace": "a,b"},
    {"workspace": "*"},
    {"action": "Drop Table"},
    {"action": "x\ny"},
    {"resource": {"type": "a b"}},
    {"resource": {"attributes": {"group": "*"}}},
    {"resource": {"attributes": {"team": "a,b"}}},
    {"resource": {"attributes": {"new_role": "Not A Role"}}},
]


def test_invalid_identifiers_are_denied_not_errors(client: FlaskClient, world: World) -> None:
    """Well-typed but unsafe values: allowed false, reason invalid_request (documented choice)."""
    for patch in INVALID:
        body = {"subject": world.uid("simulations.owner"), "workspace": "simulations-demo", "action": "view_dashboard"}
        body.update(patch)
        status, out = post(client, "/v1/check", world.token, body)
        assert status == 200 and out["allowed"] is False and out["reason"] == "invalid_request", (patch, out)


def test_assignee_scope_with_emails_and_ids(client: FlaskClient, world: World) -> None:
    uid = world.uid("simulations.learner")
    base = {"subject": uid, "workspace": "simulations-demo", "action": "launch_own_simulations"}
    for assignee, allowed, reason in (
        (uid, True, "granted"),
        ("learner@simulations.example", True, "granted"),
        (world.uid("simulations.owner"), False, "not_assignee"),
        ("ghost@example.com", False, "not_assignee"),
    ):
        body = {**base, "resource": {"type": "simulation", "id": 7, "attributes": {"assignee": assignee}}}
        _, out = post(client, "/v1/check", world.token, body)
        assert (out["allowed"], out["reason"]) == (allowed, reason), assignee


def test_group_scope_and_unknown_member_never_matches(client: FlaskClient, world: World) -> None:
    """A teacher manages learners of their own group only; an unknown member is not 'no member'."""
    t = world.uid("classroom.teacher")
    base = {"subject": t, "workspace": "classroom-demo", "action": "manage_group_learners"}

    def ask(attrs: dict) -> dict:
        return post(client, "/v1/check", world.token, {**base, "resource": {"type": "group", "attributes": attrs}})[1]

    assert ask({"group": "morning", "member": "learner@classroom.example"})["allowed"] is True
    assert ask({"group": "group:morning", "member": world.uid("classroom.learner")})["allowed"] is True
    out = ask({"group": "evening", "member": "learner2@classroom.example"})
    assert out == {**out, "allowed": False, "reason": "outside_group"}
    assert ask({"group": "morning", "member": "ghost@example.com"})["allowed"] is False


def test_rank_rules_with_new_role_ids(client: FlaskClient, world: World) -> None:
    admin = world.uid("classroom.admin")
    base = {"subject": admin, "workspace": "classroom-demo", "action": "change_user_roles"}
    learner = world.uid("classroom.learner")

    def ask(member: object, new_role: str) -> dict:
        attrs = {"member": member, "new_role": new_role}
        return post(client, "/v1/check", world.token, {**base, "resource": {"type": "member", "attributes": attrs}})[1]

    assert ask(learner, "teacher")["allowed"] is True
    assert ask(learner, "owner")["reason"] == "rank_limit"
    assert ask(learner, "role:classroom:teacher")["allowed"] is True
    assert ask(admin, "learner")["reason"] == "self_change"
    assert ask(learner, "no_such_role")["allowed"] is False


def test_explain_adds_rule_and_role_path(client: FlaskClient, world: World) -> None:
    uid = world.uid("simulations.owner")
    body = {"subject": f"user:{uid}", "workspace": "simulations-demo", "action": "view_dashboard"}
    status, out = post(client, "/v1/check?explain=true", world.token, body)
    assert status == 200 and out["allowed"] is True
    assert out["rule"][:4] == ["p", "90", "role:simulations:learner", "view_dashboard"]
    assert out["role_path"][0] == f"user:{uid}" and out["role_path"][-1] == "role:simulations:learner"
    _, plain = post(client, "/v1/check", world.token, body)
    assert "rule" not in plain and "role_path" not in plain
    _, denied = post(client, "/v1/check?explain=1", world.token, {**body, "subject": 999999})
    assert denied["rule"] is None and denied["role_path"] == []


def test_platform_role_works_in_every_workspace_of_its_pack(client: FlaskClient, world: World) -> None:
    body = {"subject": "admin@platform.example", "workspace": "simulations-demo", "action": "assign_roles"}
    body["resource"] = {"type": "member", "attributes": {"member": world.uid("simulations.owner"), "new_role": "admin"}}
    _, out = post(client, "/v1/check?explain=true", world.token, body)
    assert out["allowed"] is True and "role:simulations:admin" in out["role_path"]


# -- batch ---------------------------------------------------------------------------------------
def test_batch_answers_in_order(client: FlaskClient, world: World) -> None:
    checks = [
        {"subject": world.uid(u), "workspace": f"{p}-demo", "action": a, **({"resource": r} if r else {})}
        for u, p, a, r, _, _ in CASES
    ]
    checks.insert(2, {"subject": "ghost@example.com", "workspace": "academy-demo", "action": "take_courses"})
    checks.insert(4, {"subject": world.uid("academy.learner"), "workspace": "a,b", "action": "take_courses"})
    status, out = post(client, "/v1/check/batch", world.token, {"checks": checks})
    assert status == 200, out
    expected = [(a, r) for *_, a, r in CASES]
    expected.insert(2, (False, "unknown_subject"))
    expected.insert(4, (False, "invalid_request"))
    assert [(r["allowed"], r["reason"]) for r in out["results"]] == expected
    assert out["revision"] == authz.engine.revision


def test_batch_explain_and_empty(client: FlaskClient, world: World) -> None:
    status, out = post(client, "/v1/check/batch", world.token, {"checks": []})
    assert status == 200 and out["results"] == []
    check = {"subject": world.uid("academy.trainer"), "workspace": "academy-demo", "action": "take_courses"}
    _, out = post(client, "/v1/check/batch?explain=true", world.token, {"checks": [check]})
    assert out["results"][0]["role_path"][-1] == "role:academy:learner"


def test_batch_over_the_limit_is_413(client: FlaskClient, world: World, app: Flask) -> None:
    app.config["BATCH_MAX_CHECKS"] = 3
    check = {"subject": world.uid("academy.trainer"), "workspace": "academy-demo", "action": "take_courses"}
    status, out = post(client, "/v1/check/batch", world.token, {"checks": [check] * 4})
    assert status == 413 and out["status"] == 413 and out["max_checks"] == 3
    status, out = post(client, "/v1/check/batch", world.token, {"checks": [check] * 3})
    assert status == 200 and len(out["results"]) == 3


def test_batch_uses_one_user_query(client: FlaskClient, world: World, app: Flask) -> None:
    """Subjects and attribute users of a whole batch are resolved in a single SELECT on users."""
    from sqlalchemy import event

    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    checks = [
        {
            "subject": world.email(u),
            "workspace": f"{p}-demo",
            "action": a,
            "resource": {"attributes": {"owner": world.uid("academy.trainer")}},
        }
        for u, p, a, *_ in CASES * 10
    ]
    event.listen(db.engine, "before_cursor_execute", count)
    try:
        status, _ = post(client, "/v1/check/batch", world.token, {"checks": checks})
    finally:
        event.remove(db.engine, "before_cursor_execute", count)
    assert status == 200
    user_selects = [s for s in statements if "FROM users" in s]
    assert len(user_selects) == 1, user_selects


# -- error paths -----------------------------------------------------------------------------------
def test_missing_bad_and_revoked_tokens(client: FlaskClient, world: World) -> None:
    body = {"subject": 1, "workspace": "simulations-demo", "action": "view_dashboard"}
    for token in (None, "nope", "lat_" + "x" * 43):
        status, out = post(client, "/v1/check", token, body)
        assert status == 401 and out["status"] == 401 and out["type"].endswith("/unauthenticated")
    resp = client.post("/v1/check", json=body, headers={"Authorization": "Basic abc"})
    assert resp.status_code == 401 and resp.mimetype == "application/problem+json"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    tokens.revoke_token(db.session(), "svc")
    db.session.commit()
    status, out = post(client, "/v1/check", world.token, body)
    assert status == 401 and "revoked" in out["detail"]


MALFORMED = [
    ("not json", 400),
    ([1, 2], 422),
    ({}, 422),
    ({"subject": True, "workspace": "simulations-demo", "action": "view_dashboard"}, 422),
    ({"subject": 1, "workspace": 5, "action": "view_dashboard"}, 422),
    ({"subject": 1, "workspace": "simulations-demo", "action": ["x"]}, 422),
    ({"subject": 1, "workspace": "simulations-demo", "action": "view_dashboard", "extra": 1}, 422),
    ({"subject": 1, "workspace": "w", "action": "a", "resource": {"attributes": {"colour": "red"}}}, 422),
    ({"subject": 1, "workspace": "w", "action": "a", "min_revision": -1}, 422),
    ({"subject": 1.5, "workspace": "w", "action": "a"}, 422),
    ({"subject": None, "workspace": "w", "action": "a"}, 422),
]


def test_malformed_bodies_are_problems(client: FlaskClient, app: Flask) -> None:
    token = make_token()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    for body, status in MALFORMED:
        data = body if isinstance(body, str) else json.dumps(body)
        resp = client.post("/v1/check", data=data, headers=headers)
        assert resp.status_code == status, (body, resp.get_json())
        assert resp.mimetype == "application/problem+json"
        problem = resp.get_json()
        assert problem["status"] == status and problem["title"] and problem["instance"] == "/v1/check"
        if status == 422 and isinstance(body, dict) and body:
            assert problem["errors"] and all("loc" in e and "message" in e for e in problem["errors"])


def test_non_json_content_type_is_415(client: FlaskClient, world: World) -> None:
    resp = client.post("/v1/check", data="subject=1", headers={"Authorization": f"Bearer {world.token}"})
    assert resp.status_code == 415 and resp.mimetype == "application/problem+json"


def test_batch_wrong_types(client: FlaskClient, world: World) -> None:
    for body in ({"checks": "all"}, {"checks": [{"subject": 1}]}, {"checks": [1]}):
        status, out = post(client, "/v1/check/batch", world.token, body)
        assert status == 422 and out["errors"], body


# -- min_revision --------------------------------------------------------------------------------
def test_min_revision_reached_answers(client: FlaskClient, world: World) -> None:
    rev = authz.engine.revision
    body = {"subject": world.uid("simulations.owner"), "workspace": "simulations-demo", "action": "view_dashboard"}
    status, out = post(client, f"/v1/check?min_revision={rev}", world.token, body)
    assert status == 200 and out["revision"] >= rev
    status, out = post(client, "/v1/check", world.token, {**body, "min_revision": rev})
    assert status == 200


def test_min_revision_past_the_head_is_refused_at_once(client: FlaskClient, world: World) -> None:
    """Issue 9 (6): a revision the database does not have yet is a 422 at once, not a wait."""
    body = {"subject": world.uid("simulations.owner"), "workspace": "simulations-demo", "action": "view_dashboard"}
    future = authz.engine.revision + 100
    start = time.monotonic()
    resp = client.post(
        "/v1/check", json={**body, "min_revision": future}, headers={"Authorization": f"Bearer {world.token}"}
    )
    assert time.monotonic() - start < 1.5  # a wait would be MIN_REVISION_WAIT_SECONDS (2 s)
    assert resp.status_code == 422 and resp.mimetype == "application/problem+json"
    out = resp.get_json()
    assert "does not exist yet" in out["detail"] and out["head"] == policy_store.current_revision(db.session())
    status, out = get(client, "/v1/permissions", world.token, subject=1, workspace="x", min_revision=future)
    assert status == 422
    status, out = post(client, "/v1/check?min_revision=abc", world.token, body)
    assert status == 422


def test_min_revision_timeout_is_503(
    client: FlaskClient, world: World, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An existing revision this process cannot reach in time (its sync is stuck): 503 after the bounded wait."""
    app.config["MIN_REVISION_WAIT_SECONDS"] = 0.05
    body = {"subject": world.uid("simulations.owner"), "workspace": "simulations-demo", "action": "view_dashboard"}
    assert authz.engine.revision >= 0  # loaded before the commit below
    with Session(db.engine) as other:  # another process commits; this one's sync is stuck
        number = policy_store.begin_write(other, "test").number
        other.commit()
    monkeypatch.setattr(authz, "sync", lambda: authz.engine.revision)
    resp = client.post(
        "/v1/check", json={**body, "min_revision": number}, headers={"Authorization": f"Bearer {world.token}"}
    )
    assert resp.status_code == 503 and resp.mimetype == "application/problem+json"
    assert resp.headers["Retry-After"] == "1" and resp.get_json()["revision"] == authz.engine.revision


def test_min_revision_sees_a_commit_made_elsewhere(client: FlaskClient, world: World) -> None:
    """Read-your-writes: a g-rule committed behind the engine's back is waited for and seen."""
    from sqlalchemy.orm import Session

    user = world.users["outsider"]
    ws = world.ws["academy"]
    with Session(db.engine) as other:  # another process's session: no after-commit hook here
        handle = policy_store.begin_write(other, "test")
        policy_store.add_changes(other, handle, [RuleChange("add", ("g", user.key, "role:academy:learner", ws.key))])
        other.commit()
        rev = handle.number
    body = {"subject": user.id, "workspace": "academy-demo", "action": "take_courses", "min_revision": rev}
    status, out = post(client, "/v1/check", world.token, body)
    assert status == 200 and out["allowed"] is True and out["revision"] >= rev


# -- UI queries ----------------------------------------------------------------------------------
def test_permissions_of_a_subject(client: FlaskClient, world: World) -> None:
    status, out = get(
        client, "/v1/permissions", world.token, subject="reviewer@simulations.example", workspace="simulations-demo"
    )
    assert status == 200 and out["pack"] == "simulations" and out["reason"] is None
    assert "review_scores" in out["allowed"] and "manage_billing_and_subscription" not in out["allowed"]
    assert out["decisions"]["launch_own_simulations"]["reason"] == "denied_by_policy"
    _, ghost = get(client, "/v1/permissions", world.token, subject="ghost@example.com", workspace="simulations-demo")
    assert ghost["reason"] == "unknown_subject" and ghost["allowed"] == []
    _, nows = get(client, "/v1/permissions", world.token, subject=1, workspace="nowhere")
    assert nows["reason"] == "unknown_workspace" and nows["decisions"] == {}
    status, _ = get(client, "/v1/permissions", world.token, workspace="simulations-demo")
    assert status == 422


def test_assignable_roles(client: FlaskClient, world: World) -> None:
    _, out = get(
        client, "/v1/assignable-roles", world.token, actor=world.uid("classroom.admin"), workspace="classroom-demo"
    )
    assert out["roles"] == []  # issue 21: no target, no grant (unless asked explicitly)
    _, out = get(
        client,
        "/v1/assignable-roles",
        world.token,
        actor=world.uid("classroom.admin"),
        workspace="classroom-demo",
        any_target="true",
    )
    assert out["roles"] == ["learner", "teacher"]
    _, out = get(
        client,
        "/v1/assignable-roles",
        world.token,
        actor="owner@classroom.example",
        workspace="classroom-demo",
        any_target="true",
    )
    assert set(out["roles"]) == {"learner", "teacher", "admin", "owner"}
    _, out = get(
        client,
        "/v1/assignable-roles",
        world.token,
        actor="admin@classroom.example",
        workspace="classroom-demo",
        target="admin@classroom.example",
    )
    assert out["roles"] == []  # never on oneself
    _, out = get(client, "/v1/assignable-roles", world.token, actor="ghost@example.com", workspace="classroom-demo")
    assert out["roles"] == [] and out["reason"] == "unknown_subject"


def test_who_can_paginates_and_never_truncates(client: FlaskClient, world: World) -> None:
    ws = world.ws["skills"]
    extra = [create_user(f"m{i}@skills.example") for i in range(7)]
    for u in extra:
        add_member(ws, u, "member")
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params = {"workspace": "skills-demo", "action": "view_and_start_learning_paths_and_materials", "limit": 3}
        if cursor:
            params["cursor"] = cursor
        status, out = get(client, "/v1/who-can", world.token, **params)
        assert status == 200, out
        pages += 1
        seen.extend(i["user_id"] for i in out["items"])
        if out["complete"]:
            assert out["next_cursor"] is None
            break
        assert out["next_cursor"] and len(out["items"]) == 3
        cursor = out["next_cursor"]
    members = 5 + 7
    assert len(seen) == len(set(seen)) == members and pages == 4
    statements: list[str] = []

    def seen_sql(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    sa_event.listen(db.engine, "before_cursor_execute", seen_sql)
    try:  # the emails come from the directory: no query (a decision listener's one thread never waits)
        _, out = get(client, "/v1/who-can", world.token, workspace="skills-demo", action="configure_hr_integrations")
    finally:
        sa_event.remove(db.engine, "before_cursor_execute", seen_sql)
    assert statements == []
    assert [i["email"] for i in out["items"]] == ["owner@skills.example"] and out["complete"] is True
    _, out = get(client, "/v1/who-can", world.token, workspace="simulations-demo", action="assign_roles")
    assert out["items"] == [] and out["complete"] is True  # issue 21: a rank-scoped action needs a target
    _, out = get(
        client, "/v1/who-can", world.token, workspace="simulations-demo", action="assign_roles", any_target="true"
    )
    assert sorted((i["email"], i["via"]) for i in out["items"]) == [
        ("admin@platform.example", "platform"),
        ("owner@simulations.example", "workspace"),
    ], out["items"]
    status, out = get(client, "/v1/who-can", world.token, workspace="skills-demo", action="x", cursor="!!garbage")
    assert status == 422


def test_who_can_stops_at_scan_budget_with_a_cursor(
    client: FlaskClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When nobody matches, a page ends after the scan budget: complete false, never a silent cut."""
    import app.api.decision as decision

    monkeypatch.setattr(decision, "WHO_CAN_MIN_SCAN", 2)
    monkeypatch.setattr(decision, "WHO_CAN_SCAN_FACTOR", 1)
    _, out = get(
        client, "/v1/who-can", world.token, workspace="skills-demo", action="configure_hr_integrations", limit=1
    )
    # members are examined by id: member, author, access_manager, curation_admin, owner
    assert out["items"] == [] and out["complete"] is False and out["examined"] == 2
    _, out = get(
        client,
        "/v1/who-can",
        world.token,
        workspace="skills-demo",
        action="configure_hr_integrations",
        limit=1,
        cursor=out["next_cursor"],
    )
    assert out["items"] == [] and out["complete"] is False
    _, out = get(
        client,
        "/v1/who-can",
        world.token,
        workspace="skills-demo",
        action="configure_hr_integrations",
        limit=1,
        cursor=out["next_cursor"],
    )
    assert [i["email"] for i in out["items"]] == ["owner@skills.example"] and out["complete"] is True


# -- observability -------------------------------------------------------------------------------
def test_decision_log_request_id_and_metrics(
    client: FlaskClient, world: World, app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    app.config["DECISION_LOG_SAMPLE"] = 1.0
    body = {"subject": world.uid("simulations.owner"), "workspace": "simulations-demo", "action": "view_dashboard"}
    with caplog.at_level(logging.INFO, logger="app.decisions"):
        resp = client.post(
            "/v1/check", json=body, headers={"Authorization": f"Bearer {world.token}", "X-Request-ID": "req-42"}
        )
        resp2 = client.post(
            "/v1/check", json={**body, "subject": 999999}, headers={"Authorization": f"Bearer {world.token}"}
        )
    assert resp.headers["X-Request-ID"] == "req-42"
    assert len(resp2.headers["X-Request-ID"]) == 32
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "app.decisions"]
    assert len(lines) == 2
    assert lines[0]["request_id"] == "req-42" and lines[0]["allowed"] is True and lines[0]["token"] == "svc"
    assert lines[1]["reason"] == "unknown_subject" and lines[1]["request_id"] == resp2.headers["X-Request-ID"]
    caplog.clear()
    app.config["DECISION_LOG_SAMPLE"] = 0.0
    with caplog.at_level(logging.INFO, logger="app.decisions"):
        client.post("/v1/check", json=body, headers={"Authorization": f"Bearer {world.token}"})
    assert not [r for r in caplog.records if r.name == "app.decisions"]
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.mimetype == "text/plain"
    text = metrics.get_data(as_text=True)
    assert 'authz_decisions_total{reason="granted",result="allow"} 2.0' in text
    assert 'authz_decisions_total{reason="unknown_subject",result="deny"} 1.0' in text
    assert "authz_decision_seconds_bucket" in text and "authz_http_request_seconds_count" in text
    assert f"authz_policy_revision {float(authz.engine.revision)}" in text


def test_unsafe_request_id_is_replaced(client: FlaskClient, app: Flask) -> None:
    resp = client.get("/healthz", headers={"X-Request-ID": "bad id <script>"})
    assert resp.headers["X-Request-ID"] != "bad id <script>" and len(resp.headers["X-Request-ID"]) == 32
