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


def test_readyz_without_database_is_503(client: FlaskClient, app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import OperationalError

    from app.extensions import db

    def down(*args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(db.session, "execute", down)
    resp = client.get("/readyz")
    assert resp.status_code == 503 and resp.get_json()["checks"]["database"] == "unreachable"


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
