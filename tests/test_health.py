"""Liveness, readiness and metrics."""

from __future__ import annotations

import importlib.metadata

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.errors import UnavailableError


def test_healthz(client: FlaskClient) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.get_json() == {"status": "ok", "checks": {}}
    assert resp.headers["X-Request-ID"]


def test_readyz_when_ready(client: FlaskClient) -> None:
    from app.extensions import authz

    resp = client.get("/readyz")
    assert resp.status_code == 200
    body = resp.get_json()
    # seconds since the engine last read the revision log: the policy's staleness
    staleness = body.pop("staleness_seconds")
    assert isinstance(staleness, (int, float)) and 0 <= staleness < 60
    assert body["sync"].pop("seconds_since_sync") == staleness
    status = authz.sync_status()
    status.pop("seconds_since_sync")
    assert body == {
        "status": "ready",
        # sync: "off" — no listener under tests; "listen" or "poll" (with sync_reason) in servers
        "checks": {"database": "ok", "policy": "loaded", "verification": "pass", "sync": "off"},
        "revision": authz.engine.revision,
        "head": authz.engine.revision,
        "lag_revisions": 0,
        "source": "database",  # loaded from the database (not from POLICY_SNAPSHOT_PATH's snapshot)
        "held": "all",  # every workspace (a replica of a partitioned tier: "partition k/N")
        # the listener is off under tests (SQLite / POLICY_SYNC); its state is reported as is
        "sync": status,
    }
    assert body["sync"]["loaded"] is True and body["sync"]["revision"] == authz.engine.revision


def test_readyz_without_policy_is_503(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from app.policy.runtime import PolicyRuntime as Authz

    def broken(self: Authz) -> None:
        raise UnavailableError("policy not imported; run `flask db-upgrade`")

    monkeypatch.setattr(Authz, "engine", property(broken))
    resp = client.get("/readyz")
    assert resp.status_code == 503 and resp.get_json()["checks"]["policy"] == "not loaded"


def test_readyz_through_a_database_outage(client: FlaskClient, app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """Database down: still ready to decide (policy in memory, within the staleness bound), not
    ready for writes (503 with Retry-After); liveness unaffected."""
    from sqlalchemy.exc import OperationalError

    from app.extensions import authz, db

    assert client.get("/readyz").status_code == 200  # loaded while the database answered
    assert client.get("/readyz/writes").status_code == 200
    revision = authz.engine.revision

    def down(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(db.session, "execute", down)
    resp = client.get("/readyz")
    body = resp.get_json()
    assert resp.status_code == 200 and body["status"] == "ready", body
    assert body["checks"]["database"] == "unreachable" and body["checks"]["policy"] == "loaded"
    assert body["revision"] == revision and body["head"] is None and "staleness_seconds" in body
    writes = client.get("/readyz/writes")
    assert writes.status_code == 503 and writes.headers["Retry-After"] == "1"
    assert writes.get_json() == {"status": "unavailable", "checks": {"database": "unreachable"}}
    assert client.get("/healthz").status_code == 200


def test_readyz_with_a_listener_never_asks_the_database(
    client: FlaskClient, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server's process (a listener keeps it in step) answers /readyz from memory: no query, so a
    frozen database cannot hold a load balancer's check past its timeout (issue 23, reproduction 1:
    HAProxy's 500 ms check timed out while /readyz waited 2 s on a frozen PostgreSQL, and 26% of
    the decisions through HAProxy got its 503). Head and database state are what it last learned."""
    from app.extensions import authz, db

    class Listening:
        def status(self) -> dict[str, object]:
            return {"mode": "listen", "connected": True}

        def stop(self) -> None:
            pass

    assert client.get("/readyz").status_code == 200
    authz.set_listener(app, Listening())
    asked: list[object] = []
    monkeypatch.setattr(db.session, "execute", lambda *a, **k: asked.append(a))
    body = client.get("/readyz").get_json()
    assert asked == [] and body["status"] == "ready" and body["checks"]["database"] == "ok", body
    assert body["head"] == authz.engine.revision and body["lag_revisions"] == 0
    app.extensions["database"].failed("no answer within 2 s")  # what a request or the listener found
    body = client.get("/readyz").get_json()
    assert asked == [] and body["status"] == "ready" and body["checks"]["database"] == "unreachable", body


def test_readyz_writes_when_the_database_answers(client: FlaskClient) -> None:
    resp = client.get("/readyz/writes")
    body = resp.get_json()
    assert resp.status_code == 200 and body["status"] == "ready" and body["checks"] == {"database": "ok"}
    assert isinstance(body["head"], int)


def test_readyz_through_an_outage_until_the_staleness_bound(
    client: FlaskClient, app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past POLICY_MAX_STALENESS_SECONDS during the outage: not ready to decide any more."""
    from sqlalchemy.exc import OperationalError

    from app.extensions import authz, db

    class Listening:
        def status(self) -> dict[str, object]:
            return {"mode": "listen", "connected": False}

        def stop(self) -> None:
            pass

    assert client.get("/readyz").status_code == 200
    authz.set_listener(app, Listening())
    app.config["POLICY_MAX_STALENESS_SECONDS"] = 60.0

    def down(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(db.session, "execute", down)
    # With a listener /readyz asks no query: the process knows the database is down from its guard.
    app.extensions["database"].failed("no answer within 2 s")
    authz._synced[app] -= 30  # 30 s into the outage: within the bound
    within = client.get("/readyz")
    assert within.status_code == 200, within.get_json()
    assert 29 < within.get_json()["staleness_seconds"] < 60
    authz._synced[app] -= 60  # 90 s: past it
    past = client.get("/readyz")
    assert past.status_code == 503 and past.get_json()["checks"]["staleness"] == "stale"
    assert past.get_json()["staleness_seconds"] > 60
    assert client.get("/readyz/writes").status_code == 503


def test_metrics_exposition(client: FlaskClient) -> None:
    resp = client.get("/metrics")
    assert resp.status_code == 200
    text = resp.get_data(as_text=True)
    assert "# TYPE authz_decisions_total counter" in text
    assert "# TYPE authz_decision_seconds histogram" in text
    assert "authz_policy_revision" in text
    assert "# TYPE process_resident_memory_bytes gauge" in text and "# TYPE python_info gauge" in text
    version = importlib.metadata.version("learnauthz")
    assert f'learnauthz_build_info{{version="{version}"}} 1.0' in text.splitlines()


def test_metrics_are_per_app(app: Flask) -> None:
    """Two apps in one process never share counters (per-app CollectorRegistry)."""
    from app import observability
    from tests.conftest import make_app

    other = make_app(app.config["SQLALCHEMY_DATABASE_URI"])
    assert observability.init_app(app) is not observability.init_app(other)
    assert observability.init_app(app).registry is not observability.init_app(other).registry
