"""The AuthZEN API-gateway scenario (issue 24): a gateway asks for an HTTP method on a route, with the
subject as an ``identity``; the todo pack maps its routes (path templates) onto its actions, as data
(``policy/todo.yaml``, ``authzen.routes``). Expected decisions written from the scenario's payload
document (interop/authzen-interop-website/docs/scenarios/api-gateway): medium-grained, so PUT and
DELETE on ``/todos/{todoId}`` ask about a todo of the subject's own."""

from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from app.authz.packs import load_packs
from app.decisions import authzen
from tests.test_authzen import BETH, EVAL, EVALS, JERRY, MORTY, RICK, SUMMER, call, todo  # noqa: F401

ACTIONS = "/access/v1/search/action"
SUBJECTS = "/access/v1/search/subject"
RESOURCES = "/access/v1/search/resource"
ROUTES = [("GET", "/users/{userId}"), ("GET", "/todos"), ("POST", "/todos"), ("PUT", "/todos/{todoId}"),
          ("DELETE", "/todos/{todoId}")]  # fmt: skip
# Who may call what through the gateway, from the scenario's roles: everyone reads; admins and editors
# create; evil geniuses and editors update; admins and editors delete (Rick is admin and evil genius,
# Morty and Summer editors, Beth and Jerry viewers).
MAY = {
    RICK: {"GET", "POST", "PUT", "DELETE"},
    MORTY: {"GET", "POST", "PUT", "DELETE"},
    SUMMER: {"GET", "POST", "PUT", "DELETE"},
    BETH: {"GET"},
    JERRY: {"GET"},
}


def gw(subject: str, method: str, path: str, **extra: Any) -> dict[str, Any]:
    return {"subject": {"type": "identity", "id": subject}, "action": {"name": method},
            "resource": {"type": "route", "id": path}, "context": {}, **extra}  # fmt: skip


def test_every_route_for_every_user(client: FlaskClient, todo: str) -> None:  # noqa: F811
    """25 questions, as the gateway sends them: each decision is the scenario's."""
    for subject, allowed in MAY.items():
        for method, path in ROUTES:
            status, out = call(client, EVAL, todo, gw(subject, method, path))
            assert status == 200 and out["decision"] is (method in allowed), (subject, method, path, out)
    _, out = call(client, EVAL, todo, gw(JERRY, "PUT", "/todos/{todoId}"))
    assert out["context"]["reason"] == "not_permitted"


def test_concrete_paths_match_their_template(client: FlaskClient, todo: str) -> None:  # noqa: F811
    """A gateway may send the request's own path: it matches the template segment by segment."""
    for path in ("/todos/7240d0db-8ff0-41ec-98b2-34a096273b91", "/todos/abc/", "/todos/abc?x=1"):
        assert call(client, EVAL, todo, gw(MORTY, "PUT", path))[1]["decision"] is True, path
        assert call(client, EVAL, todo, gw(JERRY, "PUT", path))[1]["decision"] is False, path
    assert call(client, EVAL, todo, gw(BETH, "GET", "/users/rick@the-citadel.com"))[1]["decision"] is True
    assert call(client, EVAL, todo, gw(BETH, "get", "/todos"))[1]["decision"] is True  # methods: any case


def test_unknown_routes_and_subjects_are_denied(client: FlaskClient, todo: str) -> None:  # noqa: F811
    for method, path in (("PATCH", "/todos/1"), ("GET", "/todos/1/2"), ("GET", "/"), ("POST", "/users/{userId}")):
        _, out = call(client, EVAL, todo, gw(RICK, method, path))
        assert out == {
            "decision": False,
            "context": {"reason": "unknown_route", "revision": out["context"]["revision"]},
        }
    _, out = call(client, EVAL, todo, gw("nobody-pid", "GET", "/todos"))
    assert out["decision"] is False and out["context"]["reason"] == "unknown_subject"
    # "identity" names a user as "user" does; any other type names nobody
    body = gw(RICK, "GET", "/todos")
    body["subject"]["type"] = "service"
    assert call(client, EVAL, todo, body)[1]["context"]["reason"] == "unknown_subject"


def test_route_facts_are_not_the_callers(client: FlaskClient, todo: str) -> None:  # noqa: F811
    """The route's facts (owner = the subject) come from the pack; resource properties of a route are not read."""
    body = gw(JERRY, "PUT", "/todos/{todoId}")
    body["resource"]["properties"] = {"ownerID": "jerry@the-smiths.com", "owner": "jerry@the-smiths.com"}
    assert call(client, EVAL, todo, body)[1]["decision"] is False


def test_gateway_batches_and_searches(client: FlaskClient, todo: str) -> None:  # noqa: F811
    body = {"subject": {"type": "identity", "id": BETH}, "resource": {"type": "route", "id": "/todos"},
            "evaluations": [{"action": {"name": "GET"}}, {"action": {"name": "POST"}}]}  # fmt: skip
    assert call(client, EVALS, todo, body)[1] == {"evaluations": [{"decision": True}, {"decision": False}]}
    # which methods on this route?
    search = {"subject": {"type": "identity", "id": MORTY}, "resource": {"type": "route", "id": "/todos/42"}}
    assert call(client, ACTIONS, todo, search)[1]["results"] == [{"name": "PUT"}, {"name": "DELETE"}]
    search["subject"]["id"] = JERRY
    assert call(client, ACTIONS, todo, search)[1]["results"] == []
    # who may delete todos through the gateway?
    who = {"subject": {"type": "identity"}, "action": {"name": "DELETE"},
           "resource": {"type": "route", "id": "/todos/{todoId}"}}  # fmt: skip
    found = {r["id"] for r in call(client, SUBJECTS, todo, who)[1]["results"]}
    assert found == {RICK, MORTY, SUMMER}
    # which routes may Beth POST to? none; GET: both read routes
    routes = {"subject": {"type": "identity", "id": BETH}, "action": {"name": "GET"}, "resource": {"type": "route"}}
    got = call(client, RESOURCES, todo, routes)[1]["results"]
    assert got == [{"type": "route", "id": "/users/{userId}"}, {"type": "route", "id": "/todos"}]
    routes["action"]["name"] = "POST"
    assert call(client, RESOURCES, todo, routes)[1]["results"] == []


def test_the_fine_grained_question_is_unchanged(client: FlaskClient, todo: str) -> None:  # noqa: F811
    """The backend's own question (a todo, its real owner) still decides by ownership."""
    fine = {"subject": {"type": "user", "id": MORTY}, "action": {"name": "can_update_todo"},
            "resource": {"type": "todo", "id": "t1", "properties": {"ownerID": "rick@the-citadel.com"}}}  # fmt: skip
    assert call(client, EVAL, todo, fine)[1]["decision"] is False


def test_route_declarations_are_checked() -> None:
    """Every pack's routes are well-formed; a malformed declaration is reported and maps no route."""
    packs = load_packs("policy", "model.conf").packs
    assert all(authzen.route_problems(p) == [] for p in packs.values())
    assert len(authzen.routes(packs["todo"])) == 5
    todo_pack = packs["todo"]
    bad = [{"method": "FETCH", "path": "todos", "action": "can_fly", "facts": {"role": "admin", "owner": "{id}"}}]
    broken = type(todo_pack)(**{**todo_pack.__dict__, "meta": {"authzen": {"routes": bad}}})
    problems = authzen.route_problems(broken)
    assert len(problems) == 6, problems  # method, path, action, role (twice), owner
    assert authzen.routes(broken) == ()


@pytest.mark.parametrize("path,template,bound", [
    ("/todos/1", "/todos/{todoId}", {"{todoId}": "1"}),
    ("/todos/{todoId}", "/todos/{todoId}", {"{todoId}": "{todoId}"}),
    ("/todos", "/todos/{todoId}", None),
    ("/todo/1", "/todos/{todoId}", None),
    ("/todos//", "/todos", {}),
])  # fmt: skip
def test_path_templates(path: str, template: str, bound: dict[str, str] | None) -> None:
    assert authzen.Route("GET", template, "x").bind(path) == bound
