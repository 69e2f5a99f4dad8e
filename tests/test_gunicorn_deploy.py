"""gunicorn as deployed: the secret-key refusal, and preloaded workers on real PostgreSQL.

With ``GUNICORN_PRELOAD=1`` the master loads the policy once and forks two workers from it. A
role change committed through one worker is decided at the new revision by both; a worker killed
with SIGKILL is re-forked from the master's (old) engine and must catch up before its first
answer, never deciding below the head. gunicorn without ``FLASK_SECRET_KEY`` does not start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ROOT, fresh_pg_database, server_process
from tests.test_multiprocess import ACTION, ROLE, USER, WS, _free_port, add_workspace

GUNICORN = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "tests.mp_app:create()"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FLASK_SECRET_KEY", "SECRET_KEY")}
    env.update({"FLASK_MAIL_BACKEND": "memory", "PYTHONPATH": str(ROOT), **extra})
    return env


@pytest.mark.parametrize("preload", ["1", "0"])
def test_gunicorn_refuses_to_start_without_secret_key(tmp_path: Path, preload: str) -> None:
    """No FLASK_SECRET_KEY: gunicorn exits non-zero naming the setting (master or worker boot)."""
    env = _env(
        FLASK_SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.db'}",
        GUNICORN_BIND=f"127.0.0.1:{_free_port()}",
        GUNICORN_WORKERS="1",
        GUNICORN_PRELOAD=preload,
    )
    proc = subprocess.run(GUNICORN, cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "SECRET_KEY is not configured" in proc.stdout + proc.stderr


def _workers(master: int) -> set[int]:
    """The master's live child processes (its workers)."""
    out = subprocess.run(["ps", "--ppid", str(master), "-o", "pid="], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


@pytest.fixture(scope="module")
def preloaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A fresh database and one gunicorn (preload, 2 workers) on it; dropped at the end."""
    with fresh_pg_database("test_gd") as url:
        add_workspace(url, "gunicorn deploy workspace")
        port = _free_port()
        env = _env(
            FLASK_SQLALCHEMY_DATABASE_URI=url,
            FLASK_SECRET_KEY="gd-test-0123456789abcdef0123456789abcdef",
            FLASK_POLICY_POLL_SECONDS="1.0",
            GUNICORN_BIND=f"127.0.0.1:{port}",
            GUNICORN_WORKERS="2",
            GUNICORN_PRELOAD="1",
        )
        base = f"http://127.0.0.1:{port}"

        def ready(proc: subprocess.Popen[bytes]) -> bool:
            return len(_workers(proc.pid)) == 2 and requests.get(f"{base}/readyz", timeout=2).status_code == 200

        log = tmp_path_factory.mktemp("gd") / "gunicorn.log"
        with server_process(GUNICORN, env, log, ready, timeout=60) as proc:
            yield {"base": base, "master": proc.pid, "url": url}


def _check(base: str) -> dict[str, Any]:
    """One decision on a fresh connection (the kernel hands it to either worker)."""
    r = requests.get(f"{base}/_mp/check", params={"sub": USER, "dom": WS, "act": ACTION}, timeout=5)
    r.raise_for_status()
    return dict(r.json())


def _link(base: str, op: str) -> int:
    r = requests.post(f"{base}/_mp/link", json={"op": op, "rule": ["g", USER, ROLE, WS]}, timeout=10)
    r.raise_for_status()
    return int(r.json()["revision"])


def _answers_from(base: str, pids: set[int], head: int, want: bool, timeout: float) -> int:
    """Poll until every pid in pids answered `want` at >= head; returns the answers seen.

    Once a worker has answered at the head it must never answer below it again.
    """
    current: set[int] = set()
    seen = 0
    deadline = time.monotonic() + timeout
    while not pids <= current:
        assert time.monotonic() < deadline, f"workers {pids - current} never answered at revision {head}"
        a = _check(base)
        seen += 1
        at_head = a["revision"] >= head and a["allowed"] is want
        assert at_head or a["pid"] not in current, f"worker {a['pid']} went back: {a}"
        if at_head:
            current.add(a["pid"])
    return seen


@pytest.mark.postgres
def test_preloaded_workers_both_decide_at_new_revision(preloaded: dict[str, Any]) -> None:
    """A grant and a revoke through one worker are decided at their revision by both workers."""
    base, workers = preloaded["base"], _workers(preloaded["master"])
    assert len(workers) == 2
    for op, want in (("add", True), ("remove", False), ("add", True)):
        head = _link(base, op)
        _answers_from(base, workers, head, want, timeout=5)


@pytest.mark.postgres
def test_killed_worker_is_reforked_at_head_not_at_master_revision(preloaded: dict[str, Any]) -> None:
    """SIGKILL a worker after changes the master never saw: its replacement, forked from the
    master's preloaded (old) engine, answers at the head from its very first request."""
    base, master = preloaded["base"], preloaded["master"]
    for _ in range(3):  # several revisions past whatever the master loaded
        _link(base, "remove")
        head = _link(base, "add")
    before = _workers(master)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while True:
        now = _workers(master)
        fresh = now - before
        if fresh and len(now) == 2:
            break
        assert time.monotonic() < deadline, "gunicorn did not re-fork the killed worker"
        time.sleep(0.05)
    (new,) = fresh
    # Every answer, from either worker and from the new one's first, is at the head.
    deadline = time.monotonic() + 15
    answered = 0
    while True:
        try:
            a = _check(base)
        except requests.RequestException:  # the worker being killed / not yet accepting
            assert time.monotonic() < deadline
            continue
        assert a["revision"] >= head and a["allowed"] is True, a
        if a["pid"] == new:
            answered += 1
            if answered >= 3:
                break
        assert time.monotonic() < deadline, f"new worker {new} never answered"
