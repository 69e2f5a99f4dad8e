"""SQLite too: a revision written by another process reaches a running ``flask run`` (issue 15, item 8).

``make run`` serves on SQLite; ``flask policy import`` or a rollback from the CLI beside it writes a
new revision. The server polls the revision log (``POLICY_SYNC=auto`` polls where there is no
NOTIFY), so it decides at the new revision within ``POLICY_POLL_SECONDS`` without being asked for a
``min_revision``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.live_server import ROOT, flask_cli, flask_env, flask_server

RULE = "p, 80, role:simulations:reviewer, view_ai_spend, any, -, allow"
APPLY = f"""
from app import create_app
from app.extensions import db
from app.policy import edits as policy_edits
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
    env = flask_env(tmp_path / "app.db", POLICY_POLL_SECONDS="0.2")
    flask_cli(env, "db-upgrade")
    flask_cli(env, "seed")
    token = flask_cli(env, "token", "create", "sync-test", "--all-workspaces").strip().splitlines()[-1]
    with flask_server(env) as (base, log):
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
    assert not any(" 500 " in line for line in log), "\n".join(log[-60:])
