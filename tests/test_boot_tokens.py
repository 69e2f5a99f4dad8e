"""Boot and tokens without the database, against a real private PostgreSQL (``bench.pgcluster``) and
real servers. Every live service token is in memory from the load: a never-used token is accepted
while the database is down, a revoked or unknown one refused (401). A server started while the
database is down (gunicorn with ``gunicorn.conf.py``, and ``python -m app.serve``) stays up
(/healthz 200, /readyz 503, decisions 503) and loads when the database is started (/readyz 200,
decisions 200). Skipped without the PostgreSQL server binaries."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
from sqlalchemy import create_engine, text

from bench.http import process
from bench.outage import build
from bench.pgcluster import Cluster, ClusterUnavailableError
from tests.conftest import ROOT
from tests.test_multiprocess import Server, _free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Cluster:
    """A private PostgreSQL of its own for each test (each kills it), with an empty database."""
    try:
        pg = Cluster("boot")
    except ClusterUnavailableError as exc:
        pytest.skip(str(exc))
    request.addfinalizer(pg.stop)
    pg.create_database()
    return pg


def _tokens(url: str) -> tuple[str, str]:
    """A token nobody uses before the outage and a revoked one (both all-workspaces)."""
    from app import create_app
    from app.extensions import db
    from app.policy import tokens

    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "t-0123456789abcdef0123456789abcdef", "MAIL_BACKEND": "memory"}
    )
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
    cluster: Cluster,
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


def _unready_then_loaded(base: str, alive: Callable[[], bool], pg: Cluster, token: str, operator: int) -> None:
    """The server at base is up without its database (/healthz 200, /readyz 503, decisions 503);
    once the database is started, it loads by itself (/readyz 200) and decides (200)."""
    http = requests.Session()
    auth = {"Authorization": f"Bearer {token}"}
    body = {"subject": operator, "workspace": "o0", "action": "view_dashboard"}
    deadline = time.monotonic() + 60
    while True:  # up (liveness) although nothing could be loaded
        assert alive(), "the server exited without its database"
        try:
            live = http.get(f"{base}/healthz", timeout=5)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    assert live.status_code == 200
    assert http.get(f"{base}/readyz", timeout=10).status_code == 503
    down = http.post(f"{base}/v1/check", json=body, headers=auth, timeout=10)
    assert down.status_code == 503, down.text
    time.sleep(3.0)  # the server retries meanwhile
    pg.start()
    deadline = time.monotonic() + 60
    while http.get(f"{base}/readyz", timeout=10).status_code != 200:  # the listener's retries load the policy
        assert alive() and time.monotonic() < deadline
        time.sleep(0.2)
    up = http.post(f"{base}/v1/check", json=body, headers=auth, timeout=10)
    assert up.status_code == 200, up.text
    assert up.json()["allowed"] is True


def test_gunicorn_boots_without_the_database_unready_and_loads_when_it_returns(
    cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = build(cluster.url, workspaces=2, members=2, token_workspace="o0")
    cluster.signal(signal.SIGKILL)  # down before the server starts
    monkeypatch.setenv("FLASK_DATABASE_REQUEST_WAIT_SECONDS", "1.0")
    monkeypatch.setenv("FLASK_DATABASE_WAIT_SECONDS", "2.0")
    server = Server(cluster.url, "bootdown", tmp_path)
    try:
        _unready_then_loaded(server.base, lambda: server.proc.poll() is None, cluster, world.token, world.operator)
    finally:
        server.stop()


def test_granian_boots_without_the_database_unready_and_loads_when_it_returns(
    cluster: Cluster,
    tmp_path: Path,
) -> None:
    world = build(cluster.url, workspaces=2, members=2, token_workspace="o0")
    cluster.signal(signal.SIGKILL)  # down before the server starts
    port = _free_port()
    env = {
        **os.environ,
        "FLASK_SQLALCHEMY_DATABASE_URI": cluster.url,
        "FLASK_SECRET_KEY": "boot-test-0123456789abcdef0123456789abcdef",
        "FLASK_MAIL_BACKEND": "memory",
        "FLASK_POLICY_POLL_SECONDS": "1.0",
        "FLASK_DATABASE_REQUEST_WAIT_SECONDS": "1.0",
        "FLASK_DATABASE_WAIT_SECONDS": "2.0",
        "SERVE_BIND": f"127.0.0.1:{port}",
        "SERVE_WORKERS": "1",
        "PYTHONPATH": str(ROOT),
    }
    with process([sys.executable, "-m", "app.serve"], env, str(tmp_path / "serve.log"), cwd=str(ROOT)) as proc:
        base = f"http://127.0.0.1:{port}"
        _unready_then_loaded(base, lambda: proc.poll() is None, cluster, world.token, world.operator)
