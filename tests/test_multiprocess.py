"""Many processes, one policy: real gunicorn processes on a fresh PostgreSQL database.

Three single-worker gunicorn servers (``gunicorn.conf.py``, so each worker loads the policy
and starts its own LISTEN thread after the fork). A role change committed through one is seen
by the others within 100 ms (p99 over many changes); a listener whose connection is killed
(``pg_terminate_backend``) reconnects and resynchronises; a request for a revision a process has
not reached waits or answers 503, never a stale decision.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from tests.conftest import PG_ADMIN_URL, ROOT, fresh_pg_database, make_app

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

WS = "ws:mp"
USER = "user:4242"
ROLE = "role:simulations:owner"
ACTION = "view_ai_spend"  # owners only


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """One gunicorn process (master + 1 worker) serving tests.mp_app."""

    def __init__(self, url: str, name: str, tmp: Path, sync: str = "auto") -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "FLASK_SQLALCHEMY_DATABASE_URI": url,
            "FLASK_SECRET_KEY": "mp-test-0123456789abcdef0123456789abcdef",
            "FLASK_POLICY_SYNC": sync,
            "FLASK_POLICY_POLL_SECONDS": "1.0",
            "FLASK_MIN_REVISION_WAIT_SECONDS": "0.5",
            "FLASK_MAIL_BACKEND": "memory",
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "GUNICORN_WORKERS": "1",
            "PYTHONPATH": str(ROOT),
        }
        self.log = (tmp / f"{name}.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "tests.mp_app:create()"],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.http = requests.Session()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.proc.returncode}; see {self.log.name}")
            try:
                st = self.status()
                if st["loaded"] and (st["listener"] or {}).get("connected", True):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server on {self.port} not ready")

    def status(self) -> dict[str, Any]:
        return dict(self.http.get(f"{self.base}/_mp/status", timeout=5).json())

    def check(self, min_revision: int = 0) -> requests.Response:
        params = {"sub": USER, "dom": WS, "act": ACTION, "min_revision": str(min_revision)}
        return self.http.get(f"{self.base}/_mp/check", params=params, timeout=5)

    def allowed(self) -> bool:
        return bool(self.check().json()["allowed"])

    def link(self, op: str, rule: tuple[str, ...]) -> int:
        r = self.http.post(f"{self.base}/_mp/link", json={"op": op, "rule": list(rule)}, timeout=10)
        r.raise_for_status()
        return int(r.json()["revision"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def add_workspace(url: str, message: str) -> None:
    """Commit the revision that makes WS a simulations workspace."""
    app = make_app(url)
    with app.app_context():
        from app.authz import RuleChange
        from app.extensions import db
        from app.policy import store as policy_store

        session = db.session()
        handle = policy_store.begin_write(session, "test", None, message)
        policy_store.add_changes(session, handle, [RuleChange("add", ("g4", WS, "pack:simulations"))])
        session.commit()
        db.session.remove()
        db.engine.dispose()


@pytest.fixture(scope="module")
def mp_database() -> Iterator[str]:
    """A fresh, migrated database with one simulations workspace, dropped at the end."""
    with fresh_pg_database("test_mp") as url:
        add_workspace(url, "multiprocess workspace")
        yield url


@pytest.fixture(scope="module")
def servers(mp_database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """A and B listen; C has no listener (POLICY_SYNC=off) and relies on min_revision."""
    tmp = tmp_path_factory.mktemp("mp")
    started = {
        "a": Server(mp_database, "a", tmp),
        "b": Server(mp_database, "b", tmp),
        "c": Server(mp_database, "c", tmp, sync="off"),
    }
    try:
        for s in started.values():
            s.wait_ready()
        yield started
    finally:
        for s in started.values():
            s.stop()


def _wait_until(pred: Any, timeout: float) -> float:
    """Seconds until pred() is true (polling every 2 ms); raises on timeout."""
    t0 = time.perf_counter()
    while True:
        if pred():
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("condition not reached")
        time.sleep(0.002)


def test_each_worker_has_its_own_listener(servers: dict[str, Server]) -> None:
    """Listeners run in the workers (after fork), one connection each."""
    a, b = servers["a"].status(), servers["b"].status()
    assert a["pid"] != b["pid"]
    assert a["listener"]["connected"] and b["listener"]["connected"]
    assert a["listener"]["backend_pid"] != b["listener"]["backend_pid"]
    assert servers["c"].status()["listener"] is None


def test_role_change_reaches_other_process_fast(servers: dict[str, Server]) -> None:
    """Grant and revoke through A, 30 times; B sees each within p99 ≤ 100 ms."""
    a, b = servers["a"], servers["b"]
    rule = ("g", USER, ROLE, WS)
    latencies = []
    for _ in range(15):
        for op, want in (("add", True), ("remove", False)):
            a.link(op, rule)  # returns after commit
            t0 = time.perf_counter()
            _wait_until(lambda want=want: b.allowed() is want, timeout=5)
            latencies.append(time.perf_counter() - t0)
            assert a.allowed() is want  # read-your-writes in the writing process
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if len(latencies) > 1 else latencies[0]
    print(f"propagation: p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
    assert p99 <= 0.100, latencies


def test_killed_listener_connection_recovers(servers: dict[str, Server], mp_database: str) -> None:
    """pg_terminate_backend on B's listener; a change made meanwhile still reaches B."""
    a, b = servers["a"], servers["b"]
    before = b.status()["listener"]
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        assert c.execute(text("SELECT pg_terminate_backend(:p)"), {"p": before["backend_pid"]}).scalar()
    admin.dispose()
    rule = ("g", USER, ROLE, WS)
    a.link("add", rule)  # possibly while B is reconnecting: the revision log has it
    took = _wait_until(lambda: b.allowed(), timeout=5)
    after = _wait_until_status(
        b, lambda st: st["listener"]["connected"] and st["listener"]["reconnects"] > before["reconnects"]
    )
    assert after["listener"]["backend_pid"] != before["backend_pid"]
    print(f"recovered in {took * 1000:.0f} ms")
    a.link("remove", rule)
    _wait_until(lambda: not b.allowed(), timeout=2)


def _wait_until_status(server: Server, pred: Any, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = server.status()
        if pred(st):
            return st
        time.sleep(0.02)
    raise TimeoutError("listener did not recover")


def test_min_revision_is_never_answered_stale(servers: dict[str, Server]) -> None:
    """C has no listener: asking for the new revision makes it catch up first; a future one is 422."""
    a, c = servers["a"], servers["c"]
    rule = ("g", USER, ROLE, WS)
    stale_revision = c.check().json()["revision"]
    revision = a.link("add", rule)
    assert revision > stale_revision
    assert c.check().json()["revision"] == stale_revision  # no listener: C has not moved by itself
    fresh = c.check(min_revision=revision)
    assert fresh.status_code == 200 and fresh.json()["allowed"] is True and fresh.json()["revision"] >= revision
    future = c.check(min_revision=revision + 1000)  # does not exist yet: refused at once (issue 9)
    assert future.status_code == 422 and future.elapsed.total_seconds() < 1.0
    assert future.headers["Content-Type"].startswith("application/problem+json")
    a.link("remove", rule)
