"""The audit trail: who did what to whom, before/after, at which revision (same transaction)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.inputs import MAX_ID
from app.models import AuditEvent, User


def record(
    session: Session,
    action: str,
    *,
    workspace_id: int | None,
    actor_id: int | None,
    target_user_id: int | None = None,
    target: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    revision: int | None = None,
) -> AuditEvent:
    """Add one audit row to the caller's transaction."""
    event = AuditEvent(
        workspace_id=workspace_id,
        actor_id=actor_id,
        action=action,
        target_user_id=target_user_id,
        target=target[:255],
        before=before,
        after=after,
        revision=revision,
    )
    session.add(event)
    return event


# What each action did, in words (the page and the CSV export say these, not the codes).
LABELS = {
    "member.invite": "added as pending member",
    "member.invite_signup": "invited by email",
    "member.invite_resend": "re-sent the invitation of",
    "member.invite_revoke": "revoked the invitation of",
    "member.signup": "signed up",
    "member.accept": "accepted the membership",
    "member.add_owner": "made owner at creation",
    "member.change_role": "changed the role of",
    "member.remove": "removed",
    "member.transfer_ownership": "transferred ownership to",
    "workspace.create": "created the workspace",
    "workspace.settings": "changed the settings",
    "workspace.feature": "switched a feature",
    "group.create": "created group",
    "group.update": "edited group",
    "group.delete": "deleted group",
    "group.add_teacher": "added a teacher to",
    "group.add_learner": "added a learner to",
    "group.remove_teacher": "removed a teacher from",
    "group.remove_learner": "removed a learner from",
    "group.move_learner": "moved a learner to",
    "team.create": "created team",
    "team.update": "edited team",
    "team.delete": "deleted team",
    "team.add_manager": "added a manager to",
    "team.add_member": "added a member to",
    "team.remove_manager": "removed a manager from",
    "team.remove_member": "removed a member from",
    "team.move_member": "moved a member to",
}


def label(action: str) -> str:
    """The words for an audit action (the code itself when it has none)."""
    return LABELS.get(action, action.replace("_", " ").replace(".", ": "))


def events(
    session: Session,
    workspace_id: int,
    limit: int = 50,
    before_id: int | None = None,
    *,
    action: str = "",
    actor: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[AuditEvent]:
    """Newest-first audit rows of a workspace (keyset pagination by id), optionally filtered by
    action code (``member.`` matches a family), actor email substring and a time window."""
    stmt = select(AuditEvent).where(AuditEvent.workspace_id == workspace_id)
    if action:
        stmt = stmt.where(AuditEvent.action.startswith(action) if action.endswith(".") else AuditEvent.action == action)
    if actor:
        like = f"%{actor.lower().replace('%', '').replace('_', '')}%"
        stmt = stmt.where(AuditEvent.actor_id.in_(select(User.id).where(func.lower(User.email).like(like))))
    if since is not None:
        stmt = stmt.where(AuditEvent.created_at >= since)
    if until is not None:
        stmt = stmt.where(AuditEvent.created_at < until)
    if before_id is not None and before_id < 1:
        return []
    # every id is at most MAX_ID: a larger bound selects everything (and would overflow INTEGER)
    if before_id is not None and before_id <= MAX_ID:
        stmt = stmt.where(AuditEvent.id < before_id)
    return list(session.scalars(stmt.order_by(AuditEvent.id.desc()).limit(limit)))


def serialize(session: Session, event: AuditEvent) -> dict[str, Any]:
    """JSON-ready audit row with actor and target emails."""
    emails: dict[int, str] = {}
    ids = [i for i in (event.actor_id, event.target_user_id) if i is not None]
    if ids:
        emails = dict(session.execute(select(User.id, User.email).where(User.id.in_(ids))).all())
    return {
        "id": event.id,
        "at": event.created_at.isoformat(),
        "action": event.action,
        "actor": {"id": event.actor_id, "email": emails.get(event.actor_id)} if event.actor_id else None,
        "target_user": (
            {"id": event.target_user_id, "email": emails.get(event.target_user_id)} if event.target_user_id else None
        ),
        "target": event.target,
        "before": event.before,
        "after": event.after,
        "revision": event.revision,
        "label": label(event.action),
    }
