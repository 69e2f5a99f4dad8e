"""The README's curl tour runs, as pasted, against a real seeded server (no 5xx, no curl error)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def tour_blocks() -> list[str]:
    """The ```sh blocks of the README section "A tour with curl"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## A tour with curl", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """`flask db-upgrade`, `flask seed`, `flask run` on a fresh SQLite file: what `make run` does."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    db = tmp_path_factory.mktemp("readme") / "app.db"
    env = {
        **os.environ,
        "FLASK_SQLALCHEMY_DATABASE_URI": f"sqlite:///{db}",
        "FLASK_SECRET_KEY": "readme-test",
        "FLASK_MAIL_BACKEND": "memory",
        "FLASK_POLICY_SYNC": "off",
    }
    flask = [sys.executable, "-m", "flask", "--app", "app:create_app"]
    for cmd in ("db-upgrade", "seed"):
        subprocess.run([*flask, cmd], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    port = _free_port()
    proc = subprocess.Popen(
        [*flask, "run", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        yield base, env
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0].decode(errors="replace")
        assert " 500 " not in out, out[-4000:]


def test_readme_tour_runs(server: tuple[str, dict[str, str]]) -> None:
    """Every tour block, in order, in one bash: -f makes curl fail on any 4xx/5xx it did not expect."""
    base, env = server
    blocks = tour_blocks()
    assert len(blocks) >= 4
    script = "\n".join(blocks)
    script = script.replace("http://127.0.0.1:5000", base)
    script = script.replace(".venv/bin/flask", f"{sys.executable} -m flask")
    proc = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert '"allowed"' in proc.stdout and "paths" in proc.stdout
