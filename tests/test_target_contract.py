"""Issue 21, reproductions 3 and 4: one target contract on every surface, and nobody grants
themselves anything — both decided by Casbin (model.conf), not by a Python ``if`` per surface.

* The mechanism (no Flask): every rank-scoped action of every pack, asked by every role that holds
  it, without a target is denied ``target_required``; with ``target: any`` (the explicit question)
  it is decided as before; with the subject as grantee it is denied in every scope.
* Reproduction 4: 120 target variants naming nobody (or the admin himself, or the owner) through
  AuthZEN evaluation and evaluations and ``/v1/check`` (and the batch) with a token of
  classroom-demo, all denied; the legitimate target allowed on each surface, so the test fails
  both ways.
* Reproduction 3: every grant path walked as a holder of the granting right, targeting themselves
  (403, nothing written, audit unchanged) and someone else (allowed), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.authz import ANY_TARGET, NEWCOMER, AccessRequest, PolicyEngine, ResourceFacts
from app.authz.packs import load_packs
from app.extensions import authz, db
from app.models import AuditEvent, GroupMember, Invitation, Membership, OutboxEmail
from app.policy import store as policy_store
from app.policy import tokens
from tests.factories import uid, web_client

ROOT = Path(__file__).resolve().parent.parent
PACKS = load_packs(ROOT / "policy", ROOT / "model.conf")


# -- the mechanism, on the real model.conf and policy/ --------------------------------------------------
def _rank_cells() -> Iterator[tuple[str, str, str]]:
    """(pack, role, action) for every allow rule at scope ``rank`` of the shipped packs."""
    for pack in PACKS.packs.values():
        for rule in pack.rules:
            if rule[0] == "p" and rule[4] == "rank" and rule[6] == "allow":
                yield pack.id, rule[2], rule[3]


RANK_CELLS = sorted(set(_rank_cells()))


def _engine_with(pack_id: str, role_key: str) -> tuple[PolicyEngine, str, str]:
    """An engine where user:1 holds role_key (in ws:w of the pack, or platform-wide) and user:2 is a
    member of the lowest role; returns (engine, domain, lowest role key)."""
    pack = PACKS.packs[pack_id]
    role = pack.role(role_key.split(":")[2])
    assert role is not None
    lowest = min(pack.workspace_roles, key=lambda r: r.rank)
    facts = [("g4", "ws:w", pack.key), ("g", "user:2", pack.role_key(lowest.id), "ws:w")]
    if role.platform:
        facts.append(("g", "user:1", role_key, "*"))
    else:
        facts.append(("g", "user:1", role_key, "ws:w"))
    return PolicyEngine(PACKS, facts), "ws:w", pack.role_key(lowest.id)


def test_there_are_rank_cells() -> None:
    assert len(RANK_CELLS) >= 20, RANK_CELLS


@pytest.mark.parametrize(("pack_id", "role_key", "action"), RANK_CELLS)
def test_rank_scoped_actions_need_a_target(pack_id: str, role_key: str, action: str) -> None:
    """No target → target_required; target any → allowed for some new role; a member target of
    the lowest role → allowed for some new role; the subject as grantee → self_change."""
    eng, dom, lowest = _engine_with(pack_id, role_key)
    pack = PACKS.packs[pack_id]
    new_roles = ["", *(pack.role_key(r.id) for r in pack.roles)]

    def ask(**facts: str) -> list[tuple[bool, str]]:
        out = []
        for new_role in new_roles:
            d = eng.check(
                AccessRequest("user:1", dom, ResourceFacts(type="member", new_role=new_role, **facts), action)
            )
            out.append((d.allowed, d.reason))
        return out

    assert ask() == [(False, "target_required")] * len(new_roles)
    assert eng.check(AccessRequest("user:1", dom, ResourceFacts(), action)).reason == "target_required"
    assert any(ok for ok, _ in ask(target=ANY_TARGET)), "the explicit question must be answerable"
    assert any(ok for ok, _ in ask(member="user:2")), "a real target of the lowest role"
    assert any(ok for ok, _ in ask(grantee=NEWCOMER)), "an invitee without an account"
    assert not any(ok for ok, _ in ask(grantee="user:1")), "nobody grants themselves anything"
    assert not any(ok for ok, _ in ask(member="user:1", target=ANY_TARGET))
    for nobody in ("user:unknown", "user:999999"):
        assert ask(member=nobody) == [(False, "unknown_member")] * len(new_roles)


@pytest.mark.parametrize("pack_id", sorted(PACKS.packs))
def test_no_grant_to_oneself_in_any_scope(pack_id: str) -> None:
    """Whatever the action and the scope facts, a request whose grantee is the subject is denied:
    one matcher term, asked here of every action of every pack with facts that satisfy each scope."""
    pack = PACKS.packs[pack_id]
    for role in pack.roles:
        facts = [("g4", "ws:w", pack.key), ("g2", "user:1", "group:g", "ws:w"), ("g2", "user:1", "team:t", "ws:w")]
        facts.append(("g", "user:1", pack.role_key(role.id), "*" if role.platform else "ws:w"))
        eng = PolicyEngine(PACKS, facts)
        for action in pack.actions:
            for grantee, target in itertools.product(("user:1",), ("", ANY_TARGET)):
                obj = ResourceFacts(
                    assignee="user:1", owner="user:1", group="group:g", team="team:t", grantee=grantee, target=target
                )
                d = eng.check(AccessRequest("user:1", "ws:w", obj, action.id))
                assert not d.allowed, (role.id, action.id, d)
                if d.reason not in ("no_role", "not_permitted", "feature_off", "denied_by_policy"):
                    assert d.reason == "self_change", (role.id, action.id, d)


def test_permissions_ask_explicitly() -> None:
    """The UI question is explicit: without ``any_target`` a rank-scoped action is target_required."""
    eng, dom, _ = _engine_with("classroom", "role:classroom:owner")
    plain = eng.permissions("user:1", dom)
    explicit = eng.permissions("user:1", dom, any_target=True)
    assert plain["change_user_roles"].reason == "target_required" and not plain["change_user_roles"].allowed
    assert explicit["change_user_roles"].allowed
    assert eng.assignable_roles("user:1", dom) == []
    assert eng.assignable_roles("user:1", dom, any_target=True) == ["learner", "teacher", "admin", "owner"]
    assert eng.assignable_roles("user:1", dom, "user:2") == ["learner", "teacher", "admin", "owner"]


# -- the HTTP surfaces (SQLite and PostgreSQL) -----------------------------------------------------------

def _token(workspace: str) -> str:
    _, secret = tokens.create_token(db.session(), "contract-pep", workspace=workspace)
    db.session.commit()
    return secret


def _post(client: FlaskClient, url: str, token: str, body: object) -> tuple[int, dict]:
    resp = client.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
    return resp.status_code, resp.get_json(force=True)


def _get(client: FlaskClient, url: str, token: str, **params: object) -> tuple[int, dict]:
    resp = client.get(url, query_string=params, headers={"Authorization": f"Bearer {token}"})
    return resp.status_code, resp.get_json(force=True)


ADMIN = "admin@classroom.example"
NEW_ROLES = ["learner", "teacher", "admin", "owner", "role:classroom:teacher"]


def _variants() -> list[tuple[object, str, bool]]:
    """(target, new role, with resource id): the 120 variants of reproduction 4."""
    targets: list[object] = [
        "*",
        "user:*",
        "",
        "role:classroom:learner",
        "role:classroom:owner",
        "learner",
        "999999",
        "user:999999",
        "ghost@nowhere.example",
        ADMIN,
        "owner@classroom.example",
        "owner2@classroom.example",
    ]
    return [(t, r, with_id) for t in targets for r in NEW_ROLES for with_id in (True, False)]


VARIANTS = _variants()


def _authzen_item(target: object, new_role: str, with_id: bool) -> dict:
    resource: dict = {"type": "member", "properties": {"member": target, "new_role": new_role}}
    resource["id"] = "1" if with_id else "contract-member"
    return {
        "subject": {"type": "user", "id": ADMIN},
        "action": {"name": "change_user_roles"},
        "resource": resource,
        "context": {"workspace": "classroom-demo"},
    }


def _check_item(target: object, new_role: str, with_id: bool) -> dict:
    resource: dict = {"type": "member", "attributes": {"member": target, "new_role": new_role}}
    if with_id:
        resource["id"] = "1"
    return {"subject": ADMIN, "workspace": "classroom-demo", "action": "change_user_roles", "resource": resource}


def test_repro4_every_variant_is_denied_on_every_surface(demo: Flask) -> None:
    """Reproduction 4: 120 variants through AuthZEN evaluation, evaluations and /v1/check (+ batch)."""
    assert len(VARIANTS) == 120
    token = _token("classroom-demo")
    client = demo.test_client()
    allowed: list[str] = []
    for target, new_role, with_id in VARIANTS:
        status, out = _post(client, "/access/v1/evaluation", token, _authzen_item(target, new_role, with_id))
        assert status == 200, out
        if out["decision"] is not False:
            allowed.append(f"evaluation {target!r} {new_role} {with_id}")
        status, out = _post(client, "/v1/check", token, _check_item(target, new_role, with_id))
        assert status == 200, out
        if out["allowed"] is not False:
            allowed.append(f"check {target!r} {new_role} {with_id}")
    items = [_authzen_item(*v) for v in VARIANTS]
    status, out = _post(client, "/access/v1/evaluations", token, {"evaluations": items})
    assert status == 200 and len(out["evaluations"]) == 120, out
    allowed += [f"evaluations #{i}" for i, e in enumerate(out["evaluations"]) if e["decision"] is not False]
    status, out = _post(client, "/v1/check/batch", token, {"checks": [_check_item(*v) for v in VARIANTS]})
    assert status == 200 and len(out["results"]) == 120, out
    allowed += [f"batch #{i}" for i, r in enumerate(out["results"]) if r["allowed"] is not False]
    assert allowed == []


def test_the_legitimate_target_is_allowed_on_every_surface(demo: Flask) -> None:
    """admin → learner@classroom as teacher: allowed on every surface (the test above can fail)."""
    token = _token("classroom-demo")
    client = demo.test_client()
    learner = "learner@classroom.example"
    status, out = _post(client, "/access/v1/evaluation", token, _authzen_item(learner, "teacher", True))
    assert (status, out["decision"]) == (200, True), out
    # resource.id alone names the member (a member resource)
    by_id = _authzen_item(learner, "teacher", True)
    del by_id["resource"]["properties"]["member"]
    by_id["resource"]["id"] = str(uid(learner))
    status, out = _post(client, "/access/v1/evaluation", token, by_id)
    assert (status, out["decision"]) == (200, True), out
    status, out = _post(
        client, "/access/v1/evaluations", token, {"evaluations": [_authzen_item(learner, "teacher", True), by_id]}
    )
    assert [e["decision"] for e in out["evaluations"]] == [True, True], out
    status, out = _post(client, "/v1/check", token, _check_item(learner, "teacher", True))
    assert (status, out["allowed"]) == (200, True), out
    status, out = _post(client, "/v1/check/batch", token, {"checks": [_check_item(learner, "teacher", False)]})
    assert out["results"][0]["allowed"] is True, out
    # AuthZEN searches: the action search on the member offers change_user_roles, the subject search
    # finds the admin (and never by omission: without a target, nobody may change roles)
    search = {k: v for k, v in _authzen_item(learner, "teacher", True).items() if k != "action"}
    status, out = _post(client, "/access/v1/search/action", token, search)
    assert status == 200 and {"name": "change_user_roles"} in out["results"], out
    subject_search = {**_authzen_item(learner, "teacher", True), "subject": {"type": "user"}}
    status, out = _post(client, "/access/v1/search/subject", token, subject_search)
    assert status == 200 and {"type": "user", "id": ADMIN} in out["results"], out
    no_target = {**subject_search, "resource": {"type": "org", "id": "x", "properties": {"new_role": "teacher"}}}
    status, out = _post(client, "/access/v1/search/subject", token, no_target)
    assert status == 200 and out["results"] == [], out


def test_check_without_a_target_is_denied(demo: Flask) -> None:
    """A PEP that forgets the target gets a denial, not an allow; asking explicitly works."""
    token = _token("classroom-demo")
    client = demo.test_client()
    base = {"subject": ADMIN, "workspace": "classroom-demo", "action": "change_user_roles"}
    for body in (base, {**base, "resource": {"type": "member", "attributes": {"new_role": "teacher"}}}):
        status, out = _post(client, "/v1/check", token, body)
        assert (status, out["allowed"], out["reason"]) == (200, False, "target_required"), out
        status, out = _post(client, "/v1/check/batch", token, {"checks": [body]})
        assert (out["results"][0]["allowed"], out["results"][0]["reason"]) == (False, "target_required")
    anyone = {**base, "resource": {"type": "member", "attributes": {"target": "any", "new_role": "teacher"}}}
    status, out = _post(client, "/v1/check", token, anyone)
    assert (status, out["allowed"]) == (200, True), out
    status, out = _post(client, "/v1/check", token, {**base, "resource": {"attributes": {"target": "all"}}})
    assert status == 422, out
    status, out = _get(client, "/v1/permissions", token, subject=ADMIN, workspace="classroom-demo")
    assert out["decisions"]["change_user_roles"] == {**out["decisions"]["change_user_roles"], "allowed": False}
    assert out["decisions"]["change_user_roles"]["reason"] == "target_required"
    status, out = _get(client, "/v1/permissions", token, subject=ADMIN, workspace="classroom-demo", any_target="true")
    assert "change_user_roles" in out["allowed"], out
    status, out = _get(client, "/v1/assignable-roles", token, actor=ADMIN, workspace="classroom-demo")
    assert out["roles"] == [], out
    status, out = _get(client, "/v1/assignable-roles", token, actor=ADMIN, workspace="classroom-demo", any_target=1)
    assert out["roles"] == ["learner", "teacher"], out
    status, out = _get(
        client,
        "/v1/assignable-roles",
        token,
        actor=ADMIN,
        workspace="classroom-demo",
        target="learner@classroom.example",
    )
    assert out["roles"] == ["learner", "teacher"], out


def test_decision_api_refuses_self_grants(demo: Flask) -> None:
    """The grantee fact on the decision API: inviting oneself is denied (self_change), another
    address allowed; a grantee naming nobody is unknown_member."""
    token = _token("academy-demo")
    client = demo.test_client()
    op = "operator@platform.example"

    def invite(grantee: object) -> dict:
        attrs = {"grantee": grantee, "new_role": "company_admin"}
        body = {"subject": op, "workspace": "academy-demo", "action": "invite_users", "resource": {"attributes": attrs}}
        return _post(client, "/v1/check", token, body)[1]

    assert (invite(op)["allowed"], invite(op)["reason"]) == (False, "self_change")
    assert invite("newcomer")["allowed"] is True
    assert invite("learner@classroom.example")["allowed"] is True
    assert invite("*")["reason"] == "unknown_member"
    assert invite("nobody@nowhere.example")["reason"] == "unknown_member"


# -- every grant path, as a holder of the granting right, on oneself and on someone else -------------
def _state() -> tuple[int, ...]:
    db.session.expire_all()
    return (
        policy_store.current_revision(db.session()),
        db.session.query(Membership).count(),
        db.session.query(Invitation).count(),
        db.session.query(GroupMember).count(),
        db.session.query(OutboxEmail).count(),
        db.session.query(AuditEvent).count(),
    )


def _grant_paths() -> list[tuple[str, str, str, dict, str, dict, int]]:
    """(name, actor, method+url, body on oneself, placeholder, body on someone else, success status).

    ``{self}`` / ``{other}`` in a URL or body become user ids; ``@self`` the actor's email."""
    return [
        ("repro 3: operator invites himself into academy as company_admin", "operator@platform.example",
         "POST /api/workspaces/academy-demo/invitations", {"emails": "@self", "role": "company_admin"}, "",
         {"emails": "boss@example.org", "role": "company_admin"}, 201),
        ("repro 3: account manager invites himself into skills as owner", "account_manager@platform.example",
         "POST /api/workspaces/skills-demo/invitations", {"emails": "@self", "role": "owner"}, "",
         {"emails": "newowner@example.org", "role": "owner"}, 201),
        ("simulations admin invites himself as owner", "admin@platform.example",
         "POST /api/workspaces/simulations-demo/invitations", {"emails": "@self", "role": "owner"}, "",
         {"emails": "learner@classroom.example", "role": "owner"}, 201),
        ("owner invites himself into another workspace he owns nothing of", "owner@classroom.example",
         "POST /api/workspaces/classroom-demo/invitations", {"emails": "@self", "role": "owner"}, "",
         {"emails": "member@skills.example", "role": "owner"}, 201),
        ("owner changes his own role", "owner@classroom.example",
         "PATCH /api/workspaces/classroom-demo/members/{self}", {"role": "admin"}, "",
         {"role": "admin"}, 200),
        ("owner transfers ownership to himself", "owner@classroom.example",
         "POST /api/workspaces/classroom-demo/ownership", {"user_id": "{self}"}, "",
         {"user_id": "{other}"}, 200),
        ("operator grants himself a platform role", "operator@platform.example",
         "POST /api/platform/academy/roles", {"user_id": "{self}", "role": "operator"}, "",
         {"user_id": "{other}", "role": "operator"}, 201),
        ("admin makes himself a group's teacher", "admin@classroom.example",
         "POST /api/workspaces/classroom-demo/groups/evening/teachers", {"user_ids": ["{self}"]}, "",
         {"user_ids": ["{other}"]}, 200),
        ("admin puts himself into a group as learner", "admin@classroom.example",
         "POST /api/workspaces/classroom-demo/groups/evening/learners", {"user_ids": ["{self}"]}, "",
         {"user_ids": ["{learner}"]}, 200),
        ("platform admin creates a workspace with himself as owner", "admin@platform.example",
         "POST /api/workspaces", {"slug": "mine", "name": "Mine", "pack": "simulations", "owner_id": "{self}"}, "",
         {"slug": "theirs", "name": "Theirs", "pack": "simulations", "owner_id": "{other}"}, 201),
        ("skills owner makes himself a team's manager", "owner@skills.example",
         "POST /api/workspaces/skills-demo/teams/sales/managers", {"user_ids": ["{self}"]}, "",
         {"user_ids": ["{other}"]}, 200),
    ]  # fmt: skip


OTHER = {  # the someone else of each path: a member the actor may act on
    "classroom-demo": "teacher@classroom.example",
    "academy": "company_admin@academy.example",
    "skills-demo": "author@skills.example",
}


def _fill(value: object, me: int, email: str, other: int, learner: int) -> object:
    if isinstance(value, str):
        if value == "@self":
            return email
        if value in ("{self}", "{other}", "{learner}"):
            return {"{self}": me, "{other}": other, "{learner}": learner}[value]
        return value.replace("{self}", str(me)).replace("{other}", str(other))
    if isinstance(value, list):
        return [_fill(v, me, email, other, learner) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, me, email, other, learner) for k, v in value.items()}
    return value


@pytest.mark.parametrize("path", _grant_paths(), ids=[p[0] for p in _grant_paths()])
def test_nobody_grants_themselves_anything(demo: Flask, path: tuple) -> None:
    """Reproduction 3 and every other grant path: on oneself 403 with nothing written and the
    audit unchanged; on someone else the same request succeeds."""
    name, actor, call, mine, _, theirs, ok = path
    method, url = call.split(" ", 1)
    me = uid(actor)
    other_email = next((e for k, e in OTHER.items() if k in url), "teacher@classroom.example")
    other = uid(other_email)
    learner = uid("learner@classroom.example")  # in the morning group, not in the evening one
    wc = web_client(demo, actor)
    before = _state()
    resp = wc._send(method, _fill(url, me, actor, other, learner), _fill(mine, me, actor, other, learner))
    assert resp.status_code == 403, (name, resp.get_json())
    body = resp.get_json()
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert body["reason"] == "self_change", body
    assert _state() == before, name
    their_url = url.replace("{self}", "{other}")
    resp = wc._send(method, _fill(their_url, me, actor, other, learner), _fill(theirs, me, actor, other, learner))
    assert resp.status_code == ok, (name, resp.get_json())
    assert _state() != before


def test_repro3_no_access_after_a_refused_self_invitation(demo: Flask) -> None:
    """The account manager stays outside skills-demo's teams (skills.yaml: no personal data)."""
    wc = web_client(demo, "account_manager@platform.example")
    resp = wc.post("/api/workspaces/skills-demo/invitations", json={"emails": "account_manager@platform.example"})
    assert resp.status_code == 403
    wc = web_client(demo, "account_manager@platform.example")
    assert wc.get("/api/workspaces/skills-demo/teams/sales").status_code == 403
    assert authz.engine.workspace_role(f"user:{uid('account_manager@platform.example')}", "ws:skills-demo") == ""


def test_a_sign_up_link_lapses_with_its_inviters_right(demo: Flask) -> None:
    """Reproduction 3's tail: what a pending invitation grants at sign-up is checked again then, as
    a grant of its inviter now; an operator whose platform role was revoked grants nothing more."""
    from tests.test_invitations import token_for

    op = web_client(demo, "operator@platform.example")
    resp = op.post(
        "/api/workspaces/academy-demo/invitations", json={"emails": "later@example.org", "role": "company_admin"}
    )
    assert resp.status_code == 201, resp.get_json()
    kept = op.post("/api/workspaces/academy-demo/invitations", json={"emails": "kept@example.org", "role": "learner"})
    assert kept.status_code == 201
    token, kept_token = token_for(demo, "later@example.org"), token_for(demo, "kept@example.org")
    other = uid("company_admin@academy.example")
    assert op.post("/api/platform/academy/roles", json={"user_id": other, "role": "operator"}).status_code == 201
    op2 = web_client(demo, "company_admin@academy.example")
    me = uid("operator@platform.example")
    assert op2.delete(f"/api/platform/academy/roles/operator/{me}").status_code == 204
    before = _state()
    resp = web_client(demo).post("/api/auth/signup", json={"token": token, "password": "a-new-password"})
    assert resp.status_code == 410, resp.get_json()
    assert _state() == before
    # the operator was not a member: without the platform role he may invite nobody at all now
    resp = web_client(demo).post("/api/auth/signup", json={"token": kept_token, "password": "a-new-password"})
    assert resp.status_code == 410
    # an invitation its inviter may still grant goes through
    ca = web_client(demo, "company_admin@academy.example")
    assert (
        ca.post(
            "/api/workspaces/academy-demo/invitations", json={"emails": "ok@example.org", "role": "trainer"}
        ).status_code
        == 201
    )
    resp = web_client(demo).post(
        "/api/auth/signup", json={"token": token_for(demo, "ok@example.org"), "password": "a-new-password"}
    )
    assert resp.status_code == 201, resp.get_json()


def test_pages_ask_explicitly_and_show_the_buttons(demo: Flask) -> None:
    """Pages ask "anyone at all?" (any_target) for their buttons: the owner still sees Invite and the
    role pickers, a learner does not; the list's role picker never offers the actor himself."""
    owner = web_client(demo, "owner@classroom.example")
    page = owner.get("/w/classroom-demo/members").get_data(as_text=True)
    assert 'id="open-invite"' in page
    body = owner.get("/api/workspaces/classroom-demo/members").get_json()
    assert body["assignable_roles"] == ["learner", "teacher", "admin", "owner"], body
    rows = {m["email"]: m["permissions"] for m in body["items"]}
    assert rows["teacher@classroom.example"]["roles"] and rows["teacher@classroom.example"]["remove"]
    assert rows["owner@classroom.example"] == {**rows["owner@classroom.example"], "roles": [], "remove": False}
    learner = web_client(demo, "learner@classroom.example")
    assert 'id="open-invite"' not in learner.get("/w/classroom-demo/members").get_data(as_text=True)
    picker = web_client(demo, "admin@classroom.example").get(
        "/api/workspaces/classroom-demo/groups/evening/teachers/candidates?q="
    )
    assert picker.status_code == 200, picker.get_json()
    assert "admin@classroom.example" not in {c["email"] for c in picker.get_json()["items"]}
