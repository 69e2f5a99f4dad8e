"""Sign-in, throttling, pending memberships accepted at sign-in, and the user's own profile."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from app.errors import ConflictError, TooManyRequestsError, UnauthenticatedError, ValidationError
from app.models import LoginAttempt, Membership, User, utcnow

from . import audit, users
from .inputs import check_text, parse_id, text_problem

USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,63}")
# Per client address the limit is this many times the per-email limit (many users behind one NAT).
IP_FACTOR = 4


def _recent_failures(session: Session, column: Any, value: str, window: int) -> int:
    since = utcnow() - timedelta(seconds=window)
    return int(
        session.scalar(select(func.count(LoginAttempt.id)).where(column == value, LoginAttempt.at >= since)) or 0
    )


def authenticate(session: Session, email: object, password: object, ip: str, max_failures: int, window: int) -> User:
    """The user whose credentials match; commits a failure record otherwise.

    Raises ValidationError (wrong types), TooManyRequestsError (throttled, checked before the
    password so a throttled caller learns nothing), UnauthenticatedError (bad credentials).
    """
    if not isinstance(email, str) or not isinstance(password, str) or not email or not password:
        raise ValidationError("email and password are required strings")
    check_text(email, "email")
    check_text(password, "password", "secret")
    email_key = email.strip().lower()[:254]
    ip = (ip or "unknown")[:64]
    if (
        _recent_failures(session, LoginAttempt.email, email_key, window) >= max_failures
        or _recent_failures(session, LoginAttempt.ip, ip, window) >= max_failures * IP_FACTOR
    ):
        raise TooManyRequestsError("Too many failed sign-in attempts; try again later.", retry_after=window)
    user = users.by_email(session, email_key)
    if user is None or not user.active or not users.verify_password(user, password):
        session.add(LoginAttempt(email=email_key, ip=ip))
        session.commit()
        raise UnauthenticatedError("Wrong email or password.")
    session.execute(delete(LoginAttempt).where(LoginAttempt.email == email_key))
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


def sign_in(session: Session, email: object, password: object, ip: str, max_failures: int, window: int) -> User:
    """Authenticate, accept pending memberships, commit; returns the user."""
    user = authenticate(session, email, password, ip, max_failures, window)
    accept_pending(session, user)
    session.commit()
    return user


def load_session_user(session: Session, session_id: str) -> User | None:
    """flask-login's user_loader: ``<id>:<session_version>`` → the user, if still valid."""
    uid, _, version = session_id.partition(":")
    user_id = parse_id(uid)
    if user_id is None or not version.isascii() or not version.isdigit() or len(version) > 18:
        return None
    user = session.get(User, user_id)
    if user is None or not user.active or user.session_version != int(version):
        return None
    return user


def profile(user: User) -> dict[str, Any]:
    """The user's own profile, JSON-ready."""
    return {
        "id": user.id,
        "email": user.email,
        "username": user.username,
        "display_name": user.display_name,
        "created_at": user.created_at.isoformat(),
    }


def update_profile(session: Session, user: User, data: dict[str, Any]) -> tuple[User, bool]:
    """Change own display name, username, email or password; returns (user, signed_out_others).

    Email and password changes need ``current_password``. A password change bumps
    ``session_version``, which ends every other session. Raises ValidationError,
    UnauthenticatedError (wrong current password), ConflictError (email/username taken).
    """
    allowed = {"display_name", "username", "email", "password", "current_password"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValidationError("unknown fields", errors=[{"field": f, "message": "not allowed"} for f in unknown])
    before = profile(user)
    errors: list[dict[str, str]] = []
    for field, kind in (
        ("display_name", "name"),
        ("username", "name"),
        ("email", "name"),
        ("password", "secret"),
        ("current_password", "secret"),
    ):
        problem = text_problem(data[field], kind) if isinstance(data.get(field), str) else None
        if problem is not None:
            errors.append({"field": field, "message": problem})
    if "display_name" in data:
        name = data["display_name"]
        if not isinstance(name, str) or not name.strip() or len(name) > 120:
            errors.append({"field": "display_name", "message": "1-120 characters"})
    if "username" in data:
        uname = data["username"]
        if uname is not None and (not isinstance(uname, str) or not USERNAME.fullmatch(uname)):
            errors.append({"field": "username", "message": "2-64 letters, digits, '.', '_' or '-'"})
    if "password" in data and not isinstance(data["password"], str):
        errors.append({"field": "password", "message": "must be a string"})
    if errors:
        raise ValidationError("invalid profile", errors=errors)
    sensitive = "email" in data or "password" in data
    if sensitive:
        current = data.get("current_password")
        if not isinstance(current, str) or not users.verify_password(user, current):
            raise UnauthenticatedError("current_password is wrong or missing")
    if "display_name" in data:
        user.display_name = data["display_name"].strip()
    if "username" in data and data["username"] != user.username:
        if data["username"] is not None and session.scalar(select(User.id).where(User.username == data["username"])):
            raise ConflictError("this username is taken")
        user.username = data["username"]
    if "email" in data:
        email = users.normalize_email(data["email"])
        other = users.by_email(session, email)
        if other is not None and other.id != user.id:
            raise ConflictError("a user with this email already exists")
        user.email = email
    bumped = False
    if "password" in data:
        user.password_hash = users.hash_password(data["password"])
        user.session_version += 1
        bumped = True
    after = profile(user)
    changed = {k: v for k, v in after.items() if before.get(k) != v}
    audit.record(
        session,
        "profile.update",
        workspace_id=None,
        actor_id=user.id,
        target_user_id=user.id,
        target=user.key,
        before={k: before[k] for k in changed},
        after={**changed, **({"password": "changed"} if bumped else {})},
    )
    session.commit()
    return user, bumped
