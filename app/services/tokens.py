"""Service tokens for the decision API: random secrets shown once, stored as SHA-256, revocable.

Authentication is cached per app (per process) with no expiry: SHA-256 of a live token → its id
and name, so a known token needs no database on the hot path (a database outage changes nothing
for it). Only live tokens are cached, never unknown or revoked ones. A revoke drops the entry in
this process at once (and again after its commit), and is logged as a ``token-revoke`` revision in
the policy revision log, which every other process follows (``PolicyRuntime.sync``): it reaches
them like a role change, within the listener's delay. ``TOKEN_CACHE_SECONDS`` (default: forever)
bounds an entry's life; 0 turns the cache off. ``last_used_at`` is written when a process first
learns a token (at most once a minute per token), not on every use.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app.errors import ConflictError, NotFoundError, ValidationError
from app.models import AuditEvent, ServiceToken, Workspace, utcnow

from .ttlcache import TTLCache, app_cache

PREFIX = "lat_"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,79}")
# last_used_at is a hint for operators; writing it on every request would serialise the API.
TOUCH_EVERY = timedelta(minutes=1)
DEFAULT_CACHE_SECONDS = math.inf  # revocation travels through the revision log, not an expiry
TOKEN_REVOKE = "token-revoke"  # the revision kind of a revoke (its message names the token)
CACHE_MAX_ENTRIES = 4096
_EXT = "token_cache"
_PENDING = "tokens_revoked"


@dataclass(frozen=True)
class TokenIdentity:
    """Who authenticated: the token's id, name and default workspace (what the decision APIs need)."""

    id: int
    name: str
    workspace: str | None = None  # slug AuthZEN requests naming no workspace decide in


TokenCache = TTLCache[str, TokenIdentity]


def cache() -> TokenCache | None:
    """The current app's token cache (None outside an app context)."""
    return app_cache(_EXT, "TOKEN_CACHE_SECONDS", DEFAULT_CACHE_SECONDS, CACHE_MAX_ENTRIES)


def _forget(token_hash: str) -> None:
    c = cache()
    if c is not None:
        c.discard(token_hash)


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    # A request that read the row between the revoke's flush and its commit may have cached it.
    for token_hash in session.info.pop(_PENDING, ()):
        _forget(token_hash)


@event.listens_for(Session, "after_soft_rollback")
def _after_rollback(session: Session, previous_transaction: Any) -> None:
    session.info.pop(_PENDING, None)


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token (what the database stores)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(
    session: Session, name: str, actor_id: int | None = None, workspace: str | None = None
) -> tuple[ServiceToken, str]:
    """A new token row and its secret (returned once, never stored).

    ``workspace`` (a slug, or ``ws:<slug>``) is where AuthZEN requests made with the token decide
    when they name no workspace. Raises ValidationError (bad name), NotFoundError (no such
    workspace), ConflictError (name taken).
    """
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValidationError("token name: letters, digits, '.', '_' and '-', 1-80 characters")
    slug = None
    if workspace is not None:
        slug = workspace[3:] if isinstance(workspace, str) and workspace.startswith("ws:") else workspace
        if not isinstance(slug, str) or not 0 < len(slug) <= 64:
            raise NotFoundError("no workspace by that slug")
        if session.scalar(select(Workspace.id).where(Workspace.slug == slug)) is None:
            raise NotFoundError(f"no workspace {slug!r}")
    if session.scalar(select(ServiceToken.id).where(ServiceToken.name == name)) is not None:
        raise ConflictError(f"a token named {name!r} already exists")
    secret = PREFIX + secrets.token_urlsafe(32)
    row = ServiceToken(name=name, token_hash=hash_token(secret), created_by_id=actor_id, workspace=slug)
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
    _forget(row.token_hash)  # refused in this process from now on
    session.info.setdefault(_PENDING, set()).add(row.token_hash)
    if row.revoked_at is None:
        from . import policy_store

        row.revoked_at = utcnow()
        session.add(AuditEvent(actor_id=actor_id, action="token.revoke", target=f"token:{name}"))
        # Every other process drops the token when it applies this revision.
        policy_store.begin_write(session, TOKEN_REVOKE, actor_id, message=f"token:{name}")
        session.flush()
    return row


def forget_revoked(message: str) -> None:
    """Drop the token a ``token-revoke`` revision names (its message: ``token:<name>``) from this process's cache."""
    c = cache()
    if c is not None and message.startswith("token:"):
        name = message[len("token:") :]
        c.discard_values(lambda ident: ident.name == name)


def list_tokens(session: Session) -> list[ServiceToken]:
    """Every token, oldest first."""
    return list(session.scalars(select(ServiceToken).order_by(ServiceToken.id)))


def cached_identity(app: Any, secret: str) -> TokenIdentity | None:
    """The live token with this secret if app's process already knows it (no query, no app
    context); None otherwise (then :func:`authenticate` decides)."""
    c = app.extensions.get(_EXT)
    if c is None or not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    return c.get(hash_token(secret))  # type: ignore[no-any-return]


def authenticate(session: Session, secret: str) -> TokenIdentity | None:
    """The live token with this secret, or None (unknown or revoked).

    A cache hit touches nothing; a miss reads the row and, at most once a minute per token,
    writes ``last_used_at`` (so it lags real use by up to a minute plus the cache TTL).
    """
    if not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    token_hash = hash_token(secret)
    c = cache()
    generation = 0
    if c is not None:
        hit = c.get(token_hash)
        if hit is not None:
            return hit
        generation = c.generation
    row = session.scalar(select(ServiceToken).where(ServiceToken.token_hash == token_hash))
    if row is None or row.revoked_at is not None:
        return None
    identity = TokenIdentity(int(row.id), str(row.name), row.workspace)
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > TOUCH_EVERY:
        row.last_used_at = now
        session.commit()
    if c is not None:
        c.put(token_hash, identity, generation)
    return identity
