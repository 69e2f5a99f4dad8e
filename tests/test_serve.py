"""``python -m app.serve`` (granian) as deployed: its refusals, keep-alive, and two workers that
decide at the head after a change committed elsewhere, on real PostgreSQL."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ROOT, fresh_pg_database, make_app, server_process
from tests.test_multiprocess import _free_port

SERVE = [sys.executable, "-m", "app.serve"]
ACTION = "view_ai_spend"  # simulations owners only


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FLASK_SECRET_KEY", "SECRET_KEY")}
    env.update({"FLASK_MAIL_BACKEND": "memory", "PYTHONPATH": str(ROOT), **extra})
    return env


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "SECRET_KEY is not configured"),
        ({"FLASK_SECRET_KEY": "k", "SERVE_WORKERS": "0"}, "SERVE_WORKERS must be a positive integer"),
        ({"FLASK_SECRET_KEY": "k", "SERVE_BIND": "8000"}, "SERVE_BIND must be host:port"),
        ({"FLASK_SECRET_KEY": "k", "SERVE_THREADS": "some"}, "SERVE_THREADS must be a positive integer"),
        (
            {"FLASK_SECRET_KEY": "k", "SERVE_DECISION_BIND": "127.0.0.1:1", "SERVE_DECISION_THREADS": "0"},
            "SERVE_DECISION_THREADS must be a positive integer",
        ),
    ],
)
def test_serve_refuses_a_bad_configuration(tmp_path: Path, extra: dict[str, str], message: str) -> None:
    env = _env(FLASK_SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'app.db'}", **extra)
    proc = subprocess.run(SERVE, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr


@pytest.mark.skipif(not shutil.which("taskset") or len(os.sched_getaffinity(0)) < 2, reason="needs taskset, 2 CPUs")
@pytest.mark.parametrize(
    ("cpus", "workers", "threads", "wanted"),
    [
        ("0", "2", "auto", 4),  # two workers share one core: threads to hand the core over
        ("0,1", "2", "auto", 1),  # a core each: one thread, no idle threads spinning
        ("0,1", "3", "auto", 4),
        ("0", "1", "auto", 1),
        ("0", "2", "3", 3),  # a number is taken as it is
        ("0,1", "2", None, 4),  # the main listener's default: requests there may wait on the database
    ],
)
def test_auto_threads_follow_the_cores_the_server_may_use(
    cpus: str, workers: str, threads: str | None, wanted: int
) -> None:
    """``SERVE_THREADS=auto`` (the decision listener's default) is read in the server's own process,
    from its CPU affinity, so ``taskset`` in front of ``python -m app.serve`` decides it."""
    env = _env(SERVE_WORKERS=workers)
    env.pop("SERVE_THREADS", None)
    if threads is not None:
        env["SERVE_THREADS"] = threads
    code = "import json, app.serve as s; print(json.dumps(s.options()['blocking_threads']))"
    argv = ["taskset", "-c", cpus, sys.executable, "-c", code]
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == wanted


def test_the_decision_listener_threads_default_to_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    from app import serve

    monkeypatch.setenv("SERVE_DECISION_BIND", "127.0.0.1:8001")
    monkeypatch.delenv("SERVE_DECISION_THREADS", raising=False)
    monkeypatch.delenv(serve.PARENT_ENV, raising=False)
    overrides = serve.decision_options()
    assert overrides is not None and overrides["SERVE_THREADS"] == "auto"
    monkeypatch.setenv("SERVE_DECISION_THREADS", "2")
    overrides = serve.decision_options()
    assert overrides is not None and overrides["SERVE_THREADS"] == "2"


def _world(url: str) -> dict[str, Any]:
    """A simulations workspace, its owner, a learner and a service token, committed."""
    from app.extensions import db
    from app.policy import tokens
    from tests.factories import add_member, create_user, create_workspace

    app = make_app(url)
    with app.app_context():
        ws = create_workspace("serve-ws", "simulations")
        owner, learner = create_user("owner@serve.example"), create_user("learner@serve.example")
        add_member(ws, owner, "owner")
        add_member(ws, learner, "learner")
        _, secret = tokens.create_token(db.session(), "serve-test", all_workspaces=True)
        db.session.commit()
        out = {"owner": owner.id, "learner": learner.id, "ws_id": ws.id, "token": secret}
        db.session.remove()
        db.engine.dispose()
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A fresh database and ``python -m app.serve`` (2 workers) on it; stopped at the end."""
    with fresh_pg_database("test_serve") as url:
        world = _world(url)
        port = _free_port()
        env = _env(
            FLASK_SQLALCHEMY_DATABASE_URI=url,
            FLASK_SECRET_KEY="serve-test-0123456789abcdef0123456789abcdef",
            SERVE_BIND=f"127.0.0.1:{port}",
            SERVE_WORKERS="2",
        )
        base = f"http://127.0.0.1:{port}"
        log = tmp_path_factory.mktemp("serve") / "serve.log"
        with server_process(SERVE, env, log, lambda _: requests.get(f"{base}/readyz", timeout=2).status_code == 200):
            yield {**world, "base": base, "port": port, "url": url}


def _check(conn: http.client.HTTPConnection, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any], Any]:
    conn.request(
        "POST",
        "/v1/check",
        body=json.dumps(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    r = conn.getresponse()
    return r.status, json.loads(r.read()), r


@pytest.mark.postgres
def test_one_connection_carries_many_decisions(served: dict[str, Any]) -> None:
    """Keep-alive: 30 decisions on one connection, the same answers as asked one by one."""
    conn = http.client.HTTPConnection("127.0.0.1", served["port"], timeout=10)
    owner = {"subject": served["owner"], "workspace": "serve-ws", "action": ACTION}
    learner = {**owner, "subject": "learner@serve.example"}
    nobody = {**owner, "subject": "nobody@serve.example"}
    want = {0: (True, "granted"), 1: (False, "not_permitted"), 2: (False, "unknown_subject")}
    local_ports = set()
    for i in range(30):
        status, out, r = _check(conn, served["token"], (owner, learner, nobody)[i % 3])
        assert status == 200 and (out["allowed"], out["reason"]) == want[i % 3], out
        assert r.getheader("Connection", "").lower() != "close"
        assert r.getheader("X-Content-Type-Options") == "nosniff" and len(r.getheader("X-Request-ID", "")) == 32
        assert conn.sock is not None  # http.client closes it after a response that ends the connection
        local_ports.add(conn.sock.getsockname()[1])
    assert len(local_ports) == 1  # one connection throughout (a reconnect would take a new port)
    conn.close()


@pytest.mark.postgres
def test_both_workers_decide_at_the_head_after_a_change_elsewhere(served: dict[str, Any]) -> None:
    """A role change committed by another process reaches both workers through their listeners."""
    from app.extensions import db
    from app.models import Membership
    from app.policy import store as policy_store

    app = make_app(served["url"])
    body = {"subject": f"user:{served['learner']}", "workspace": "serve-ws", "action": ACTION}
    with app.app_context():
        from app.authz import RuleChange

        session = db.session()
        handle = policy_store.begin_write(session, "test", None, "learner becomes owner")
        m = session.query(Membership).filter_by(user_id=served["learner"], workspace_id=served["ws_id"]).one()
        m.role = "owner"
        policy_store.add_changes(
            session,
            handle,
            [
                RuleChange("remove", ("g", f"user:{served['learner']}", "role:simulations:learner", "ws:serve-ws")),
                RuleChange("add", ("g", f"user:{served['learner']}", "role:simulations:owner", "ws:serve-ws")),
            ],
        )
        session.commit()
        head = policy_store.current_revision(session)
        db.session.remove()
        db.engine.dispose()
    deadline = time.monotonic() + 10
    fresh = 0
    while fresh < 20:  # 20 answers in a row at the head, each on a new connection (either worker)
        assert time.monotonic() < deadline, "a worker did not reach the head"
        conn = http.client.HTTPConnection("127.0.0.1", served["port"], timeout=10)
        status, out, _ = _check(conn, served["token"], body)
        conn.close()
        assert status == 200
        if out["revision"] >= head:
            assert out["allowed"] is True, out
            fresh += 1
        else:
            assert out["allowed"] is False, out  # below the head: the old role, never a mix
            fresh = 0


def _raw_answer(sock: Any) -> tuple[int, dict[str, str]]:
    """Status and headers (lower-case names) of one response read from sock, its body consumed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed after {data[:80]!r}")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(rest) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed mid-body")
        rest += chunk
    return int(lines[0].split()[1]), headers


@pytest.mark.postgres
def test_an_answer_before_the_body_keeps_the_connection(served: dict[str, Any]) -> None:
    """Issue 23, reproduction 9: a write refused before its body is read (here: no session, no CSRF
    token; in the outage: 503 with the database down), its body arriving after the headers as a
    client sends it, then the next request on the same connection. granian closed such a
    connection without ``Connection: close`` (20 of 20 broken pipes before app.serve's
    DrainedBodies); now the connection carries the next request. A body past the drain limit is
    answered with ``Connection: close``."""
    import socket

    body = json.dumps({"role": "reviewer"}).encode()
    head = (f"PATCH /api/workspaces/serve-ws/members/{served['learner']} HTTP/1.1\r\nHost: t\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", served["port"]), timeout=10) as sock:
            sock.sendall(head)
            time.sleep(0.05)  # the body after the app has answered
            sock.sendall(body)
            status, headers = _raw_answer(sock)
            assert 400 <= status < 500 and headers.get("connection", "").lower() != "close", (status, headers)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
            assert _raw_answer(sock)[0] == 200
    from app.serve import DRAIN_LIMIT

    big = b" " * (DRAIN_LIMIT + 1)
    with socket.create_connection(("127.0.0.1", served["port"]), timeout=10) as sock:
        sock.sendall(head.replace(str(len(body)).encode() + b"\r\n\r\n", str(len(big)).encode() + b"\r\n\r\n"))
        time.sleep(0.05)
        with contextlib.suppress(OSError):  # the server may stop reading once it has answered
            sock.sendall(big)
        status, headers = _raw_answer(sock)
        assert status >= 400 and headers.get("connection", "").lower() == "close", (status, headers)
