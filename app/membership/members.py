"""Members of a workspace: list, change role, remove (one or many), transfer ownership.

Every operation: a coarse Casbin check (may the actor do this kind of thing here at all), input
validation, then one transaction that starts with ``policy_store.begin_write`` (the lock that
serialises policy writers), brings the engine up to the committed head and asks Casbin again
with the full facts (target member, role granted), reads the invariants, writes rules, rows,
audit and outbox, and commits. A failure anywhere rolls everything back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, or_, select
from sqlalchemy.orm import Session

from app import audit, notifications
from app.authz import Pack, PackSet, RuleChange
from app.authz.matrix import matrix_rows
from app.database import in_transaction
from app.errors import ConflictError, ForbiddenError, NotFoundError, PayloadTooLargeError, ValidationError
from app.extensions import authz
from app.inputs import MAX_ID, check_text, is_id
from app.membership import access
from app.models import Group, GroupMember, Membership, User, Workspace
from app.policy import store as policy_store
from app.policy.store import WriteHandle

MAX_BULK = 500


def begin(session: Session, actor: User | None, kind: str, message: str) -> WriteHandle:
    """Lock the policy head, then bring the engine to the committed head.

    Decisions taken after this see every change committed before the lock was granted, and no
    other writer can commit until this transaction ends.
    """
    handle = policy_store.begin_write(session, kind, actor.id if actor else None, message)
    authz.sync_before(handle.number)
    return handle


def g_rule(user_id: int, pack: Pack, role: str, ws: Workspace) -> tuple[str, ...]:
    """The g-rule of a membership."""
    return ("g", f"user:{user_id}", pack.role_key(role), ws.key)


def membership(session: Session, ws: Workspace, user_id: int) -> Membership | None:
    """The membership of a user in a workspace, or None (also for ids no row can have)."""
    if not is_id(user_id):
        return None
    return session.scalar(select(Membership).where(Membership.workspace_id == ws.id, Membership.user_id == user_id))


def serialize(m: Membership) -> dict[str, Any]:
    """A membership, JSON-ready."""
    return {
        "user_id": m.user_id,
        "email": m.user.email,
        "display_name": m.user.display_name,
        "username": m.user.username,
        "role": m.role,
        "status": m.status,
        "since": m.created_at.isoformat(),
    }


def owner_count(session: Session, ws: Workspace, pack: Pack) -> int:
    """Accepted owners of a workspace, read inside the writer's lock."""
    return int(
        session.scalar(
            select(func.count(Membership.id)).where(
                Membership.workspace_id == ws.id, Membership.role == pack.owner_role, Membership.status == "accepted"
            )
        )
        or 0
    )


def _user_ids(raw: object, field: str = "user_ids") -> list[int]:
    if not isinstance(raw, list) or not raw:
        raise ValidationError(f"{field} must be a non-empty list of user ids", errors=[{"field": field}])
    if len(raw) > MAX_BULK:
        raise PayloadTooLargeError(f"at most {MAX_BULK} members per request", limit=MAX_BULK)
    out: list[int] = []
    for v in raw:
        if not is_id(v):
            raise ValidationError(
                f"{field} must hold user ids (integers 1-{MAX_ID})", errors=[{"field": field, "value": str(v)[:40]}]
            )
        if v not in out:
            out.append(v)
    return out


def parse_user_id(raw: object, field: str = "user_id") -> int:
    """A positive integer user id; ValidationError otherwise."""
    return _user_ids([raw], field)[0]


# -- list -------------------------------------------------------------------------------------
def _search(ws: Workspace, q: str) -> Any:
    stmt = select(Membership).join(User, User.id == Membership.user_id).where(Membership.workspace_id == ws.id)
    if q:
        like = f"%{q.lower().replace('%', '').replace('_', '')}%"
        stmt = stmt.where(
            or_(
                func.lower(User.email).like(like),
                func.lower(User.display_name).like(like),
                func.lower(func.coalesce(User.username, "")).like(like),
            )
        )
    return stmt


def search_members(session: Session, ws: Workspace, q: str, limit: int = 50) -> list[Membership]:
    """Memberships of ws whose email, name or username contains q (no permission check: callers
    filter each row through Casbin, e.g. the people picker of a group)."""
    return list(session.scalars(_search(ws, q).order_by(User.email).limit(limit)).unique())


def member_permissions(actor: User, ws: Workspace, target_id: int) -> dict[str, Any]:
    """What actor may do to one member, as Casbin answers it (permissions for UI): the roles the
    role picker offers, and whether Remove is shown. The API re-checks every request."""
    pack = access.pack_of(ws)
    may_change = access.allowed(actor, ws, "change_role", access.member_facts(None))
    roles = assignable_roles(actor, ws, target_id) if may_change else []
    owner = access.member_facts(target_id, pack.role_key(pack.owner_role))
    return {
        "roles": roles,
        "change_role": bool(roles),
        "remove": access.allowed(actor, ws, "remove", access.member_facts(target_id)),
        "transfer_ownership": access.allowed(actor, ws, "transfer_ownership", owner),
    }


SORTS = ("email", "name", "role", "status", "joined")


def _order(pack: Pack, sort: str) -> list[Any]:
    """ORDER BY for a validated ``sort``: roles by rank, names case-blind, then email for ties."""
    key = sort[1:] if sort.startswith("-") else sort
    if key not in SORTS:
        raise ValidationError(
            "invalid sort", errors=[{"field": "sort", "message": f"one of {list(SORTS)}, '-' first for descending"}]
        )
    ranks = {r.id: r.rank for r in pack.workspace_roles}
    column: Any = {
        "email": User.email,
        "name": func.lower(User.display_name),
        "role": case(ranks, value=Membership.role, else_=-1) if ranks else Membership.role,
        "status": Membership.status,
        "joined": Membership.created_at,
    }[key]
    first = column.desc() if sort.startswith("-") else column.asc()
    return [first] if key == "email" else [first, User.email]


def transfer_candidates(session: Session, actor: User, ws: Workspace, limit: int = 500) -> list[dict[str, Any]]:
    """Every accepted member actor may hand ownership to (Casbin decides per member), by email:
    the transfer form's choices, from all members rather than one page of the table."""
    access.require(actor, ws, "transfer_ownership", access.member_facts(None))
    pack = access.pack_of(ws)
    owner = pack.role_key(pack.owner_role)
    rows = session.scalars(
        select(Membership)
        .join(User, User.id == Membership.user_id)
        .where(Membership.workspace_id == ws.id, Membership.status == "accepted", Membership.role != pack.owner_role)
        .order_by(User.email)
    ).unique()
    out = []
    for m in rows:
        if access.allowed(actor, ws, "transfer_ownership", access.member_facts(m.user_id, owner)):
            out.append({"user_id": m.user_id, "email": m.user.email, "display_name": m.user.display_name})
            if len(out) >= limit:
                break
    return out


# pack id -> (the packset it was computed from, role id -> {action id: matrix cell})
_ROLE_ACTIONS: dict[str, tuple[PackSet, dict[str, dict[str, str]]]] = {}


def role_actions(packset: PackSet, pack: Pack) -> dict[str, dict[str, str]]:
    """Per workspace role, the actions the matrix gives it (``✅``, ``✅*`` within their groups or
    teams, ``✅†`` rank-limited): what a role change adds and takes away. Computed by the engine
    once per loaded pack set (a pack edit loads a new one)."""
    cached = _ROLE_ACTIONS.get(pack.id)
    if cached is not None and cached[0] is packset:
        return cached[1]
    rows = matrix_rows(packset, pack.id)
    table = {
        r.id: {str(row["action"]): str(row["cells"][r.id]) for row in rows if row["cells"][r.id] != "—"}  # type: ignore[index]
        for r in pack.workspace_roles
    }
    _ROLE_ACTIONS[pack.id] = (packset, table)
    return table


def roles_described(actor: User, ws: Workspace) -> dict[str, Any]:
    """The workspace's roles with their descriptions and matrix actions, and the actions' labels:
    the role menu and the consequence a role change's confirmation states."""
    access.require(actor, ws, "view_workspace")
    pack = access.pack_of(ws)
    table = role_actions(authz.engine.packset, pack)
    return {
        "roles": [
            {"id": r.id, "label": r.label or r.id, "rank": r.rank, "description": r.description, "actions": table[r.id]}
            for r in pack.workspace_roles
        ],
        "actions": [{"id": a.id, "label": a.label} for a in pack.actions],  # in the pack's order
    }


def role_change_effect(actor: User, ws: Workspace, old: str, new: str) -> dict[str, list[dict[str, str]]]:
    """What going from role ``old`` to ``new`` gains and loses, by the matrix (actions whose cell
    changes from or to nothing, and those whose reach changes, e.g. ✅ → ✅*)."""
    pack = access.pack_of(ws)
    old_id, new_id = access.workspace_role(pack, old, "from"), access.workspace_role(pack, new, "to")
    table = roles_described(actor, ws)
    cells = {r["id"]: r["actions"] for r in table["roles"]}
    labels = {x["id"]: x["label"] for x in table["actions"]}
    a, b = cells[old_id], cells[new_id]

    def item(action: str, cell: str) -> dict[str, str]:
        return {"action": action, "label": labels[action], "cell": cell}

    return {
        "gained": [item(x, b[x]) for x in labels if x in b and x not in a],
        "lost": [item(x, a[x]) for x in labels if x in a and x not in b],
        "changed": [item(x, f"{a[x]} → {b[x]}") for x in labels if x in a and x in b and a[x] != b[x]],
    }


@dataclass
class Page:
    """One page of a listing."""

    items: list[dict[str, Any]]
    total: int
    page: int
    per_page: int


def list_members(
    session: Session,
    actor: User,
    ws: Workspace,
    q: str = "",
    page: int = 1,
    per_page: int = 50,
    role: str | None = None,
    status: str | None = None,
    sort: str = "email",
) -> Page:
    """Members matching a search, filtered by role and status, sorted by ``sort`` (one of
    :data:`SORTS`, ``-`` first for descending; ties by email). Raises ForbiddenError, ValidationError."""
    # Asked for anyone at all: packs whose member action is rank-scoped (skills) need a target.
    access.require(actor, ws, "view_members", access.member_facts(None))
    check_text(q, "q")
    pack = access.pack_of(ws)
    stmt = _search(ws, q)
    if role is not None:
        stmt = stmt.where(Membership.role == access.workspace_role(pack, role))
    if status is not None:
        if status not in ("pending", "accepted"):
            raise ValidationError("invalid status", errors=[{"field": "status", "message": "pending or accepted"}])
        stmt = stmt.where(Membership.status == status)
    order = _order(pack, sort)
    total = int(session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)
    rows = session.scalars(stmt.order_by(*order).offset((page - 1) * per_page).limit(per_page)).unique()
    return Page([serialize(m) for m in rows], total, page, per_page)


# -- change role ------------------------------------------------------------------------------
def change_role(session: Session, actor: User, ws: Workspace, target_id: int, new_role: str) -> Membership:
    """Give a member another role. Raises ForbiddenError, ValidationError, NotFoundError, ConflictError."""
    pack = access.pack_of(ws)
    access.require(actor, ws, "change_role", access.member_facts(None))
    role = access.workspace_role(pack, new_role)
    with in_transaction(session):
        handle = begin(session, actor, "member", f"change role of user:{target_id} in {ws.key}")
        access.require(actor, ws, "change_role", access.member_facts(target_id, pack.role_key(role)))
        m = membership(session, ws, target_id)
        if m is None:
            raise NotFoundError("no such member in this workspace")
        if m.role == role:
            raise ConflictError(f"the member already has the role {role!r}")
        if m.role == pack.owner_role and m.status == "accepted" and owner_count(session, ws, pack) <= 1:
            raise ConflictError("a workspace keeps at least one owner", invariant="last_owner")
        before = {"role": m.role, "status": m.status}
        policy_store.add_changes(
            session,
            handle,
            [
                RuleChange("remove", g_rule(target_id, pack, m.role, ws)),
                RuleChange("add", g_rule(target_id, pack, role, ws)),
            ],
        )
        m.role = role
        audit.record(
            session,
            "member.change_role",
            workspace_id=ws.id,
            actor_id=actor.id,
            target_user_id=target_id,
            target=f"user:{target_id}",
            before=before,
            after={"role": role, "status": m.status},
            revision=handle.number,
        )
        notifications.queue(
            session,
            m.user.email,
            f"Your role in {ws.name} changed",
            f"{actor.display_name} changed your role in {ws.name} from {before['role']} to {role}.",
            "role_change",
        )
    return m


# -- remove -----------------------------------------------------------------------------------
def _unit_links(session: Session, ws: Workspace, user_ids: Iterable[int]) -> list[tuple[GroupMember, Group]]:
    ids = list(user_ids)
    rows = session.execute(
        select(GroupMember, Group)
        .join(Group, Group.id == GroupMember.group_id)
        .where(Group.workspace_id == ws.id, GroupMember.user_id.in_(ids))
    ).unique()
    return [(gm, g) for gm, g in rows]


def unit_rule(ws: Workspace, group: Group, user_id: int, relation: str) -> tuple[str, ...]:
    """The g2 (teacher/manager) or g3 (learner/member) rule of a group or team membership."""
    ptype = "g2" if relation in ("teacher", "manager") else "g3"
    return (ptype, f"user:{user_id}", group.key, ws.key)


def remove_members(session: Session, actor: User, ws: Workspace, raw_ids: list[int]) -> list[int]:
    """Remove one or many members, all or nothing; returns the removed user ids.

    Their group/team links go with them. Raises ForbiddenError, ValidationError,
    PayloadTooLargeError, NotFoundError (someone is not a member), ConflictError (owners).
    """
    pack = access.pack_of(ws)
    access.require(actor, ws, "remove", access.member_facts(None))
    ids = _user_ids(raw_ids)
    with in_transaction(session):
        handle = begin(session, actor, "member", f"remove {len(ids)} member(s) from {ws.key}")
        rows = {
            m.user_id: m
            for m in session.scalars(
                select(Membership).where(Membership.workspace_id == ws.id, Membership.user_id.in_(ids))
            ).unique()
        }
        # The actor may remove members (checked above); which ids name nobody is theirs to know.
        missing = [uid for uid in ids if uid not in rows]
        if missing:
            raise NotFoundError("not members of this workspace", user_ids=missing)
        for uid in ids:
            try:
                access.require(actor, ws, "remove", access.member_facts(uid))
            except ForbiddenError as exc:
                # Name the member who blocks a bulk removal (the actor may see members: checked above).
                raise ForbiddenError(
                    f"you may not remove {rows[uid].user.email}",
                    reason=exc.extra.get("reason", "not_permitted"),
                    user_id=uid,
                    email=rows[uid].user.email,
                ) from exc
        if actor.id in rows and rows[actor.id].role == pack.owner_role:
            raise ConflictError("you cannot remove yourself as owner", invariant="self_owner")
        removed_owners = sum(1 for m in rows.values() if m.role == pack.owner_role and m.status == "accepted")
        if removed_owners and owner_count(session, ws, pack) - removed_owners < 1:
            raise ConflictError("a workspace keeps at least one owner", invariant="last_owner")
        changes = [RuleChange("remove", g_rule(uid, pack, rows[uid].role, ws)) for uid in ids]
        links = _unit_links(session, ws, ids)
        changes += [RuleChange("remove", unit_rule(ws, g, gm.user_id, gm.relation)) for gm, g in links]
        policy_store.add_changes(session, handle, changes)
        for gm, _ in links:
            session.delete(gm)
        for uid in ids:
            m = rows[uid]
            audit.record(
                session,
                "member.remove",
                workspace_id=ws.id,
                actor_id=actor.id,
                target_user_id=uid,
                target=f"user:{uid}",
                before={
                    "role": m.role,
                    "status": m.status,
                    "units": sorted(g.key for gm, g in links if gm.user_id == uid),
                },
                after=None,
                revision=handle.number,
            )
            notifications.queue(
                session,
                m.user.email,
                f"You were removed from {ws.name}",
                f"{actor.display_name} removed you from {ws.name}.",
                "member_removed",
            )
            session.delete(m)
    return ids


# -- transfer ownership -------------------------------------------------------------------------
def successor_role(pack: Pack) -> str:
    """The role an owner keeps after handing over ownership: the highest role below the owner."""
    below = [r for r in pack.workspace_roles if r.id != pack.owner_role]
    if not below:
        raise ConflictError("this pack has no role below the owner")
    return max(below, key=lambda r: r.rank).id


def transfer_ownership(session: Session, actor: User, ws: Workspace, target_id: int) -> Membership:
    """Make an accepted member the owner; an owner actor steps down to the next role.

    Raises ForbiddenError, NotFoundError, ConflictError (target pending or already owner).
    """
    pack = access.pack_of(ws)
    access.require(actor, ws, "transfer_ownership", access.member_facts(None))
    owner_key = pack.role_key(pack.owner_role)
    with in_transaction(session):
        handle = begin(session, actor, "member", f"transfer ownership of {ws.key} to user:{target_id}")
        access.require(actor, ws, "transfer_ownership", access.member_facts(target_id, owner_key))
        target = membership(session, ws, target_id)
        if target is None:
            raise NotFoundError("no such member in this workspace")
        if target.status != "accepted":
            raise ConflictError("ownership goes only to an accepted member")
        if target.role == pack.owner_role:
            raise ConflictError("this member is already an owner")
        mine = membership(session, ws, actor.id)
        changes = [
            RuleChange("remove", g_rule(target_id, pack, target.role, ws)),
            RuleChange("add", g_rule(target_id, pack, pack.owner_role, ws)),
        ]
        before = {"target_role": target.role, "actor_role": mine.role if mine else None}
        target.role = pack.owner_role
        if mine is not None and mine.role == pack.owner_role:
            step_down = successor_role(pack)
            changes += [
                RuleChange("remove", g_rule(actor.id, pack, mine.role, ws)),
                RuleChange("add", g_rule(actor.id, pack, step_down, ws)),
            ]
            mine.role = step_down
        policy_store.add_changes(session, handle, changes)
        audit.record(
            session,
            "member.transfer_ownership",
            workspace_id=ws.id,
            actor_id=actor.id,
            target_user_id=target_id,
            target=f"user:{target_id}",
            before=before,
            after={"target_role": target.role, "actor_role": mine.role if mine else None},
            revision=handle.number,
        )
        notifications.queue(
            session,
            target.user.email,
            f"You now own {ws.name}",
            f"{actor.display_name} transferred ownership of {ws.name} to you.",
            "ownership",
        )
    return target


def assignable_roles(actor: User, ws: Workspace, target_id: int | None = None) -> list[str]:
    """Roles the actor may grant in ws (to target, if given), decided by Casbin's rank rules."""
    pack = access.pack_of(ws)
    target = f"user:{target_id}" if target_id is not None else ""
    platform = {r.id for r in pack.platform_roles}
    # No target: the role picker asks explicitly which roles the actor may grant to anyone at all.
    roles = authz.engine.assignable_roles(actor.key, ws.key, target, any_target=target_id is None)
    return [r for r in roles if r not in platform]


def my_role(actor: User, ws: Workspace) -> dict[str, Any]:
    """The actor's role(s) in a workspace: workspace role and platform roles of its pack."""
    pack = access.pack_of(ws)
    eng = authz.engine
    ws_role = eng.workspace_role(actor.key, ws.key)
    prefix = f"role:{pack.id}:"
    platform = sorted(
        r[len(prefix) :] for r in eng.roles_of(actor.key, ws.key) if r.startswith(prefix) and r != ws_role
    )
    return {"role": ws_role[len(prefix) :] if ws_role.startswith(prefix) else None, "platform_roles": platform}
