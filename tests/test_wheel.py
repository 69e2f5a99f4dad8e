"""The package that installs (issue 23): the wheel carries model.conf, the policy packs (with their
tests) and the migrations; installed in a clean virtualenv it migrates, seeds and serves from a
directory outside the checkout, with no setting pointing back into it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import requests

from app.config import DEFAULTS
from tests.conftest import ROOT, server_process
from tests.test_multiprocess import _free_port

# What the build reads: the packages, the metadata and the data app/_data links to.
ACTION = "view_ai_spend"  # simulations owners only
BUILD_INPUTS = ("pyproject.toml", "README.md", "app", "seed", "model.conf", "policy")


def _shipped() -> dict[str, bytes]:
    """Every file the wheel must carry, by its path inside the wheel, with the checkout's bytes."""
    files = {"app/_data/model.conf": (ROOT / "model.conf").read_bytes()}
    for path in sorted((ROOT / "policy").rglob("*")):
        if path.is_file():
            files[f"app/_data/policy/{path.relative_to(ROOT / 'policy')}"] = path.read_bytes()
    for path in sorted((ROOT / "app" / "migrations").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files[str(path.relative_to(ROOT))] = path.read_bytes()
    return files


def test_the_checkout_serves_its_own_files() -> None:
    """Editable install: the defaults are the checkout's model.conf and policy/ (app/_data links
    to them: one copy, nothing to drift)."""
    assert Path(DEFAULTS["MODEL_PATH"]) == ROOT / "model.conf"
    assert Path(DEFAULTS["POLICY_DIR"]) == ROOT / "policy"
    assert os.readlink(ROOT / "app/_data/model.conf") == "../../model.conf"
    assert os.readlink(ROOT / "app/_data/policy") == "../../policy"


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
def test_the_wheel_installs_migrates_seeds_and_serves(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, src / name)
    pip_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(dist)], tmp_path, pip_env)
    (wheel,) = dist.glob("learnauthz-*.whl")

    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for name, data in _shipped().items():
            assert name in names, name
            assert zf.read(name) == data, name  # the wheel's copy equals the checkout's
    assert "app/migrations/env.py" in names and any(n.startswith("app/migrations/versions/") for n in names)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, pip_env)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", str(wheel)], tmp_path, pip_env)

    home = tmp_path / "run"  # outside the checkout; no setting names a file in it
    home.mkdir()
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "FLASK_SQLALCHEMY_DATABASE_URI": f"sqlite:///{home / 'app.db'}",
        "FLASK_SECRET_KEY": "wheel-test-" + "k" * 32,
        "FLASK_MAIL_BACKEND": "memory",
    }
    where = _run([str(python), "-c", "import app.config as c; print(c.DEFAULTS['POLICY_DIR'])"], home, env)
    assert Path(where.strip()).is_relative_to(venv), where  # the installed copy, not the checkout's
    learnauthz = str(venv / "bin" / "learnauthz")
    assert "database at head" in _run([learnauthz, "db-upgrade"], home, env)
    assert "demo data loaded" in _run([learnauthz, "seed"], home, env)
    token = _run([learnauthz, "token", "create", "wheel", "--all-workspaces"], home, env).strip().splitlines()[-1]

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    serve_env = {**env, "SERVE_BIND": f"127.0.0.1:{port}", "SERVE_WORKERS": "1"}
    ready = lambda _: requests.get(f"{base}/readyz", timeout=2).status_code == 200  # noqa: E731
    with server_process([learnauthz, "serve"], serve_env, tmp_path / "serve.log", ready, cwd=home):
        assert requests.get(f"{base}/readyz", timeout=5).json()["checks"]["policy"] == "loaded"
        answers = {}
        for who in ("owner", "learner"):
            check = {"subject": f"{who}@simulations.example", "workspace": "simulations-demo", "action": ACTION}
            r = requests.post(
                f"{base}/v1/check",
                json=check,
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert r.status_code == 200, r.text
            answers[who] = (r.json()["allowed"], r.json()["reason"])
    assert answers == {"owner": (True, "granted"), "learner": (False, "not_permitted")}
