"""Writes never stall decisions (issue 25): ``python -m app.serve`` with a decision listener of its
own (``SERVE_DECISION_BIND``), on real PostgreSQL, while role changes are held on the policy's row
lock; and what that listener refuses to serve."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from tests.conftest import ROOT, fresh_pg_database, server_process
from tests.factories import PASSWORD
from tests.test_deploy_haproxy import CFG, HAPROXY
from tests.test_multiprocess import _free_port
from tests.test_serve import ACTION, SERVE, _check, _env, _world

HOLD_S = 3.0  # how long the policy head row stays locked: every role change waits that long
WRITES = 24  # PATCHes held at once: three times the main listener's 2 workers x 4 threads


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"SERVE_DECISION_BIND": "8001"}, "SERVE_DECISION_BIND must be host:port"),
        ({"SERVE_BIND": "127.0.0.1:8123", "SERVE_DECISION_BIND": "127.0.0.1:8123"}, "must differ from SERVE_BIND"),
        ({"SERVE_DECISION_BIND": "127.0.0.1:8124", "SERVE_DECISION_WORKERS": "0"}, "SERVE_DECISION_WORKERS must be"),
        ({"SERVE_DECISION_BIND": "127.0.0.1:8125", "SERVE_WRITE_NICE": "20"}, "SERVE_WRITE_NICE must be"),
    ],
)
def test_serve_refuses_a_bad_decision_listener(tmp_path: Path, extra: dict[str, str], message: str) -> None:
    env = _env(
        FLASK_SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.db'}",
        FLASK_SECRET_KEY="serve-test-0123456789abcdef0123456789abcdef",
        **extra,
    )
    proc = subprocess.run(SERVE, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr


@pytest.fixture(scope="module")
def listeners(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """app.serve (2 workers) with a decision listener (2 workers) on a fresh database."""
    with fresh_pg_database("test_serve_decisions") as url:
        world = _world(url)
        port, decide = _free_port(), _free_port()
        env = _env(
            FLASK_SQLALCHEMY_DATABASE_URI=url,
            FLASK_SECRET_KEY="serve-test-0123456789abcdef0123456789abcdef",
            FLASK_DATABASE_REQUEST_WAIT_SECONDS="10",  # a held write waits for the lock, not a 503
            SERVE_BIND=f"127.0.0.1:{port}",
            SERVE_WORKERS="2",
            SERVE_DECISION_BIND=f"127.0.0.1:{decide}",
            SERVE_DECISION_WORKERS="2",
        )
        log = tmp_path_factory.mktemp("serve-decisions") / "serve.log"

        def ready(_: Any) -> bool:
            return all(
                requests.get(f"http://127.0.0.1:{p}/readyz", timeout=2).status_code == 200 for p in (port, decide)
            )

        with server_process(SERVE, env, log, ready) as proc:
            yield {**world, "port": port, "decide": decide, "url": url, "proc": proc, "log": log}


def _timed_check(port: int, token: str, body: dict[str, Any]) -> tuple[float, int, dict[str, Any]]:
    """(seconds, status, answer) of one /v1/check on a new connection."""
    t = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    status, out, _ = _check(conn, token, body)
    conn.close()
    return time.monotonic() - t, status, out


def _signed_in(base: str) -> tuple[requests.Session, str]:
    web = requests.Session()
    csrf = web.get(f"{base}/api/auth/csrf", timeout=10).json()["csrf_token"]
    r = web.post(
        f"{base}/api/auth/signin",
        json={"email": "owner@serve.example", "password": PASSWORD},
        headers={"X-CSRFToken": csrf},
        timeout=10,
    )
    r.raise_for_status()
    return web, r.json()["csrf_token"]


Timed = tuple[float, int, dict[str, Any]]


def _while_writes_held(listeners: dict[str, Any], base: str, decide: int, role: str) -> tuple[list[Timed], Timed]:
    """WRITES role changes sent to base wait HOLD_S on the policy head's row lock; meanwhile 20
    decisions on port decide, then one on the main listener. (decisions, the main one's)."""
    web, csrf = _signed_in(base)
    cookies = web.cookies.get_dict()
    question = {"subject": listeners["owner"], "workspace": "serve-ws", "action": ACTION}

    def patch(_: int) -> tuple[float, int]:
        t = time.monotonic()
        r = requests.patch(
            f"{base}/api/workspaces/serve-ws/members/{listeners['learner']}",
            json={"role": role},
            headers={"X-CSRFToken": csrf},
            cookies=cookies,
            timeout=30,
        )
        return time.monotonic() - t, r.status_code

    with psycopg.connect(listeners["url"].replace("postgresql+psycopg://", "postgresql://")) as lock:
        lock.execute("UPDATE policy_head SET revision = revision WHERE id = 1")  # held until rollback
        released = threading.Timer(HOLD_S, lock.rollback)
        with ThreadPoolExecutor(WRITES) as pool:
            writes = [pool.submit(patch, i) for i in range(WRITES)]
            released.start()
            time.sleep(0.5)  # the writes are in, waiting on the lock
            decided = [_timed_check(decide, listeners["token"], question) for _ in range(20)]
            shared = _timed_check(listeners["port"], listeners["token"], question)
            held = [w.result() for w in writes]
        released.join()
    assert set(status for _, status in held) <= {200, 409}, held  # one changes the role, the rest find it changed
    assert max(seconds for seconds, _ in held) > HOLD_S - 0.6  # the writes were held meanwhile
    assert all(status == 200 and out["allowed"] is True for _, status, out in decided), decided
    return decided, shared


@pytest.mark.postgres
def test_decisions_are_answered_while_writes_hold_every_main_thread(listeners: dict[str, Any]) -> None:
    """24 role changes wait 3 s on the policy head's row lock, filling every thread of the main
    listener: a decision there waits with them, while the decision listener answers at once."""
    base = f"http://127.0.0.1:{listeners['port']}"
    decided, shared = _while_writes_held(listeners, base, listeners["decide"], "reviewer")
    slowest = max(seconds for seconds, _, _ in decided)
    assert slowest < 0.5, f"a decision on the decision listener took {slowest:.2f} s while writes were held"
    # The same decision on the main listener queued behind the held writes (what the listener avoids).
    assert shared[1] == 200 and shared[0] > 1.0, shared


@pytest.mark.postgres
def test_haproxy_routes_decisions_past_held_writes(listeners: dict[str, Any]) -> None:
    """The shipped deploy/haproxy.cfg with AUTHZ_DECIDE_* set: writes and decisions both through
    HAProxy, the writes held 3 s, every decision answered in < 0.5 s (with the decide backend on
    the app servers, as before, they waited for the writes)."""
    if not os.path.exists(HAPROXY):
        if os.environ.get("CI") == "true":
            pytest.fail("haproxy is not installed (.ci/run installs it)")
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    front = _free_port()
    main, decide = f"127.0.0.1:{listeners['port']}", f"127.0.0.1:{listeners['decide']}"
    env = dict(
        os.environ,
        AUTHZ_BIND=f"127.0.0.1:{front}",
        AUTHZ_HOST_A=main,
        AUTHZ_HOST_B=main,
        AUTHZ_DECIDE_A=decide,
        AUTHZ_DECIDE_B=decide,
    )
    proc = subprocess.Popen(
        [HAPROXY, "-db", "-f", str(CFG)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        base = f"http://127.0.0.1:{front}"
        deadline = time.monotonic() + 20
        while True:  # both backends up (checks every 500 ms, rise 2)
            with contextlib.suppress(OSError):
                if (
                    requests.get(f"{base}/api/auth/csrf", timeout=2).status_code == 200
                    and _timed_check(
                        front, listeners["token"], {"subject": 1, "workspace": "serve-ws", "action": ACTION}
                    )[1]
                    == 200
                ):
                    break
            assert time.monotonic() < deadline, "HAProxy's backends did not come up"
            time.sleep(0.3)
        time.sleep(1.5)  # every server of both backends counted up
        decided, _ = _while_writes_held(listeners, base, front, "learner")
    finally:
        proc.terminate()
        proc.wait(10)
    slowest = max(seconds for seconds, _, _ in decided)
    assert slowest < 0.5, f"a decision through HAProxy took {slowest:.2f} s while writes were held"


@pytest.mark.postgres
def test_the_decision_listener_serves_decisions_only(listeners: dict[str, Any]) -> None:
    """Pages, sign-in and writes get a 404 problem there (never reaching Flask); probes, metrics,
    batch and AuthZEN decisions are served."""
    decide = f"http://127.0.0.1:{listeners['decide']}"
    auth = {"Authorization": f"Bearer {listeners['token']}"}
    for method, path in (
        ("GET", "/"),
        ("GET", "/api/auth/csrf"),
        ("POST", "/api/auth/signin"),
        ("PATCH", f"/api/workspaces/serve-ws/members/{listeners['learner']}"),
        ("POST", "/v1/policy/apply"),
        ("GET", "/readyz/writes"),
    ):
        r = requests.request(method, decide + path, json={}, headers=auth, timeout=10)
        assert r.status_code == 404, (method, path, r.status_code)
        assert r.headers["Content-Type"] == "application/problem+json"
        assert r.json()["status"] == 404 and r.json()["instance"] == path
        assert r.headers["X-Content-Type-Options"] == "nosniff" and len(r.headers["X-Request-ID"]) == 32
    assert requests.get(decide + "/readyz", timeout=10).status_code == 200
    assert requests.get(decide + "/healthz", timeout=10).status_code == 200
    batch = requests.post(
        decide + "/v1/check/batch",
        headers=auth,
        timeout=10,
        json={"checks": [{"subject": listeners["owner"], "workspace": "serve-ws", "action": ACTION}]},
    )
    assert batch.status_code == 200 and batch.json()["results"][0]["allowed"] is True, batch.text
    evaluation = requests.post(
        decide + "/access/v1/evaluation",
        headers=auth,
        timeout=10,
        json={
            "subject": {"type": "user", "id": str(listeners["owner"])},
            "resource": {"type": "workspace", "id": "serve-ws"},
            "action": {"name": ACTION},
            "context": {"workspace": "serve-ws"},
        },
    )
    assert evaluation.status_code == 200 and isinstance(evaluation.json()["decision"], bool), evaluation.text
    assert "authz_decisions_total" in requests.get(decide + "/metrics", timeout=10).text


@pytest.mark.postgres
def _tree(pid: int) -> list[int]:
    """pid and every process below it."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").iterdir():
            todo += [int(c) for c in (task / "children").read_text().split()]
    return out


def test_writes_run_at_a_lower_priority_than_decisions(listeners: dict[str, Any]) -> None:
    """SERVE_WRITE_NICE (5 by default with a decision listener): the app server and its workers run
    5 nice levels below the decision listener and its workers, so on shared cores the kernel runs
    a decision first."""
    nice: dict[str, list[int]] = {"main": [], "decide": []}
    for pid in _tree(listeners["proc"].pid):
        environ = dict(e.split("=", 1) for e in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in e)
        stat = Path(f"/proc/{pid}/stat").read_text()
        level = int(stat[stat.rindex(")") + 2 :].split()[16])  # field 19: nice
        side = "decide" if environ.get("SERVE_BIND") == f"127.0.0.1:{listeners['decide']}" else "main"
        nice[side].append(level)
    assert len(nice["main"]) >= 3 and len(nice["decide"]) >= 3, nice  # each server and its 2 workers
    base = min(nice["decide"])
    assert set(nice["decide"]) == {base} and set(nice["main"]) == {min(base + 5, 19)}, nice


def test_the_decision_listener_stops_with_the_server(tmp_path: Path) -> None:
    """SIGTERM to the server stops its decision listener too: no process keeps the port."""
    port, decide = _free_port(), _free_port()
    env = _env(
        FLASK_SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.db'}",
        FLASK_SECRET_KEY="serve-test-0123456789abcdef0123456789abcdef",
        FLASK_POLICY_SYNC="off",
        SERVE_BIND=f"127.0.0.1:{port}",
        SERVE_WORKERS="1",
        SERVE_DECISION_BIND=f"127.0.0.1:{decide}",
        SERVE_DECISION_WORKERS="1",
    )
    subprocess.run(
        [*SERVE[:1], "-m", "flask", "--app", "app:create_app", "db-upgrade"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    log = tmp_path / "serve.log"

    def ready(_: Any) -> bool:  # both: a SIGTERM before granian's handlers are in place is a kill
        return all(requests.get(f"http://127.0.0.1:{p}/healthz", timeout=2).status_code == 200 for p in (port, decide))

    with server_process(SERVE, env, log, ready) as proc:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
        deadline = time.monotonic() + 20
        while True:
            try:
                requests.get(f"http://127.0.0.1:{decide}/healthz", timeout=1)
            except requests.ConnectionError:
                break
            assert time.monotonic() < deadline, "the decision listener outlived the server"
            time.sleep(0.2)
