"""No personal data at INFO: the console mail backend logs which mail went out, not to whom or what."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app import logs
from app.config import ConfigError
from app.extensions import db
from app.models.workspace import OutboxEmail
from app.notifications import _deliver
from app.policy import tokens
from tests.conftest import make_app
from tests.factories import PASSWORD, fast_password_hashing, seed_demo, web_client


def test_console_mail_keeps_address_and_body_out_of_info(caplog: pytest.LogCaptureFixture) -> None:
    row = OutboxEmail(
        id=7, to="ada@example.org", subject="Reset your password", body="https://x/reset?t=SECRET", kind="reset"
    )
    with caplog.at_level(logging.INFO, logger="app.mail"):
        _deliver(row, {"MAIL_BACKEND": "console"})
    assert [r.getMessage() for r in caplog.records] == ["mail 7 (reset) delivered to the console log"]
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="app.mail"):
        _deliver(row, {"MAIL_BACKEND": "console"})
    assert [r.levelno for r in caplog.records] == [logging.INFO, logging.DEBUG]
    assert "ada@example.org" in caplog.records[1].getMessage() and "SECRET" in caplog.records[1].getMessage()


# -- structured logs (issue 23): JSON lines, request ids, access lines, no personal data at INFO --
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
WRONG_PASSWORD = "not-the-password-7"
CLS = "/api/workspaces/classroom-demo"


def _json_lines(err: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    for line in lines:
        assert {"timestamp", "level", "logger", "message", "request_id"} <= set(line), line
    return lines


def test_info_json_logs_of_real_flows_hold_no_email_or_password(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sign-in (right and wrong password), an invitation mailed through the console backend, a
    member listing and decisions asking about people by email (decision log on), all with
    LOG_FORMAT=json at INFO: every line is JSON with a request id, and none holds an email
    address or a password."""
    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setenv("LOG_LEVEL", "INFO")
    app = make_app(database_url, MAIL_BACKEND="console", DECISION_LOG_SAMPLE=1.0, ACCESS_LOG_DECISIONS=True)
    with app.app_context():
        fast_password_hashing()
        seed_demo()
        _, secret = tokens.create_token(db.session(), "logs", all_workspaces=True)
        db.session.commit()
        capsys.readouterr()
        refused = web_client(app).post(
            "/api/auth/signin", json={"email": "admin@classroom.example", "password": WRONG_PASSWORD}
        )
        assert refused.status_code == 401
        wc = web_client(app, "admin@classroom.example", PASSWORD)
        invited = wc.post(f"{CLS}/invitations", json={"emails": "new.person@example.org", "role": "teacher"})
        assert invited.status_code == 201
        assert wc.get(f"{CLS}/members").status_code == 200
        body = {"subject": "teacher@classroom.example", "workspace": "classroom-demo", "action": "view_dashboard"}
        decided = app.test_client().post(
            "/v1/check", json=body, headers={"Authorization": f"Bearer {secret}", "X-Request-ID": "flow-1"}
        )
        assert decided.status_code == 200 and decided.headers["X-Request-ID"] == "flow-1"
        db.session.remove()
        db.engine.dispose()  # this app's connections closed here, not by the collector in a later test
    err = capsys.readouterr().err
    lines = _json_lines(err)
    messages = [line["message"] for line in lines]
    assert any(m.endswith("delivered to the console log") for m in messages)  # the mail went out
    decision = [line for line in lines if line["logger"] == "app.decisions"]
    assert len(decision) == 1 and json.loads(decision[0]["message"])["subject"] == "email"
    access = [line for line in lines if line["logger"] == "app.access"]
    assert [(a["method"], a["path"], a["status"]) for a in access if a["path"].startswith(("/v1", CLS))] == [
        ("POST", f"{CLS}/invitations", 201),
        ("GET", f"{CLS}/members", 200),
        ("POST", "/v1/check", 200),
    ]
    assert access[-1]["request_id"] == "flow-1" and access[-1]["credential"] == "token"
    assert {a["credential"] for a in access if a["path"] == f"{CLS}/members"} == {"session"}
    assert all(isinstance(a["duration_ms"], float) for a in access)
    assert EMAIL.findall(err) == []
    assert PASSWORD not in err and WRONG_PASSWORD not in err


def test_request_ids_on_every_line_of_a_request(
    app: Flask, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A safe X-Request-ID is echoed and on the request's lines; an unsafe one (spaces, too long)
    is replaced by a generated id, which is echoed and logged instead; a query string is never logged."""
    monkeypatch.setenv("LOG_FORMAT", "json")
    logs.configure()
    client = app.test_client()
    capsys.readouterr()
    ok = client.get("/healthz?secret=s3cr3t", headers={"X-Request-ID": "abc-123"})
    for bad in ("has space", "x" * 129, "semi;colon"):
        resp = client.get("/healthz", headers={"X-Request-ID": bad})
        assert resp.headers["X-Request-ID"] != bad and re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"])
    err = capsys.readouterr().err
    access = [line for line in _json_lines(err) if line["logger"] == "app.access"]
    assert ok.headers["X-Request-ID"] == "abc-123"
    assert access[0]["request_id"] == "abc-123" and access[0]["path"] == "/healthz" and "s3cr3t" not in err
    assert len(access) == 4 and len({a["request_id"] for a in access}) == 4
    assert logs.current_request_id() is None  # nothing leaks past the request


def test_log_format_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    monkeypatch.delenv("SERVER_SOFTWARE", raising=False)
    assert logs.log_format() == "text"
    monkeypatch.setenv("SERVER_SOFTWARE", "gunicorn/23")
    assert logs.log_format() == "json"
    monkeypatch.setenv("LOG_FORMAT", "TEXT")
    assert logs.log_format() == "text"
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match="LOG_FORMAT 'xml' is not one of json, text"):
        logs.log_format()


def test_a_failed_statement_does_not_carry_its_parameters(app: Flask) -> None:
    """An error a query raises (logged with its traceback by the unhandled-error handler) names the
    statement but not the values bound to it: they may be email addresses."""
    with pytest.raises(DBAPIError) as caught:
        db.session.execute(text("SELECT * FROM no_such_table WHERE email = :email"), {"email": "ada@example.org"})
    db.session.rollback()
    assert "no_such_table" in str(caught.value)
    assert "ada@example.org" not in str(caught.value)


def test_the_development_server_logs_no_query_string(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    """``flask run``'s request lines (werkzeug) lose the query string, where sign-up links carry tokens."""
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        logging.getLogger("werkzeug").info('"%s" %s %s', "GET /signup?token=s3cr3t HTTP/1.1", "200", "-")
    assert [r.getMessage() for r in caplog.records] == ['"GET /signup HTTP/1.1" 200 -']


def test_decisions_answered_below_400_write_no_access_line_by_default(
    database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ACCESS_LOG_DECISIONS off (the default): a granted or denied decision writes no access line (it
    costs more than the decision; /metrics counts it), a refused one (401) and other requests still do."""
    monkeypatch.setenv("LOG_FORMAT", "json")
    monkeypatch.setenv("LOG_LEVEL", "INFO")
    app = make_app(database_url)
    with app.app_context():
        _, secret = tokens.create_token(db.session(), "quiet", all_workspaces=True)
        db.session.commit()
        capsys.readouterr()
        client = app.test_client()
        body = {"subject": 1, "workspace": "nowhere", "action": "view_dashboard"}
        assert client.post("/v1/check", json=body, headers={"Authorization": f"Bearer {secret}"}).status_code == 200
        assert client.post("/v1/check", json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/healthz").status_code == 200
        db.session.remove()
        db.engine.dispose()
    access = [line for line in _json_lines(capsys.readouterr().err) if line["logger"] == "app.access"]
    assert [(a["path"], a["status"]) for a in access] == [("/v1/check", 401), ("/healthz", 200)]


_SERVER_LOG_CONFIG = """
import json, logging, logging.config, sys
from pathlib import Path
from app import logs
from app.authz import AccessRequest, PolicyEngine
from app.authz.packs import load_packs
from app.authz.types import ResourceFacts

packs = load_packs(Path("policy"), Path("model.conf"))
engine = PolicyEngine(packs, [("g4", "ws:a", "pack:todo"), ("g", "user:1", "role:todo:viewer", "ws:a")])
# What the libraries switched off themselves before a server configures logging.
loggers = logging.root.manager.loggerDict.items()
disabled = sorted(n for n, lg in loggers if isinstance(lg, logging.Logger) and lg.disabled)
server = sys.argv[1]
if server == "configure":
    logs.configure()
else:
    logging.config.dictConfig(logs.dict_config(server=server or None))
seen = []
class Collect(logging.Handler):
    def emit(self, record):
        seen.append(record.name)
logging.getLogger().addHandler(Collect())
# Casbin's own evaluation (the memo's miss path): one allowed, one denied.
allowed = engine.check(AccessRequest("user:1", "ws:a", ResourceFacts(), "can_read_todos")).allowed
denied = engine.check(AccessRequest("user:1", "ws:a", ResourceFacts(), "can_delete_todo")).allowed
loud = [n for n in disabled if logging.getLogger(n).isEnabledFor(logging.WARNING)]
print(json.dumps({"disabled": disabled, "seen": seen, "loud": loud, "answers": [allowed, denied]}))
"""


@pytest.mark.parametrize("server", ["granian", "gunicorn", "", "configure"])
def test_library_loggers_stay_quiet_whatever_configures_logging(server: str) -> None:
    """pycasbin logs every request it evaluates (allowed at INFO, denied at WARNING, with the subject
    and the resource) and switches those loggers off itself; a server's ``dictConfig`` with
    ``disable_existing_loggers: False`` switched them on again: a granian server wrote 1,826 such
    lines in its first 7 s. Whatever configures logging, a logger a library switched off stays quiet
    (every one of them, not only casbin's), and Casbin's evaluations write nothing."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-c", _SERVER_LOG_CONFIG, server],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "LOG_LEVEL": "INFO", "PYTHONPATH": str(root)},
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["answers"] == [True, False]  # the requests did reach Casbin's evaluation
    assert "casbin.enforcer" in out["disabled"]  # the library's own switch (the test's premise)
    assert out["loud"] == [], out
    assert not [n for n in out["seen"] if n.startswith("casbin")], out["seen"]
