"""Outbox delivery: the file backend writes .eml files; `flask outbox send` retries what is queued;
`flask seed` runs from the command line."""

from __future__ import annotations

from pathlib import Path

from flask import Flask

from app import notifications
from app.extensions import db
from app.models import OutboxEmail
from tests.factories import fast_password_hashing


def test_file_backend_and_outbox_command(app: Flask, tmp_path: Path) -> None:
    """Queued rows are sent once, marked sent, and written as RFC 5322 files."""
    fast_password_hashing()
    runner = app.test_cli_runner()
    assert "demo data loaded" in runner.invoke(args=["seed"]).output
    app.config.update(MAIL_BACKEND="file", MAIL_FILE_DIR=str(tmp_path))
    notifications.queue(db.session(), "a@example.org", "Hello", "Body text", "test")
    db.session.commit()
    result = runner.invoke(args=["outbox", "send"])
    assert "sent 1 email(s)" in result.output
    files = list(tmp_path.glob("*.eml"))
    assert len(files) == 1 and "Subject: Hello" in files[0].read_text()
    assert db.session.query(OutboxEmail).filter(OutboxEmail.sent_at.is_(None)).count() == 0
    assert "sent 0 email(s)" in runner.invoke(args=["outbox", "send"]).output
