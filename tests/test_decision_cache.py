"""Caches of the decision API's hot path: service tokens, subjects (ids and emails), the body fast path."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event, text

from app import ttlcache
from app.extensions import db
from app.models import User, Workspace
from app.policy import tokens
from tests.test_decision_api import CASES, World, create_user, make_token, post
from tests.test_decision_api import world as world  # noqa: F401 - the fixture

VIEW = {"workspace": "simulations-demo", "action": "view_dashboard"}


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(ttlcache, "_clock", c)
    return c


class Queries:
    """SQL statements run on the app's engine while active."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def __call__(self, conn: object, cursor: object, statement: str, *args: object) -> None:
        self.statements.append(statement)

    def on(self, table: str) -> list[str]:
        return [s for s in self.statements if f"FROM {table}" in s]

    def __enter__(self) -> Queries:
        event.listen(db.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(db.engine, "before_cursor_execute", self)


# -- tokens --------------------------------------------------------------------------------------
def test_token_cache_hit_needs_no_query(client: FlaskClient, world: World) -> None:
    body = {"subject": world.uid("simulations.owner"), **VIEW}
    assert post(client, "/v1/check", world.token, body)[0] == 200
    with Queries() as q:
        status, out = post(client, "/v1/check", world.token, body)
    assert status == 200 and out["allowed"] is True
    assert q.on("service_tokens") == [] and q.on("users") == [], q.statements


def test_revoked_token_is_refused_at_once_in_this_process(client: FlaskClient, world: World) -> None:
    body = {"subject": world.uid("simulations.owner"), **VIEW}
    assert post(client, "/v1/check", world.token, body)[0] == 200  # now cached
    tokens.revoke_token(db.session(), "svc")
    db.session.commit()
    status, out = post(client, "/v1/check", world.token, body)
    assert status == 401 and "revoked" in out["detail"]


def test_revoke_over_http_is_refused_at_once(client: FlaskClient, world: World, app: Flask) -> None:
    """Through the service layer without committing yet: already refused (the cache entry is gone)."""
    secret = make_token("other")
    assert tokens.authenticate(db.session(), secret) is not None
    tokens.revoke_token(db.session(), "other")
    cache = tokens.cache()
    assert cache is not None and tokens.hash_token(secret) not in cache._entries
    db.session.commit()
    assert tokens.authenticate(db.session(), secret) is None


def test_known_token_never_expires(client: FlaskClient, world: World, clock: Clock) -> None:
    """No TTL: a known token needs no query however long ago it was learnt (revocation is a revision)."""
    body = {"subject": world.uid("simulations.owner"), **VIEW}
    assert post(client, "/v1/check", world.token, body)[0] == 200
    clock.now += 10 * 24 * 3600
    with Queries() as q:
        assert post(client, "/v1/check", world.token, body)[0] == 200
    assert q.on("service_tokens") == [], q.statements


def test_revoke_elsewhere_reaches_this_process_with_the_revision(
    client: FlaskClient, world: World, app: Flask, database_url: str
) -> None:
    """Another process (its own app and caches) revokes: refused here once this process syncs."""
    from app.extensions import authz

    body = {"subject": world.uid("simulations.owner"), **VIEW}
    assert post(client, "/v1/check", world.token, body)[0] == 200  # known here now
    before = authz.engine.revision
    with other_process(database_url) as session:
        tokens.revoke_token(session, "svc")
        session.commit()
    assert post(client, "/v1/check", world.token, body)[0] == 200  # not synced yet
    assert authz.sync() == before + 1
    status, out = post(client, "/v1/check", world.token, body)
    assert status == 401 and "revoked" in out["detail"]


def test_unknown_and_revoked_tokens_are_never_cached(client: FlaskClient, world: World) -> None:
    body = {"subject": 1, **VIEW}
    for _ in range(2):
        assert post(client, "/v1/check", "lat_" + "y" * 43, body)[0] == 401
    cache = tokens.cache()
    assert cache is not None and all(ident.name == "svc" for _, ident in cache._entries.values())


def test_token_cache_can_be_turned_off(client: FlaskClient, world: World, app: Flask) -> None:
    app.extensions.pop("token_cache", None)
    app.config["TOKEN_CACHE_SECONDS"] = 0
    body = {"subject": world.uid("simulations.owner"), **VIEW}
    assert post(client, "/v1/check", world.token, body)[0] == 200
    with Queries() as q:
        assert post(client, "/v1/check", world.token, body)[0] == 200
    assert len(q.on("service_tokens")) == 1


def test_cache_misses_still_touch_last_used_at(client: FlaskClient, world: World) -> None:
    from app.models import ServiceToken

    cache = tokens.cache()
    assert cache is not None
    cache.clear()  # (the create put the token there: a hit writes nothing, the listener does)
    post(client, "/v1/check", world.token, {"subject": 1, **VIEW})
    row = db.session.scalar(db.select(ServiceToken).where(ServiceToken.name == "svc"))
    assert row is not None and row.last_used_at is not None


# -- subjects --------------------------------------------------------------------------------------
def test_member_known_to_the_engine_needs_no_user_query(client: FlaskClient, world: World) -> None:
    post(client, "/v1/check", world.token, {"subject": 1, **VIEW})  # token cached
    uid = world.uid("simulations.owner")  # (reading it may refresh the ORM object)
    with Queries() as q:
        for subject in (uid, f"user:{uid}"):
            status, out = post(client, "/v1/check", world.token, {"subject": subject, **VIEW})
            assert status == 200 and out["reason"] == "granted"
    assert q.on("users") == []


def test_unknown_subject_is_still_unknown_subject(client: FlaskClient, world: World) -> None:
    for subject in (999999, "999999", "user:999999", "nobody@example.com"):
        for _ in range(2):  # the second time would be a cache hit if negatives were cached
            status, out = post(client, "/v1/check", world.token, {"subject": subject, **VIEW})
            assert status == 200 and out["reason"] == "unknown_subject", subject
    # an existing user without a role: no_role, not unknown_subject, however asked
    for subject in (world.uid("outsider"), f"user:{world.uid('outsider')}", world.email("outsider")):
        status, out = post(client, "/v1/check", world.token, {"subject": subject, **VIEW})
        assert out["reason"] == "no_role", subject


def test_unknown_subject_in_unknown_workspace_keeps_its_reason(client: FlaskClient, world: World) -> None:
    status, out = post(client, "/v1/check", world.token, {"subject": 999999, "workspace": "nope", "action": "x"})
    assert out["reason"] == "unknown_subject"
    status, out = post(
        client, "/v1/check", world.token, {"subject": world.uid("outsider"), "workspace": "nope", "action": "x"}
    )
    assert out["reason"] == "unknown_workspace"


def test_email_found_at_once_after_the_user_is_created(client: FlaskClient, world: World) -> None:
    body = {"subject": "late@example.com", **VIEW}
    assert post(client, "/v1/check", world.token, body)[1]["reason"] == "unknown_subject"
    create_user("late@example.com")
    assert post(client, "/v1/check", world.token, body)[1]["reason"] == "no_role"


def test_email_cache_hit_and_change_in_this_process(client: FlaskClient, world: World) -> None:
    email = world.email("simulations.owner")
    body = {"subject": email.upper(), **VIEW}
    assert post(client, "/v1/check", world.token, body)[1]["reason"] == "granted"
    with Queries() as q:
        assert post(client, "/v1/check", world.token, body)[1]["reason"] == "granted"
    assert q.on("users") == []  # cached
    user = db.session.get(User, world.uid("simulations.owner"))
    assert user is not None
    user.email = "renamed@simulations.example"
    db.session.commit()
    assert post(client, "/v1/check", world.token, body)[1]["reason"] == "unknown_subject"
    renamed = {"subject": "renamed@simulations.example", **VIEW}
    assert post(client, "/v1/check", world.token, renamed)[1]["reason"] == "granted"


def test_change_outside_the_services_is_seen_at_the_next_load(client: FlaskClient, world: World) -> None:
    """A raw UPDATE writes no revision: the directory keeps the old email until the policy is reloaded
    (through the services, a change is a revision: test_email_change_through_the_service_reaches_another_app)."""
    from app.extensions import authz

    email = world.email("outsider")
    body = {"subject": email, **VIEW}
    assert post(client, "/v1/check", world.token, body)[1]["reason"] == "no_role"
    db.session.execute(
        text("UPDATE users SET email = 'moved@example.com' WHERE id = :id"), {"id": world.uid("outsider")}
    )
    db.session.commit()
    assert post(client, "/v1/check", world.token, body)[1]["reason"] == "no_role"  # as of the load
    authz.reload()
    assert post(client, "/v1/check", world.token, body)[1]["reason"] == "unknown_subject"
    assert post(client, "/v1/check", world.token, {"subject": "moved@example.com", **VIEW})[1]["reason"] == "no_role"


def test_unknown_people_cost_no_query(client: FlaskClient, world: World) -> None:
    """Nobody is looked up on a decision: ids, emails and external ids nobody has answer from memory."""
    post(client, "/v1/check", world.token, {"subject": 1, **VIEW})  # token cached, engine loaded
    checks = [{"subject": s, **VIEW} for s in (999_999, "user:999998", "nobody@example.com", "ext-nobody")]
    with Queries() as q:
        for body in checks:
            assert post(client, "/v1/check", world.token, body)[1]["reason"] == "unknown_subject"
        status, out = post(client, "/v1/check/batch", world.token, {"checks": checks})
        assert status == 200 and {r["reason"] for r in out["results"]} == {"unknown_subject"}
    assert q.statements == []


def test_batch_after_warmup_needs_no_query(client: FlaskClient, world: World) -> None:
    checks = [{"subject": world.uid(u), "workspace": f"{p}-demo", "action": a} for u, p, a, *_ in CASES]
    first = post(client, "/v1/check/batch", world.token, {"checks": checks})
    with Queries() as q:
        again = post(client, "/v1/check/batch", world.token, {"checks": checks})
    assert first == again and q.statements == []
    assert [r["reason"] for r in again[1]["results"]] == [c[5] for c in CASES]


# -- the body fast path is the schema -----------------------------------------------------------
LONG = "x" * 255
BODIES: list[Any] = [
    {"subject": 1, **VIEW},
    {"subject": "1", **VIEW},
    {"subject": True, **VIEW},
    {"subject": 1.0, **VIEW},
    {"subject": None, **VIEW},
    {"subject": [1], **VIEW},
    {"subject": 2**70, **VIEW},
    {"subject": 1, "workspace": LONG, "action": "a"},
    {"subject": 1, "workspace": "w", "action": LONG[:254]},
    {"subject": 1, **VIEW, "resource": None},
    {"subject": 1, **VIEW, "resource": {}},
    {"subject": 1, **VIEW, "resource": {"type": "t", "id": 5}},
    {"subject": 1, **VIEW, "resource": {"type": "t", "id": 5.5}},
    {"subject": 1, **VIEW, "resource": {"type": None}},
    {"subject": 1, **VIEW, "resource": {"type": LONG}},
    {"subject": 1, **VIEW, "resource": {"id": False}},
    {"subject": 1, **VIEW, "resource": {"attributes": None}},
    {"subject": 1, **VIEW, "resource": {"attributes": {}}},
    {"subject": 1, **VIEW, "resource": {"attributes": {"owner": 1, "group": "g", "role": "x"}}},
    {"subject": 1, **VIEW, "resource": {"attributes": {"owner": None, "team": None}}},
    {"subject": 1, **VIEW, "resource": {"attributes": {"owner": True}}},
    {"subject": 1, **VIEW, "resource": {"attributes": {"group": 5}}},
    {"subject": 1, **VIEW, "resource": {"attributes": {"new_role": LONG}}},
    {"subject": 1, "workspace": "\U0001f600" * 254, "action": "a"},  # 254 characters, 1,016 bytes
    {"subject": 1, "workspace": "\U0001f600" * 255, "action": "a"},
    {"subject": 1, **VIEW, "resource": {"attributes": {"colour": "red"}}},
    {"subject": 1, **VIEW, "resource": {"extra": 1}},
    {"subject": 1, **VIEW, "resource": []},
    {"subject": 1, **VIEW, "extra": 1},
    {"subject": 1, "workspace": "w"},
    {"subject": 1, **VIEW, "min_revision": 0},
    {"subject": 1, **VIEW, "min_revision": -1},
    {"subject": 1, **VIEW, "min_revision": True},
    {"subject": 1, **VIEW, "min_revision": None},
    {"subject": "\ud800@x", **VIEW},
    [1],
    "x",
]


def _answers(client: FlaskClient, token: str, bodies: list[Any]) -> list[Any]:
    out = []
    for body in bodies:
        out.append(post(client, "/v1/check", token, body))
        out.append(post(client, "/v1/check/batch", token, {"checks": [body]}))
        out.append(post(client, "/v1/check/batch", token, {"checks": [body, body], "min_revision": 0}))
    out.append(post(client, "/v1/check/batch", token, {"checks": [], "min_revision": -1}))
    out.append(post(client, "/v1/check/batch", token, {"checks": [], "extra": 1}))
    out.append(post(client, "/v1/check/batch", token, {"checks": None}))
    return out


def test_fast_path_answers_exactly_like_the_schema(
    app: Flask, client: FlaskClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The WSGI fast path and the Flask view share one parse: the same answers, problems included."""
    fast = _answers(client, world.token, BODIES)
    monkeypatch.setattr(app, "decision_fast_path", None)  # Flask only
    slow = _answers(client, world.token, BODIES)
    assert fast == slow
    assert any(status == 422 for status, _ in fast) and any(status == 200 for status, _ in fast)


# Bodies the JSON encoder above cannot produce: duplicate keys, NaN, a lone surrogate, deep nesting (none of
# them I-JSON: 400 from both paths), not JSON at all.
_DEMO = b'"workspace": "simulations-demo", "action": "view_dashboard"'
RAW_BODIES: list[tuple[bytes, str]] = [
    (b'{"subject": 999, "subject": 1, ' + _DEMO + b"}", "application/json"),
    (b'{"subject": NaN, ' + _DEMO + b"}", "application/json"),
    (b'{"subject": "\\ud800", ' + _DEMO + b"}", "application/json"),
    (b'{"subject": 1, ' + _DEMO + b', "resource": ' + b"[" * 5000 + b"]" * 5000 + b"}", "application/json"),
    (b'{"subject": 1, ' + _DEMO, "application/json"),
    (b'{"subject": 1, ' + _DEMO + b"}", "text/plain"),
]


def _raw_answers(client: FlaskClient, token: str) -> list[tuple[int, Any]]:
    out = []
    for body, ctype in RAW_BODIES:
        for path, data in (("/v1/check", body), ("/v1/check/batch", b'{"checks": [' + body + b"]}")):
            r = client.post(path, data=data, content_type=ctype, headers={"Authorization": f"Bearer {token}"})
            out.append((r.status_code, r.get_json(silent=True)))
    return out


def test_fast_path_reads_raw_bodies_like_the_json_parser(
    app: Flask, client: FlaskClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _raw_answers(client, world.token)
    monkeypatch.setattr(app, "decision_fast_path", None)  # Flask only
    slow = _raw_answers(client, world.token)
    assert fast == slow
    assert {status for status, _ in fast} == {400, 415}  # every body must be I-JSON: NaN, "\ud800" are 400 too
    assert fast[0][0] == 400 and "duplicate key 'subject'" in fast[0][1]["detail"]  # neither "subject" decided


# -- without the database --------------------------------------------------------------------------
def test_database_held_down_decides_known_people_from_memory(client: FlaskClient, world: World, clock: Clock) -> None:
    """Known ids and emails seen before resolve without a query; anyone else is unknown_subject, not an error."""
    from app import database

    owner = world.uid("simulations.owner")
    email = {"subject": world.users["simulations.owner"].email, **VIEW}
    assert post(client, "/v1/check", world.token, email)[1]["allowed"] is True
    clock.now += 10 * 24 * 3600  # no entry expires
    guard = database.guard()
    assert guard is not None
    guard.failed("test: held down")
    try:
        with Queries() as q:
            assert post(client, "/v1/check", world.token, {"subject": owner, **VIEW})[1]["allowed"] is True
            status, out = post(client, "/v1/check", world.token, email)
            assert status == 200 and out["allowed"] is True
            for nobody in ("nobody@example.com", 999_999, "ext-nobody"):
                status, out = post(client, "/v1/check", world.token, {"subject": nobody, **VIEW})
                assert status == 200 and (out["allowed"], out["reason"]) == (False, "unknown_subject")
        assert q.statements == []
    finally:
        guard.answered()


# -- the directory of every user (app.policy.directory) --------------------------------
@contextlib.contextmanager
def held_down() -> Iterator[None]:
    """The database held down for this app, as after a failed wait: the hot path must not ask it."""
    from app import database

    guard = database.guard()
    assert guard is not None
    guard.failed("test: held down")
    try:
        yield
    finally:
        guard.answered()


def _known(world: World) -> list[str]:
    return [name for name in world.users if name != "outsider"]


def test_email_never_seen_resolves_with_the_database_held_down(client: FlaskClient, world: World) -> None:
    """Every email and external id the policy knows answers without a query, never asked for before."""
    want = {}
    emails = {name: world.email(name) for name in world.users}  # read now: any query clears the guard
    for name in _known(world):  # by id: the engine knows them, no user lookup by email
        status, out = post(client, "/v1/check", world.token, {"subject": world.uid(name), **VIEW})
        want[name] = (status, out["allowed"], out["reason"])
    with held_down(), Queries() as q:
        for name in _known(world):
            status, out = post(client, "/v1/check", world.token, {"subject": emails[name].upper(), **VIEW})
            assert (status, out["allowed"], out["reason"]) == want[name], name
        status, out = post(client, "/v1/check", world.token, {"subject": emails["outsider"], **VIEW})
        assert (status, out["reason"]) == (200, "no_role")  # a user without any role is held too
    assert q.statements == []


def test_new_user_granted_a_role_resolves_by_email_after_the_grant(client: FlaskClient, world: World) -> None:
    """The grant's commit fetches the user it names into this process's directory (not a decision)."""
    from tests.factories import add_member

    assert post(client, "/v1/check", world.token, {"subject": 1, **VIEW})[0] == 200  # the engine is loaded
    newcomer = create_user("newcomer@example.com")
    add_member(world.ws["simulations"], newcomer, "owner")
    with held_down(), Queries() as q:
        status, out = post(client, "/v1/check", world.token, {"subject": "NEWCOMER@example.com", **VIEW})
    assert (status, out["allowed"], out["reason"]) == (200, True, "granted")
    assert q.statements == []


@contextlib.contextmanager
def other_process(database_url: str) -> Iterator[Any]:
    """Another process's app on the same database (its own engine, caches and directory): its
    session, inside its app context; its connections closed at the end."""
    from tests.conftest import make_app

    with make_app(database_url).app_context():
        try:
            yield db.session()
        finally:
            db.session.remove()
            db.engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_email_change_through_the_service_reaches_another_app(
    client: FlaskClient, world: World, database_url: str
) -> None:
    """Another process confirms an email change and sets an external id: seen here once this process syncs."""
    from app.extensions import authz
    from app.identity import email_changes, users

    uid = world.uid("simulations.owner")
    old = world.email("simulations.owner")
    assert post(client, "/v1/check", world.token, {"subject": old, **VIEW})[1]["reason"] == "granted"
    with other_process(database_url) as session:
        user = session.get(User, uid)
        assert user is not None
        token = email_changes.request(session, user, "moved@simulations.example", ttl_hours=1, public_url="http://t")
        session.commit()
        email_changes.confirm(session, token)
        users.set_external_id(session, user, "idp-owner-1", actor_id=uid)
        session.commit()
    assert post(client, "/v1/check", world.token, {"subject": old, **VIEW})[1]["reason"] == "granted"  # not synced
    authz.sync()
    with held_down(), Queries() as q:
        for subject, reason in (
            (old, "unknown_subject"),
            ("moved@simulations.example", "granted"),
            ("idp-owner-1", "granted"),
        ):
            status, out = post(client, "/v1/check", world.token, {"subject": subject, **VIEW})
            assert (status, out["reason"]) == (200, reason), subject
    assert q.statements == []


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_new_user_granted_elsewhere_resolves_by_email_after_sync(
    client: FlaskClient, world: World, database_url: str
) -> None:
    """The grant's revision, applied by this process's sync, fetches the new user by id."""
    from app.extensions import authz
    from tests.factories import add_member

    assert post(client, "/v1/check", world.token, {"subject": 1, **VIEW})[0] == 200  # the engine is loaded
    ws_id = world.ws["simulations"].id  # read here: in the other app's context it would use that app's engine
    with other_process(database_url):
        newcomer = create_user("elsewhere@example.com")
        add_member(db.session.get(Workspace, ws_id), newcomer, "owner")
    authz.sync()
    with held_down(), Queries() as q:
        status, out = post(client, "/v1/check", world.token, {"subject": "elsewhere@example.com", **VIEW})
    assert (status, out["allowed"], out["reason"]) == (200, True, "granted")
    assert q.statements == []


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_user_created_elsewhere_is_found_after_sync(client: FlaskClient, world: World, database_url: str) -> None:
    """Creating a user is a revision: another process holds the user (no role yet) once it syncs."""
    from app.extensions import authz
    from app.identity import users

    body = {"subject": "signed-up@example.com", **VIEW}
    assert post(client, "/v1/check", world.token, body)[1]["reason"] == "unknown_subject"
    with other_process(database_url) as session:
        users.create_user(session, "signed-up@example.com", "correct horse battery")
        session.commit()
    assert post(client, "/v1/check", world.token, body)[1]["reason"] == "unknown_subject"  # not synced yet
    authz.sync()
    with held_down(), Queries() as q:
        status, out = post(client, "/v1/check", world.token, body)
    assert (status, out["reason"]) == (200, "no_role")
    assert q.statements == []


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
def test_settings_change_elsewhere_reaches_the_catalog_here(
    client: FlaskClient, world: World, database_url: str
) -> None:
    """A catalog changed through the service in another process is this process's once it syncs:
    AuthZEN reads catalogs from the directory, never the table."""
    from app.decisions import authzen
    from app.extensions import authz
    from app.membership import workspaces

    assert post(client, "/v1/check", world.token, {"subject": 1, **VIEW})[0] == 200  # the engine is loaded
    owner_id, ws_id = world.uid("simulations.owner"), world.ws["simulations"].id
    assert authzen.catalog("simulations-demo") == {}
    with other_process(database_url) as session:
        owner, ws = session.get(User, owner_id), session.get(Workspace, ws_id)
        assert owner is not None and ws is not None
        listed = [{"type": "scenario", "id": "s-1", "properties": {"owner": owner_id}}]
        workspaces.update_settings(session, owner, ws, settings={"authzen_resources": listed})
    assert authzen.catalog("simulations-demo") == {}  # not synced yet
    authz.sync()
    with held_down(), Queries() as q:
        assert authzen.catalog("simulations-demo") == {"scenario": {"s-1": {"owner": owner_id}}}
    assert q.statements == []
