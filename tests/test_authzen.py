"""AuthZEN 1.0 endpoints in-process (both backends): the Todo vectors, workspaces, subjects, errors, batches,
searches and pagination, metadata; external ids and token default workspaces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import ConflictError, NotFoundError, ValidationError
from app.extensions import db
from app.identity import users
from app.models import ServiceToken, User, Workspace
from app.policy import tokens
from seed.authzen import TODO_USERS, load_fixture

# A copy of ../shared/authzen/todo-decisions-1_0.json (the AuthZEN WG's Todo interop decisions).
VECTORS = Path(__file__).resolve().parent / "data" / "authzen-todo-decisions-1_0.json"
RICK, MORTY, SUMMER, BETH, JERRY = (u[2] for u in TODO_USERS)
TODO = "authzen-todo"
EVAL = "/access/v1/evaluation"
EVALS = "/access/v1/evaluations"


def vectors() -> dict[str, Any]:
    """The Todo interop decisions: 40 evaluations and 3 batches, expected decisions included."""
    data = dict(json.loads(VECTORS.read_text(encoding="utf-8")))
    assert len(data["evaluation"]) == 40 and len(data["evaluations"]) == 3
    return data


@pytest.fixture
def todo(app: Flask) -> str:
    """The authzen-todo fixture and a token whose default workspace is authzen-todo."""
    load_fixture("authzen-todo")
    _, secret = tokens.create_token(db.session(), "pep", workspace=TODO)
    db.session.commit()
    return secret


@pytest.fixture
def bare(app: Flask, todo: str) -> str:
    """A token with no default workspace."""
    _, secret = tokens.create_token(db.session(), "bare", all_workspaces=True)
    db.session.commit()
    return secret


def call(client: FlaskClient, url: str, token: str | None, body: Any, **kw: Any) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    headers.update(kw.pop("headers", {}))
    resp = client.post(url, json=body, headers=headers, **kw)
    return resp.status_code, resp.get_json(silent=True)


def ev(subject: str, action: str, rtype: str = "todo", rid: str = "t1", **props: Any) -> dict[str, Any]:
    res: dict[str, Any] = {"type": rtype, "id": rid}
    if props:
        res["properties"] = props
    return {"subject": {"type": "user", "id": subject}, "action": {"name": action}, "resource": res}


# -- the interop vectors ---------------------------------------------------------------------------
def test_todo_interop_vectors(client: FlaskClient, todo: str) -> None:
    data = vectors()
    for case in data["evaluation"]:
        status, out = call(client, EVAL, todo, case["request"])
        assert status == 200, out
        assert out["decision"] is case["expected"], (case["request"], out)
    for case in data["evaluations"]:
        status, out = call(client, EVALS, todo, case["request"])
        assert status == 200, out
        # compared whole, as the working group's Todo runner compares them (issue 24): no context by default
        assert out["evaluations"] == case["expected"], (case["request"], out)
        status, out = call(client, EVALS, todo, {**case["request"], "options": {"reasons": True}})
        assert [d["decision"] for d in out["evaluations"]] == [e["decision"] for e in case["expected"]]
        assert all(d["context"]["reason"] in ("granted", "not_owner", "not_permitted") for d in out["evaluations"])


def test_reasons_are_in_the_context(client: FlaskClient, todo: str) -> None:
    _, out = call(client, EVAL, todo, ev(MORTY, "can_update_todo", ownerID="rick@the-citadel.com"))
    assert out["decision"] is False and out["context"]["reason"] == "not_owner"
    assert isinstance(out["context"]["revision"], int)
    _, out = call(client, EVAL, todo, ev(BETH, "can_create_todo"))
    assert out == {"decision": False, "context": {"reason": "not_permitted", "revision": out["context"]["revision"]}}


def test_reasons_on_request(client: FlaskClient, todo: str) -> None:
    """Issue 24: a batch answers bare decisions unless options.reasons asks; a single evaluation carries its
    reason unless options.reasons is false; anything but a boolean is a 400."""
    body = {
        "subject": {"type": "user", "id": MORTY},
        "action": {"name": "can_update_todo"},
        "evaluations": [
            {"resource": {"type": "todo", "id": "t1", "properties": {"ownerID": "morty@the-citadel.com"}}},
            {"resource": {"type": "todo", "id": "t2", "properties": {"ownerID": "rick@the-citadel.com"}}},
        ],
    }
    _, out = call(client, EVALS, todo, body)
    assert out == {"evaluations": [{"decision": True}, {"decision": False}]}
    _, out = call(client, EVALS, todo, {**body, "options": {"reasons": True, "evaluations_semantic": "execute_all"}})
    got = [(d["decision"], d["context"]["reason"]) for d in out["evaluations"]]
    assert got == [(True, "granted"), (False, "not_owner")]
    single = ev(MORTY, "can_update_todo", ownerID="rick@the-citadel.com")
    _, out = call(client, EVAL, todo, {**single, "options": {"reasons": False}})
    assert out == {"decision": False}
    _, out = call(client, EVALS, todo, {**single, "options": {"reasons": False}})  # no items: one evaluation
    assert out == {"decision": False}
    for url, bad in ((EVAL, {**single, "options": {"reasons": "yes"}}), (EVALS, {**body, "options": {"reasons": 1}})):
        status, out = call(client, url, todo, bad)
        assert status == 400 and "options.reasons" in out["detail"], out


def test_subject_may_be_a_user_id_an_email_or_an_external_id(client: FlaskClient, todo: str) -> None:
    morty = users.by_email(db.session(), "morty@the-citadel.com")
    assert morty is not None and morty.external_id == MORTY
    for subject in (MORTY, "morty@the-citadel.com", "Morty@The-Citadel.com", str(morty.id), f"user:{morty.id}"):
        _, out = call(client, EVAL, todo, ev(subject, "can_update_todo", ownerID="morty@the-citadel.com"))
        assert out["decision"] is True, subject
    # the owner property resolves the same ways
    for owner in (MORTY, str(morty.id), "MORTY@the-citadel.com"):
        _, out = call(client, EVAL, todo, ev(MORTY, "can_delete_todo", ownerID=owner))
        assert out["decision"] is True, owner
    for subject in ("nobody", "nobody@example.com", "999999", MORTY.lower()):
        _, out = call(client, EVAL, todo, ev(subject, "can_read_todos"))
        assert out["decision"] is False and out["context"]["reason"] == "unknown_subject", subject
    # only subjects of type "user" are users
    body = ev(RICK, "can_read_todos")
    body["subject"]["type"] = "service"
    _, out = call(client, EVAL, todo, body)
    assert out["decision"] is False and out["context"]["reason"] == "unknown_subject"


def test_the_decision_api_resolves_external_ids_too(client: FlaskClient, todo: str) -> None:
    _, secret = tokens.create_token(db.session(), "svc", all_workspaces=True)
    db.session.commit()
    resp = client.post(
        "/v1/check",
        json={"subject": RICK, "workspace": TODO, "action": "can_delete_todo"},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert resp.get_json()["reason"] == "granted"


def test_workspace_comes_from_context_then_resource_then_token(client: FlaskClient, todo: str, bare: str) -> None:
    body = ev(RICK, "can_delete_todo")
    status, out = call(client, EVAL, bare, body)
    assert status == 400 and out["status"] == 400 and "workspace" in out["detail"]
    assert call(client, EVAL, bare, {**body, "context": {"workspace": TODO}})[1]["decision"] is True
    assert call(client, EVAL, bare, ev(RICK, "can_delete_todo", workspace=TODO))[1]["decision"] is True
    assert call(client, EVAL, todo, body)[1]["decision"] is True  # the token's default
    # context wins over the resource, which wins over the token
    _, out = call(client, EVAL, bare, {**ev(RICK, "can_delete_todo", workspace=TODO), "context": {"workspace": "nope"}})
    assert out["decision"] is False and out["context"]["reason"] == "unknown_workspace"
    _, out = call(client, EVAL, bare, ev(RICK, "can_delete_todo", workspace="classroom-demo"))
    assert out["decision"] is False
    # the todo token is bound to its workspace: anywhere else is a 403 problem, known workspace or not
    nope = {**ev(RICK, "can_delete_todo", workspace=TODO), "context": {"workspace": "nope"}}
    status, out = call(client, EVAL, todo, nope)
    assert status == 403 and out["status"] == 403
    assert call(client, EVAL, todo, ev(RICK, "can_delete_todo", workspace="classroom-demo"))[0] == 403
    for bad in (5, "", ["x"], {"a": 1}):
        assert call(client, EVAL, todo, {**body, "context": {"workspace": bad}})[0] == 400, bad


def test_unmapped_properties_never_reach_the_policy(client: FlaskClient, todo: str) -> None:
    # "owner" is not a property name the todo pack declares (it declares ownerID)
    _, out = call(client, EVAL, todo, ev(MORTY, "can_update_todo", owner="morty@the-citadel.com"))
    assert out["decision"] is False and out["context"]["reason"] == "not_owner"
    for weird in (None, 5, True, ["morty@the-citadel.com"], {"id": MORTY}, "*", "a,b", "user:*"):
        _, out = call(client, EVAL, todo, ev(MORTY, "can_update_todo", ownerID=weird))
        assert out["decision"] is False, weird


def test_bad_values_are_denials_not_errors(client: FlaskClient, todo: str) -> None:
    for body in (
        ev(RICK, "Can Delete"),
        ev(RICK, "can_delete_todo", rid="a b"),
        ev(RICK, "can_delete_todo", rtype="todo,x"),
        ev(RICK, "can_delete_todo", rid="x" * 300),
        ev("user:\u0663", "can_read_todos"),
        ev("a\x00b", "can_read_todos"),
    ):
        status, out = call(client, EVAL, todo, body)
        assert status == 200 and out["decision"] is False, body


# -- transport and errors ---------------------------------------------------------------------------
def test_malformed_requests_are_400(client: FlaskClient, todo: str) -> None:
    good = ev(RICK, "can_read_todos")
    bodies: list[Any] = [
        {k: v for k, v in good.items() if k != "subject"},
        {k: v for k, v in good.items() if k != "action"},
        {k: v for k, v in good.items() if k != "resource"},
        {**good, "subject": {"id": RICK}},
        {**good, "subject": {"type": "user"}},
        {**good, "subject": {"type": "user", "id": ""}},
        {**good, "subject": "alice"},
        {**good, "action": {}},
        {**good, "action": {"name": 123}},
        {**good, "resource": {"id": "t1"}},
        {**good, "resource": {"type": "todo"}},
        {**good, "resource": {"type": "todo", "id": 7}},
        {**good, "resource": {"type": "todo", "id": "t1", "properties": []}},
        {**good, "context": "now"},
        [good],
        "x",
        None,
        ev("\ud800", "can_read_todos"),  # a lone surrogate is not I-JSON
    ]
    for body in bodies:
        status, out = call(client, EVAL, todo, body)
        assert status == 400 and out["status"] == 400, body
    headers = {"Authorization": f"Bearer {todo}"}
    for data, ctype in (("{", "application/json"), ("", "application/json"), (json.dumps(good), "text/plain")):
        resp = client.post(EVAL, data=data, content_type=ctype, headers=headers)
        assert resp.status_code == 400 and resp.mimetype == "application/problem+json", (data, ctype)
    resp = client.post(EVAL, data="[" * 5000 + "]" * 5000, content_type="application/json", headers=headers)
    assert resp.status_code == 400


def test_unknown_fields_are_ignored_and_request_ids_echoed(client: FlaskClient, todo: str) -> None:
    body = {**ev(RICK, "can_read_todos"), "foo": "bar", "futureField": {"nested": True}}
    body["subject"]["properties"] = {"department": "Sales"}
    body["action"]["properties"] = {"method": "GET"}
    resp = client.post(EVAL, json=body, headers={"Authorization": f"Bearer {todo}", "X-Request-ID": "req-az-1"})
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    assert resp.get_json()["decision"] is True and resp.headers["X-Request-ID"] == "req-az-1"
    resp = client.post(EVAL, json={}, headers={"Authorization": f"Bearer {todo}", "X-Request-ID": "req-az-2"})
    assert resp.status_code == 400 and resp.headers["X-Request-ID"] == "req-az-2"


def test_a_service_token_is_required(client: FlaskClient, todo: str) -> None:
    body = ev(RICK, "can_read_todos")
    for token in (None, "nope", "lat_" + "x" * 43):
        resp = client.post(EVAL, json=body, headers={"Authorization": f"Bearer {token}"} if token else {})
        assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")
    tokens.revoke_token(db.session(), "pep")
    db.session.commit()
    assert call(client, EVAL, todo, body)[0] == 401


# -- evaluations ---------------------------------------------------------------------------------------
def test_defaults_merge_whole_entities(client: FlaskClient, todo: str) -> None:
    body = {
        "subject": {"type": "user", "id": MORTY},
        "action": {"name": "can_update_todo"},
        "resource": {"type": "todo", "id": "t1", "properties": {"ownerID": "morty@the-citadel.com"}},
        "evaluations": [
            {},
            {"resource": {"type": "todo", "id": "t2"}},  # replaces the default wholesale: no owner
            {"subject": {"type": "user", "id": RICK}, "resource": {"type": "todo", "id": "t2"}},
            {"action": {"name": "can_read_user"}, "context": {"workspace": TODO}},
        ],
    }
    status, out = call(client, EVALS, todo, body)
    assert status == 200 and "decision" not in out
    assert [d["decision"] for d in out["evaluations"]] == [True, False, True, True]


def test_one_unreadable_evaluation_is_a_denial(client: FlaskClient, todo: str, bare: str) -> None:
    body = {
        "subject": {"type": "user", "id": RICK},
        "action": {"name": "can_read_todos"},
        "options": {"evaluations_semantic": "execute_all"},
        "evaluations": [
            {"resource": {"type": "todo", "id": "t1"}},
            {},
            {"resource": {"type": "todo"}},
            "nope",
            {"resource": {"type": "todo", "id": "t1", "properties": {"workspace": 5}}},
        ],
    }
    status, out = call(client, EVALS, todo, body)
    assert status == 200 and len(out["evaluations"]) == 5
    assert [d["decision"] for d in out["evaluations"]] == [True, False, False, False, False]
    for d in out["evaluations"][1:]:  # the error stays in a minimal answer; the reason comes when asked
        assert d["context"]["error"]["status"] == 400 and "reason" not in d["context"]
    _, out = call(client, EVALS, todo, {**body, "options": {"reasons": True}})
    for d in out["evaluations"][1:]:
        assert d["context"]["error"]["status"] == 400 and d["context"]["reason"] == "invalid_request"
    # without a workspace anywhere, each item is a denial; the request itself is fine
    status, out = call(client, EVALS, bare, {**body, "evaluations": body["evaluations"][:1]})
    assert status == 200 and out["evaluations"][0]["decision"] is False
    assert "workspace" in out["evaluations"][0]["context"]["error"]["message"]


def test_evaluation_semantics(client: FlaskClient, todo: str) -> None:
    items = [{"action": {"name": a}} for a in ("can_read_todos", "can_create_todo", "can_read_user")]
    base = {"subject": {"type": "user", "id": BETH}, "resource": {"type": "todo", "id": "t1"}, "evaluations": items}
    _, out = call(client, EVALS, todo, base)
    assert [d["decision"] for d in out["evaluations"]] == [True, False, True]
    _, out = call(client, EVALS, todo, {**base, "options": {"evaluations_semantic": "execute_all"}})
    assert [d["decision"] for d in out["evaluations"]] == [True, False, True]
    _, out = call(client, EVALS, todo, {**base, "options": {"evaluations_semantic": "deny_on_first_deny"}})
    assert [d["decision"] for d in out["evaluations"]] == [True, False]
    _, out = call(client, EVALS, todo, {**base, "options": {"evaluations_semantic": "permit_on_first_permit"}})
    assert [d["decision"] for d in out["evaluations"]] == [True]
    for bad in ({"evaluations_semantic": "all"}, {"evaluations_semantic": 1}, "x"):
        assert call(client, EVALS, todo, {**base, "options": bad})[0] == 400, bad


def test_evaluations_without_items_is_one_evaluation(client: FlaskClient, todo: str, app: Flask) -> None:
    single = ev(RICK, "can_read_todos")
    for body in (single, {**single, "evaluations": []}):
        status, out = call(client, EVALS, todo, body)
        assert status == 200 and out["decision"] is True and "evaluations" not in out
    assert call(client, EVALS, todo, {"evaluations": []})[0] == 400
    assert call(client, EVALS, todo, {**single, "evaluations": {"a": 1}})[0] == 400
    assert call(client, EVALS, todo, {**single, "subject": "alice", "evaluations": [{}]})[0] == 400
    app.config["BATCH_MAX_CHECKS"] = 2
    assert call(client, EVALS, todo, {**single, "evaluations": [{}, {}, {}]})[0] == 400


# -- searches --------------------------------------------------------------------------------------------
SUBJECTS = "/access/v1/search/subject"
RESOURCES = "/access/v1/search/resource"
ACTIONS = "/access/v1/search/action"


def test_subject_search_and_pagination(client: FlaskClient, todo: str) -> None:
    body = {
        "subject": {"type": "user"},
        "action": {"name": "can_update_todo"},
        "resource": {"type": "todo", "id": "t1", "properties": {"ownerID": "summer@the-smiths.com"}},
    }
    status, out = call(client, SUBJECTS, todo, body)
    assert status == 200 and sorted(r["id"] for r in out["results"]) == sorted([RICK, SUMMER])
    assert out["page"] == {"next_token": "", "count": 2}
    assert all(r["type"] == "user" for r in out["results"])
    # subject.id is ignored
    with_id = {**body, "subject": {"type": "user", "id": BETH}}
    assert call(client, SUBJECTS, todo, with_id)[1]["results"] == out["results"]
    # one at a time: every page a token until the last
    everyone = {**body, "action": {"name": "can_read_user"}, "page": {"limit": 2}}
    seen: list[str] = []
    token = None
    for _ in range(10):
        page = {"limit": 2, **({"token": token} if token else {})}
        status, out = call(client, SUBJECTS, todo, {**everyone, "page": page})
        assert status == 200 and len(out["results"]) <= 2
        seen += [r["id"] for r in out["results"]]
        token = out["page"]["next_token"]
        if not token:
            break
    assert sorted(seen) == sorted(u[2] for u in TODO_USERS)
    # a changed request with a token, or a token we never issued, is a 400
    _, first = call(client, SUBJECTS, todo, everyone)
    next_token = first["page"]["next_token"]
    assert next_token
    changed = {**everyone, "action": {"name": "can_read_todos"}, "page": {"limit": 2, "token": next_token}}
    assert call(client, SUBJECTS, todo, changed)[0] == 400
    for bad in ("garbage!", "djE6MTox", 5):
        assert call(client, SUBJECTS, todo, {**everyone, "page": {"limit": 2, "token": bad}})[0] == 400, bad
    for bad_limit in (-1, "2", True, 1.5):
        assert call(client, SUBJECTS, todo, {**everyone, "page": {"limit": bad_limit}})[0] == 400, bad_limit
    # other subject types find nobody
    assert call(client, SUBJECTS, todo, {**body, "subject": {"type": "spaceship"}})[1]["results"] == []


def test_search_input_entities_must_be_complete(client: FlaskClient, todo: str) -> None:
    sub = {"type": "user", "id": RICK}
    res = {"type": "todo", "id": "t1"}
    act = {"name": "can_read_todos"}
    assert call(client, SUBJECTS, todo, {"subject": {"type": "user"}, "resource": res})[0] == 400
    anyone = {"type": "user"}
    assert call(client, SUBJECTS, todo, {"subject": anyone, "action": act, "resource": {"type": "todo"}})[0] == 400
    assert call(client, RESOURCES, todo, {"action": act, "resource": {"type": "todo"}})[0] == 400
    assert call(client, RESOURCES, todo, {"subject": anyone, "action": act, "resource": {"type": "t"}})[0] == 400
    assert call(client, ACTIONS, todo, {"subject": sub})[0] == 400
    assert call(client, ACTIONS, todo, {"subject": {"type": "user"}, "resource": res})[0] == 400
    assert call(client, ACTIONS, todo, {"subject": sub, "resource": {"type": "todo"}})[0] == 400


def test_action_search(client: FlaskClient, todo: str) -> None:
    body = {"subject": {"type": "user", "id": MORTY}, "resource": {"type": "todo", "id": "t1"}}
    status, out = call(client, ACTIONS, todo, body)
    assert status == 200
    assert [r["name"] for r in out["results"]] == ["can_read_user", "can_read_todos", "can_create_todo"]
    owned = {**body, "resource": {**body["resource"], "properties": {"ownerID": MORTY}}}
    names = [r["name"] for r in call(client, ACTIONS, todo, owned)[1]["results"]]
    assert names == ["can_read_user", "can_read_todos", "can_create_todo", "can_update_todo", "can_delete_todo"]
    assert call(client, ACTIONS, todo, {**body, "subject": {"type": "user", "id": "nobody"}})[1]["results"] == []
    _, out = call(client, ACTIONS, todo, {**body, "page": {"limit": 2}})
    assert len(out["results"]) == 2 and out["page"]["next_token"]


def test_resource_search_lists_the_workspace_catalog(client: FlaskClient, app: Flask) -> None:
    load_fixture("authzen-cert")
    _, secret = tokens.create_token(db.session(), "cert", workspace="authzen-cert")
    db.session.commit()
    body = {"subject": {"type": "user", "id": "alice"}, "action": {"name": "write"}, "resource": {"type": "record"}}
    status, out = call(client, RESOURCES, secret, body)
    # alice writes record-1; record-2 is archived (§C.1.4 rule 5, from the catalog's properties)
    assert status == 200 and [r["id"] for r in out["results"]] == ["record-1"]
    assert all(r["type"] == "record" for r in out["results"])
    _, out = call(client, RESOURCES, secret, {**body, "resource": {"type": "record"}, "action": {"name": "read"}})
    assert [r["id"] for r in out["results"]] == ["record-1", "record-2"]
    # bob, admin by his catalog entry, writes the archived record only (rules 4 and 6; S5)
    _, out = call(client, RESOURCES, secret, {**body, "subject": {"type": "user", "id": "bob"}})
    assert [r["id"] for r in out["results"]] == ["record-2"]
    _, out = call(client, RESOURCES, secret, {**body, "resource": {"type": "spaceship"}})
    assert out["results"] == []
    _, out = call(client, RESOURCES, secret, {**body, "resource": {"type": "record", "id": "record-2"}})
    assert [r["id"] for r in out["results"]] == ["record-1"]  # resource.id is ignored


def test_the_catalog_says_which_resources_exist(client: FlaskClient, app: Flask) -> None:
    load_fixture("authzen-cert")
    _, secret = tokens.create_token(db.session(), "cert", workspace="authzen-cert")
    db.session.commit()
    read = {"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"}}
    _, out = call(client, EVAL, secret, {**read, "resource": {"type": "record", "id": "record-1"}})
    assert out["decision"] is True
    _, out = call(client, EVAL, secret, {**read, "resource": {"type": "record", "id": "record-9"}})
    assert out["decision"] is False and out["context"]["reason"] == "unknown_resource"
    _, out = call(client, EVAL, secret, {**read, "resource": {"type": "folder", "id": "f1"}})
    assert out["decision"] is False and out["context"]["reason"] == "unknown_resource"  # nor another type
    search = {"subject": {"type": "user"}, "action": {"name": "read"}, "resource": {"type": "record", "id": "record-9"}}
    assert call(client, SUBJECTS, secret, search)[1]["results"] == []
    unknown = {"subject": {"type": "user", "id": "alice"}, "resource": {"type": "record", "id": "record-9"}}
    assert call(client, ACTIONS, secret, unknown)[1]["results"] == []
    # a catalog change in this process is seen at once
    ws = db.session.scalar(db.select(Workspace).where(Workspace.slug == "authzen-cert"))
    assert ws is not None
    ws.settings = {**ws.settings, "authzen_resources": [{"type": "record", "id": "record-9"}]}
    db.session.commit()
    _, out = call(client, EVAL, secret, {**read, "resource": {"type": "record", "id": "record-9"}})
    assert out["decision"] is True
    _, out = call(client, EVAL, secret, {**read, "resource": {"type": "record", "id": "record-1"}})
    assert out["decision"] is False


def test_metadata(client: FlaskClient) -> None:
    resp = client.get("/.well-known/authzen-configuration")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    meta = resp.get_json()
    base = meta["policy_decision_point"]
    assert base == "http://localhost"
    assert meta["access_evaluation_endpoint"] == base + EVAL
    assert meta["search_action_endpoint"] == base + ACTIONS
    assert "capabilities" not in meta and "Cache-Control" in resp.headers
    defaults = {"access_evaluation_endpoint": True, "access_evaluations_endpoint": False}
    assert meta["learnauthz_options"] == {"reasons": defaults}


def test_openapi_documents_authzen(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    for path in (EVAL, EVALS, SUBJECTS, RESOURCES, ACTIONS):
        assert spec["paths"][path]["post"]["security"] == [{"serviceToken": []}], path
        assert "400" in spec["paths"][path]["post"]["responses"]
    assert "/.well-known/authzen-configuration" in spec["paths"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    url=st.sampled_from([EVAL, EVALS, SUBJECTS, RESOURCES, ACTIONS]),
    body=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.text(max_size=8)
        | st.sampled_from(["user", "identity", RICK, TODO, "todo", "route", "/todos/{todoId}", "/todos/", "PUT"]),
        lambda kids: (
            st.lists(kids, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "subject",
                        "action",
                        "resource",
                        "context",
                        "type",
                        "id",
                        "name",
                        "properties",
                        "evaluations",
                        "options",
                        "evaluations_semantic",
                        "page",
                        "limit",
                        "token",
                        "workspace",
                        "ownerID",
                        "reasons",
                    ]
                ),
                kids,
                max_size=5,
            )
        ),
        max_leaves=20,
    ),
)
def test_no_body_is_a_500(client: FlaskClient, todo: str, url: str, body: Any) -> None:
    status, out = call(client, url, todo, body)
    assert status in (200, 400), (status, out)
    if status == 200 and url in (EVAL, EVALS):
        decisions = out.get("evaluations", [out])
        assert all(isinstance(d["decision"], bool) for d in decisions)


# -- external ids and token workspaces ---------------------------------------------------------------
def test_external_id_rules(app: Flask, todo: str) -> None:
    session = db.session()
    beth = users.by_email(session, "beth@the-smiths.com")
    jerry = users.by_email(session, "jerry@the-smiths.com")
    assert beth is not None and jerry is not None
    for bad in ("", "123", "a@b", "a,b", "a b", "*", "é", "x" * 255, 5):
        with pytest.raises(ValidationError):
            users.set_external_id(session, beth, bad)  # type: ignore[arg-type]
    with pytest.raises(ConflictError):
        users.set_external_id(session, beth, JERRY)
    users.set_external_id(session, beth, BETH)  # her own: fine
    users.set_external_id(session, beth, None)
    session.commit()
    assert db.session.get(User, beth.id).external_id is None  # type: ignore[union-attr]


def test_external_id_change_is_seen_at_once(client: FlaskClient, todo: str) -> None:
    body = ev(BETH, "can_read_todos")
    assert call(client, EVAL, todo, body)[1]["decision"] is True  # cached now
    beth = users.by_email(db.session(), "beth@the-smiths.com")
    assert beth is not None
    users.set_external_id(db.session(), beth, "beth-2")
    db.session.commit()
    _, out = call(client, EVAL, todo, body)
    assert out["decision"] is False and out["context"]["reason"] == "unknown_subject"
    assert call(client, EVAL, todo, ev("beth-2", "can_read_todos"))[1]["decision"] is True


def test_token_default_workspace(app: Flask, todo: str) -> None:
    row = db.session.scalar(db.select(ServiceToken).where(ServiceToken.name == "pep"))
    assert row is not None and row.workspace == TODO
    with pytest.raises(NotFoundError):
        tokens.create_token(db.session(), "x", workspace="no-such-workspace")
    db.session.rollback()
    runner = app.test_cli_runner()
    result = runner.invoke(args=["token", "create", "cli-pep", "--workspace", f"ws:{TODO}"])
    assert result.exit_code == 0 and result.output.startswith("lat_"), result.output
    result = runner.invoke(args=["token", "create", "cli-bad", "--workspace", "nope"])
    assert result.exit_code != 0 and "no workspace" in result.output
    listing = runner.invoke(args=["token", "list"]).output
    assert "cli-pep\tactive" in listing and f"workspace {TODO}" in listing


def test_seed_fixtures_are_idempotent(app: Flask) -> None:
    first = load_fixture("authzen-todo")
    assert "5 users" in first and "1 workspaces" in first
    assert load_fixture("authzen-todo").endswith("already loaded; nothing changed")
    rick = users.by_email(db.session(), "rick@the-citadel.com")
    assert rick is not None and rick.display_name == "Rick Sanchez" and rick.external_id == RICK
    runner = app.test_cli_runner()
    out = runner.invoke(args=["seed", "authzen-cert"]).output
    assert "authzen-cert" in out and "2 users" in out
    assert runner.invoke(args=["seed", "nope"]).exit_code != 0


# -- decisions from memory (app.policy.directory) ----------------------------------------------------
def _token_known(client: FlaskClient, token: str, workspace: str = TODO) -> None:
    """This process authenticates the token once (a decision API call in its workspace: no subject, no catalog read)."""
    resp = client.post(
        "/v1/check",
        json={"subject": 1, "workspace": workspace, "action": "read"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert resp.status_code == 200


def test_evaluations_decide_from_memory_with_the_database_held_down(client: FlaskClient, todo: str) -> None:
    """The interop vectors, subjects never asked for before, with the database held down: same decisions, no query."""
    from tests.test_decision_cache import Queries, held_down

    data = vectors()
    _token_known(client, todo)
    with held_down(), Queries() as q:
        for case in data["evaluation"]:
            status, out = call(client, EVAL, todo, case["request"])
            assert status == 200 and out["decision"] is case["expected"], (case["request"], out)
        for case in data["evaluations"]:
            status, out = call(client, EVALS, todo, case["request"])
            assert status == 200, out
            assert [d["decision"] for d in out["evaluations"]] == [e["decision"] for e in case["expected"]]
        status, out = call(client, EVAL, todo, ev("nobody@example.com", "can_read_todos"))
        assert status == 200 and out["context"]["reason"] == "unknown_subject"
    assert q.statements == []


def test_a_catalog_never_read_comes_from_memory(client: FlaskClient, todo: str) -> None:
    """A workspace created after the policy was loaded: its catalog is fetched with its revision, and
    a catalog change in this process is kept there too, for when the database cannot be asked."""
    from tests.test_decision_cache import Queries, held_down

    _token_known(client, todo)  # the policy is loaded before the workspace exists
    load_fixture("authzen-cert")
    _, secret = tokens.create_token(db.session(), "cert", workspace="authzen-cert")
    db.session.commit()
    _token_known(client, secret, "authzen-cert")
    read = {"subject": {"type": "user", "id": "alice"}, "action": {"name": "read"}}
    listed = {**read, "resource": {"type": "record", "id": "record-1"}}
    unlisted = {**read, "resource": {"type": "record", "id": "record-9"}}
    with held_down(), Queries() as q:
        assert call(client, EVAL, secret, listed)[1]["decision"] is True
        out = call(client, EVAL, secret, unlisted)[1]
        assert out["decision"] is False and out["context"]["reason"] == "unknown_resource"
    assert q.statements == []
    ws = db.session.scalar(db.select(Workspace).where(Workspace.slug == "authzen-cert"))
    assert ws is not None
    ws.settings = {**ws.settings, "authzen_resources": [{"type": "record", "id": "record-9"}]}
    db.session.commit()
    with held_down():
        assert call(client, EVAL, secret, unlisted)[1]["decision"] is True
        assert call(client, EVAL, secret, listed)[1]["context"]["reason"] == "unknown_resource"
