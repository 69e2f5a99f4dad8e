"""Workspaces: created from a pack; the Casbin domain ``ws:<slug>`` is linked to its pack (g4)."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.authz.engine import RuleChange
from app.authz.packs import PackSet
from app.errors import ConflictError, NotFoundError, ValidationError
from app.models import AuditEvent, User, Workspace

from . import policy_store

SLUG = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")


def get_by_slug(session: Session, slug: str) -> Workspace:
    """The workspace with this slug; NotFoundError otherwise."""
    if not isinstance(slug, str) or not SLUG.fullmatch(slug):
        raise NotFoundError("workspace not found")
    ws = session.scalar(select(Workspace).where(Workspace.slug == slug))
    if ws is None:
        raise NotFoundError("workspace not found")
    return ws


def create_workspace(
    session: Session, packs: PackSet, slug: str, name: str, pack: str, actor_id: int | None = None
) -> tuple[Workspace, int]:
    """A new workspace of a pack, its g4 rule, and an audit row; returns (workspace, revision).

    Raises ValidationError (bad slug, unknown pack), ConflictError (slug taken).
    """
    errors = []
    if not isinstance(slug, str) or not SLUG.fullmatch(slug):
        errors.append({"field": "slug", "message": "lowercase letters, digits and dashes, 2-63 characters"})
    if pack not in packs.packs:
        errors.append({"field": "pack", "message": f"unknown pack; one of {sorted(packs.packs)}"})
    if not isinstance(name, str) or not name.strip() or len(name) > 120:
        errors.append({"field": "name", "message": "1-120 characters"})
    if errors:
        raise ValidationError("invalid workspace", errors=errors)
    handle = policy_store.begin_write(session, "workspace", actor_id, f"create workspace {slug}")
    if session.scalar(select(Workspace.id).where(Workspace.slug == slug)) is not None:
        raise ConflictError("a workspace with this slug already exists")
    ws = Workspace(slug=slug, name=name.strip(), pack=pack)
    session.add(ws)
    session.flush()
    policy_store.add_changes(session, handle, [RuleChange("add", ("g4", ws.key, f"pack:{pack}"))])
    session.add(
        AuditEvent(
            workspace_id=ws.id,
            actor_id=actor_id,
            action="workspace.create",
            target=ws.key,
            after={"slug": slug, "pack": pack},
            revision=handle.number,
        )
    )
    session.flush()
    return ws, handle.number


def delete_workspace(session: Session, actor: User, ws: Workspace, confirm: object) -> int:
    """Delete a workspace whose pack has the action (classroom ``delete_organization``, owners):
    every rule of its domain, its memberships, groups and invitations, in one transaction; its
    audit rows stay (detached) with a ``workspace.delete`` row. ``confirm`` must be the slug.

    Returns the revision. Raises ForbiddenError, ValidationError.
    """
    from sqlalchemy import and_, or_

    from app.models import CasbinRule, Group, GroupMember, Invitation, Membership

    from . import access, notifications
    from .members import begin

    access.require(actor, ws, "delete_workspace")
    if confirm != ws.slug:
        raise ValidationError("type the workspace's slug to confirm", errors=[{"field": "confirm", "message": ws.slug}])
    try:
        handle = begin(session, actor, "workspace", f"delete workspace {ws.slug}")
        access.require(actor, ws, "delete_workspace")
        rows = session.execute(
            select(CasbinRule.ptype, CasbinRule.v0, CasbinRule.v1, CasbinRule.v2).where(
                or_(
                    and_(CasbinRule.ptype.in_(("g", "g2", "g3")), CasbinRule.v2 == ws.key),
                    and_(CasbinRule.ptype.in_(("g4", "g5")), CasbinRule.v0 == ws.key),
                )
            )
        ).all()
        changes = [
            RuleChange("remove", (p, v0, v1, v2) if p in ("g", "g2", "g3") else (p, v0, v1)) for p, v0, v1, v2 in rows
        ]
        policy_store.add_changes(session, handle, changes)
        people = list(session.scalars(select(Membership).where(Membership.workspace_id == ws.id)).unique())
        for m in people:
            notifications.queue(
                session,
                m.user.email,
                f"{ws.name} was deleted",
                f"{actor.display_name} deleted the workspace {ws.name}; your membership ended with it.",
                "workspace_deleted",
            )
        group_ids = select(Group.id).where(Group.workspace_id == ws.id)
        session.query(GroupMember).filter(GroupMember.group_id.in_(group_ids)).delete(synchronize_session=False)
        session.query(Group).filter(Group.workspace_id == ws.id).delete(synchronize_session=False)
        session.query(Invitation).filter(Invitation.workspace_id == ws.id).delete(synchronize_session=False)
        session.query(Membership).filter(Membership.workspace_id == ws.id).delete(synchronize_session=False)
        session.query(AuditEvent).filter(AuditEvent.workspace_id == ws.id).update(
            {AuditEvent.workspace_id: None}, synchronize_session=False
        )
        session.add(
            AuditEvent(
                workspace_id=None,
                actor_id=actor.id,
                action="workspace.delete",
                target=ws.key,
                before={"slug": ws.slug, "name": ws.name, "pack": ws.pack, "members": len(people)},
                revision=handle.number,
            )
        )
        session.delete(ws)
        session.commit()
    except Exception:
        session.rollback()
        raise
    return handle.number
