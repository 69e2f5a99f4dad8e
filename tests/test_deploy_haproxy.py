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


def test_haproxy_accepts_the_shipped_config() -> None:
    if not os.path.exists(HAPROXY):
        if os.environ.get("CI") == "true":
            pytest.fail("haproxy is not installed (.ci/run installs it)")
        pytest.skip("haproxy is not installed (apt-get install haproxy)")
    env = dict(os.environ, AUTHZ_BIND="127.0.0.1:1", AUTHZ_HOST_A="127.0.0.1:2", AUTHZ_HOST_B="127.0.0.1:3")
    done = subprocess.run([HAPROXY, "-c", "-f", str(CFG)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
