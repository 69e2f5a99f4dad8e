"""Users: creation, password hashing (argon2), lookup by id or email."""

from __future__ import annotations

import contextlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import inputs
from app.errors import ConflictError, ValidationError
from app.models import User
from app.policy import directory
from app.policy.refs import EXTERNAL_ID

_hasher = PasswordHasher()
MIN_PASSWORD = 10
MAX_PASSWORD = 256


def normalize_email(raw: object) -> str:
    """A syntactically valid, lower-cased email; ValidationError otherwise (no DNS lookups)."""
    if not isinstance(raw, str) or len(raw) > 254:
        raise ValidationError("invalid email address", errors=[{"field": "email", "value": str(raw)[:254]}])
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValidationError(
            f"invalid email address: {raw.strip()[:254]}", errors=[{"field": "email", "message": str(exc)}]
        ) from exc
    return result.normalized.lower()


def hash_password(password: str) -> str:
    """argon2id hash of a password that meets the length policy."""
    if not isinstance(password, str) or not (MIN_PASSWORD <= len(password) <= MAX_PASSWORD):
        raise ValidationError(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return _hasher.hash(password)


def verify_password(user: User, password: str) -> bool:
    """True if password matches; rehashes transparently when parameters changed."""
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return True


_dummy: tuple[PasswordHasher, str] | None = None  # (the hasher it was made with, a hash of a random password)


def verify_dummy(password: str) -> None:
    """Spend what ``verify_password`` spends, for a sign-in naming no (active) account.

    Unknown and known emails then cost the same argon2 verification, so timing tells nothing.
    """
    global _dummy
    hasher = _hasher
    if _dummy is None or _dummy[0] is not hasher:  # made with the current parameters
        _dummy = (hasher, hasher.hash(secrets.token_urlsafe(16)))
    with contextlib.suppress(VerificationError, InvalidHashError):
        hasher.verify(_dummy[1], password)


def by_email(session: Session, email: str) -> User | None:
    """The user with this email (case-insensitive: emails are stored lower-case), or None."""
    return session.scalar(select(User).where(User.email == email.strip().lower()))


def create_user(
    session: Session, email: str, password: str, display_name: str = "", username: str | None = None
) -> User:
    """A new user (flushed, not committed). Raises ValidationError, ConflictError."""
    email = normalize_email(email)
    if by_email(session, email) is not None:
        raise ConflictError("a user with this email already exists")
    if username is not None and session.scalar(select(User).where(User.username == username)) is not None:
        raise ConflictError("this username is taken")
    user = User(
        email=email,
        password_hash=hash_password(password),
        display_name=display_name or email.split("@")[0],
        username=username,
    )
    session.add(user)
    session.flush()
    directory.record_change(session, user, None)  # every process's directory holds the user from this revision
    return user


def resolve_subject(session: Session, subject: object) -> User | None:
    """A user from an id (int or digit string), ``user:<id>`` or an email; None if unknown."""
    if isinstance(subject, bool):
        return None
    if isinstance(subject, int):
        return session.get(User, subject) if inputs.is_id(subject) else None
    if not isinstance(subject, str) or not subject or len(subject) > 254:
        return None
    value = subject[5:] if subject.startswith("user:") else subject
    if value[:1].isdigit():
        uid = inputs.parse_id(value)  # ASCII digits within the id range only ("²" is a digit to isdigit)
        return session.get(User, uid) if uid is not None else None
    if "@" in value and inputs.text_problem(value, "name") is None:
        return by_email(session, value)
    return None


def set_external_id(session: Session, user: User, external_id: str | None, actor_id: int | None = None) -> None:
    """Set (or clear, with None) the id another system knows the user by, e.g. an IdP's ``sub``.

    A change is a ``user-change`` revision of the caller's transaction (by ``actor_id``), so every
    process's directory of users follows it. Raises ValidationError (not printable ASCII, holds
    ``,*@``, all digits, over 254 characters: such a value would read as a user id or an email) and
    ConflictError (another user has it).
    """
    if external_id is not None:
        if not isinstance(external_id, str) or not EXTERNAL_ID.fullmatch(external_id):
            raise ValidationError(
                "external id: 1-254 printable ASCII characters, not all digits, without ',', '*', '@' or spaces"
            )
        other = session.scalar(select(User.id).where(User.external_id == external_id))
        if other is not None and other != user.id:
            raise ConflictError("another user has this external id")
    if user.external_id == external_id:
        return
    user.external_id = external_id
    directory.record_change(session, user, actor_id)  # every process refetches the user when it syncs
    session.flush()
