"""The shipped HAProxy configuration (deploy/haproxy.cfg) is valid and is what docs/deploy.md shows."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CFG = ROOT / "deploy" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def test_docs_show_the_shipped_config_verbatim() -> None:
    assert CFG.read_text() in (ROOT / "docs" / "deploy.md").read_text()


def test_decisions_and_writes_are_checked_on_their_own_readiness() -> None:
    text = CFG.read_text()
    decide = text[text.index("\nbackend decide") : text.index("\nbackend writes")]
    writes = text[text.index("\nbackend writes") :]
    assert "option httpchk GET /readyz\n" in decide and "/readyz/writes" not in decide
    assert "option httpchk GET /readyz/writes\n" in writes
    for path in ("/v1/check", "/v1/check/batch", "/access/v1/", "/.well-known/authzen-configuration"):
        assert path in text[text.index("frontend authz") : text.index("\nbackend decide")]


def test_decisions_go_to_the_decision_listeners_backed_up_by_the_app_servers() -> None:
    """decide's servers are AUTHZ_DECIDE_A/B (the app servers when unset); the app servers are its
    backups; writes never go to a decision listener."""
    text = CFG.read_text()
    decide = text[text.index("\nbackend decide") : text.index("\nbackend writes")]
    writes = text[text.index("\nbackend writes") :]
    assert 'server a "${AUTHZ_DECIDE_A-${AUTHZ_HOST_A}}" check' in decide
    assert 'server b "${AUTHZ_DECIDE_B-${AUTHZ_HOST_B}}" check' in decide
    backups = [line for line in decide.splitlines() if line.strip().startswith("server") and "backup" in line]
    assert [line.split('"')[1] for line in backups] == ["${AUTHZ_HOST_A}", "${AUTHZ_HOST_B}"]
    assert "AUTHZ_DECIDE" not in writes


@pytest.mark.parametrize("decide", [{}, {"AUTHZ_DECIDE_A": "127.0.0.1:4", "AUTHZ_DECIDE_B": "127.0.0.1:5"}])
def test_haproxy_accepts_the_shipped_config(decide: dict[str, str]) -> None:
    """Valid with and without decision listeners."""
    if not os.path.exists(HAPROXY):
        if os.environ.get("CI") == "true":
            pytest.fail("haproxy is not installed (.ci/run installs it)")
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHZ_DECIDE_")}
    env.update(AUTHZ_BIND="127.0.0.1:1", AUTHZ_HOST_A="127.0.0.1:2", AUTHZ_HOST_B="127.0.0.1:3", **decide)
    done = subprocess.run([HAPROXY, "-c", "-f", str(CFG)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_haproxy_own_503_is_a_problem_with_retry_after() -> None:
    """The shipped config, no server ready: HAProxy's own 503 on either backend is an RFC 9457
    problem with Retry-After (clients retry it like the service's 503); it was an HTML page."""
    import json
    import socket
    import time
    import urllib.error
    import urllib.request

    if not os.path.exists(HAPROXY):
        if os.environ.get("CI") == "true":
            pytest.fail("haproxy is not installed (.ci/run installs it)")
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    ports = []
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    env = dict(os.environ, AUTHZ_BIND=f"127.0.0.1:{ports[0]}", AUTHZ_HOST_A=f"127.0.0.1:{ports[1]}",
               AUTHZ_HOST_B=f"127.0.0.1:{ports[2]}")  # nothing listens there: both servers fail their checks
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(CFG)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        answers = []
        for path, method in (("/v1/check", "POST"), ("/api/workspaces", "POST")):  # decide, writes
            deadline = time.monotonic() + 15
            while True:
                req = urllib.request.Request(f"http://127.0.0.1:{ports[0]}{path}", data=b"{}", method=method)
                try:
                    urllib.request.urlopen(req, timeout=5)  # noqa: S310 - loopback
                except urllib.error.HTTPError as err:
                    if err.code == 503:
                        answers.append((err.headers, json.loads(err.read())))
                        break
                except OSError:
                    pass  # HAProxy not listening yet, or a server still counted up
                assert time.monotonic() < deadline, f"no 503 from HAProxy on {path}"
                time.sleep(0.2)
        for headers, body in answers:
            assert headers["Content-Type"] == "application/problem+json" and headers["Retry-After"] == "1"
            assert body["status"] == 503 and body["type"].endswith("/no-ready-server"), body
    finally:
        proc.kill()
        proc.wait()


PARTITIONS_CFG = ROOT / "deploy" / "haproxy-partitions.cfg"


def test_docs_show_the_partitioned_config_verbatim() -> None:
    assert PARTITIONS_CFG.read_text() in (ROOT / "docs" / "deploy.md").read_text()


def test_haproxy_accepts_the_partitioned_config_and_the_cli_writes_its_map(tmp_path: Path) -> None:
    """`learnauthz partitions map 3` writes the slot map the shipped partitioned config reads; haproxy
    accepts both (tests/deploy/test_partitions.py routes real traffic through them)."""
    from click.testing import CliRunner

    from app import create_app
    from app.authz.selection import slot_map

    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite://", "SECRET_KEY": "x" * 32})
    slots = tmp_path / "slots.map"
    done = app.test_cli_runner().invoke(args=["partitions", "map", "3", "-o", str(slots)])
    assert done.exit_code == 0, done.output
    assert slots.read_text() == slot_map(3) and len(slots.read_text().splitlines()) == 1024
    assert CliRunner().invoke(app.cli, ["partitions", "map", "0"]).exit_code != 0
    if not os.path.exists(HAPROXY):
        if os.environ.get("CI") == "true":
            pytest.fail("haproxy is not installed (.ci/run installs it)")
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    env = dict(os.environ, AUTHZ_BIND="127.0.0.1:1", AUTHZ_SLOTS_MAP=str(slots), AUTHZ_WRITER="127.0.0.1:2")
    env.update({f"AUTHZ_P{k}_{r}": f"127.0.0.1:{10 + 2 * k + (r == 'B')}" for k in range(3) for r in "AB"})
    done_c = subprocess.run([HAPROXY, "-c", "-f", str(PARTITIONS_CFG)], env=env, capture_output=True, text=True,
                            timeout=30)
    assert done_c.returncode == 0, done_c.stdout + done_c.stderr
    text = PARTITIONS_CFG.read_text()
    for k in range(3):
        block = text[text.index(f"\nbackend p{k}") :].split("\n\n")[0]
        assert "hash-type consistent" in block and "option httpchk GET /readyz" in block and "retry-on" in block
