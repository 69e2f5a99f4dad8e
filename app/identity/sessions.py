"""Sign-in, server-side sessions and pending memberships accepted at sign-in (the profile: app.identity.profile).

A session is a ``user_sessions`` row; the signed cookie carries ``<user id>:<token>`` and the row
only the token's SHA-256. Every request checks the row (not ended, within the absolute and idle
lifetimes), so sign-out ends a session wherever its cookie is replayed. Throttling of failed
sign-ins is the rate limiter's (app/security.py), not this module's.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session
from ua_parser import parse as parse_agent

from app import audit
from app.database import in_transaction
from app.errors import UnauthenticatedError, ValidationError
from app.identity import users
from app.inputs import check_text, parse_id
from app.models import Membership, User, UserSession, utcnow

TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


def token_hash(token: str) -> str:
    """SHA-256 hex of a session token (what the database keeps)."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def authenticate(session: Session, email: object, password: object) -> User:
    """The user whose credentials match.

    Unknown, deactivated and known accounts cost the same (one argon2 verification each).
    Raises ValidationError (wrong types), UnauthenticatedError (bad credentials).
    """
    if not isinstance(email, str) or not isinstance(password, str) or not email or not password:
        missing = [f for f, v in (("email", email), ("password", password)) if not isinstance(v, str) or not v]
        raise ValidationError(
            "email and password are required strings", errors=[{"field": f, "message": "required"} for f in missing]
        )
    check_text(email, "email")
    check_text(password, "password", "secret")
    user = users.by_email(session, email.strip().lower()[:254])
    if user is None or not user.active:
        users.verify_dummy(password)
        raise UnauthenticatedError("Wrong email or password.")
    if not users.verify_password(user, password):
        raise UnauthenticatedError("Wrong email or password.")
    return user


def accept_pending(session: Session, user: User) -> list[Membership]:
    """Mark the user's pending memberships accepted (their role rule exists since the invitation)."""
    rows = list(
        session.scalars(select(Membership).where(Membership.user_id == user.id, Membership.status == "pending"))
    )
    for m in rows:
        m.status = "accepted"
        audit.record(
            session,
            "member.accept",
            workspace_id=m.workspace_id,
            actor_id=user.id,
            target_user_id=user.id,
            target=user.key,
            before={"status": "pending", "role": m.role},
            after={"status": "accepted", "role": m.role},
        )
    return rows


def start(session: Session, user: User, ip: str = "", user_agent: str = "") -> str:
    """A new session row for user (flushed, not committed); returns its token, also set on user."""
    token = secrets.token_urlsafe(32)
    session.add(
        UserSession(
            user_id=user.id, token_hash=token_hash(token), ip=(ip or "")[:64], user_agent=(user_agent or "")[:200]
        )
    )
    session.flush()
    user.session_token = token
    return token


def sign_in(session: Session, email: str, password: str, ip: str = "", user_agent: str = "") -> User:
    """Authenticate, accept pending memberships, start a session, commit; returns the user."""
    with in_transaction(session):
        user = authenticate(session, email, password)
        accept_pending(session, user)
        start(session, user, ip, user_agent)
    return user


def current_row(session: Session, user: User) -> UserSession | None:
    """The session row of the token user was loaded with (None if it has none)."""
    if not user.session_token:
        return None
    return session.scalar(
        select(UserSession).where(
            UserSession.token_hash == token_hash(user.session_token), UserSession.user_id == user.id
        )
    )


def load_session_user(session: Session, session_id: str, absolute: int, idle: int) -> tuple[User, int, datetime] | None:
    """flask-login's user_loader: ``<id>:<token>`` → (user, session row id, its last use) while the
    session is valid.

    Valid means: the row exists and belongs to the user, was not ended, started less than
    ``absolute`` seconds ago and was last used less than ``idle`` seconds ago; the user is active.
    """
    uid, _, token = session_id.partition(":")
    user_id = parse_id(uid)
    if user_id is None or not TOKEN.fullmatch(token):
        return None
    row = session.scalar(select(UserSession).where(UserSession.token_hash == token_hash(token)))
    now = utcnow()
    if (
        row is None
        or row.user_id != user_id
        or row.ended_at is not None
        or row.created_at <= now - timedelta(seconds=absolute)
        or row.last_seen_at <= now - timedelta(seconds=idle)
    ):
        return None
    user = session.get(User, user_id)
    if user is None or not user.active:
        return None
    user.session_token = token
    return user, row.id, row.last_seen_at


def touch(session: Session, row_id: int, every: int, seen: datetime | None = None) -> None:
    """Record that a session was used now (at most once per ``every`` seconds); commits. ``seen``:
    its last use as this request loaded it (then nothing is written, nor committed, within ``every``
    of it: most requests of a session)."""
    if seen is not None and seen >= utcnow() - timedelta(seconds=every):
        return
    with in_transaction(session):
        now = utcnow()
        session.execute(
            update(UserSession)
            .where(UserSession.id == row_id, UserSession.last_seen_at < now - timedelta(seconds=every))
            .values(last_seen_at=now)
        )


def end(session: Session, user: User) -> None:
    """End the session user was loaded with (sign-out); commits."""
    with in_transaction(session):
        row = current_row(session, user)
        if row is not None and row.ended_at is None:
            row.ended_at = utcnow()


def end_others(session: Session, user: User) -> int:
    """End every other open session of user (not committed); returns how many."""
    keep = token_hash(user.session_token) if user.session_token else ""
    result = session.execute(
        update(UserSession)
        .where(UserSession.user_id == user.id, UserSession.ended_at.is_(None), UserSession.token_hash != keep)
        .values(ended_at=utcnow())
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def sign_out_others(session: Session, user: User) -> int:
    """End every other session of user, audited; commits; returns how many ended."""
    with in_transaction(session):
        ended = end_others(session, user)
        audit.record(
            session,
            "profile.sign_out_others",
            workspace_id=None,
            actor_id=user.id,
            target_user_id=user.id,
            target=user.key,
            after={"ended_sessions": ended},
        )
    return ended


def browser_of(user_agent: str) -> str:
    """A user-agent string in words ("Chrome on Linux"), read by ua-parser's maintained rules."""
    parsed = parse_agent(user_agent[:200]) if user_agent else None
    agent = parsed.user_agent if parsed is not None else None
    if agent is None or agent.family in ("", "Other"):
        return "Unknown browser"
    family = agent.family
    if family.startswith("Headless"):
        family = f"{family.removeprefix('Headless')} (headless)"
    system = parsed.os if parsed is not None else None
    return f"{family} on {system.family}" if system is not None and system.family not in ("", "Other") else family


def list_sessions(session: Session, user: User, absolute: int, idle: int) -> list[dict[str, Any]]:
    """The user's sessions that are still valid, newest first; ``current`` marks this one."""
    now = utcnow()
    rows = session.scalars(
        select(UserSession)
        .where(
            UserSession.user_id == user.id,
            UserSession.ended_at.is_(None),
            UserSession.created_at > now - timedelta(seconds=absolute),
            UserSession.last_seen_at > now - timedelta(seconds=idle),
        )
        .order_by(UserSession.id.desc())
    )
    mine = token_hash(user.session_token) if user.session_token else ""
    return [
        {
            "id": r.id,
            "created_at": r.created_at.isoformat(),
            "last_seen_at": r.last_seen_at.isoformat(),
            "ip": r.ip,
            "user_agent": r.user_agent,
            "browser": browser_of(r.user_agent),
            "current": r.token_hash == mine,
        }
        for r in rows
    ]
