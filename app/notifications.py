"""Notifications: an outbox row per email, written in the caller's transaction, sent after commit.

Backends (config ``MAIL_BACKEND``): ``console`` (log), ``file`` (one .eml per message in
``MAIL_FILE_DIR``), ``smtp`` (``SMTP_HOST``/``SMTP_PORT``), ``memory`` (tests: kept in
``app.extensions["mail_memory"]``). Sending is at-least-once: a row is marked sent only after
its backend accepted it.
"""

from __future__ import annotations

import logging
import smtplib
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.database import in_transaction
from app.models import OutboxEmail, utcnow

log = logging.getLogger("app.mail")
MAX_ATTEMPTS = 5


def queue(session: Session, to: str, subject: str, body: str, kind: str) -> OutboxEmail:
    """Add an email to the outbox in the caller's transaction."""
    row = OutboxEmail(to=to, subject=subject[:200], body=body[:5000], kind=kind)
    session.add(row)
    return row


def _message(row: OutboxEmail, sender: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = row.to
    msg["Subject"] = row.subject
    msg.set_content(row.body)
    return msg


def _deliver(row: OutboxEmail, config: Any) -> None:
    backend = config.get("MAIL_BACKEND", "console")
    sender = config.get("MAIL_FROM", "no-reply@localhost")
    if backend == "memory":
        current_app.extensions.setdefault("mail_memory", []).append(
            {"to": row.to, "subject": row.subject, "body": row.body, "kind": row.kind}
        )
    elif backend == "console":
        # No address, subject or body at INFO: bodies carry sign-in and invitation links.
        log.info("mail %s (%s) delivered to the console log", row.id, row.kind)
        log.debug("mail %s to %s: %s\n%s", row.id, row.to, row.subject, row.body)
    elif backend == "file":
        directory = Path(config["MAIL_FILE_DIR"])
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{row.id:08d}-{row.kind}.eml").write_bytes(bytes(_message(row, sender)))
    elif backend == "smtp":
        with smtplib.SMTP(config["SMTP_HOST"], int(config["SMTP_PORT"]), timeout=10) as smtp:
            smtp.send_message(_message(row, sender))
    else:
        raise RuntimeError(f"unknown MAIL_BACKEND {backend!r}")


def dispatch(session: Session, limit: int = 200) -> int:
    """Send unsent outbox rows (after their transaction committed); returns how many were sent."""
    stmt = (
        select(OutboxEmail)
        .where(OutboxEmail.sent_at.is_(None), OutboxEmail.attempts < MAX_ATTEMPTS)
        .order_by(OutboxEmail.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    with in_transaction(session):
        sent = 0
        for row in session.scalars(stmt):
            row.attempts += 1
            try:
                _deliver(row, current_app.config)
            except Exception:  # noqa: BLE001 - a failed delivery is retried later; log it
                log.exception("sending outbox email %s failed", row.id)
                continue
            row.sent_at = utcnow()
            sent += 1
    return sent
