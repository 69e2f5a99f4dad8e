"""People pages: who may open a member's page (Casbin decides) and what the page shows.

A pack names the actions behind a person's page under ``operations:``: ``view_person`` (classroom's
"view detailed information about their group's learners", skills' detailed profile of others) and
``view_team_person`` (skills' team-member views of the teams one manages). Each is asked with the
person as the target member, workspace-wide first, then within each group or team the person is
in (a teacher sees the learners of the groups he teaches). A pack that names neither falls back to
``view_members`` (the admins who manage every member). Features the pack ties to these actions
(skills' profile-visibility switches) apply as Casbin applies them: switched off, the page is refused.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import audit
from app.errors import ForbiddenError, NotFoundError
from app.extensions import authz
from app.membership import access, groups
from app.membership.members import member_permissions, membership
from app.models import AuditEvent, Group, GroupMember, Membership, User, UserSession, Workspace

PERSON_OPS = ("view_person", "view_team_person")
AUDIT_LIMIT = 20


def _ops(ws: Workspace) -> tuple[str, ...]:
    pack = access.pack_of(ws)
    named = tuple(op for op in PERSON_OPS if access.has_operation(pack, op))
    return named or ("view_members",)


def _units(session: Session, ws: Workspace, user_id: int) -> list[tuple[GroupMember, Group]]:
    rows = session.execute(
        select(GroupMember, Group)
        .join(Group, Group.id == GroupMember.group_id)
        .where(Group.workspace_id == ws.id, GroupMember.user_id == user_id)
        .order_by(Group.kind, Group.name)
    ).unique()
    return [(gm, g) for gm, g in rows]


def _may_view(actor: User, ws: Workspace, ops: tuple[str, ...], user_id: int, units: list[Group]) -> bool:
    for op in ops:
        if access.allowed(actor, ws, op, access.member_facts(user_id)):
            return True
        for g in units:
            if access.allowed(actor, ws, op, access.unit_facts(g.kind, g.name, user_id)):
                return True
    return False


def may_view(session: Session, actor: User, ws: Workspace, user_id: int) -> bool:
    """Casbin's answer: may actor open the page of member ``user_id``? (False for non-members.)"""
    if membership(session, ws, user_id) is None:
        return False
    units = [g for _, g in _units(session, ws, user_id)]
    return _may_view(actor, ws, _ops(ws), user_id, units)


def viewable(session: Session, actor: User, ws: Workspace, user_ids: list[int]) -> list[int]:
    """The ids among ``user_ids`` whose page actor may open (links on lists of people)."""
    access.require(actor, ws, "view_workspace")
    ids = sorted(set(user_ids))
    if not ids:
        return []
    members = set(
        session.scalars(select(Membership.user_id).where(Membership.workspace_id == ws.id, Membership.user_id.in_(ids)))
    )
    units: dict[int, list[Group]] = {}
    for gm, g in session.execute(
        select(GroupMember, Group)
        .join(Group, Group.id == GroupMember.group_id)
        .where(Group.workspace_id == ws.id, GroupMember.user_id.in_(ids))
    ).unique():
        units.setdefault(gm.user_id, []).append(g)
    ops = _ops(ws)
    return [uid for uid in ids if uid in members and _may_view(actor, ws, ops, uid, units.get(uid, []))]


def _last_active(session: Session, user_id: int) -> str | None:
    at = session.scalar(select(func.max(UserSession.last_seen_at)).where(UserSession.user_id == user_id))
    return at.isoformat() if at is not None else None


def _what_they_may_do(person: User, ws: Workspace, units: list[Group]) -> dict[str, Any]:
    """The person's permissions as the engine decides them now: workspace-wide, then what each
    of their groups or teams adds (the explain view of the overview page, for them)."""
    pack = access.pack_of(ws)
    allowed = authz.engine.permissions(person.key, ws.key, any_target=True)
    actions = [{"id": a.id, "label": a.label} for a in pack.actions if a.id in allowed and allowed[a.id].allowed]
    scoped = [
        {"kind": g.kind, "name": g.name, "actions": groups.scoped_actions(person, ws, g)}
        for g in units
        if not g.archived
    ]
    return {"actions": actions, "total": len(pack.actions), "in_units": [s for s in scoped if s["actions"]]}


def person(session: Session, actor: User, ws: Workspace, user_id: int) -> dict[str, Any]:
    """One member's page as actor may see it. Raises NotFoundError (not a member: only to those who
    may open people's pages at all), ForbiddenError (Casbin refuses this person)."""
    access.require(actor, ws, "view_workspace")
    m = membership(session, ws, user_id)
    ops = _ops(ws)
    if m is None:
        # Only someone who may open people's pages at all learns that an id names nobody here.
        if not _opens_pages(session, actor, ws, ops):
            raise ForbiddenError("You may not open this person's page.", reason="not_permitted")
        raise NotFoundError("no such member in this workspace")
    links = _units(session, ws, user_id)
    units = [g for _, g in links]
    if not _may_view(actor, ws, ops, user_id, units):
        raise ForbiddenError("You may not open this person's page.", reason="not_permitted")
    pack = access.pack_of(ws)
    role = pack.role(m.role)
    out: dict[str, Any] = {
        "user_id": m.user_id,
        "email": m.user.email,
        "display_name": m.user.display_name,
        "username": m.user.username,
        "role": m.role,
        "role_label": role.label if role is not None and role.label else m.role,
        "role_description": role.description if role is not None else "",
        "role_labels": {r.id: r.label or r.id for r in pack.workspace_roles},  # for the audit's before/after
        "status": m.status,
        "joined": m.created_at.isoformat(),
        "last_active": _last_active(session, user_id),
        # Only the groups/teams the viewer may see themselves.
        "units": [
            {"kind": g.kind, "name": g.name, "relation": gm.relation, "archived": g.archived}
            for gm, g in links
            if groups.may_view(actor, ws, g.kind, g.name)
        ],
        "may_do": _what_they_may_do(m.user, ws, units),
        "audit": None,
        "permissions": member_permissions(actor, ws, user_id)
        if access.allowed(actor, ws, "view_members", access.member_facts(None))
        else {"roles": [], "change_role": False, "remove": False, "transfer_ownership": False},
    }
    if access.allowed(actor, ws, "view_audit"):
        rows = session.scalars(
            select(AuditEvent)
            .where(AuditEvent.workspace_id == ws.id, AuditEvent.target_user_id == user_id)
            .order_by(AuditEvent.id.desc())
            .limit(AUDIT_LIMIT)
        )
        out["audit"] = [audit.serialize(session, e) for e in rows]
    return out


def _opens_pages(session: Session, actor: User, ws: Workspace, ops: tuple[str, ...]) -> bool:
    """May actor open someone's page here: workspace-wide, or as the manager of a group or team?"""
    if any(access.allowed(actor, ws, op, access.member_facts(None)) for op in ops):
        return True
    managed = session.scalars(
        select(Group)
        .join(GroupMember, GroupMember.group_id == Group.id)
        .where(
            Group.workspace_id == ws.id,
            GroupMember.user_id == actor.id,
            GroupMember.relation.in_([rel[0] for rel in groups.RELATIONS.values()]),
        )
    ).all()
    return any(access.allowed(actor, ws, op, access.unit_facts(g.kind, g.name)) for op in ops for g in managed)
