"""Workspace administration for web clients: workspaces, members, invitations, roles, ownership,
audit trail, feature toggles and platform roles. Thin: parse → service (Casbin + transaction) → JSON.

(``flask outbox send`` lives in app/cli.py.)
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from app import audit
from app.errors import ValidationError
from app.extensions import authz, db
from app.inputs import MAX_ID, parse_int, present
from app.membership import access, features, invitations, members, people, platform_roles, workspaces
from app.models import Membership, Workspace

from . import bodies, body_doc
from .auth import actor, after_change, protect
from .params import path_id, query_id, query_int, query_text, register_converters
from .web_bodies import (
    DeleteWorkspace,
    FeatureSwitch,
    FeatureSwitches,
    Invite,
    Ownership,
    PlatformGrant,
    RoleChange,
    UserIds,
    WorkspaceCreate,
    WorkspaceUpdate,
)

bp = Blueprint("members", __name__, url_prefix="/api")
bp.record_once(register_converters)  # before the routes: they use <id:...>
bp.before_request(protect)
bp.after_request(after_change)


def _ws(slug: str) -> Workspace:
    return workspaces.get_by_slug(db.session(), slug)


def _require_some_role(ws: Workspace) -> None:
    """Members (and platform-role holders of the pack) see a workspace: Casbin decides (view_workspace)."""
    access.require(actor(), ws, "view_workspace")


# -- workspaces --------------------------------------------------------------------------------
@bp.get("/workspaces")
def list_workspaces() -> Response:
    """Workspaces the signed-in user belongs to."""
    user = actor()
    rows = db.session.scalars(db.select(Membership).where(Membership.user_id == user.id)).unique()
    items = []
    for m in sorted(rows, key=lambda m: m.workspace.slug):
        pack = authz.engine.packset.packs.get(m.workspace.pack)
        role = pack.role(m.role) if pack is not None else None
        items.append(
            {
                "slug": m.workspace.slug,
                "name": m.workspace.name,
                "pack": m.workspace.pack,
                "pack_title": pack.title if pack is not None else m.workspace.pack,
                "role": m.role,
                "role_label": role.label if role is not None and role.label else m.role,
                "status": m.status,
            }
        )
    return jsonify(items=items, platform=platform_roles.console(db.session(), user))


@bp.post("/workspaces")
@body_doc(WorkspaceCreate)
def create_workspace() -> tuple[Response, int]:
    """Create a workspace from a pack (platform-role holders of that pack)."""
    body = bodies.parse(WorkspaceCreate)
    ws = workspaces.create(db.session(), actor(), body.slug, body.name, body.pack, body.owner_id)
    return jsonify(workspaces.describe(actor(), ws)), 201


@bp.get("/workspaces/<slug>")
def get_workspace(slug: str) -> Response:
    """A workspace: pack, roles, settings, features, and the caller's role there."""
    ws = _ws(slug)
    _require_some_role(ws)
    body = workspaces.describe(actor(), ws)
    body["me"] = members.my_role(actor(), ws)
    return jsonify(body)


@bp.patch("/workspaces/<slug>")
@body_doc(WorkspaceUpdate)
def update_workspace(slug: str) -> Response:
    """Rename a workspace and/or merge its settings."""
    body = present(bodies.parse(WorkspaceUpdate))
    ws = workspaces.update_settings(db.session(), actor(), _ws(slug), body.get("name"), body.get("settings"))
    return jsonify(workspaces.describe(actor(), ws))


@bp.delete("/workspaces/<slug>")
@body_doc(DeleteWorkspace)
def delete_workspace(slug: str) -> Response:
    """Delete a workspace (only where the pack has the action, e.g. classroom owners); the body
    repeats the slug: {"confirm": "<slug>"}."""
    rev = workspaces.delete_workspace(db.session(), actor(), _ws(slug), bodies.parse(DeleteWorkspace).confirm)
    return jsonify(deleted=slug, revision=rev)


@bp.put("/workspaces/<slug>/features/<feature>")
@body_doc(FeatureSwitch)
def toggle_feature(slug: str, feature: str) -> Response:
    """Switch a feature on or off ({"enabled": bool}); only the platform role the pack names."""
    ws = _ws(slug)
    enabled = features.toggle(db.session(), actor(), ws, feature, bodies.parse(FeatureSwitch).enabled)
    return jsonify(feature=feature, enabled=enabled, revision=authz.engine.revision)


@bp.patch("/workspaces/<slug>/features")
@body_doc(FeatureSwitches)
def set_features(slug: str) -> Response:
    """Set several feature switches at once ({"switches": {feature: bool}}), all or none."""
    ws = _ws(slug)
    changed = features.set_switches(db.session(), actor(), ws, bodies.parse(FeatureSwitches).switches)
    return jsonify(changed=changed, revision=authz.engine.revision)


# -- members -----------------------------------------------------------------------------------
@bp.get("/workspaces/<slug>/members")
def list_members(slug: str) -> Response:
    """Members with search (q), filters (role, status), sorting (sort: email, name, role, status or
    joined, ``-`` first for descending) and pagination (page, per_page ≤ 200)."""
    ws = _ws(slug)
    q = query_text("q", 100)
    page = members.list_members(
        db.session(),
        actor(),
        ws,
        q=q,
        page=query_int("page", 1, 1, 1_000_000),
        per_page=query_int("per_page", 50, 1, 200),
        role=request.args.get("role") or None,
        status=request.args.get("status") or None,
        sort=query_text("sort", 10) or "email",
    )
    user = actor()
    open_pages = set(people.viewable(db.session(), user, ws, [item["user_id"] for item in page.items]))
    for item in page.items:
        item["permissions"] = members.member_permissions(user, ws, item["user_id"])
        item["permissions"]["view_person"] = item["user_id"] in open_pages
    # The invite dialog's role picker comes with the page: one request, not one per row.
    roles = members.assignable_roles(user, ws) if access.allowed(user, ws, "invite", access.member_facts(None)) else []
    return jsonify(items=page.items, total=page.total, page=page.page, per_page=page.per_page, assignable_roles=roles)


@bp.get("/workspaces/<slug>/people/<id:user_id>")
def get_person(slug: str, user_id: int) -> Response:
    """A member's page: name, email, role, groups or teams, status, joined and last active, the audit
    entries about them (for audit readers) and what they may do. 403 unless Casbin lets the caller
    see this person; 404 for an id that names no member."""
    return jsonify(people.person(db.session(), actor(), _ws(slug), path_id(user_id)))


@bp.get("/workspaces/<slug>/people")
def viewable_people(slug: str) -> Response:
    """Which of ?ids=1,2,3 (at most 500) the caller may open a page of: the links of lists of people."""
    raw = query_text("ids", 6000)
    parts = [p for p in raw.split(",") if p] if raw else []
    ids = [parse_int(p, 1, MAX_ID) for p in parts]
    if len(ids) > members.MAX_BULK or any(i is None for i in ids):
        raise ValidationError(
            "invalid ids", errors=[{"field": "ids", "message": f"at most {members.MAX_BULK} user ids, comma-separated"}]
        )
    return jsonify(ids=people.viewable(db.session(), actor(), _ws(slug), [i for i in ids if i is not None]))


@bp.get("/workspaces/<slug>/ownership/candidates")
def ownership_candidates(slug: str) -> Response:
    """Every accepted member the caller may transfer ownership to (not one page of the table)."""
    return jsonify(items=members.transfer_candidates(db.session(), actor(), _ws(slug)))


@bp.get("/workspaces/<slug>/roles")
def roles(slug: str) -> Response:
    """The workspace's roles with their descriptions and the actions the matrix gives each."""
    return jsonify(members.roles_described(actor(), _ws(slug)))


@bp.get("/workspaces/<slug>/roles/change")
def role_change(slug: str) -> Response:
    """What a change from role ?from= to role ?to= gains and loses, by the matrix."""
    old, new = query_text("from", 80), query_text("to", 80)
    return jsonify(members.role_change_effect(actor(), _ws(slug), old, new))


@bp.post("/workspaces/<slug>/invitations")
@body_doc(Invite)
def invite(slug: str) -> tuple[Response, int]:
    """Invite one or many emails (string with commas/newlines, or a list) with a role.

    The answer is the same for every address, known account or not (``invited``, no user ids).
    """
    ws = _ws(slug)
    body = bodies.parse(Invite)
    cfg = current_app.config
    result = invitations.invite(
        db.session(),
        actor(),
        ws,
        body.emails,
        body.role,
        limit=int(cfg["MAX_INVITES_PER_REQUEST"]),
        ttl_hours=int(cfg["INVITATION_TTL_HOURS"]),
        public_url=str(cfg["PUBLIC_URL"]).rstrip("/"),
        partial=body.partial,
    )
    return jsonify(result.answer()), 201


@bp.get("/workspaces/<slug>/invitations")
def list_invitations(slug: str) -> Response:
    """Open sign-up invitations."""
    return jsonify(items=invitations.pending_invitations(db.session(), actor(), _ws(slug)))


@bp.delete("/workspaces/<slug>/invitations/<id:invitation_id>")
def revoke_invitation(slug: str, invitation_id: int) -> tuple[str, int]:
    """Revoke a pending sign-up invitation (the address may be invited again at once)."""
    invitations.revoke(db.session(), actor(), _ws(slug), path_id(invitation_id))
    return "", 204


@bp.post("/workspaces/<slug>/invitations/<id:invitation_id>/resend")
def resend_invitation(slug: str, invitation_id: int) -> Response:
    """Mail a pending invitation again with a new link and a new expiry (the old link stops working)."""
    cfg = current_app.config
    out = invitations.resend(
        db.session(),
        actor(),
        _ws(slug),
        path_id(invitation_id),
        ttl_hours=int(cfg["INVITATION_TTL_HOURS"]),
        public_url=str(cfg["PUBLIC_URL"]).rstrip("/"),
    )
    return jsonify(out)


def _member_body(m: Membership) -> dict[str, Any]:
    body = members.serialize(m)
    body["revision"] = authz.engine.revision
    return body


@bp.patch("/workspaces/<slug>/members/<id:user_id>")
@body_doc(RoleChange)
def change_role(slug: str, user_id: int) -> Response:
    """Change a member's role ({"role": "teacher"})."""
    user_id = path_id(user_id)
    ws = _ws(slug)
    m = members.change_role(db.session(), actor(), ws, user_id, bodies.parse(RoleChange).role)
    return jsonify(_member_body(m))


@bp.delete("/workspaces/<slug>/members/<id:user_id>")
def remove_member(slug: str, user_id: int) -> tuple[str, int]:
    """Remove one member."""
    user_id = path_id(user_id)
    members.remove_members(db.session(), actor(), _ws(slug), [user_id])
    return "", 204


@bp.post("/workspaces/<slug>/members/remove")
@body_doc(UserIds)
def remove_many(slug: str) -> Response:
    """Remove many members at once, all or nothing ({"user_ids": [..]})."""
    ws = _ws(slug)
    removed = members.remove_members(db.session(), actor(), ws, bodies.parse(UserIds).user_ids)
    return jsonify(removed=removed, revision=authz.engine.revision)


@bp.post("/workspaces/<slug>/ownership")
@body_doc(Ownership)
def transfer(slug: str) -> Response:
    """Transfer ownership to an accepted member ({"user_id": 7}); an owner steps down one rank."""
    ws = _ws(slug)
    target_id = bodies.parse(Ownership).user_id
    m = members.transfer_ownership(db.session(), actor(), ws, target_id)
    return jsonify(_member_body(m))


@bp.get("/workspaces/<slug>/assignable-roles")
def assignable(slug: str) -> Response:
    """Roles the caller may grant here (to ?member=<user id>, if given): what a role picker offers."""
    ws = _ws(slug)
    _require_some_role(ws)
    target = query_id("member")
    return jsonify(roles=members.assignable_roles(actor(), ws, target), revision=authz.engine.revision)


def _audit_filters() -> dict[str, Any]:
    """?action= (a code, or a family like ``member.``), ?actor= (email contains), ?since=/?until=
    (dates, YYYY-MM-DD; until is inclusive)."""
    out: dict[str, Any] = {"action": query_text("action", 64), "actor": query_text("actor", 100)}
    for name in ("since", "until"):
        raw = query_text(name, 10)
        if not raw:
            out[name] = None
            continue
        try:
            day = datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError as exc:
            raise ValidationError(f"{name} must be a date", errors=[{"field": name, "message": "YYYY-MM-DD"}]) from exc
        out[name] = day + timedelta(days=1) if name == "until" else day
    return out


@bp.get("/workspaces/<slug>/audit")
def audit_trail(slug: str) -> Response:
    """The workspace's audit trail, newest first (?limit ≤ 200, ?before=<id> for the next page, filters)."""
    ws = _ws(slug)
    access.require(actor(), ws, "view_audit")
    limit = query_int("limit", 50, 1, 200)
    before = query_id("before") if request.args.get("before") else None
    rows = audit.events(db.session(), ws.id, limit, before, **_audit_filters())
    items = [audit.serialize(db.session(), e) for e in rows]
    return jsonify(items=items, next_before=rows[-1].id if len(rows) == limit else None)


@bp.get("/workspaces/<slug>/audit.csv")
def audit_csv(slug: str) -> Response:
    """The filtered audit trail as CSV (newest first, at most 10,000 rows), checked like the trail."""
    ws = _ws(slug)
    access.require(actor(), ws, "view_audit")
    rows = audit.events(db.session(), ws.id, 10_000, None, **_audit_filters())
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["id", "at", "actor", "action", "what", "target_user", "target", "before", "after", "revision"])
    for e in rows:
        d = audit.serialize(db.session(), e)
        cells = [
            d["id"],
            d["at"],
            (d["actor"] or {}).get("email") or "",
            d["action"],
            d["label"],
            (d["target_user"] or {}).get("email") or "",
            d["target"],
            json.dumps(d["before"]) if d["before"] is not None else "",
            json.dumps(d["after"]) if d["after"] is not None else "",
            d["revision"] if d["revision"] is not None else "",
        ]
        # Spreadsheets run cells starting with = + - @ as formulas: quote them (CSV injection).
        writer.writerow([f"'{c}" if isinstance(c, str) and c[:1] in ("=", "+", "-", "@") else c for c in cells])
    resp = Response(out.getvalue(), mimetype="text/csv")
    resp.headers["Content-Disposition"] = f'attachment; filename="audit-{ws.slug}.csv"'
    return resp


# -- platform roles --------------------------------------------------------------------------------
@bp.get("/platform/<pack>/roles")
def platform_holders(pack: str) -> Response:
    """Holders of the pack's platform roles (visible to holders)."""
    return jsonify(items=platform_roles.holders(db.session(), actor(), pack))


@bp.post("/platform/<pack>/roles")
@body_doc(PlatformGrant)
def grant_platform(pack: str) -> tuple[Response, int]:
    """Grant a platform role ({"user_id": 7, "role": "admin"}); only holders may."""
    body = bodies.parse(PlatformGrant)
    if body.email is not None and body.user_id is None:
        # The console names people by email; only holders get this far (checked in grant).
        uid = platform_roles.user_id_by_email(db.session(), actor(), pack, body.email)
    else:
        uid = members.parse_user_id(body.user_id)
    rev = platform_roles.grant(db.session(), actor(), pack, body.role, uid)
    return jsonify(user_id=uid, role=body.role, revision=rev), 201


@bp.delete("/platform/<pack>/roles/<role>/<id:user_id>")
def revoke_platform(pack: str, role: str, user_id: int) -> tuple[str, int]:
    """Revoke a platform role."""
    user_id = path_id(user_id)
    platform_roles.revoke(db.session(), actor(), pack, role, user_id)
    return "", 204
