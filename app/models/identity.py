"""People and machines: users, sign-in throttling, service tokens."""

from __future__ import annotations

from datetime import datetime

from flask_login import UserMixin
from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow


class User(UserMixin, Base):
    """A person who signs in. ``key`` is the Casbin subject (``user:<id>``)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    username: Mapped[str | None] = mapped_column(String(64), unique=True)
    # An identifier another system knows the user by (an identity provider's ``sub``, an AuthZEN
    # subject id); resolvable wherever a user id or email is (app/services/decisions.py).
    external_id: Mapped[str | None] = mapped_column(String(254), unique=True, default=None)
    display_name: Mapped[str] = mapped_column(String(120), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(default=True)
    session_version: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def key(self) -> str:
        """The Casbin subject of this user."""
        return f"user:{self.id}"

    @property
    def is_active(self) -> bool:  # type: ignore[override]
        """flask-login: deactivated users cannot sign in."""
        return bool(self.active)

    def get_id(self) -> str:
        """flask-login session id; bumping session_version signs out every session."""
        return f"{self.id}:{self.session_version}"


class LoginAttempt(Base):
    """One failed sign-in, for throttling by email and by client address."""

    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_email_at", "email", "at"), Index("ix_login_attempts_ip_at", "ip", "at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    ip: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(default=utcnow)


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
