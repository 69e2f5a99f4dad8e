"""A real ``flask run`` on a fresh SQLite file, as ``make run`` serves it, for tests over real HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLASK = [sys.executable, "-m", "flask", "--app", "app:create_app"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flask_env(db: Path, **settings: str) -> dict[str, str]:
    """The environment of a server on SQLite file db (FLASK_<NAME> settings added)."""
    env = {
        **os.environ,
        "FLASK_SQLALCHEMY_DATABASE_URI": f"sqlite:///{db}",
        "FLASK_SECRET_KEY": "live-server-test-0123456789abcdef0123456789abcdef",
        "FLASK_MAIL_BACKEND": "memory",
    }
    env.pop("FLASK_POLICY_SYNC", None)
    env.update({f"FLASK_{k}": v for k, v in settings.items()})
    return env


def flask_cli(env: dict[str, str], *args: str) -> str:
    """Run ``flask ARGS`` (db-upgrade, seed, token create, ...); its stdout."""
    proc = subprocess.run([*FLASK, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@contextmanager
def flask_server(env: dict[str, str]) -> Iterator[tuple[str, list[str]]]:
    """``flask run`` on a free port until /healthz answers; yields (base URL, log lines once stopped)."""
    port = free_port()
    proc = subprocess.Popen(
        [*FLASK, "run", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    log: list[str] = []
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        yield base, log
    finally:
        proc.terminate()
        log.extend(proc.communicate(timeout=10)[0].decode(errors="replace").splitlines())
