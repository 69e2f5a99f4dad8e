"""The user's own profile: read it, change name, username, password, or ask for an email change."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import audit
from app.database import in_transaction
from app.errors import ConflictError, UnauthenticatedError, ValidationError
from app.identity import email_changes, users
from app.identity.sessions import end_others
from app.inputs import text_problem
from app.models import User

USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,63}")


def profile(user: User) -> dict[str, Any]:
    """The user's own profile, JSON-ready."""
    return {
        "id": user.id,
        "email": user.email,
        "username": user.username,
        "display_name": user.display_name,
        "created_at": user.created_at.isoformat(),
    }


def update_profile(
    session: Session, user: User, data: dict[str, Any], *, email_ttl_hours: int, public_url: str
) -> tuple[User, str | None]:
    """Change own display name, username or password, or ask for an email change; returns
    (user, the email address now awaiting confirmation or None).

    Email and password changes need ``current_password``. A password change ends every other
    session. An email change takes effect only when the link mailed to the new address is
    followed (:mod:`app.identity.email_changes`); the answer is the same whether or not that
    address has an account. Raises ValidationError, UnauthenticatedError (wrong current
    password), ConflictError (username taken).
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
    # Everything that can refuse the request is checked before anything changes.
    new_hash = users.hash_password(data["password"]) if "password" in data else None
    email = users.normalize_email(data["email"]) if "email" in data else user.email
    uname = data.get("username", user.username)
    if uname != user.username and uname is not None and session.scalar(select(User.id).where(User.username == uname)):
        raise ConflictError("this username is taken")
    with in_transaction(session):
        if "display_name" in data:
            user.display_name = data["display_name"].strip()
        user.username = uname
        pending = None
        if email != user.email:
            email_changes.request(session, user, email, ttl_hours=email_ttl_hours, public_url=public_url)
            pending = email
        bumped = new_hash is not None
        if new_hash is not None:
            user.password_hash = new_hash
            end_others(session, user)
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
    return user, pending
