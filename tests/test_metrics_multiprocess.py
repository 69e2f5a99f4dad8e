"""``/metrics`` adds up across the workers of both servers (issue 23, reproduction 7).

A 2-worker gunicorn (``gunicorn.conf.py``) and a 2-worker ``python -m app.serve`` (granian) on real
PostgreSQL: decisions over fresh connections (both workers serve: the per-process prefix of the
``X-Request-ID`` they answer with tells which), then a scrape, ten times over. Every scrape —
whichever worker answers it — reports exactly the decisions made so far (before the fix each
worker reported its own: 18, 22, 18…), every counter only grows, process metrics come once per
live worker and build info once. A worker killed and respawned takes nothing back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, fresh_pg_database, server_process
from tests.test_multiprocess import _free_port
from tests.test_serve import ACTION, _world

pytestmark = pytest.mark.postgres

FLUSH = 0.2  # METRICS_FLUSH_SECONDS: a scrape waits 2.5 of them so every worker has written its counts
SERVERS = {
    "gunicorn": [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "app:create_app()"],
    "granian": [sys.executable, "-m", "app.serve"],
}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


@pytest.fixture(params=list(SERVERS), scope="module")
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A fresh database and the server (2 workers) on it. gunicorn gets a configured
    PROMETHEUS_MULTIPROC_DIR holding a stale file (emptied at start); granian none (a private one)."""
    kind = str(request.param)
    tmp = tmp_path_factory.mktemp(f"metrics-{kind}")
    with fresh_pg_database("test_metrics_mp") as url:
        world = _world(url)
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "LOG_FORMAT")}
        env.update(
            {
                "FLASK_SQLALCHEMY_DATABASE_URI": url,
                "FLASK_SECRET_KEY": "metrics-test-secret-key-of-32-bytes!",
                "FLASK_MAIL_BACKEND": "memory",
                "FLASK_METRICS_FLUSH_SECONDS": str(FLUSH),
                "FLASK_ACCESS_LOG_DECISIONS": "true",  # the test counts one access line per decision
                "PYTHONPATH": str(ROOT),
            }
        )
        if kind == "gunicorn":
            multiproc = tmp / "multiproc"
            multiproc.mkdir()
            (multiproc / "counter_999999.db").write_bytes(b"stale, from a previous run")
            env.update(
                GUNICORN_BIND=f"127.0.0.1:{port}",
                GUNICORN_WORKERS="2",
                GUNICORN_WORKER_CLASS="gthread",
                PROMETHEUS_MULTIPROC_DIR=str(multiproc),
            )
        else:
            env.update(SERVE_BIND=f"127.0.0.1:{port}", SERVE_WORKERS="2")
        base = f"http://127.0.0.1:{port}"

        def ready(proc: subprocess.Popen[bytes]) -> bool:
            return len(_children(proc.pid)) == 2 and requests.get(f"{base}/readyz", timeout=2).status_code == 200

        with server_process(SERVERS[kind], env, tmp / "server.log", ready) as proc:
            yield {**world, "kind": kind, "base": base, "proc": proc, "log": tmp / "server.log"}


def _worker_of(response: requests.Response) -> str:
    """The answering worker: request ids are a per-process random prefix and a counter."""
    return response.headers["X-Request-ID"][:16]


def _decide(served: dict[str, Any], n: int, workers: set[str]) -> None:
    """n decisions, each on a new connection (the kernel hands it to either worker)."""
    body = {"subject": served["owner"], "workspace": "serve-ws", "action": ACTION}
    for _ in range(n):
        r = requests.post(
            f"{served['base']}/v1/check", json=body, headers={"Authorization": f"Bearer {served['token']}"}, timeout=10
        )
        assert r.status_code == 200 and r.json()["allowed"] is True, r.text
        workers.add(_worker_of(r))


def _scrape(base: str, workers: set[str]) -> tuple[Samples, Samples, str]:
    """(counter and histogram samples, gauge and info samples, exposition text) of one scrape."""
    r = requests.get(f"{base}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    workers.add(_worker_of(r))
    counters: Samples = {}
    others: Samples = {}
    for family in text_string_to_metric_families(r.text):
        into = counters if family.type in ("counter", "histogram") else others
        for s in family.samples:
            into[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return counters, others, r.text


def _total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def _assert_monotonic(before: Samples, after: Samples) -> None:
    for key, value in before.items():
        assert key in after, f"{key} vanished"
        assert after[key] >= value, f"{key} went back: {value} -> {after[key]}"


def _assert_adds_up(counters: Samples, made: int) -> None:
    assert _total(counters, "authz_decisions_total") == made
    assert _total(counters, "authz_decisions_total", result="allow", reason="granted") == made
    assert _total(counters, "authz_decision_seconds_count", endpoint="check") == made
    # /metrics and /readyz are not in the request histogram: only decision.* and policy.* endpoints.
    assert _total(counters, "authz_http_request_seconds_count", endpoint="decision.check", status="200") == made


def _live_pids(others: Samples, name: str = "process_start_time_seconds") -> set[str]:
    return {dict(lab)["pid"] for (n, lab) in others if n == name}


def test_scrapes_add_up_across_workers_and_never_go_back(served: dict[str, Any]) -> None:
    base = served["base"]
    served_by: set[str] = set()
    scraped_by: set[str] = set()
    made = 0
    previous: Samples = {}
    for _ in range(12):
        _decide(served, 20, served_by)
        made += 20
        time.sleep(FLUSH * 2.5)
        counters, others, text = _scrape(base, scraped_by)
        _assert_monotonic(previous, counters)
        _assert_adds_up(counters, made)
        previous = counters
        # Once per scrape: build info and python_info; once per live worker: process metrics.
        assert text.count("\nlearnauthz_build_info{") == 1
        assert len([k for k in others if k[0] == "python_info"]) == 1
        workers = {str(p) for p in _children(served["proc"].pid)}
        assert _live_pids(others) == workers
        assert _live_pids(others, "process_resident_memory_bytes") == workers
        (revision,) = [v for (n, _), v in others.items() if n == "authz_policy_revision"]  # livemin: one series
        assert revision >= 1
    assert len(served_by) == 2, "one worker served every decision"
    # The kernel picks the worker of each new connection, often the one that last waited (12 scrapes
    # all went to one gunicorn worker in a CI run): scrape on until the other answers one too, each
    # scrape adding up as above.
    for _ in range(200):
        if len(scraped_by) == 2:
            break
        counters, _, _ = _scrape(base, scraped_by)
        _assert_monotonic(previous, counters)
        _assert_adds_up(counters, made)
        previous = counters
    assert len(scraped_by) == 2, "one worker answered every scrape"
    # The server's log: JSON lines only (LOG_FORMAT's default under a server), the server's own
    # lines included, and one access line per decision, with its request id.
    lines = [json.loads(line) for line in served["log"].read_text().splitlines() if line.strip()]
    assert {"gunicorn.error" if served["kind"] == "gunicorn" else "_granian", "app.access"} <= {
        line["logger"] for line in lines
    }
    checks = [line for line in lines if line["logger"] == "app.access" and line["path"] == "/v1/check"]
    assert len(checks) == made
    assert all(c["status"] == 200 and c["credential"] == "token" and len(c["request_id"]) == 32 for c in checks)


def test_a_killed_worker_takes_nothing_back(served: dict[str, Any]) -> None:
    base, master = served["base"], served["proc"].pid
    seen: set[str] = set()
    _decide(served, 20, seen)
    time.sleep(FLUSH * 2.5)  # both workers have written their counts
    before, _, _ = _scrape(base, seen)
    made = int(_total(before, "authz_decisions_total"))
    workers = _children(master)
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        now = _children(master)
        if len(now) == 2 and victim not in now:
            try:
                if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
        assert time.monotonic() < deadline, f"no replacement for the killed worker; see {served['log']}"
        time.sleep(0.1)
    for _ in range(5):
        counters, others, _ = _scrape(base, seen)
        _assert_monotonic(before, counters)
        _assert_adds_up(counters, made)  # the dead worker's counts stay, nothing is counted twice
    # The dead worker's gauges leave; the replacement's come once it has loaded the app and flushed.
    deadline = time.monotonic() + 30
    while True:
        counters, others, _ = _scrape(base, seen)
        _assert_adds_up(counters, made)
        live = _live_pids(others)
        assert str(victim) not in live
        if live == {str(p) for p in _children(master)}:
            break
        assert time.monotonic() < deadline, f"process metrics {live}; see {served['log']}"
        time.sleep(0.2)
    _decide(served, 20, seen)
    time.sleep(FLUSH * 2.5)
    counters, _, _ = _scrape(base, seen)
    _assert_monotonic(before, counters)
    _assert_adds_up(counters, made + 20)
