"""Configuration from the environment (Flask's from_prefixed_env: JSON values, nested keys) and its docs."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.config import DEFAULTS, ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent

BASE = {"SQLALCHEMY_DATABASE_URI": "sqlite://", "SECRET_KEY": "x"}


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
    monkeypatch.setenv("FLASK_SECRET_KEY", "12345678901234567890")
    assert load_config({"SQLALCHEMY_DATABASE_URI": "sqlite://"})["SECRET_KEY"] == "12345678901234567890"


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
        "FLASK_SECRET_KEY": "x",
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
