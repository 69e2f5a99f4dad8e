"""Idempotency-Key over real HTTP: gunicorn (2 workers, threads) of the real app on PostgreSQL.

* Concurrent duplicates: threads send the same write with the same key at once; exactly one is
  applied (one audit entry, one group), every other answer is its replay or "still in flight".
* A drill of retries: writes sent by the Python client with a per-attempt timeout shorter than
  some writes take, so attempts time out after the server applied them and the client retries
  with the same key; each write's audit entries are counted: "writes applied twice under retries
  with one key" must be 0, and no acknowledged write is missing.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from learnauthz_client import Client, LearnAuthzError, Retry, WriteResult
from sqlalchemy import create_engine, text

from bench.http import app_env, free_port, server_command
from tests.conftest import fresh_pg_database, make_app, server_process
from tests.factories import PASSWORD, fast_password_hashing, seed_demo

pytestmark = pytest.mark.postgres
CLS = "/api/workspaces/classroom-demo"


@dataclass
class Live:
    url: str
    base: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    log = tmp_path_factory.mktemp("idem-live") / "server.log"
    with fresh_pg_database("test_idem_live") as url:
        app = make_app(url)
        with app.app_context():
            from app.extensions import db

            fast_password_hashing()
            seed_demo()
            db.session.remove()
            db.engine.dispose()
        port = free_port()
        cmd, extra = server_command("gunicorn", "app:create_app()", port, 2)
        base = f"http://127.0.0.1:{port}"

        def ready(proc: Any) -> bool:
            return requests.get(f"{base}/readyz", timeout=2).status_code == 200

        with server_process(cmd, app_env(url, **extra), log, ready):
            yield Live(url, base)
    text_ = Path(log).read_text(errors="replace")
    assert "Traceback" not in text_, text_[-4000:]


def _audit(url: str, action: str) -> list[dict[str, Any]]:
    engine = create_engine(url)
    try:
        with engine.connect() as c:
            rows = c.execute(text("SELECT target, after FROM audit_events WHERE action = :a"), {"a": action})
            return [{"target": r[0], "after": r[1]} for r in rows]
    finally:
        engine.dispose()


def _race(admin: Client, threads: int, name: str, key: str) -> list[WriteResult | LearnAuthzError]:
    """``threads`` threads send the same group creation with the same key at once; their answers."""
    barrier = threading.Barrier(threads)
    answers: list[WriteResult | LearnAuthzError] = []
    lock = threading.Lock()

    def send() -> None:
        barrier.wait()
        try:
            out: WriteResult | LearnAuthzError = admin.write(
                "POST", f"{CLS}/groups", {"name": name}, idempotency_key=key
            )
        except LearnAuthzError as exc:
            out = exc
        with lock:
            answers.append(out)

    workers = [threading.Thread(target=send) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    return answers


def test_concurrent_duplicates_are_applied_once(live: Live) -> None:
    threads = 6
    outcomes: Counter[str] = Counter()
    with Client(live.base, timeout=10, retry=Retry(attempts=1)) as admin:
        admin.sign_in("admin@classroom.example", PASSWORD)
        for round_ in range(5):
            answers = _race(admin, threads, f"race-{round_}", f"race-key-{round_}")
            assert len(answers) == threads
            fresh = [a for a in answers if isinstance(a, WriteResult) and not a.replayed]
            replays = [a for a in answers if isinstance(a, WriteResult) and a.replayed]
            busy = [a for a in answers if isinstance(a, LearnAuthzError)]
            assert len(fresh) == 1 and fresh[0].status == 201, answers
            assert all(r.status == 201 and r.body == fresh[0].body for r in replays)
            assert all(e.status == 409 and str(e.problem["type"]).endswith("/idempotency-in-flight") for e in busy)
            outcomes.update(fresh=len(fresh), replayed=len(replays), in_flight=len(busy))
            key = f"race-key-{round_}"
            later = admin.write("POST", f"{CLS}/groups", {"name": f"race-{round_}"}, idempotency_key=key)
            assert later.status == 201 and later.replayed and later.body == fresh[0].body
    assert len(_audit(live.url, "group.create")) == 5  # five rounds, one group each
    print(f"\nconcurrent duplicates (5 rounds x {threads} threads): {dict(outcomes)}")


def test_retry_drill_applies_nothing_twice(live: Live) -> None:
    """Writes whose attempts time out on the client after the server applied them are retried with
    the same key: counted per key, none is applied twice and none acknowledged is missing."""
    # Eight writers queue on the one policy writer (a write holds it ~10-20 ms), so waiting alone outlasts
    # the 30 ms client timeout on a quiet machine too: attempts time out after the server applied them.
    writes_per_thread, threads = 5, 8
    results: dict[str, WriteResult | LearnAuthzError] = {}
    lock = threading.Lock()
    with Client(live.base, timeout=10, retry=Retry(attempts=10, backoff=0.05, max_backoff=0.4)) as admin:
        admin.sign_in("admin@classroom.example", PASSWORD)
        admin.timeout = httpx.Timeout(0.03)  # shorter than queued writes take: attempts time out, then retry

        def run(t: int) -> None:
            for i in range(writes_per_thread):
                description = f"drill-{t}-{i}"
                try:
                    out: WriteResult | LearnAuthzError = admin.write(
                        "PATCH", f"{CLS}/groups/morning", {"description": description}
                    )
                except LearnAuthzError as exc:
                    out = exc
                with lock:
                    results[description] = out

        workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(300)
    applied = Counter(a["after"]["description"] for a in _audit(live.url, "group.update"))
    twice = sorted(d for d, n in applied.items() if n > 1 and d in results)
    acknowledged = [d for d, r in results.items() if isinstance(r, WriteResult)]
    lost = [d for d in acknowledged if applied[d] == 0]
    retried = sum(r.attempts - 1 for r in results.values() if isinstance(r, WriteResult))
    replayed = sum(1 for r in results.values() if isinstance(r, WriteResult) and r.replayed)
    outcome_lost = sum(1 for r in results.values() if isinstance(r, WriteResult) and r.outcome_lost)
    failed = [d for d, r in results.items() if isinstance(r, LearnAuthzError)]
    print(
        f"\nretry drill: writes={len(results)} acknowledged={len(acknowledged)} retries={retried} "
        f"replayed={replayed} outcome_lost={outcome_lost} unacknowledged={len(failed)} "
        f"applied_twice={len(twice)} acknowledged_lost={len(lost)}"
    )
    assert len(results) == writes_per_thread * threads
    assert twice == [] and lost == []
    assert retried > 0  # the drill did retry (attempts timed out)
    assert replayed > 0  # and some retries found the first attempt's outcome
    assert all(applied[d] == 1 for d in acknowledged)
