"""Bounded database waits: a database that is gone or never answers is a quick 503, never a hang or a 500."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from app import database
from app.config import DEFAULTS
from tests.conftest import make_app


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections and never says a word (a frozen server)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    for s in held:
        s.close()
    srv.close()


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (a killed server)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def _url(port: int) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/nowhere"


def test_engine_options_carry_every_timeout() -> None:
    cfg = {**DEFAULTS, "SQLALCHEMY_DATABASE_URI": _url(5432), "DATABASE_STATEMENT_TIMEOUT_SECONDS": 1.5}
    opts = database.engine_options(cfg)
    assert opts["pool_pre_ping"] is True and opts["pool_timeout"] == 1.0
    assert opts["connect_args"] == {"connect_timeout": 2, "options": "-c statement_timeout=1500"}
    sqlite = database.engine_options({**DEFAULTS, "SQLALCHEMY_DATABASE_URI": "sqlite://"})
    assert sqlite == {"pool_pre_ping": True, "hide_parameters": True}
    mine = {**cfg, "SQLALCHEMY_ENGINE_OPTIONS": {"pool_timeout": 9, "connect_args": {"connect_timeout": 7}}}
    assert database.engine_options(mine)["connect_args"]["connect_timeout"] == 7
    assert database.engine_options(mine)["pool_timeout"] == 9


@pytest.mark.parametrize("kind", ["closed", "silent"])
def test_unreachable_database_is_a_quick_503_with_retry_after(kind: str, request: pytest.FixtureRequest) -> None:
    port = request.getfixturevalue(f"{kind}_port")
    # A 5 s hold: a stalled runner between the two requests must not let it expire (CI saw 0.84 s).
    app = make_app(_url(port), PROPAGATE_UNEXPECTED=True, POLICY_SYNC="off", DATABASE_RETRY_SECONDS=5.0)
    client = app.test_client()
    started = time.monotonic()
    # An unknown token must be looked up: the database is needed and cannot answer.
    resp = client.post(
        "/v1/check",
        json={"subject": 1, "workspace": "w", "action": "a"},
        headers={"Authorization": "Bearer lat_" + "x" * 43},
    )
    first = time.monotonic() - started
    assert resp.status_code == 503, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json" and resp.headers["Retry-After"] == "5"
    assert first < 3.5  # connect_timeout is 2 s at least (libpq)
    # Held down now: the next request needing the database does not wait again (a wait would be
    # connect_timeout, 2 s: the bound sits below it, with room for a loaded runner).
    started = time.monotonic()
    ready = client.get("/readyz/writes")
    assert ready.status_code == 503 and time.monotonic() - started < 1.5
    assert ready.headers["Retry-After"] == "5"  # the guard's hold, as on every database 503
    assert ready.get_json()["checks"]["database"] == "unreachable"
    with app.app_context():
        g = database.guard()
        assert g is not None and g.is_down() and g.failures >= 1


def test_readyz_first_on_a_silent_database_answers_within_its_bound(silent_port: int) -> None:
    """The issue's reproduction: /readyz hung on a frozen database; now it is a 503 within connect_timeout."""
    app = make_app(_url(silent_port), POLICY_SYNC="off")
    started = time.monotonic()
    resp = app.test_client().get("/readyz")  # never loaded: not ready to decide either
    assert resp.status_code == 503 and time.monotonic() - started < 7.5
    assert resp.get_json()["checks"]["database"] == "unreachable"


class _Listening:
    def status(self) -> dict[str, object]:
        return {"mode": "listen", "connected": False}

    def stop(self) -> None:
        pass


def test_past_the_staleness_bound_decisions_fail_closed(app: Flask, client: FlaskClient) -> None:
    from app.extensions import authz, db
    from app.policy import tokens

    _, secret = tokens.create_token(db.session(), "stale", all_workspaces=True)
    db.session.commit()
    body = {"subject": 1, "workspace": "nowhere", "action": "view_dashboard"}
    auth = {"Authorization": f"Bearer {secret}"}
    assert client.post("/v1/check", json=body, headers=auth).status_code == 200
    assert authz.staleness() is None  # no listener: age says nothing
    authz.set_listener(app, _Listening())
    authz._synced[app] -= 120  # last read two minutes ago
    assert authz.staleness() is not None and authz.staleness() > 100  # type: ignore[operator]
    assert client.post("/v1/check", json=body, headers=auth).status_code == 200  # bound off: from memory
    app.config["POLICY_MAX_STALENESS_SECONDS"] = 60.0
    resp = client.post("/v1/check", json=body, headers=auth)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "1"
    assert resp.get_json()["staleness_seconds"] > 100
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["staleness"] == "stale"
    assert ready.get_json()["staleness_seconds"] > 100


@pytest.mark.postgres
def test_a_request_teardown_waits_no_longer_than_the_request_deadline(request: pytest.FixtureRequest) -> None:
    """A request whose database froze after its last statement ends its transaction in the app
    context's teardown, where Flask has no request context any more: that rollback waited with the
    background deadline (60 s), holding the server's thread, instead of the request's 2 s (the
    HAProxy outage drill saw a /readyz/writes answered 4 s after it began, once the database thawed).
    Every wait on behalf of a request is bounded by the request deadline, its teardown's included."""
    import os
    import signal

    url, _ = request.getfixturevalue("pg_database")
    app = make_app(url, POLICY_SYNC="off", DATABASE_WAIT_SECONDS=30.0)
    frozen: list[int] = []

    @app.get("/_freeze_after_reading")
    def freeze_after_reading() -> str:
        from app.extensions import db

        pid = int(db.session.execute(text("select pg_backend_pid()")).scalar_one())
        os.kill(pid, signal.SIGSTOP)  # the transaction is open: the teardown must end it
        frozen.append(pid)
        return "read"

    thaw = threading.Timer(12.0, lambda: [os.kill(p, signal.SIGCONT) for p in frozen])
    thaw.start()
    try:
        started = time.monotonic()
        resp = app.test_client().get("/_freeze_after_reading")
        took = time.monotonic() - started
    finally:
        thaw.cancel()
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert frozen and resp.status_code == 200  # the view had answered before the teardown
    assert took < 3.5, took  # 2 s (DATABASE_REQUEST_WAIT_SECONDS) and slack; it was the thaw at 12 s
    with app.app_context():
        g = database.guard()
        assert g is not None and g.failures >= 1  # the teardown's wait was the one that gave up
