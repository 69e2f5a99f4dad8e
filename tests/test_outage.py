"""A real PostgreSQL outage: a private cluster, frozen (SIGSTOP) and then killed (SIGKILL) under load.

The test starts its own cluster (``bench.pgcluster.Cluster``: ``initdb``/``pg_ctl`` of the Debian
``postgresql`` package, on a free loopback port, as the ``postgres`` user when run as root), a
gunicorn server of the real app (``tests.mp_app``: the app plus a write endpoint through the real
policy store), and keeps asking while the database is frozen and while it is dead: ``/v1/check``
for known people (by id and by email) and an AuthZEN evaluation must keep answering 200 with the
decisions they had before, an unknown person ``unknown_subject``; writes must be 503 with
``Retry-After``; every acknowledged write is in the database afterwards, and the server catches up with it.

Skipped when the PostgreSQL server binaries are not installed; when they are, any failure fails
(also under CI=true).
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from bench.outage import OPERATOR, Answer, World, build
from bench.pgcluster import Cluster, ClusterUnavailableError
from tests.test_multiprocess import Server

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    try:
        c = Cluster("outage")
    except ClusterUnavailableError as exc:
        pytest.skip(str(exc))
    try:
        c.create_database()
        yield c
    finally:
        c.stop()


def _world(url: str) -> World:
    """The drill's data set, small (``bench.outage.build``: ``o0`` of the simulations pack, the operator's,
    with two learners; ``o1`` of another pack with two members; the token placed in ``o0``). Asked about:
    the operator first (by id and by email), then the drill's known people, last someone unknown."""
    world = build(url, workspaces=2, members=2, token_workspace="o0")

    def about(*subjects: Any) -> list[dict[str, Any]]:
        actions = ("view_dashboard", "view_ai_spend")
        return [{"subject": s, "workspace": "o0", "action": a} for s in subjects for a in actions]

    world.checks = [*about(world.operator, OPERATOR), *world.checks, *about("nobody@outage.example")]
    return world


def test_decisions_go_on_through_a_frozen_and_a_killed_database(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = _world(cluster.url)
    monkeypatch.setenv("FLASK_DATABASE_REQUEST_WAIT_SECONDS", "1.0")
    monkeypatch.setenv("FLASK_DATABASE_WAIT_SECONDS", "2.0")
    server = Server(cluster.url, "outage", tmp_path)
    try:
        server.wait_ready()
        http = requests.Session()
        auth = {"Authorization": f"Bearer {world.token}"}
        # Before the outage: the decisions every later answer must repeat.
        for body in world.checks:
            out = http.post(f"{server.base}/v1/check", json=body, headers=auth, timeout=5).json()
            world.expected.append((out["allowed"], out["reason"]))
        assert [a for a, _ in world.expected][:4] == [True, True, True, True]  # the owner, by id and by email
        assert world.expected[-1][1] == "unknown_subject"
        evaluation = {"subject": {"type": "user", "id": OPERATOR}, "action": {"name": "view_ai_spend"},
                      "resource": {"type": "workspace", "id": "o0"}}  # placed in o0 by the token
        first = http.post(f"{server.base}/access/v1/evaluation", json=evaluation, headers=auth, timeout=5)
        assert first.status_code == 200 and first.json()["decision"] is True, first.text

        answers: list[Answer] = []
        acknowledged: list[tuple[str, ...]] = []
        phase = ["up"]
        stop = threading.Event()

        def ask(kind: str, method: str, url: str, body: Any, expect: Any = None) -> None:
            started = time.monotonic()
            at = phase[0]
            try:
                r = http.request(method, url, json=body, headers=auth, timeout=5)
                status, payload = r.status_code, (r.json() if r.content else {})
                retry = r.headers.get("Retry-After")
            except requests.RequestException as exc:
                status, payload, retry = 0, {}, None
                body = {"error": repr(exc), "body": body}
            right = True
            if status == 200 and expect is not None:
                right = expect(payload)
            answers.append(Answer(at, kind, status, time.monotonic() - started, right, retry, detail=str(body)))
            if kind == "write" and status == 200:
                acknowledged.append(tuple(body["rule"]))

        def load() -> None:
            n = 0
            while not stop.is_set():
                for body, (allowed, reason) in zip(world.checks, world.expected, strict=True):
                    ask("check", "POST", f"{server.base}/v1/check", body,
                        lambda p, a=allowed, r=reason: p["allowed"] == a and p["reason"] == r)
                ask("authzen", "POST", f"{server.base}/access/v1/evaluation", evaluation,
                    lambda p: p["decision"] is True)
                n += 1
                rule = ("g3", f"user:{900000 + n}", "group:outage", "ws:o0")
                ask("write", "POST", f"{server.base}/_mp/link", {"op": "add", "rule": list(rule)})
                ask("readyz", "GET", f"{server.base}/readyz", None)
                ask("readyz/writes", "GET", f"{server.base}/readyz/writes", None)
                time.sleep(0.01)

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        time.sleep(1.5)
        phase[0] = "frozen"
        cluster.signal(signal.SIGSTOP)
        time.sleep(5.0)
        phase[0] = "thawed"
        cluster.signal(signal.SIGCONT)
        time.sleep(2.0)
        phase[0] = "killed"
        cluster.signal(signal.SIGKILL)
        time.sleep(5.0)
        phase[0] = "restarted"
        cluster.start()
        restarted = time.monotonic()
        # Catch up: a write acknowledged after the restart.
        while time.monotonic() - restarted < 20 and not any(
            a.phase == "restarted" and a.kind == "write" and a.status == 200 for a in answers
        ):
            time.sleep(0.1)
        recovered = time.monotonic() - restarted
        time.sleep(1.0)
        stop.set()
        worker.join(10)

        table = Counter((a.phase, a.kind, a.status) for a in answers)
        report = "\n".join(f"{p:9} {k:13} {s}: {n}" for (p, k, s), n in sorted(table.items()))
        slow = sorted(answers, key=lambda a: -a.seconds)[:5]
        report += "\nslowest: " + "; ".join(f"{a.phase} {a.kind} {a.status} {a.seconds:.3f}s {a.detail}" for a in slow)
        print(f"\nanswers by phase, kind and status (recovered {recovered:.2f} s after restart):\n{report}")
        for p in ("frozen", "killed"):
            decisions = [a for a in answers if a.phase == p and a.kind in ("check", "authzen")]
            assert decisions and all(a.status == 200 for a in decisions), report
            assert all(a.right for a in decisions), "a decision changed during the outage"
            # Only a request that meets the stall first waits out its deadline (1 s here); after it the
            # database is held down and everything comes from memory.
            assert max(a.seconds for a in decisions) < 1.5, report
            assert len([a for a in decisions if a.seconds > 0.25]) <= 2, report
            writes = [a for a in answers if a.phase == p and a.kind == "write"]
            assert writes and all(a.status == 503 and a.retry_after == "1" for a in writes[1:]), report
            assert writes[0].status in (200, 503), report  # the first may have started before the signal
            assert max(a.seconds for a in writes) < 2.5, report
            # Ready to decide throughout (no staleness bound set); not ready for writes.
            ready = [a for a in answers if a.phase == p and a.kind == "readyz"]
            assert ready and all(a.status == 200 for a in ready), report
            ready_w = [a for a in answers if a.phase == p and a.kind == "readyz/writes"]
            assert ready_w and all(a.status == 503 and a.retry_after == "1" for a in ready_w[1:]), report
        assert not [a for a in answers if a.status in (0, 500)], report + "\n" + "\n".join(
            a.detail for a in answers if a.status in (0, 500))
        assert recovered < 15, report

        # Nothing acknowledged was lost, and the server caught up with the database.
        eng = create_engine(cluster.url)
        with eng.connect() as conn:
            rows = conn.execute(text("SELECT ptype, v0, v1, v2 FROM casbin_rule WHERE v1 = 'group:outage'"))
            stored = {tuple(r) for r in rows}
            head = int(conn.execute(text("SELECT revision FROM policy_head")).scalar() or 0)
        eng.dispose()
        assert set(acknowledged) <= stored, set(acknowledged) - stored
        deadline = time.monotonic() + 5
        while server.status()["revision"] != head and time.monotonic() < deadline:
            time.sleep(0.1)
        assert server.status()["revision"] == head
        ready = http.get(f"{server.base}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["staleness_seconds"] < 5, ready.text
    finally:
        server.stop()
