"""Every live service token is in memory from the load: a never-used token is accepted while the
database is down, a revoked one refused (401), with a real private PostgreSQL killed before the
first decision and a real gunicorn server (``tests.mp_app``). Skipped without PostgreSQL binaries."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from bench.outage import build
from bench.pgcluster import Cluster
from tests.test_multiprocess import Server
from tests.test_outage import cluster  # noqa: F401 - the private PostgreSQL fixture (this module's own)

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _tokens(url: str) -> tuple[str, str]:
    """A token nobody uses before the outage and a revoked one (both all-workspaces)."""
    from app import create_app
    from app.extensions import db
    from app.policy import tokens

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "t", "MAIL_BACKEND": "memory"})
    with app.app_context():
        session = db.session()
        _, fresh = tokens.create_token(session, "never-used", all_workspaces=True, default_workspace="o0")
        _, gone = tokens.create_token(session, "revoked", all_workspaces=True, default_workspace="o0")
        session.commit()
        tokens.revoke_token(session, "revoked")
        session.commit()
        db.session.remove()
        db.engine.dispose()
    return fresh, gone


def test_a_never_used_token_is_accepted_and_a_revoked_one_refused_with_the_database_down(
    cluster: Cluster,  # noqa: F811 - the imported fixture
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = build(cluster.url, workspaces=2, members=2, token_workspace="o0")
    fresh, gone = _tokens(cluster.url)
    monkeypatch.setenv("FLASK_DATABASE_REQUEST_WAIT_SECONDS", "1.0")
    monkeypatch.setenv("FLASK_DATABASE_WAIT_SECONDS", "2.0")
    server = Server(cluster.url, "boottokens", tmp_path)
    try:
        server.wait_ready()
        engine = create_engine(cluster.url)
        with engine.connect() as conn:  # nothing authenticated yet: no token was ever used
            used = conn.execute(text("SELECT count(*) FROM service_tokens WHERE last_used_at IS NOT NULL"))
            assert used.scalar() == 0
        engine.dispose()
        cluster.signal(signal.SIGKILL)  # the database is gone before the first decision
        body = {"subject": world.operator, "workspace": "o0", "action": "view_dashboard"}
        http = requests.Session()
        ok = http.post(f"{server.base}/v1/check", json=body, headers={"Authorization": f"Bearer {fresh}"}, timeout=10)
        assert ok.status_code == 200, ok.text
        assert ok.json()["allowed"] is True
        refused = http.post(
            f"{server.base}/v1/check", json=body, headers={"Authorization": f"Bearer {gone}"}, timeout=10
        )
        assert refused.status_code == 401, refused.text
        assert refused.headers["Content-Type"].startswith("application/problem+json")
        unknown = http.post(
            f"{server.base}/v1/check", json=body, headers={"Authorization": "Bearer lat_nosuchtoken"}, timeout=10
        )
        assert unknown.status_code == 401, unknown.text
    finally:
        server.stop()
