"""Verified email changes: a change takes effect only when the signed, expiring, single-use link
mailed to the new address is followed; the old address is told at both steps.

An account's email is therefore always an address its owner has shown they read (sign-up links
go to the invited address, changes are confirmed from the new one), which is what invitations
and sign-up links bind to. Only the SHA-256 of a link's token is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import audit, notifications
from app.database import in_transaction
from app.errors import ConflictError, GoneError, NotFoundError, ValidationError
from app.identity import sessions, users
from app.models import EmailChange, User, utcnow
from app.policy import directory


def token_hash(token: str) -> str:
    """SHA-256 hex of a confirmation token (what the database keeps)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _revoke_open(session: Session, user_id: int) -> None:
    session.execute(
        update(EmailChange)
        .where(EmailChange.user_id == user_id, EmailChange.used_at.is_(None), EmailChange.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def request(session: Session, user: User, new_email: str, *, ttl_hours: int, public_url: str) -> str | None:
    """Ask to change user's email to new_email (normalised); not committed. Returns the token mailed.

    The answer does not depend on whether new_email has an account: if it has, its owner is told
    that someone tried to use the address, and no link is sent (None). Any older open request of
    the user is superseded.
    """
    _revoke_open(session, user.id)
    token = secrets.token_urlsafe(32)
    mailed = False
    # The row exists either way (the profile shows the same pending address); only a free
    # address is sent the link, so a taken one can never be confirmed.
    session.add(
        EmailChange(
            user_id=user.id,
            new_email=new_email,
            token_hash=token_hash(token),
            expires_at=utcnow() + timedelta(hours=ttl_hours),
        )
    )
    if users.by_email(session, new_email) is None:
        notifications.queue(
            session,
            new_email,
            "Confirm your new email address",
            f"Someone (hopefully you) asked to use this address for their learnauthz account.\n"
            f"Confirm it: {public_url}/verify-email?token={token}\n"
            f"The link works once and expires in {ttl_hours} hours. If this was not you, ignore this message.",
            "email_change_confirm",
        )
        mailed = True
    else:
        notifications.queue(
            session,
            new_email,
            "Someone tried to use your email address",
            "A learnauthz user asked to move their account to this address, which already has an account.\n"
            "Nothing was changed. If this was you, sign in with this address instead.",
            "email_change_taken",
        )
    notifications.queue(
        session,
        user.email,
        "An email change was requested for your account",
        f"A change of your account's email address to {new_email} was requested.\n"
        "It takes effect only when confirmed from the new address. If this was not you, change your password.",
        "email_change_requested",
    )
    audit.record(
        session,
        "profile.email_change_requested",
        workspace_id=None,
        actor_id=user.id,
        target_user_id=user.id,
        target=user.key,
        after={"pending_email": new_email},
    )
    return token if mailed else None


def pending(session: Session, user: User) -> str | None:
    """The address user asked to move to and has not confirmed yet (unexpired), or None."""
    return session.scalar(
        select(EmailChange.new_email)
        .where(
            EmailChange.user_id == user.id,
            EmailChange.used_at.is_(None),
            EmailChange.revoked_at.is_(None),
            EmailChange.expires_at > utcnow(),
        )
        .order_by(EmailChange.id.desc())
        .limit(1)
    )


def confirm(session: Session, token: object, keep_session: str | None = None) -> User:
    """Apply the change a confirmation link names; commits. Every session of the user ends, except
    the one whose token is keep_session (the confirming browser, if signed in as that user).

    Raises ValidationError (not a token), NotFoundError (unknown link), GoneError (used,
    superseded or expired), ConflictError (the address got an account meanwhile).
    """
    if not isinstance(token, str) or not token or len(token) > 200 or not token.isascii():
        raise ValidationError("token must be a string", errors=[{"field": "token"}])
    row = session.scalar(select(EmailChange).where(EmailChange.token_hash == token_hash(token)))
    if row is None:
        raise NotFoundError("unknown confirmation link")
    if row.used_at is not None or row.revoked_at is not None:
        raise GoneError("this confirmation link was already used or replaced by a newer one")
    if row.expires_at <= utcnow():
        raise GoneError("this confirmation link has expired")
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        raise NotFoundError("unknown confirmation link")
    if users.by_email(session, row.new_email) is not None:
        raise ConflictError("this address has an account by now; nothing was changed")
    try:
        with in_transaction(session):
            old = user.email
            user.email = row.new_email
            directory.record_change(session, user, user.id)  # every process refetches the user when it syncs
            row.used_at = utcnow()
            user.session_token = keep_session
            sessions.end_others(session, user)
            notifications.queue(
                session,
                old,
                "Your email address was changed",
                f"Your learnauthz account's email address is now {row.new_email}; every other session was signed out.\n"
                "If this was not you, contact your workspace administrator.",
                "email_changed",
            )
            audit.record(
                session,
                "profile.email_change",
                workspace_id=None,
                actor_id=user.id,
                target_user_id=user.id,
                target=user.key,
                before={"email": old},
                after={"email": row.new_email},
            )
    except IntegrityError:
        raise ConflictError("this address has an account by now; nothing was changed") from None
    return user
