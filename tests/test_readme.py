"""The README's curl tour runs, as pasted, against a real seeded server (no 5xx, no curl error)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.live_server import ROOT, flask_cli, flask_env, flask_server


def tour_blocks() -> list[str]:
    """The ```sh blocks of the README section "A tour with curl"."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## A tour with curl", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """`flask db-upgrade`, `flask seed`, `flask run` on a fresh SQLite file: what `make run` does."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    secret = "readme-test-" + "k" * 32
    env = flask_env(tmp_path_factory.mktemp("readme") / "app.db", POLICY_SYNC="off", SECRET_KEY=secret)
    for cmd in ("db-upgrade", "seed"):
        flask_cli(env, cmd)
    with flask_server(env) as (base, log):
        yield base, env
    assert not any(" 500 " in line for line in log), "\n".join(log[-60:])


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
    assert proc.stdout.count("token-not-bound") == 2 and proc.stdout.count(" 403\n") == 2  # outside the bindings
