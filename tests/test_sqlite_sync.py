"""SQLite too: a revision written by another process reaches a running ``flask run`` (issue 15, item 8).

``make run`` serves on SQLite; ``flask policy import`` or a rollback from the CLI beside it writes a
new revision. The server polls the revision log (``POLICY_SYNC=auto`` polls where there is no
NOTIFY), so it decides at the new revision within ``POLICY_POLL_SECONDS`` without being asked for a
``min_revision``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.test_readme import ROOT, _free_port

RULE = "p, 80, role:simulations:reviewer, pack:simulations, view_ai_spend, any, -, allow"
APPLY = f"""
from app import create_app
from app.extensions import db
from app.services import policy_edits
from pathlib import Path
app = create_app()
with app.app_context():
    model = Path(app.config["MODEL_PATH"]).read_text(encoding="utf-8")
    d = policy_edits.apply(db.session(), [policy_edits.Edit("add", {RULE!r})], model, None, message="from the CLI")
    db.session.commit()
    print(d.revision)
"""


def _check(base: str, token: str) -> dict[str, object]:
    body = json.dumps(
        {"subject": "reviewer@simulations.example", "workspace": "simulations-demo", "action": "view_ai_spend"}
    ).encode()
    req = urllib.request.Request(
        base + "/v1/check",
        data=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return dict(json.loads(resp.read()))


def test_a_cli_write_reaches_the_running_sqlite_server(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    env = {
        **os.environ,
        "FLASK_SQLALCHEMY_DATABASE_URI": f"sqlite:///{db}",
        "FLASK_SECRET_KEY": "sqlite-sync-test",
        "FLASK_MAIL_BACKEND": "memory",
        "FLASK_POLICY_POLL_SECONDS": "0.2",
    }
    env.pop("FLASK_POLICY_SYNC", None)
    flask = [sys.executable, "-m", "flask", "--app", "app:create_app"]
    for cmd in (["db-upgrade"], ["seed"]):
        subprocess.run([*flask, *cmd], cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    token = subprocess.run(
        [*flask, "token", "create", "sync-test"], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout.strip().splitlines()[-1]
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
        before = _check(base, token)
        assert before["allowed"] is False, before
        out = subprocess.run(
            [sys.executable, "-c", APPLY], cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=120
        )
        revision = int(out.stdout.strip().splitlines()[-1])
        deadline = time.monotonic() + 10
        after = before
        while time.monotonic() < deadline:
            after = _check(base, token)
            if after["allowed"]:
                break
            time.sleep(0.1)
        assert after["allowed"] is True and int(str(after["revision"])) >= revision, after
        with urllib.request.urlopen(base + "/readyz", timeout=5) as resp:
            ready = json.loads(resp.read())
        assert ready["sync"]["listener"]["mode"] == "poll", ready
    finally:
        proc.terminate()
        log = proc.communicate(timeout=10)[0].decode(errors="replace")
    if proc.returncode not in (0, -15):
        pytest.fail(log[-3000:])
