"""Workspaces: created from a pack; the Casbin domain ``ws:<slug>`` is linked to its pack (g4)."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.authz.engine import RuleChange
from app.authz.packs import PackSet
from app.errors import ConflictError, NotFoundError, ValidationError
from app.models import AuditEvent, Workspace

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
