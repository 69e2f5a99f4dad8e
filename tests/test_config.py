"""Configuration from the environment (Flask's from_prefixed_env: JSON values, nested keys) and its docs."""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from app.config import DEFAULTS, ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent

SECRET = "config-test-" + "k" * 32
BASE = {"SQLALCHEMY_DATABASE_URI": "sqlite://", "SECRET_KEY": SECRET}


def test_values_are_json_and_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_SMTP_PORT", "2525")
    monkeypatch.setenv("FLASK_RATELIMIT_ENABLED", "off")
    monkeypatch.setenv("FLASK_MIN_REVISION_WAIT_SECONDS", "1")
    monkeypatch.setenv("FLASK_SQLALCHEMY_ENGINE_OPTIONS", '{"pool_size": 3, "pool_timeout": 2}')
    monkeypatch.setenv("FLASK_MAIL_FROM", "ops@example.org")
    cfg = load_config(BASE)
    assert cfg["SMTP_PORT"] == 2525 and cfg["RATELIMIT_ENABLED"] is False
    assert cfg["MIN_REVISION_WAIT_SECONDS"] == 1.0 and isinstance(cfg["MIN_REVISION_WAIT_SECONDS"], float)
    assert cfg["SQLALCHEMY_ENGINE_OPTIONS"] == {"pool_size": 3, "pool_timeout": 2}
    assert cfg["MAIL_FROM"] == "ops@example.org"


def test_a_secret_that_looks_like_a_number_stays_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_SECRET_KEY", "1234567890" * 4)
    assert load_config({"SQLALCHEMY_DATABASE_URI": "sqlite://"})["SECRET_KEY"] == "1234567890" * 4


def test_nested_key_merges_into_the_default_dict(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_SQLALCHEMY_ENGINE_OPTIONS__pool_size", "7")
    assert load_config(BASE)["SQLALCHEMY_ENGINE_OPTIONS"] == {"pool_pre_ping": True, "pool_size": 7}
    assert DEFAULTS["SQLALCHEMY_ENGINE_OPTIONS"] == {"pool_pre_ping": True}  # the default is not mutated


@pytest.mark.parametrize(
    ("name", "value"), [("SMTP_PORT", "abc"), ("RATELIMIT_ENABLED", "maybe"), ("BATCH_MAX_CHECKS", "1.5")]
)
def test_wrong_types_stop_the_start_naming_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(f"FLASK_{name}", value)
    with pytest.raises(ValueError, match=f"FLASK_{name}"):
        load_config(BASE)


def test_every_setting_is_documented() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", text))
    assert set(DEFAULTS) <= documented, sorted(set(DEFAULTS) - documented)


def test_a_missing_model_file_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^MODEL_PATH '.*nope.conf' is not a readable file \(set FLASK_MODEL_PATH\)"):
        load_config({**BASE, "MODEL_PATH": str(tmp_path / "nope.conf")})


def test_a_missing_policy_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^POLICY_DIR '.*gone' is not a readable directory"):
        load_config({**BASE, "POLICY_DIR": str(tmp_path / "gone")})


def test_a_policy_dir_without_packs_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"holds no policy packs \(\*\.yaml\)$"):
        load_config({**BASE, "POLICY_DIR": str(tmp_path)})


def test_the_console_script_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "FLASK_SQLALCHEMY_DATABASE_URI": "sqlite://",
        "FLASK_SECRET_KEY": SECRET,
        "FLASK_POLICY_DIR": str(tmp_path / "gone"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "app", "routes"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: POLICY_DIR {str(tmp_path / 'gone')!r} is not a readable directory (set FLASK_POLICY_DIR)"
    ]


def test_log_level_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from app import _log_level

    monkeypatch.setenv("LOG_LEVEL", "warning")
    assert _log_level() == logging.WARNING
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    with pytest.raises(ConfigError, match="LOG_LEVEL 'CHATTY' is not one of"):
        _log_level()


@pytest.mark.parametrize("url", ["not a url:pw", "mysqlx://u:pw@db/app", "postgres//u:pw@host/db"])
def test_an_unusable_database_url_is_refused_without_echoing_it(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^SQLALCHEMY_DATABASE_URI is not a usable database URL \(") as err:
        load_config({**BASE, "SQLALCHEMY_DATABASE_URI": url})
    assert "pw" not in str(err.value)


# -- the secret's length ------------------------------------------------------------------------------
SHORT = "s" * 31
SHORT_MESSAGE = (
    "SECRET_KEY is 31 bytes, at least 32 are needed outside development "
    "(`python -c 'import secrets; print(secrets.token_hex(32))'`; FLASK_APP_ENV=development accepts it)"
)


def test_a_short_secret_is_refused_outside_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLASK_DEBUG", raising=False)
    with pytest.raises(ConfigError) as err:
        load_config({**BASE, "SECRET_KEY": SHORT})
    assert str(err.value) == SHORT_MESSAGE
    assert load_config({**BASE, "SECRET_KEY": "s" * 32})["SECRET_KEY"] == "s" * 32  # 32 bytes are enough
    with pytest.raises(ConfigError, match="SECRET_KEY is 31 bytes"):  # bytes, not characters: 'é' is two
        load_config({**BASE, "SECRET_KEY": "é" * 15 + "s"})


@pytest.mark.parametrize(
    ("env", "extra"),
    [({"FLASK_APP_ENV": "development"}, {}), ({"FLASK_DEBUG": "1"}, {}), ({}, {"TESTING": True})],
    ids=["APP_ENV=development", "FLASK_DEBUG=1", "TESTING"],
)
def test_development_and_tests_accept_a_short_secret(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], extra: dict[str, Any]
) -> None:
    monkeypatch.delenv("FLASK_DEBUG", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert load_config({**BASE, "SECRET_KEY": "dev", **extra})["SECRET_KEY"] == "dev"


def test_an_unknown_app_env_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_APP_ENV", "staging")
    with pytest.raises(ConfigError) as err:
        load_config(BASE)
    assert str(err.value) == "APP_ENV 'staging' is not one of production, development"


# -- refusals at start: the console script and both servers, one line and exit 2 -------------------------
def _previous_revision(path: Path) -> tuple[str, str]:
    """A SQLite database migrated to the revision before the head: (its revision, the head)."""
    from alembic import command

    from app import schema

    (head,) = schema.heads()
    before = schema._scripts().get_revision(head).down_revision
    assert isinstance(before, str)
    command.upgrade(schema.alembic_config(f"sqlite:///{path}"), before)
    return before, head


def _refusal_case(name: str, tmp: Path) -> tuple[dict[str, str], str, bool]:
    """(environment, the one line, run as an unprivileged user) of the refusal ``name``."""
    db = tmp / "app.db"
    sqlite3.connect(db).close()  # an empty database: no schema
    if name == "model missing":
        return {"FLASK_MODEL_PATH": str(tmp / "nope.conf")}, (
            f"MODEL_PATH {str(tmp / 'nope.conf')!r} is not a readable file (set FLASK_MODEL_PATH)"
        ), False
    if name == "model unreadable":
        model = tmp / "model.conf"
        shutil.copy(ROOT / "model.conf", model)
        model.chmod(0)
        return {"FLASK_MODEL_PATH": str(model)}, (
            f"MODEL_PATH {str(model)!r} is not a readable file (set FLASK_MODEL_PATH)"
        ), True
    if name == "policy dir missing":
        return {"FLASK_POLICY_DIR": str(tmp / "gone")}, (
            f"POLICY_DIR {str(tmp / 'gone')!r} is not a readable directory (set FLASK_POLICY_DIR)"
        ), False
    if name == "policy dir unreadable":
        pdir = tmp / "policy"
        shutil.copytree(ROOT / "policy", pdir)
        pdir.chmod(0)
        return {"FLASK_POLICY_DIR": str(pdir)}, (
            f"POLICY_DIR {str(pdir)!r} is not a readable directory (set FLASK_POLICY_DIR)"
        ), True
    if name == "no packs":
        (tmp / "empty").mkdir()
        return {"FLASK_POLICY_DIR": str(tmp / "empty")}, (
            f"POLICY_DIR {str(tmp / 'empty')!r} holds no policy packs (*.yaml)"
        ), False
    if name == "short secret":
        return {"FLASK_SECRET_KEY": SHORT}, SHORT_MESSAGE, False
    if name == "database URL":
        return {"FLASK_SQLALCHEMY_DATABASE_URI": "mysqlx://u:pw@db/app"}, (
            "SQLALCHEMY_DATABASE_URI is not a usable database URL (NoSuchModuleError): "
            "expected postgresql://user@host/db or sqlite:///path"
        ), False
    if name == "no schema":
        return {}, "the database has no schema (migrations not applied): run `learnauthz db-upgrade`", False
    assert name == "schema behind"
    db.unlink()
    before, head = _previous_revision(db)
    return {}, (
        f"the database schema is at revision {before}, not {head} (migrations not applied): "
        "run `learnauthz db-upgrade`"
    ), False


REFUSALS = [
    "model missing",
    "model unreadable",
    "policy dir missing",
    "policy dir unreadable",
    "no packs",
    "short secret",
    "database URL",
    "no schema",
    "schema behind",
]
ENTRY_POINTS = {
    "learnauthz": [sys.executable, "-m", "app", "seed"],  # a command that uses the database
    "app.serve": [sys.executable, "-m", "app.serve"],
    "learnauthz serve": [sys.executable, "-m", "app", "serve"],
    "gunicorn": [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "app:create_app()"],
}


# Root reads files whatever their mode: the unreadable cases run without the capabilities that allow it.
UNPRIVILEGED = ["setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search"]


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("name", REFUSALS)
def test_a_bad_setting_is_one_line_and_exit_2(tmp_path: Path, name: str, entry: str) -> None:
    extra, message, unprivileged = _refusal_case(name, tmp_path)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "FLASK_SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'app.db'}",
        "FLASK_SECRET_KEY": SECRET,
        "SERVE_BIND": "127.0.0.1:9",  # never bound: every refusal comes first
        "GUNICORN_BIND": "127.0.0.1:9",
        **extra,
    }
    prefix = UNPRIVILEGED if unprivileged and os.geteuid() == 0 else []
    if prefix and shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is needed to drop root's read override")
    try:
        cmd = [*prefix, *ENTRY_POINTS[entry]]
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    finally:
        for path in (tmp_path / "model.conf", tmp_path / "policy"):
            if path.exists():
                path.chmod(0o755)  # pytest removes its tmp directories
    assert (proc.returncode, proc.stderr.strip().splitlines()) == (2, [f"error: {message}"]), proc.stdout


def test_a_schema_found_behind_when_the_database_is_reached_is_refused_and_reported(tmp_path: Path) -> None:
    """The load (not only the start) refuses a database without the schema: /readyz 503 with the
    reason; once migrated, the next load succeeds and the reason is gone."""
    from app import create_app
    from app.cli import upgrade_database

    db = tmp_path / "app.db"
    sqlite3.connect(db).close()
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{db}", "SECRET_KEY": SECRET})
    client = app.test_client()
    r = client.get("/readyz")
    assert r.status_code == 503
    body = r.get_json()
    assert body["checks"]["policy"] == "refused"
    assert body["reason"] == "the database has no schema (migrations not applied): run `learnauthz db-upgrade`"
    with app.app_context():
        upgrade_database()
    r = client.get("/readyz")
    assert r.status_code == 200 and r.get_json()["checks"]["policy"] == "loaded" and "reason" not in r.get_json()


SERVERS = {
    "app.serve": [sys.executable, "-m", "app.serve"],
    "gunicorn": [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "app:create_app()"],
}


@pytest.mark.slow
@pytest.mark.parametrize("server", list(SERVERS))
def test_a_server_started_without_its_database_refuses_an_unmigrated_one_later(tmp_path: Path, server: str) -> None:
    """Unreachable at start is no refusal (the server starts unready); a database without the
    schema, once reached, is refused by the load: /readyz 503 with the reason, the process stays
    up; after `learnauthz db-upgrade` the listener's next try loads it and /readyz is 200."""
    import requests

    from tests.conftest import server_process
    from tests.test_multiprocess import _free_port

    later = tmp_path / "later"  # does not exist yet: SQLite cannot open the database
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "GUNICORN_", "SERVE_"))},
        "FLASK_SQLALCHEMY_DATABASE_URI": f"sqlite:///{later / 'app.db'}",
        "FLASK_SECRET_KEY": SECRET,
        "FLASK_MAIL_BACKEND": "memory",
        "SERVE_BIND": f"127.0.0.1:{port}",
        "SERVE_WORKERS": "1",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "1",
    }

    def readyz_until(predicate: Any, seconds: float = 40) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            r = requests.get(f"{base}/readyz", timeout=5)
            body = {"status_code": r.status_code, **r.json()}
            if predicate(body) or time.monotonic() > deadline:
                return body
            time.sleep(0.2)

    up = lambda _: requests.get(f"{base}/healthz", timeout=2).status_code == 200  # noqa: E731
    with server_process(SERVERS[server], env, tmp_path / "server.log", up):
        assert requests.get(f"{base}/readyz", timeout=5).status_code == 503
        later.mkdir()
        sqlite3.connect(later / "app.db").close()  # reachable now, without the schema
        body = readyz_until(lambda b: b["checks"].get("policy") == "refused")
        assert body["status_code"] == 503 and body["checks"]["policy"] == "refused", body
        assert body["reason"] == "the database has no schema (migrations not applied): run `learnauthz db-upgrade`"
        proc = subprocess.run(
            [sys.executable, "-m", "app", "db-upgrade"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        body = readyz_until(lambda b: b["status_code"] == 200)
        assert body["status_code"] == 200 and body["checks"]["policy"] == "loaded" and "reason" not in body, body
