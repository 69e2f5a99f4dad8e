"""Workspace administration: creation from a pack, settings, feature toggles (g5 = switched off)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from app.authz import RuleChange
from app.authz.identifiers import platform_domain
from app.errors import ValidationError
from app.extensions import authz
from app.models import Membership, User, Workspace
from app.services.policy_files import file_packs

from . import access, audit, policy_store, workspaces
from .inputs import MAX_ID, check_text, is_id
from .members import begin, g_rule

MAX_SETTINGS_BYTES = 16_000


def create(session: Session, actor: User, data: dict[str, Any]) -> Workspace:
    """A workspace of a pack, created by a platform-role holder of that pack, with an optional owner.

    Checked in ``platform:<pack>`` with ``operations.create_workspace`` (or ``edit_settings``):
    only platform roles count there. Raises ForbiddenError, ValidationError, NotFoundError, ConflictError.
    """
    unknown = sorted(set(data) - {"slug", "name", "pack", "owner_id"})
    if unknown:
        raise ValidationError("unknown fields", errors=[{"field": f, "message": "not allowed"} for f in unknown])
    pack = access.pack_by_id(data.get("pack"))
    authz.require(actor.key, platform_domain(pack.id), access.action_for(pack, ("create_workspace", "edit_settings")))
    owner_id = data.get("owner_id")
    if owner_id is not None and not is_id(owner_id):
        raise ValidationError(f"owner_id must be a user id (1-{MAX_ID})", errors=[{"field": "owner_id"}])
    check_text(data.get("name"), "name")
    try:
        ws, revision = workspaces.create_workspace(
            session,
            file_packs(),
            str(data.get("slug", "")),
            str(data.get("name", "")) if isinstance(data.get("name"), str) else "",
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
        session.commit()
    except Exception:
        session.rollback()
        raise
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


def update_settings(session: Session, actor: User, ws: Workspace, data: object) -> Workspace:
    """Replace name and/or merge settings. Raises ForbiddenError, ValidationError."""
    access.require(actor, ws, "edit_settings")
    if not isinstance(data, dict) or not data or set(data) - {"name", "settings"}:
        raise ValidationError(
            "send {name?, settings?}",
            errors=[{"field": k} for k in (data or {}) if k not in ("name", "settings")]
            if isinstance(data, dict)
            else [],
        )
    name = data.get("name", ws.name)
    if not isinstance(name, str) or not name.strip() or len(name) > 120:
        raise ValidationError("invalid name", errors=[{"field": "name", "message": "1-120 characters"}])
    check_text(name, "name")
    settings = data.get("settings", {})
    if not isinstance(settings, dict) or len(json.dumps(settings)) > MAX_SETTINGS_BYTES:
        raise ValidationError("settings must be an object under 16 kB", errors=[{"field": "settings"}])
    try:
        handle = begin(session, actor, "workspace", f"settings of {ws.key}")
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
        session.commit()
    except Exception:
        session.rollback()
        raise
    return ws


def toggle(session: Session, actor: User, ws: Workspace, feature: str, enabled: object) -> bool:
    """Switch a pack feature on or off in ws (g5 rule = off); returns the new state.

    Only whoever holds the pack's ``operations.toggle_features`` action (the platform role the
    seed names) may. Raises ForbiddenError, ValidationError, NotFoundError.
    """
    pack = access.pack_of(ws)
    access.require(actor, ws, "toggle_features")
    if not isinstance(enabled, bool):
        raise ValidationError("enabled must be a boolean", errors=[{"field": "enabled"}])
    if feature not in {f.id for f in pack.features}:
        raise ValidationError(
            "unknown feature", errors=[{"field": "feature", "message": f"one of {[f.id for f in pack.features]}"}]
        )
    rule = ("g5", ws.key, feature)
    try:
        handle = begin(session, actor, "feature", f"{'enable' if enabled else 'disable'} {feature} in {ws.key}")
        access.require(actor, ws, "toggle_features")
        is_off = policy_store.rule_exists(session, rule)
        if is_off == (not enabled):
            session.rollback()
            return enabled
        policy_store.add_changes(session, handle, [RuleChange("remove" if enabled else "add", rule)])
        audit.record(
            session,
            "workspace.feature",
            workspace_id=ws.id,
            actor_id=actor.id,
            target=f"feature:{feature}",
            before={"enabled": not enabled},
            after={"enabled": enabled},
            revision=handle.number,
        )
        session.commit()
    except Exception:
        session.rollback()
        raise
    return enabled
