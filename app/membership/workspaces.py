"""Workspaces: created from a pack (the Casbin domain ``ws:<slug>`` linked to it by g4), described,
renamed and configured, deleted. Feature switches are in :mod:`app.membership.features`."""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import audit, notifications
from app.authz.engine import RuleChange
from app.authz.identifiers import platform_domain
from app.authz.packs import PackSet
from app.database import in_transaction
from app.errors import ConflictError, NotFoundError, ValidationError
from app.extensions import authz
from app.inputs import check_text
from app.membership import access
from app.membership.members import begin, g_rule
from app.models import AuditEvent, CasbinRule, Group, GroupMember, Invitation, Membership, User, Workspace
from app.policy import directory
from app.policy import store as policy_store
from app.policy.files import file_packs

MAX_SETTINGS_BYTES = 16_000

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


def delete_workspace(session: Session, actor: User, ws: Workspace, confirm: str) -> int:
    """Delete a workspace whose pack has the action (classroom ``delete_organization``, owners):
    every rule of its domain, its memberships, groups and invitations, in one transaction; its
    audit rows stay (detached) with a ``workspace.delete`` row. ``confirm`` must be the slug.

    Returns the revision. Raises ForbiddenError, ValidationError.
    """
    from sqlalchemy import and_, or_

    access.require(actor, ws, "delete_workspace")
    if confirm != ws.slug:
        raise ValidationError("type the workspace's slug to confirm", errors=[{"field": "confirm", "message": ws.slug}])
    with in_transaction(session):
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
    return handle.number


def create(session: Session, actor: User, slug: str, name: str, pack_id: str, owner_id: int | None = None) -> Workspace:
    """A workspace of a pack, created by a platform-role holder of that pack, with an optional owner.

    Checked in ``platform:<pack>`` with ``operations.create_workspace`` (or ``edit_settings``):
    only platform roles count there. Raises ForbiddenError, ValidationError, NotFoundError, ConflictError.
    """
    pack = access.pack_by_id(pack_id)
    action = access.action_for(pack, ("create_workspace", "edit_settings"))
    authz.require(actor.key, platform_domain(pack.id), action)
    if owner_id is not None:
        # Naming the owner grants them the owner role: Casbin refuses the actor naming himself.
        owner_grant = access.grant_facts(owner_id, pack.role_key(pack.owner_role))
        authz.require(actor.key, platform_domain(pack.id), action, owner_grant)
    check_text(name, "name")
    with in_transaction(session):
        ws, revision = create_workspace(
            session,
            file_packs(),
            slug,
            name,
            pack.id,
            actor.id,
        )
        if owner_id is not None:
            owner = session.get(User, owner_id)
            if owner is None:
                raise ValidationError("unknown owner", errors=[{"field": "owner_id"}])
            session.add(
                Membership(
                    workspace_id=ws.id,
                    user_id=owner.id,
                    role=pack.owner_role,
                    status="accepted",
                    invited_by_id=actor.id,
                )
            )
            handle = _handle(session)
            policy_store.add_changes(session, handle, [RuleChange("add", g_rule(owner.id, pack, pack.owner_role, ws))])
            audit.record(
                session,
                "member.add_owner",
                workspace_id=ws.id,
                actor_id=actor.id,
                target_user_id=owner.id,
                target=owner.key,
                after={"role": pack.owner_role},
                revision=revision,
            )
    return ws


def _handle(session: Session) -> policy_store.WriteHandle:
    pending = session.info.get(policy_store.PENDING_KEY) or []
    return policy_store.WriteHandle(pending[-1])


def describe(actor: User, ws: Workspace) -> dict[str, Any]:
    """A workspace as its member sees it: pack, settings, features, the actor's role."""
    pack = access.pack_of(ws)
    off = authz.engine.features_off(ws.key)
    return {
        "slug": ws.slug,
        "name": ws.name,
        "pack": ws.pack,
        "settings": ws.settings or {},
        "features": {f.id: f.id not in off for f in pack.features},
        "roles": [{"id": r.id, "label": r.label, "rank": r.rank} for r in pack.workspace_roles],
    }


def update_settings(
    session: Session, actor: User, ws: Workspace, name: str | None = None, settings: dict[str, Any] | None = None
) -> Workspace:
    """Replace the name and/or merge settings (None: unchanged; the blueprint's body gives the
    types and the name's length). Raises ForbiddenError, ValidationError."""
    access.require(actor, ws, "edit_settings")
    if name is None and settings is None:
        raise ValidationError("send {name?, settings?}", errors=[])
    name = ws.name if name is None else name
    check_text(name, "name")
    settings = settings or {}
    if len(json.dumps(settings)) > MAX_SETTINGS_BYTES:
        raise ValidationError("settings must be an object under 16 kB", errors=[{"field": "settings"}])
    with in_transaction(session):
        # other processes refetch the catalog when they apply it (app.policy.directory.wanted)
        handle = begin(session, actor, directory.WORKSPACE_KIND, f"{directory.SETTINGS_OF}{ws.slug}")
        before = {"name": ws.name, "settings": dict(ws.settings or {})}
        ws.name = name.strip()
        ws.settings = {**(ws.settings or {}), **settings}
        audit.record(
            session,
            "workspace.settings",
            workspace_id=ws.id,
            actor_id=actor.id,
            target=ws.key,
            before=before,
            after={"name": ws.name, "settings": ws.settings},
            revision=handle.number,
        )
    return ws
