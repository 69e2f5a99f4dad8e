"""Invitations: existing users join as ``pending`` (accepted at their next sign-in); unknown emails
get a single-use, expiring sign-up link (only its SHA-256 is stored) and join on sign-up."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import audit, notifications
from app.authz import Pack, RuleChange
from app.database import in_transaction
from app.errors import ConflictError, GoneError, NotFoundError, PayloadTooLargeError, ValidationError
from app.extensions import authz
from app.identity import sessions, users
from app.membership import access
from app.membership.members import begin, g_rule, membership
from app.models import Invitation, Membership, User, Workspace, utcnow
from app.policy import store as policy_store

SEPARATORS = re.compile(r"[,\n\r;]+")


def token_hash(token: str) -> str:
    """SHA-256 hex of a sign-up token (what the database keeps)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_emails(raw: object, limit: int) -> list[str]:
    """Emails from a comma/newline-separated string or a list of strings: normalised, deduplicated.

    Raises ValidationError (wrong type, none, any invalid: every one is listed),
    PayloadTooLargeError (more than ``limit`` addresses).
    """
    out, errors = split_emails(raw, limit)
    if errors:
        raise ValidationError(f"{len(errors)} invalid email address(es)", errors=errors)
    return out


def split_emails(raw: object, limit: int) -> tuple[list[str], list[dict[str, str]]]:
    """The valid addresses of ``raw`` (normalised, deduplicated) and one problem per invalid one.

    Raises ValidationError (wrong type, none given), PayloadTooLargeError (more than ``limit``).
    """
    if isinstance(raw, str):
        parts = SEPARATORS.split(raw)
    elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
        parts = [p for x in raw for p in SEPARATORS.split(x)]
    else:
        raise ValidationError(
            "emails must be a string or a list of strings", errors=[{"field": "emails", "message": "wrong type"}]
        )
    candidates = [p.strip() for p in parts if p.strip()]
    if not candidates:
        raise ValidationError("no email address given", errors=[{"field": "emails", "message": "required"}])
    if len(candidates) > limit:
        raise PayloadTooLargeError(f"at most {limit} email addresses per request", limit=limit, count=len(candidates))
    out: list[str] = []
    errors: list[dict[str, str]] = []
    for c in candidates:
        try:
            email = validate_email(c, check_deliverability=False).normalized.lower() if len(c) <= 254 else None
        except EmailNotValidError as exc:
            errors.append({"field": "emails", "value": c[:254], "message": str(exc)})
            continue
        if email is None:
            errors.append({"field": "emails", "value": c[:254], "message": "too long"})
        elif email not in out:
            out.append(email)
    return out, errors


def open_invitation(session: Session, ws: Workspace, email: str) -> Invitation | None:
    """An unused, unrevoked, unexpired invitation of email to ws, or None."""
    return session.scalar(
        select(Invitation).where(
            Invitation.workspace_id == ws.id,
            Invitation.email == email,
            Invitation.used_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.expires_at > utcnow(),
        )
    )


@dataclass
class InviteResult:
    """What an invitation request did (``added`` and ``tokens`` stay on the server)."""

    added: list[dict[str, Any]] = field(default_factory=list)  # existing users, now pending members
    invited: list[dict[str, Any]] = field(default_factory=list)  # unknown emails, sign-up link sent
    revision: int = 0
    tokens: dict[str, str] = field(default_factory=dict)  # email -> token (never returned by the API)
    emails: list[str] = field(default_factory=list)  # every invited address, in request order
    role: str = ""
    skipped: list[dict[str, str]] = field(default_factory=list)  # partial requests: who was not invited, why
    partial: bool = False

    def answer(self) -> dict[str, Any]:
        """The inviter's answer: the same for every address, whether or not it has an account
        anywhere (no user id, no "added" vs "sign-up link"), so an invitation tells nothing about
        other workspaces' people."""
        invited = [{"email": e, "role": self.role, "status": "invited"} for e in self.emails]
        answer: dict[str, Any] = {"invited": invited, "revision": self.revision}
        if self.partial:
            answer["results"] = invited + self.skipped
        return answer


def invite(
    session: Session,
    actor: User,
    ws: Workspace,
    raw_emails: str | list[str],
    raw_role: str | None,
    *,
    limit: int,
    ttl_hours: int,
    public_url: str,
    partial: bool = False,
) -> InviteResult:
    """Invite one or many emails with a role the actor may grant, all or nothing.

    With ``partial`` (the invite dialog), invalid addresses, members and addresses with an open
    invitation are reported per address (``status`` invalid / member / invited_before) and the
    valid ones go through. Raises ForbiddenError, ValidationError, PayloadTooLargeError,
    ConflictError (already a member, or an open invitation exists; not with ``partial``).
    """
    pack = access.pack_of(ws)
    access.require(actor, ws, "invite", access.member_facts(None))
    if partial:
        emails, invalid = split_emails(raw_emails, limit)
    else:
        emails, invalid = parse_emails(raw_emails, limit), []
    role = access.workspace_role(pack, raw_role if raw_role is not None else pack.default_role)
    new_role = pack.role_key(role)
    result = InviteResult(emails=list(emails), role=role, partial=partial)
    result.skipped = [
        {"email": e.get("value", ""), "status": "invalid", "message": e.get("message", "")} for e in invalid
    ]
    if not emails:
        return result
    with in_transaction(session):
        handle = begin(session, actor, "member", f"invite {len(emails)} to {ws.key} as {role}")
        access.require(actor, ws, "invite", access.member_facts(None, new_role))
        existing = {u.email.lower(): u for u in session.scalars(select(User).where(User.email.in_(emails)))}
        conflicts: list[dict[str, str]] = []
        for email in emails:
            user = existing.get(email)
            if user is not None and membership(session, ws, user.id) is not None:
                # Acting on a member: the rank rules see their current role.
                access.require(actor, ws, "invite", access.member_facts(user.id, new_role))
                conflicts.append({"email": email, "message": "already a member"})
                continue
            # Each invitee is the grantee of the role: Casbin refuses the actor inviting themselves.
            access.require(actor, ws, "invite", access.grant_facts(user.id if user is not None else None, new_role))
            if user is None and open_invitation(session, ws, email) is not None:
                conflicts.append({"email": email, "message": "already invited"})
        if conflicts and not partial:
            raise ConflictError(f"{len(conflicts)} address(es) already member or invited", errors=conflicts)
        if conflicts:
            skip = {c["email"] for c in conflicts}
            emails = [e for e in emails if e not in skip]
            result.emails = list(emails)
            result.skipped += [
                {"email": c["email"], "status": "member" if c["message"] == "already a member" else "invited_before"}
                for c in conflicts
            ]
            if not emails:
                session.rollback()
                return result
        changes: list[RuleChange] = []
        for email in emails:
            user = existing.get(email)
            if user is not None:
                session.add(
                    Membership(workspace_id=ws.id, user_id=user.id, role=role, status="pending", invited_by_id=actor.id)
                )
                changes.append(RuleChange("add", g_rule(user.id, pack, role, ws)))
                audit.record(
                    session,
                    "member.invite",
                    workspace_id=ws.id,
                    actor_id=actor.id,
                    target_user_id=user.id,
                    target=user.key,
                    after={"role": role, "status": "pending"},
                    revision=handle.number,
                )
                notifications.queue(
                    session,
                    email,
                    f"You were added to {ws.name}",
                    f"{actor.display_name} added you to {ws.name} as {role}. Sign in at {public_url}/ to accept.",
                    "invitation",
                )
                result.added.append({"email": email, "user_id": user.id, "role": role, "status": "pending"})
            else:
                token = secrets.token_urlsafe(32)
                inv = Invitation(
                    workspace_id=ws.id,
                    email=email,
                    role=role,
                    token_hash=token_hash(token),
                    expires_at=utcnow() + timedelta(hours=ttl_hours),
                    invited_by_id=actor.id,
                )
                session.add(inv)
                audit.record(
                    session,
                    "member.invite_signup",
                    workspace_id=ws.id,
                    actor_id=actor.id,
                    target=f"email:{email}",
                    after={"role": role, "expires_at": inv.expires_at.isoformat()},
                    revision=handle.number,
                )
                notifications.queue(
                    session,
                    email,
                    f"Join {ws.name}",
                    f"{actor.display_name} invited you to {ws.name} as {role}.\n"
                    f"Create your account: {public_url}/signup?token={token}\n"
                    f"The link works once and expires in {ttl_hours} hours.",
                    "signup_link",
                )
                result.invited.append({"email": email, "role": role, "expires_at": inv.expires_at.isoformat()})
                result.tokens[email] = token
        if changes:
            policy_store.add_changes(session, handle, changes)
        result.revision = handle.number
    return result


def signup(
    session: Session,
    token: str,
    password: str,
    display_name: str | None = "",
    username: str | None = None,
    ip: str = "",
    user_agent: str = "",
) -> tuple[User, Membership]:
    """Create the invited user with the invited address and join the workspace (accepted); starts
    a session (``user.session_token``). Single use.

    Raises ValidationError, NotFoundError (unknown token), GoneError (used, revoked or expired),
    ConflictError (the email has an account by now).
    """
    if not token or len(token) > 200:
        raise ValidationError("token must be a string", errors=[{"field": "token"}])
    with in_transaction(session):
        # Lock first: two sign-ups racing with one token serialise here; the second finds it used.
        handle = begin(session, None, "member", "sign-up")
        inv = session.scalar(select(Invitation).where(Invitation.token_hash == token_hash(token)))
        if inv is None:
            raise NotFoundError("unknown sign-up link")
        if inv.used_at is not None or inv.revoked_at is not None:
            raise GoneError("this sign-up link was already used")
        if inv.expires_at <= utcnow():
            raise GoneError("this sign-up link has expired")
        if users.by_email(session, inv.email) is not None:
            raise ConflictError("an account with this email exists; sign in instead")
        ws = inv.workspace
        pack = access.pack_of(ws)
        _inviter_may_still_grant(ws, pack, inv)
        user = users.create_user(session, inv.email, password, display_name=display_name or "", username=username)
        m = Membership(
            workspace_id=ws.id, user_id=user.id, role=inv.role, status="accepted", invited_by_id=inv.invited_by_id
        )
        session.add(m)
        policy_store.add_changes(session, handle, [RuleChange("add", g_rule(user.id, pack, inv.role, ws))])
        inv.used_at = utcnow()
        sessions.start(session, user, ip, user_agent)
        handle.revision.actor_id = user.id
        audit.record(
            session,
            "member.signup",
            workspace_id=ws.id,
            actor_id=user.id,
            target_user_id=user.id,
            target=user.key,
            after={"role": inv.role, "status": "accepted"},
            revision=handle.number,
        )
    return user, m


def _inviter_may_still_grant(ws: Workspace, pack: Pack, inv: Invitation) -> None:
    """The sign-up is the grant: it gives only what the inviter may still grant a newcomer now (a
    revoked platform role or a demotion since the invitation lapses it). Raises GoneError."""
    if inv.invited_by_id is None:
        return  # invitations written by seeds or imports name no inviter
    facts = access.grant_facts(None, pack.role_key(inv.role))
    action = access.action_for(pack, "invite")
    if not authz.check(f"user:{inv.invited_by_id}", ws.key, action, facts).allowed:
        raise GoneError("this invitation lapsed: whoever sent it may no longer grant this role")


def pending_invitations(session: Session, actor: User, ws: Workspace) -> list[dict[str, Any]]:
    """Open sign-up invitations of a workspace (for those who may invite)."""
    access.require(actor, ws, "invite", access.member_facts(None))
    rows = session.scalars(
        select(Invitation)
        .where(Invitation.workspace_id == ws.id, Invitation.used_at.is_(None), Invitation.revoked_at.is_(None))
        .order_by(Invitation.id)
    )
    now = utcnow()
    return [
        {
            "id": i.id,
            "email": i.email,
            "role": i.role,
            "expires_at": i.expires_at.isoformat(),
            "expired": i.expires_at <= now,
        }
        for i in rows
    ]


def _open_by_id(session: Session, ws: Workspace, invitation_id: int) -> Invitation:
    inv = session.get(Invitation, invitation_id) if isinstance(invitation_id, int) else None
    if inv is None or inv.workspace_id != ws.id or inv.used_at is not None or inv.revoked_at is not None:
        raise NotFoundError("no such pending invitation")
    return inv


def revoke(session: Session, actor: User, ws: Workspace, invitation_id: int) -> None:
    """Revoke a pending sign-up invitation (its link stops working; the address may be invited again).

    Checked like inviting with the invitation's role. Raises ForbiddenError, NotFoundError.
    """
    pack = access.pack_of(ws)
    access.require(actor, ws, "invite", access.member_facts(None))
    with in_transaction(session):
        handle = begin(session, actor, "member", f"revoke invitation {invitation_id} of {ws.key}")
        inv = _open_by_id(session, ws, invitation_id)
        access.require(actor, ws, "invite", access.member_facts(None, pack.role_key(inv.role)))
        inv.revoked_at = utcnow()
        audit.record(
            session,
            "member.invite_revoke",
            workspace_id=ws.id,
            actor_id=actor.id,
            target=f"email:{inv.email}",
            before={"role": inv.role, "expires_at": inv.expires_at.isoformat()},
            revision=handle.number,
        )


def resend(
    session: Session, actor: User, ws: Workspace, invitation_id: int, *, ttl_hours: int, public_url: str
) -> dict[str, Any]:
    """Replace a pending invitation's link with a new one (new expiry) and mail it again; the old
    link stops working. Checked like inviting with its role. Raises ForbiddenError, NotFoundError."""
    pack = access.pack_of(ws)
    access.require(actor, ws, "invite", access.member_facts(None))
    with in_transaction(session):
        handle = begin(session, actor, "member", f"resend invitation {invitation_id} of {ws.key}")
        inv = _open_by_id(session, ws, invitation_id)
        access.require(actor, ws, "invite", access.member_facts(None, pack.role_key(inv.role)))
        token = secrets.token_urlsafe(32)
        before = {"expires_at": inv.expires_at.isoformat()}
        inv.token_hash = token_hash(token)
        inv.expires_at = utcnow() + timedelta(hours=ttl_hours)
        audit.record(
            session,
            "member.invite_resend",
            workspace_id=ws.id,
            actor_id=actor.id,
            target=f"email:{inv.email}",
            before=before,
            after={"role": inv.role, "expires_at": inv.expires_at.isoformat()},
            revision=handle.number,
        )
        notifications.queue(
            session,
            inv.email,
            f"Join {ws.name}",
            f"{actor.display_name} invited you to {ws.name} as {inv.role}.\n"
            f"Create your account: {public_url}/signup?token={token}\n"
            f"The link works once and expires in {ttl_hours} hours.",
            "signup_link",
        )
    return {"id": inv.id, "email": inv.email, "role": inv.role, "expires_at": inv.expires_at.isoformat()}
