"""Start without the database, from the policy snapshot (POLICY_SNAPSHOT_PATH), on both servers:
gunicorn with 2 workers through gunicorn.conf.py, and ``python -m app.serve`` (granian, 2 workers),
against a real private PostgreSQL (``bench.pgcluster``) stopped before the server starts.

1. Database up: the server's load writes the snapshot (valid checksum, revision = head).
2. A role change written after it (so the snapshot is from before the change); database killed; a
   fresh server: /healthz 200, /readyz 200 with source "snapshot" at the snapshot's revision, every
   decision as before the change (marked with that revision), a token revoked before the snapshot
   refused (401), writes 503 with Retry-After.
3. Database started: the server catches up to the head (the change decided), /readyz source
   "database", and a new snapshot at the head is written.
4. A damaged snapshot (one byte flipped, then truncated) is refused: up, unready, decisions 503;
   loads when the database returns and writes a valid snapshot again.

Skipped without the PostgreSQL server binaries.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import create_engine, text

from app.policy import snapshot
from bench.http import process
from bench.outage import HIGH, HIGH_ACTION, OPERATOR, PASSWORD, World, build
from bench.pgcluster import Cluster, ClusterUnavailableError
from tests.conftest import ROOT
from tests.test_boot_tokens import _tokens
from tests.test_multiprocess import _free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

MODEL = snapshot.model_digest((ROOT / "model.conf").read_text(encoding="utf-8"))


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> Cluster:
    """A private PostgreSQL of its own for each test (each kills it), with an empty database."""
    try:
        pg = Cluster("snap")
    except ClusterUnavailableError as exc:
        pytest.skip(str(exc))
    request.addfinalizer(pg.stop)
    pg.create_database()
    return pg


@contextlib.contextmanager
def _server(kind: str, url: str, snap: Path, log: Path) -> Iterator[tuple[str, Callable[[], bool]]]:
    """gunicorn (gunicorn.conf.py, 2 workers, preloaded) or app.serve (granian, 2 workers) on a free port."""
    port = _free_port()
    env = {
        **os.environ,
        "FLASK_SQLALCHEMY_DATABASE_URI": url,
        "FLASK_SECRET_KEY": "snapshot-test-0123456789abcdef0123456789abcdef",
        "FLASK_MAIL_BACKEND": "memory",
        "FLASK_POLICY_POLL_SECONDS": "1.0",
        "FLASK_DATABASE_REQUEST_WAIT_SECONDS": "1.0",
        "FLASK_DATABASE_WAIT_SECONDS": "2.0",
        "FLASK_POLICY_SNAPSHOT_PATH": str(snap),
        "PYTHONPATH": str(ROOT),
    }
    if kind == "gunicorn":
        env.update(GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="2")
        cmd = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "app:create_app()"]
    else:
        env.update(SERVE_BIND=f"127.0.0.1:{port}", SERVE_WORKERS="2")
        cmd = [sys.executable, "-m", "app.serve"]
    with process(cmd, env, str(log), cwd=str(ROOT)) as proc:
        yield f"http://127.0.0.1:{port}", lambda: proc.poll() is None


def _until(what: str, probe: Callable[[], bool], alive: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        assert alive(), f"the server exited while waiting for: {what}"
        with contextlib.suppress(requests.RequestException):
            if probe():
                return
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.2)


def _head(url: str) -> int:
    eng = create_engine(url)
    with eng.connect() as conn:
        head = int(conn.execute(text("SELECT revision FROM policy_head")).scalar() or 0)
    eng.dispose()
    return head


def _valid(path: Path, url: str) -> snapshot.Snapshot | None:
    try:
        return snapshot.read(path, MODEL, snapshot.database_identity(url))
    except snapshot.SnapshotError:
        return None


def _questions(world: World) -> list[dict[str, Any]]:
    """The drill's questions (known people by id and email, unknown people), the operator's, and the
    promoted learner's reviewer-only action."""
    slug, uid = world.targets[0]
    return [
        *world.checks,
        {"subject": world.operator, "workspace": "o0", "action": "view_dashboard"},
        {"subject": OPERATOR, "workspace": "o0", "action": HIGH_ACTION},
        {"subject": uid, "workspace": slug, "action": HIGH_ACTION},
    ]


def _answers(http: requests.Session, base: str, token: str, questions: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    out = []
    for body in questions:
        r = http.post(f"{base}/v1/check", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 200, r.text
        p = r.json()
        out.append((p["allowed"], p["reason"], p["revision"]))
    return out


def _sign_in(http: requests.Session, base: str) -> str:
    csrf = http.get(f"{base}/api/auth/csrf", timeout=10).json()["csrf_token"]
    r = http.post(f"{base}/api/auth/signin", json={"email": OPERATOR, "password": PASSWORD},
                  headers={"X-CSRFToken": csrf}, timeout=10)
    r.raise_for_status()
    return str(r.json()["csrf_token"])


def _unready_without_snapshot(base: str, alive: Callable[[], bool], token: str, body: dict[str, Any]) -> None:
    http = requests.Session()
    _until("/healthz", lambda: http.get(f"{base}/healthz", timeout=5).status_code == 200, alive)
    time.sleep(1.0)  # both workers up
    for _ in range(4):
        ready = http.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["policy"] != "loaded", ready.text
        r = http.post(f"{base}/v1/check", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert r.status_code == 503, r.text


def _refusals(log: Path) -> list[str]:
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines if "policy snapshot" in line and "refused" in line]


@pytest.mark.parametrize("kind", ["gunicorn", "granian"])
def test_start_from_the_snapshot_with_the_database_down(kind: str, cluster: Cluster, tmp_path: Path) -> None:
    url = cluster.url
    world = build(url, workspaces=2, members=2, token_workspace="o0")
    fresh, gone = _tokens(url)  # a token never used before the outage, and one revoked before the snapshot
    snap = tmp_path / "state" / "policy.snapshot"
    questions = _questions(world)
    slug, uid = world.targets[0]
    http = requests.Session()

    # 1. Database up: the load writes the snapshot at the head.
    with _server(kind, url, snap, tmp_path / "up.log") as (base, alive):
        _until("/readyz", lambda: http.get(f"{base}/readyz", timeout=5).status_code == 200, alive)
        head0 = _head(url)
        _until("the snapshot", lambda: (s := _valid(snap, url)) is not None and s.meta.revision == head0, alive)
        before = _answers(http, base, world.token, questions)
        assert before[-1][0] is False and {a[2] for a in before} == {head0}  # a learner: no reviewing
        assert before[-3][0] is True  # the operator owns o0
        # 2. A change through a server, after the snapshot was written: the learner becomes a reviewer.
        csrf = _sign_in(http, base)
        r = http.patch(f"{base}/api/workspaces/{slug}/members/{uid}", json={"role": HIGH},
                       headers={"X-CSRFToken": csrf}, timeout=10)
        assert r.status_code == 200, r.text
        head1 = _head(url)
        assert head1 > head0
        _until("the change", lambda: _answers(http, base, world.token, questions[-1:])[0][0] is True, alive)
        after = _answers(http, base, world.token, questions)
        assert after[-1][0] is True and {a[2] for a in after} == {head1}
    kept = _valid(snap, url)
    assert kept is not None and kept.meta.revision == head0  # an incremental change writes no snapshot
    assert gone.encode() not in snap.read_bytes() and fresh.encode() not in snap.read_bytes()
    cluster.signal(signal.SIGKILL)

    # 2. Database down, a fresh server: decisions from the snapshot, at its revision.
    log2 = tmp_path / "snapshot.log"
    with _server(kind, url, snap, log2) as (base, alive):
        _until("/healthz", lambda: http.get(f"{base}/healthz", timeout=5).status_code == 200, alive)
        _until("/readyz", lambda: http.get(f"{base}/readyz", timeout=5).status_code == 200, alive, seconds=20)
        for _ in range(4):  # both workers
            ready = http.get(f"{base}/readyz", timeout=10).json()
            assert ready["source"] == "snapshot" and ready["revision"] == head0, ready
            assert ready["snapshot"]["revision"] == head0 and ready["checks"]["database"] == "unreachable", ready
            assert 0 <= ready["staleness_seconds"] <= ready["snapshot"]["age_seconds"] + 1, ready
            assert ready["staleness_seconds"] >= time.time() - kept.meta.current_at - 1, ready
        for _ in range(2):
            assert _answers(http, base, fresh, questions) == before  # never-used token, snapshot's answers
        refused = http.post(f"{base}/v1/check", json=questions[0], headers={"Authorization": f"Bearer {gone}"},
                            timeout=10)
        assert refused.status_code == 401, refused.text
        # the operator's session cookie from before the outage (cookies do not depend on the port)
        write = http.patch(f"{base}/api/workspaces/{slug}/members/{world.targets[1][1]}", json={"role": HIGH},
                          headers={"X-CSRFToken": csrf}, timeout=10)
        assert write.status_code == 503 and write.headers.get("Retry-After"), write.text
        ready_w = http.get(f"{base}/readyz/writes", timeout=10)
        assert ready_w.status_code == 503 and ready_w.headers.get("Retry-After"), ready_w.text

        # 3. The database returns: caught up from the snapshot's revision; a new snapshot at the head.
        cluster.start()
        _until("the head", lambda: all(_answers(http, base, fresh, questions) == after for _ in range(3)), alive)
        _until("source database", lambda: all(
            http.get(f"{base}/readyz", timeout=5).json().get("source") == "database" for _ in range(4)), alive)
        _until("a new snapshot", lambda: (s := _valid(snap, url)) is not None and s.meta.revision == head1, alive)
        assert _answers(http, base, fresh, questions) == after
    assert len([line for line in log2.read_text().splitlines() if "serving the policy snapshot" in line]) >= 1

    # 4. A damaged snapshot: refused, up and unready, loaded when the database returns.
    data = bytearray(snap.read_bytes())
    saved = bytes(data)
    data[len(data) // 2] ^= 0x10
    snap.write_bytes(bytes(data))
    cluster.signal(signal.SIGKILL)
    log3 = tmp_path / "flipped.log"
    with _server(kind, url, snap, log3) as (base, alive):
        _unready_without_snapshot(base, alive, fresh, questions[0])
    flipped = _refusals(log3)
    assert 1 <= len(flipped) <= 2 and all("checksum mismatch" in line for line in flipped), flipped
    snap.write_bytes(saved[: len(saved) - 100])
    log4 = tmp_path / "truncated.log"
    with _server(kind, url, snap, log4) as (base, alive):
        _unready_without_snapshot(base, alive, fresh, questions[0])
        truncated = _refusals(log4)
        assert 1 <= len(truncated) <= 2 and all("truncated" in line for line in truncated), truncated
        cluster.start()
        _until("loaded", lambda: http.get(f"{base}/readyz", timeout=5).status_code == 200, alive)
        assert http.get(f"{base}/readyz", timeout=5).json()["source"] == "database"
        assert _answers(http, base, fresh, questions) == after
        _until("a valid snapshot", lambda: (s := _valid(snap, url)) is not None and s.meta.revision == head1, alive)
    shutil.rmtree(tmp_path / "state", ignore_errors=True)
