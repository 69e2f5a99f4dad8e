"""People and machines: users, their sessions and pending email changes, service tokens."""

from __future__ import annotations

from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import ForeignKey, Index, String, false
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class User(UserMixin, Base):
    """A person who signs in. ``key`` is the Casbin subject (``user:<id>``)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    username: Mapped[str | None] = mapped_column(String(64), unique=True)
    # An identifier another system knows the user by (an identity provider's ``sub``, an AuthZEN
    # subject id); resolvable wherever a user id or email is (app/decisions/resolution.py).
    external_id: Mapped[str | None] = mapped_column(String(254), unique=True, default=None)
    display_name: Mapped[str] = mapped_column(String(120), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def key(self) -> str:
        """The Casbin subject of this user."""
        return f"user:{self.id}"

    @property
    def is_active(self) -> bool:
        """flask-login: deactivated users cannot sign in."""
        return bool(self.active)

    # The session this instance was loaded for (set by sessions.start / sessions.load_session_user).
    session_token = None  # type: str | None

    def get_id(self) -> str:
        """flask-login session id: ``<user id>:<session token>``, checked against user_sessions per request."""
        return f"{self.id}:{self.session_token or ''}"


class UserSession(Base):
    """One signed-in session of a user; the cookie carries its token, the table its SHA-256.

    A request is signed in only while its row exists, is not ended, and is within the absolute and
    idle lifetimes; sign-out, "sign out other sessions", a password or email change end rows.
    """

    __tablename__ = "user_sessions"
    __table_args__ = (Index("ix_user_sessions_user_id_ended_at", "user_id", "ended_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(default=None)
    ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(200), default="")


class EmailChange(Base):
    """A requested email change, applied only when the link mailed to the new address is followed.

    Only the SHA-256 of the link's token is stored; a newer request supersedes older ones.
    """

    __tablename__ = "email_changes"
    __table_args__ = (Index("ix_email_changes_user_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    new_email: Mapped[str] = mapped_column(String(254))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class ServiceToken(Base):
    """A bearer token for the decision API; only its SHA-256 is stored."""

    __tablename__ = "service_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    # The workspace slug AuthZEN requests made with this token decide in when they name none.
    workspace: Mapped[str | None] = mapped_column(String(64), default=None)
    # What the token may ask about (app.policy.tokens.Binding): "ws:<slug> ws:<slug>…", "platform:<pack>"
    # or "*" (every workspace but the service meta-pack's). Empty: nothing (fail closed).
    binding: Mapped[str] = mapped_column(String(2000), default="", server_default="")
    # True for a token that existed before bindings: its binding was derived by the migration.
    migrated: Mapped[bool] = mapped_column(default=False, server_default=false())
    # May follow the change feed (GET /v1/snapshot, /v1/changes) within its binding (app.policy.feed).
    feed: Mapped[bool] = mapped_column(default=False, server_default=false())
