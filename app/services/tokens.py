"""Service tokens for the decision API: random secrets shown once, stored as SHA-256, revocable."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import ConflictError, NotFoundError, ValidationError
from app.models import AuditEvent, ServiceToken, utcnow

PREFIX = "lat_"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,79}")
# last_used_at is a hint for operators; writing it on every request would serialise the API.
TOUCH_EVERY = timedelta(minutes=1)


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token (what the database stores)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(session: Session, name: str, actor_id: int | None = None) -> tuple[ServiceToken, str]:
    """A new token row and its secret (returned once, never stored).

    Raises ValidationError (bad name), ConflictError (name taken).
    """
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValidationError("token name: letters, digits, '.', '_' and '-', 1-80 characters")
    if session.scalar(select(ServiceToken.id).where(ServiceToken.name == name)) is not None:
        raise ConflictError(f"a token named {name!r} already exists")
    secret = PREFIX + secrets.token_urlsafe(32)
    row = ServiceToken(name=name, token_hash=hash_token(secret), created_by_id=actor_id)
    session.add(row)
    session.add(AuditEvent(actor_id=actor_id, action="token.create", target=f"token:{name}"))
    session.flush()
    return row, secret


def revoke_token(session: Session, name: str, actor_id: int | None = None) -> ServiceToken:
    """Revoke a token by name (idempotent). Raises NotFoundError."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise NotFoundError("no token by that name")  # no such name can exist (and NUL never reaches the database)
    row = session.scalar(select(ServiceToken).where(ServiceToken.name == name))
    if row is None:
        raise NotFoundError(f"no token named {name!r}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(AuditEvent(actor_id=actor_id, action="token.revoke", target=f"token:{name}"))
        session.flush()
    return row


def list_tokens(session: Session) -> list[ServiceToken]:
    """Every token, oldest first."""
    return list(session.scalars(select(ServiceToken).order_by(ServiceToken.id)))


def authenticate(session: Session, secret: str) -> ServiceToken | None:
    """The live token with this secret, or None (unknown or revoked)."""
    if not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    row = session.scalar(select(ServiceToken).where(ServiceToken.token_hash == hash_token(secret)))
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > TOUCH_EVERY:
        row.last_used_at = now
        session.commit()
    return row
