"""The audit trail: who did what to whom, before/after, at which revision (same transaction)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import AuditEvent, User

from .inputs import MAX_ID


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


def events(session: Session, workspace_id: int, limit: int = 50, before_id: int | None = None) -> list[AuditEvent]:
    """Newest-first audit rows of a workspace (keyset pagination by id)."""
    stmt = select(AuditEvent).where(AuditEvent.workspace_id == workspace_id)
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
    }
