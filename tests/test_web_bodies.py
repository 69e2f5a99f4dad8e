"""The web-client APIs' typed bodies (app/api/web_bodies.py): wrong types, missing fields, unknown
fields are 422 problems naming the field, repeated keys and non-objects 400, never a 500, nothing
changed; the bodies are in /openapi.json."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from flask import Flask

from app.extensions import authz, db
from app.models import Membership
from tests.factories import WebClient, uid, web_client

CLS = "/api/workspaces/classroom-demo"
OWNER = "owner@classroom.example"
LEARNER = "learner@classroom.example"


def _cases() -> list[tuple[str, str, str, dict[str, Any], bool]]:
    """(method, url, signed-in email or "", a body of the right shape, whether it has a required field)."""
    learner = uid(LEARNER)
    return [
        ("POST", "/api/auth/signin", "", {"email": "x@example.org", "password": "p"}, True),
        ("POST", "/api/auth/verify-email", "", {"token": "abc"}, True),
        ("POST", "/api/auth/signup", "", {"token": "abc", "password": "p"}, True),
        ("PATCH", "/api/auth/me", OWNER, {"display_name": "New name"}, False),
        ("POST", f"{CLS}/invitations", OWNER, {"emails": "a@example.org", "role": "learner"}, True),
        ("PATCH", f"{CLS}/members/{learner}", OWNER, {"role": "teacher"}, True),
        ("POST", f"{CLS}/members/remove", OWNER, {"user_ids": [learner]}, True),
        ("POST", f"{CLS}/ownership", OWNER, {"user_id": learner}, True),
        ("PUT", f"{CLS}/features/groups", OWNER, {"enabled": False}, True),
        ("DELETE", CLS, OWNER, {"confirm": "classroom-demo"}, True),
        ("POST", "/api/platform/classroom/roles", OWNER, {"role": "admin", "user_id": learner}, True),
        ("POST", f"{CLS}/groups/morning/learners", OWNER, {"user_ids": [learner]}, True),
        ("POST", f"{CLS}/groups/morning/learners/{learner}/move", OWNER, {"to": "evening"}, True),
        ("POST", "/api/workspaces", OWNER, {"slug": "fresh", "name": "Fresh", "pack": "classroom"}, True),
        ("PATCH", CLS, OWNER, {"name": "Renamed"}, False),
        ("POST", f"{CLS}/groups", OWNER, {"name": "fresh", "capacity": 5}, True),
        ("PATCH", f"{CLS}/groups/morning", OWNER, {"description": "mornings"}, False),
    ]


def _send(wc: WebClient, method: str, url: str, raw: bytes) -> tuple[int, dict[str, Any], str]:
    resp = wc._send(method, url, data=raw, content_type="application/json")
    return resp.status_code, resp.get_json(force=True, silent=True) or {}, resp.mimetype


def _state() -> tuple[int, list[tuple[int, str, str]]]:
    db.session.expire_all()
    rows = db.session.execute(db.select(Membership.user_id, Membership.role, Membership.status)).all()
    return authz.engine.revision, sorted((int(a), str(b), str(c)) for a, b, c in rows)


def test_bad_bodies_are_problems_naming_the_field(demo: Flask) -> None:
    clients: dict[str, WebClient] = {}
    before = _state()
    checked = 0
    for method, url, email, good, required in _cases():
        wc = clients.get(email) or clients.setdefault(email, web_client(demo, email or None))
        first = next(iter(good))
        variants: list[tuple[str, dict[str, Any], int, list[str], str]] = [
            ("wrong type", {**good, first: {"an": "object"}}, 422, [first], "invalid"),
            ("unknown field", {**good, "zzz": 1}, 422, ["zzz"], "unknown_field"),
        ]
        if required:
            variants.append(("missing", {k: v for k, v in good.items() if k != first}, 422, [first], "missing"))
        for what, body, status, loc, kind in variants:
            got, problem, mimetype = _send(wc, method, url, orjson.dumps(body))
            assert (got, mimetype) == (status, "application/problem+json"), (url, what, got, problem)
            assert problem["detail"] == "the request does not match its schema", (url, what, problem)
            assert problem["errors"][0]["loc"] == loc and problem["errors"][0]["type"] == kind, (url, what, problem)
            assert problem["errors"][0]["message"], (url, what, problem)
            checked += 1
        repeated = orjson.dumps(good)[:-1] + b"," + orjson.dumps(good)[1:]  # every key twice
        got, problem, mimetype = _send(wc, method, url, repeated)
        assert (got, mimetype) == (400, "application/problem+json"), (url, got, problem)
        assert f"duplicate key {first!r}" in problem["detail"], (url, problem)
        for raw in (b"[1]", b'"x"', b"null"):
            got, problem, mimetype = _send(wc, method, url, raw)
            assert (got, mimetype) == (400, "application/problem+json"), (url, raw, got, problem)
        got, problem, mimetype = _send(wc, method, url, b'{"' + first.encode() + b'": ')
        assert (got, mimetype) == (400, "application/problem+json") and "malformed JSON" in problem["detail"]
    assert checked == 48
    assert _state() == before  # nothing was changed by any of them


@pytest.mark.parametrize(
    ("path", "method", "schema"),
    [
        ("/api/auth/signin", "post", "SignIn"),
        ("/api/auth/me", "patch", "ProfileChanges"),
        ("/api/workspaces/{slug}/invitations", "post", "Invite"),
        ("/api/workspaces/{slug}/members/{user_id}", "patch", "RoleChange"),
        ("/api/workspaces/{slug}/{kinds}/{name}/{rel}", "post", "UserIds"),
        ("/api/workspaces", "post", "WorkspaceCreate"),
        ("/api/workspaces/{slug}", "patch", "WorkspaceUpdate"),
        ("/api/workspaces/{slug}/{kinds}", "post", "UnitCreate"),
        ("/api/workspaces/{slug}/{kinds}/{name}", "patch", "UnitUpdate"),
    ],
)
def test_the_bodies_are_in_the_openapi_document(demo: Flask, path: str, method: str, schema: str) -> None:
    spec = demo.test_client().get("/openapi.json").get_json()
    body = spec["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": f"#/components/schemas/{schema}"}
    component = spec["components"]["schemas"][schema]
    assert component["additionalProperties"] is False and component["properties"]
    assert "422" in spec["paths"][path][method]["responses"]


def test_profile_limits_live_in_the_schema(demo: Flask) -> None:
    """The profile's shape rules moved from sessions.update_profile into ProfileChanges: still 422."""
    wc = web_client(demo, OWNER)
    for body, loc in (
        ({"display_name": "   "}, ["display_name"]),
        ({"display_name": "x" * 121}, ["display_name"]),
        ({"username": "a"}, ["username"]),
        ({"username": "ab\n"}, ["username"]),
        ({"password": 5}, ["password"]),
    ):
        got, problem, _ = _send(wc, "PATCH", "/api/auth/me", orjson.dumps(body))
        assert got == 422 and problem["errors"][0]["loc"] == loc, (body, problem)
    got, problem, _ = _send(wc, "PATCH", "/api/auth/me", orjson.dumps({"username": None, "display_name": " Ann "}))
    assert got == 200 and problem["display_name"] == "Ann" and problem["username"] is None, problem


def test_workspace_and_unit_limits_live_in_the_schema(demo: Flask) -> None:
    """Names, capacities, descriptions and flags that the services once checked by hand: 422 at the
    blueprint, naming the field, and nothing changed; the good value of each passes."""
    wc = web_client(demo, OWNER)
    before = _state()
    for method, url, body, loc in (
        ("PATCH", CLS, {"name": "   "}, ["name"]),
        ("PATCH", CLS, {"name": "x" * 121}, ["name"]),
        ("PATCH", CLS, {"settings": []}, ["settings"]),
        ("POST", "/api/workspaces", {"slug": "s", "name": "n", "pack": "classroom", "owner_id": 0}, ["owner_id"]),
        ("POST", f"{CLS}/groups", {"name": "g1", "capacity": 0}, ["capacity"]),
        ("POST", f"{CLS}/groups", {"name": "g1", "capacity": 100_001}, ["capacity"]),
        ("POST", f"{CLS}/groups", {"name": "g1", "capacity": True}, ["capacity"]),
        ("POST", f"{CLS}/groups", {"name": "g1", "description": "d" * 501}, ["description"]),
        ("PATCH", f"{CLS}/groups/morning", {"archived": "yes"}, ["archived"]),
        ("PATCH", f"{CLS}/groups/morning", {"capacity": 1.5}, ["capacity"]),
    ):
        got, problem, mimetype = _send(wc, method, url, orjson.dumps(body))
        assert (got, mimetype) == (422, "application/problem+json"), (url, body, got, problem)
        assert problem["errors"][0]["loc"] == loc, (url, body, problem)
    got, problem, _ = _send(wc, "PATCH", f"{CLS}/groups/morning", b"{}")
    assert got == 422 and problem["detail"] == "nothing to change", problem
    assert _state() == before
    got, problem, _ = _send(wc, "POST", f"{CLS}/groups", orjson.dumps({"name": "g1", "capacity": 100_000}))
    assert got == 201 and problem["capacity"] == 100_000, problem
    got, problem, _ = _send(wc, "PATCH", f"{CLS}/groups/g1", orjson.dumps({"capacity": None, "archived": True}))
    assert got == 200 and problem["capacity"] is None and problem["archived"] is True, problem
