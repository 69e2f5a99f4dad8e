"""No personal data at INFO: the console mail backend logs which mail went out, not to whom or what."""

from __future__ import annotations

import logging

import pytest

from app.models.workspace import OutboxEmail
from app.notifications import _deliver


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
