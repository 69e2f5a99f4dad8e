"""The user's own profile: read it, change name, username, password, or ask for an email change."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import UNSET, Meta, Struct, UnsetType
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import audit
from app.database import in_transaction
from app.errors import ConflictError, UnauthenticatedError, ValidationError
from app.identity import email_changes, users
from app.identity.sessions import end_others
from app.inputs import present, text_problem
from app.models import User

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{1,63}\Z"


def profile(user: User) -> dict[str, Any]:
    """The user's own profile, JSON-ready."""
    return {
        "id": user.id,
        "email": user.email,
        "username": user.username,
        "display_name": user.display_name,
        "created_at": user.created_at.isoformat(),
    }


class ProfileChanges(Struct, frozen=True, forbid_unknown_fields=True):
    """``PATCH /api/auth/me``: what to change (absent fields stay); email and password need current_password."""

    display_name: Annotated[str, Meta(max_length=120, pattern=r"\S", description="1-120 characters")] | UnsetType = (
        UNSET
    )
    username: Annotated[str, Meta(pattern=USERNAME_PATTERN, description="null removes it")] | None | UnsetType = UNSET
    email: Annotated[str, Meta(description="confirmed from the link mailed to it")] | UnsetType = UNSET
    password: str | UnsetType = UNSET
    current_password: str | UnsetType = UNSET


def update_profile(
    session: Session, user: User, changes: ProfileChanges, *, email_ttl_hours: int, public_url: str
) -> tuple[User, str | None]:
    """Change own display name, username or password, or ask for an email change; returns
    (user, the email address now awaiting confirmation or None).

    Email and password changes need ``current_password``. A password change ends every other
    session. An email change takes effect only when the link mailed to the new address is
    followed (:mod:`app.identity.email_changes`); the answer is the same whether or not that
    address has an account. Raises ValidationError, UnauthenticatedError (wrong current
    password), ConflictError (username taken).
    """
    data = present(changes)
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
    if errors:
        raise ValidationError("invalid profile", errors=errors)
    sensitive = "email" in data or "password" in data
    if sensitive:
        current = data.get("current_password")
        if not isinstance(current, str) or not users.verify_password(user, current):
            needed = "enter your current password to change email or password"
            raise UnauthenticatedError(
                "current_password is wrong or missing", errors=[{"field": "current_password", "message": needed}]
            )
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
