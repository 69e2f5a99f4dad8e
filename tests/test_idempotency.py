"""Idempotency-Key on every state-changing endpoint (app/idempotency.py), on SQLite and PostgreSQL.

One parametrized test walks the url_map: every POST/PUT/PATCH/DELETE endpoint that is not
exempt (decisions, drafts, sign-in/up/out) must have a case here, and each case shows that a
repeat with the key replays the first outcome without applying twice and that the key with
another body is 422. Then the key's syntax, its scope, failures around the commit (a 503 before
it releases the key, a 503 after it reports "applied" and never applies again), leases, expiry
and pruning.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask, current_app
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import OperationalError

from app import idempotency
from app.extensions import db
from app.models import (
    AuditEvent,
    ChangeRequest,
    ChangeRequestEvent,
    Group,
    IdempotencyKey,
    OutboxEmail,
    ServiceToken,
    UserSession,
    utcnow,
)
from app.policy import store as policy_store
from tests.factories import WebClient, uid, web_client

CLS = "/api/workspaces/classroom-demo"
REVIEWER_AI_SPEND = "p, 80, role:simulations:reviewer, view_ai_spend, any, -, allow"
KEY = "3f1c2a9e-idem-test"


@dataclass
class Case:
    """One write endpoint: who sends it, where, with which body; ``setup`` (run first, before the
    footprint is taken) may return values the url and body use (``{name}`` placeholders)."""

    actor: str
    method: str
    url: str
    body: dict[str, Any] | None = None
    setup: Callable[[], dict[str, Any]] = field(default=lambda: {})
    status: int = 200


def _invitation() -> dict[str, Any]:
    wc = web_client(current_app, "owner@classroom.example")
    body = {"emails": "new.person@example.org", "role": "teacher"}
    assert wc.post(f"{CLS}/invitations", json=body).status_code == 201
    items = wc.get(f"{CLS}/invitations").get_json()["items"]
    return {"inv": items[0]["id"]}


def _ids() -> dict[str, Any]:
    return {
        "learner": uid("learner@classroom.example"),
        "learner2": uid("learner2@classroom.example"),
        "teacher": uid("teacher@classroom.example"),
        "sim_owner": uid("owner@simulations.example"),
        "trainer": uid("trainer@simulations.example"),
    }


def _granted() -> dict[str, Any]:
    out = _ids()
    wc = web_client(current_app, "admin@platform.example")
    body = {"user_id": out["sim_owner"], "role": "admin"}
    assert wc.post("/api/platform/simulations/roles", json=body).status_code == 201
    return out


def _empty_group() -> dict[str, Any]:
    wc = web_client(current_app, "admin@classroom.example")
    assert wc.post(f"{CLS}/groups", json={"name": "spare"}).status_code == 201
    return _ids()


def _other_session() -> dict[str, Any]:
    web_client(current_app, "learner@classroom.example")  # a second session of the same user
    return {}


def _applied() -> dict[str, Any]:
    wc = web_client(current_app, "policy_admin@service.example")
    start = policy_store.current_revision(db.session())
    body = {"changes": [{"op": "add", "rule": REVIEWER_AI_SPEND}], "message": "setup"}
    assert wc.post("/v1/policy/apply", json=body).status_code == 201
    return {"start": start}


def _token() -> dict[str, Any]:
    wc = web_client(current_app, "policy_admin@service.example")
    body = {"name": "billing", "workspaces": ["classroom-demo"]}
    assert wc.post("/v1/policy/tokens", json=body).status_code == 201
    return {}


EDITOR = "policy_editor@service.example"
POLICY_ADMIN = "policy_admin@service.example"
CR = "/v1/policy/change-requests"
CR_CHANGES = [{"op": "add", "rule": REVIEWER_AI_SPEND}]


def _change_request() -> dict[str, Any]:
    """An open change request of the editor's (reviewers see AI spend)."""
    wc = web_client(current_app, EDITOR)
    resp = wc.post(CR, json={"title": "Reviewers see AI spend", "why": "cost reviews", "changes": CR_CHANGES})
    assert resp.status_code == 201, resp.get_json()
    return {"cr": resp.get_json()["id"]}


def _approved_change_request() -> dict[str, Any]:
    values = _change_request()
    resp = web_client(current_app, POLICY_ADMIN).post(f"{CR}/{values['cr']}/approve", json={})
    assert resp.status_code == 200, resp.get_json()
    return values


OWNER = "owner@classroom.example"
CASES: dict[str, Case] = {
    "members.create_workspace": Case(
        "admin@platform.example",
        "POST",
        "/api/workspaces",
        {"slug": "acme", "name": "Acme", "pack": "simulations", "owner_id": "{trainer}"},
        _ids,
        201,
    ),
    "members.update_workspace": Case(OWNER, "PATCH", CLS, {"name": "Renamed"}),
    "members.delete_workspace": Case(OWNER, "DELETE", CLS, {"confirm": "classroom-demo"}),
    "members.toggle_feature": Case(
        "account_manager@platform.example",
        "PUT",
        "/api/workspaces/skills-demo/features/set_weekly_learning_goals",
        {"enabled": False},
    ),
    "members.invite": Case(
        OWNER, "POST", f"{CLS}/invitations", {"emails": "x@example.org", "role": "teacher"}, status=201
    ),
    "members.revoke_invitation": Case(OWNER, "DELETE", CLS + "/invitations/{inv}", None, _invitation, 204),
    "members.resend_invitation": Case(OWNER, "POST", CLS + "/invitations/{inv}/resend", None, _invitation),
    "members.change_role": Case(OWNER, "PATCH", CLS + "/members/{learner}", {"role": "teacher"}, _ids),
    "members.remove_member": Case(OWNER, "DELETE", CLS + "/members/{learner2}", None, _ids, 204),
    "members.remove_many": Case(OWNER, "POST", f"{CLS}/members/remove", {"user_ids": ["{learner2}"]}, _ids),
    "members.transfer": Case(OWNER, "POST", f"{CLS}/ownership", {"user_id": "{teacher}"}, _ids),
    "members.grant_platform": Case(
        "admin@platform.example",
        "POST",
        "/api/platform/simulations/roles",
        {"user_id": "{sim_owner}", "role": "admin"},
        _ids,
        201,
    ),
    "members.revoke_platform": Case(
        "admin@platform.example", "DELETE", "/api/platform/simulations/roles/admin/{sim_owner}", None, _granted, 204
    ),
    "groups.create": Case("admin@classroom.example", "POST", f"{CLS}/groups", {"name": "b1-night"}, status=201),
    "groups.update": Case("admin@classroom.example", "PATCH", f"{CLS}/groups/morning", {"description": "early"}),
    "groups.delete": Case("admin@classroom.example", "DELETE", f"{CLS}/groups/spare", None, _empty_group, 204),
    "groups.add_people": Case(
        "admin@classroom.example", "POST", f"{CLS}/groups/morning/learners", {"user_ids": ["{learner2}"]}, _ids
    ),
    "groups.remove_person": Case(
        "admin@classroom.example", "DELETE", CLS + "/groups/evening/learners/{learner2}", None, _ids, 204
    ),
    "groups.move": Case(
        "admin@classroom.example", "POST", CLS + "/groups/morning/learners/{learner}/move", {"to": "evening"}, _ids
    ),
    "auth.update_me": Case("learner@classroom.example", "PATCH", "/api/auth/me", {"display_name": "Lea"}),
    "auth.sign_out_others": Case(
        "learner@classroom.example", "POST", "/api/auth/sessions/signout-others", None, _other_session
    ),
    "policy.apply_change": Case(
        "policy_admin@service.example",
        "POST",
        "/v1/policy/apply",
        {"changes": [{"op": "add", "rule": REVIEWER_AI_SPEND}], "message": "reviewers see AI spend"},
        status=201,
    ),
    "policy.rollback": Case(
        "policy_admin@service.example", "POST", "/v1/policy/rollback", {"to_revision": "{start}"}, _applied, 201
    ),
    "policy.create_token": Case(
        "policy_admin@service.example",
        "POST",
        "/v1/policy/tokens",
        {"name": "billing", "workspaces": ["classroom-demo"]},
        status=201,
    ),
    "policy.revoke_token": Case("policy_admin@service.example", "DELETE", "/v1/policy/tokens/billing", None, _token),
    "members.set_features": Case(
        "account_manager@platform.example",
        "PATCH",
        "/api/workspaces/skills-demo/features",
        {"switches": {"set_weekly_learning_goals": False}},
    ),
    "policy.put_draft": Case(EDITOR, "PUT", "/v1/policy/draft", {"changes": CR_CHANGES}),
    "policy.create_change_request": Case(
        EDITOR,
        "POST",
        CR,
        {"title": "Reviewers see AI spend", "why": "cost reviews", "changes": CR_CHANGES},
        status=201,
    ),
    "policy.update_change_request": Case(
        EDITOR, "PATCH", CR + "/{cr}", {"title": "AI spend for reviewers"}, _change_request
    ),
    "policy.comment_change_request": Case(
        POLICY_ADMIN, "POST", CR + "/{cr}/comments", {"body": "Looks right"}, _change_request, 201
    ),
    "policy.approve_change_request": Case(
        POLICY_ADMIN, "POST", CR + "/{cr}/approve", {"comment": "ok"}, _change_request
    ),
    "policy.reject_change_request": Case(POLICY_ADMIN, "POST", CR + "/{cr}/reject", {"comment": "no"}, _change_request),
    "policy.apply_change_request": Case(POLICY_ADMIN, "POST", CR + "/{cr}/apply", {}, _approved_change_request, 201),
}


def _fill(value: Any, values: dict[str, Any]) -> Any:
    """The case's url or body with ``{name}`` placeholders filled (a whole-string placeholder keeps its type)."""
    if isinstance(value, str):
        if value.startswith("{") and value.endswith("}") and value[1:-1] in values:
            return values[value[1:-1]]
        return value.format(**values) if "{" in value else value
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    return value


def footprint() -> tuple[int, ...]:
    """What a write leaves behind: the policy revision and the rows of the audit trail, the
    outbox, the groups, the tokens, the change requests and their events, and the live sessions."""
    db.session.expire_all()
    session = db.session()
    counts = [
        session.scalar(select(func.count()).select_from(model)) or 0
        for model in (AuditEvent, OutboxEmail, Group, ServiceToken, ChangeRequest, ChangeRequestEvent)
    ]
    ended = session.scalar(select(func.count()).select_from(UserSession).where(UserSession.ended_at.is_not(None)))
    return (policy_store.current_revision(session), *counts, ended or 0)


def write_endpoints(app: Flask) -> set[str]:
    """Every endpoint answering POST, PUT, PATCH or DELETE."""
    return {r.endpoint for r in app.url_map.iter_rules() if (r.methods or set()) & idempotency.WRITE_METHODS}


def test_every_write_endpoint_takes_a_key(app: Flask) -> None:
    """A new write endpoint without a case here (or without the wrapper) fails this test."""
    writes = write_endpoints(app)
    assert set(idempotency.EXEMPT) <= writes, set(idempotency.EXEMPT) - writes  # no stale exemption
    covered = writes - set(idempotency.EXEMPT)
    assert covered == set(CASES), covered ^ set(CASES)
    for endpoint in covered:
        assert idempotency.takes_key(app.view_functions[endpoint]), endpoint
    for endpoint in idempotency.EXEMPT:
        assert not idempotency.takes_key(app.view_functions[endpoint]), endpoint
    # /openapi.json describes the header on exactly these operations
    spec = app.test_client().get("/openapi.json").get_json()
    documented = {
        op["operationId"].rsplit(".", 1)[0]
        for item in spec["paths"].values()
        for op in item.values()
        if any(p["name"] == "Idempotency-Key" and p["in"] == "header" for p in op.get("parameters", []))
    }
    assert documented == covered


def _send(wc: WebClient, method: str, url: str, body: Any, key: str | None = KEY) -> Any:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return wc._send(method, url, body, headers=headers)


@pytest.mark.parametrize("endpoint", sorted(CASES))
def test_repeat_replays_and_applies_once(demo: Flask, endpoint: str) -> None:
    """Same key, same body: the first outcome again (Idempotent-Replayed), nothing applied twice;
    same key, another body: 422, nothing applied."""
    case = CASES[endpoint]
    values = case.setup()
    url, body = _fill(case.url, values), _fill(case.body, values)
    wc = web_client(demo, case.actor)
    before = footprint()
    first = _send(wc, case.method, url, body)
    assert first.status_code == case.status, first.get_data(as_text=True)
    assert "Idempotent-Replayed" not in first.headers
    applied = footprint()
    unchanged_counts = ("auth.update_me", "members.update_workspace", "groups.update", "policy.update_change_request")
    assert applied != before or endpoint in unchanged_counts

    again = _send(wc, case.method, url, body)
    assert again.status_code == case.status and again.headers["Idempotent-Replayed"] == "true"
    expected = first.get_json()
    if endpoint == "policy.create_token":  # the secret is shown once: the replay has it null
        assert expected["token"].startswith("lat_")
        expected["token"] = None
    assert again.get_json() == expected
    assert footprint() == applied

    other = _send(wc, case.method, url, {**(body or {}), "other": 1})
    assert other.status_code == 422 and other.mimetype == "application/problem+json"
    assert other.get_json()["type"].endswith("/idempotency-key-reused")
    assert footprint() == applied

    db.session.expire_all()
    row = db.session.scalars(select(IdempotencyKey)).one()
    assert row.applied_at is not None and row.status == case.status and row.scope == f"user:{uid(case.actor)}"
    if endpoint == "policy.create_token":
        assert "lat_" not in (row.body or "")  # the secret is not stored


def test_the_key_of_another_endpoint_is_422(demo: Flask) -> None:
    wc = web_client(demo, "admin@classroom.example")
    assert _send(wc, "POST", f"{CLS}/groups", {"name": "one"}).status_code == 201
    resp = _send(wc, "PATCH", f"{CLS}/groups/one", {"name": "one"})
    assert resp.status_code == 422 and resp.get_json()["type"].endswith("/idempotency-key-reused")


@pytest.mark.parametrize("key", ["", " ", "x" * 256, "ключ", "a\tb", '""'])
def test_bad_keys_are_400(demo: Flask, key: str) -> None:
    wc = web_client(demo, "admin@classroom.example")
    before = footprint()
    resp = _send(wc, "POST", f"{CLS}/groups", {"name": "one"}, key=key)
    assert resp.status_code == 400 and resp.get_json()["type"].endswith("/idempotency-key-invalid")
    assert footprint() == before


def test_keys_are_per_caller_and_optional(demo: Flask) -> None:
    """The same key from two users is two keys; an sf-string key equals its bare value; without
    a key nothing changes (a repeat is a second request)."""
    admin = web_client(demo, "admin@classroom.example")
    owner = web_client(demo, OWNER)
    assert _send(admin, "POST", f"{CLS}/groups", {"name": "one"}).status_code == 201
    assert _send(owner, "POST", f"{CLS}/groups", {"name": "two"}).status_code == 201
    quoted = _send(admin, "POST", f"{CLS}/groups", {"name": "one"}, key=f'"{KEY}"')
    assert quoted.status_code == 201 and quoted.headers["Idempotent-Replayed"] == "true"
    assert _send(admin, "POST", f"{CLS}/groups", {"name": "one"}, key=None).status_code == 409
    assert db.session.scalar(select(func.count()).select_from(Group).where(Group.name.in_(["one", "two"]))) == 2


def test_refusals_are_outcomes_too(demo: Flask) -> None:
    """A 4xx answer is the key's outcome: replayed, even once the request would succeed."""
    teacher = web_client(demo, "teacher@classroom.example")
    first = _send(teacher, "POST", f"{CLS}/groups", {"name": "mine"})
    assert first.status_code == 403
    again = _send(teacher, "POST", f"{CLS}/groups", {"name": "mine"})
    assert again.status_code == 403 and again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()


def test_unauthenticated_requests_are_not_recorded(demo: Flask) -> None:
    resp = _send(web_client(demo), "POST", f"{CLS}/groups", {"name": "one"})
    assert resp.status_code == 401
    assert db.session.scalar(select(func.count()).select_from(IdempotencyKey)) == 0


def _groups(name: str) -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(Group).where(Group.name == name)) or 0


def test_503_before_the_commit_releases_the_key(demo: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """The database fails before the write commits: 503, nothing applied, the key free: the retry applies."""
    from app.membership import groups as groups_service

    real = groups_service.create

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(groups_service, "create", failing)
    wc = web_client(demo, "admin@classroom.example")
    resp = _send(wc, "POST", f"{CLS}/groups", {"name": "retry"})
    assert resp.status_code == 503 and resp.headers["Retry-After"]
    assert _groups("retry") == 0 and db.session.scalar(select(func.count()).select_from(IdempotencyKey)) == 0
    monkeypatch.setattr(groups_service, "create", real)
    resp = _send(wc, "POST", f"{CLS}/groups", {"name": "retry"})
    assert resp.status_code == 201 and "Idempotent-Replayed" not in resp.headers
    assert _groups("retry") == 1


def test_503_after_the_commit_is_never_applied_again(demo: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write commits, then the database fails while the answer is built (the drill's "503 but
    applied"): the retry is told it was applied (409 idempotency-applied), and it is not applied again."""
    from app.membership import groups as groups_service

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("SELECT", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(groups_service, "serialize", failing)
    wc = web_client(demo, "admin@classroom.example")
    before = footprint()
    resp = _send(wc, "POST", f"{CLS}/groups", {"name": "late"})
    assert resp.status_code == 503
    assert _groups("late") == 1  # applied anyway
    applied = footprint()
    assert applied != before
    monkeypatch.undo()
    for _ in range(3):
        retry = _send(wc, "POST", f"{CLS}/groups", {"name": "late"})
        assert retry.status_code == 409 and retry.headers["Idempotent-Replayed"] == "true"
        problem = retry.get_json()
        assert problem["type"].endswith("/idempotency-applied") and problem["applied"] is True
    assert _groups("late") == 1 and footprint() == applied


def test_in_flight_then_lease_taken_over(demo: Flask) -> None:
    """While a key's attempt holds its lease a repeat is 409 (Retry-After); once the lease ran out
    with nothing applied, a repeat takes the key over and applies; the stale attempt cannot commit."""
    wc = web_client(demo, "admin@classroom.example")
    session = db.session()
    db.session.add(
        IdempotencyKey(
            scope=f"user:{uid('admin@classroom.example')}",
            key=KEY,
            fingerprint="pending",
            method="POST",
            path=f"{CLS}/groups",
            owner="someone",
            lease_until=utcnow() + timedelta(seconds=30),
            expires_at=utcnow() + timedelta(hours=1),
        )
    )
    session.commit()
    # the same fingerprint as the request below
    fp = idempotency.fingerprint(
        demo.config["SECRET_KEY"], "POST", f"{CLS}/groups", b"", json.dumps({"name": "held"}).encode()
    )
    session.execute(update(IdempotencyKey).values(fingerprint=fp))
    session.commit()
    busy = _send(wc, "POST", f"{CLS}/groups", {"name": "held"})
    assert busy.status_code == 409 and busy.headers["Retry-After"] == "1"
    assert busy.get_json()["type"].endswith("/idempotency-in-flight") and _groups("held") == 0
    session.execute(update(IdempotencyKey).values(lease_until=utcnow() - timedelta(seconds=1)))
    session.commit()
    resp = _send(wc, "POST", f"{CLS}/groups", {"name": "held"})
    assert resp.status_code == 201 and _groups("held") == 1
    row = db.session.scalars(select(IdempotencyKey)).one()
    assert row.owner != "someone" and row.applied_at is not None


def test_a_stale_attempt_cannot_commit(demo: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """An attempt whose key was taken over while it ran is refused at its commit (409), nothing applied."""
    from app.membership import groups as groups_service

    real = groups_service.create

    def taken_over(session: Any, *args: Any, **kwargs: Any) -> Any:
        session.execute(text("UPDATE idempotency_keys SET owner = 'retry'"))
        return real(session, *args, **kwargs)

    monkeypatch.setattr(groups_service, "create", taken_over)
    wc = web_client(demo, "admin@classroom.example")
    resp = _send(wc, "POST", f"{CLS}/groups", {"name": "stale"})
    assert resp.status_code == 409 and resp.get_json()["type"].endswith("/idempotency-taken-over")
    assert _groups("stale") == 0


def test_expired_keys_are_reused_and_pruned(demo: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    wc = web_client(demo, "admin@classroom.example")
    assert _send(wc, "POST", f"{CLS}/groups", {"name": "old"}).status_code == 201
    session = db.session()
    past = utcnow() - timedelta(seconds=1)
    session.execute(update(IdempotencyKey).values(expires_at=past))
    session.commit()
    # an expired key is a new key: the request runs again (and the group exists now)
    resp = _send(wc, "POST", f"{CLS}/groups", {"name": "old"})
    assert resp.status_code == 409 and "Idempotent-Replayed" not in resp.headers
    session.execute(update(IdempotencyKey).values(expires_at=past))
    session.commit()
    monkeypatch.setattr(idempotency, "_pruned_at", {})
    assert _send(wc, "POST", f"{CLS}/groups", {"name": "new"}, key="another").status_code == 201
    keys = db.session.scalars(select(IdempotencyKey.key)).all()
    assert keys == ["another"]  # the expired row was pruned


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_connection_killed_after_the_commit(demo: Flask, monkeypatch: pytest.MonkeyPatch, database_url: str) -> None:
    """PostgreSQL kills the request's connection right after the write committed (pg_terminate_backend):
    the answer is a 503, the write is in the database, and the retry with the key is told it was
    applied instead of applying it again."""
    from sqlalchemy import create_engine

    from app.membership import groups as groups_service

    real = groups_service.serialize
    killed: list[int] = []

    def killing(session: Any, *args: Any, **kwargs: Any) -> Any:
        if not killed:
            pid = int(session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar())
            admin = create_engine(database_url)
            with admin.connect() as c:
                c.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            admin.dispose()
            killed.append(pid)
        return real(session, *args, **kwargs)

    monkeypatch.setattr(groups_service, "serialize", killing)
    wc = web_client(demo, "admin@classroom.example")
    resp = _send(wc, "POST", f"{CLS}/groups", {"name": "killed"})
    assert killed and resp.status_code == 503 and resp.headers["Retry-After"]
    assert _groups("killed") == 1
    applied = footprint()
    retry = _send(wc, "POST", f"{CLS}/groups", {"name": "killed"})
    assert retry.status_code == 409 and retry.get_json()["type"].endswith("/idempotency-applied")
    assert _groups("killed") == 1 and footprint() == applied
