"""Configuration from the environment (Flask's from_prefixed_env: JSON values, nested keys) and its docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.config import DEFAULTS, load_config

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
