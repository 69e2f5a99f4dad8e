"""Groups (classroom, simulations) and teams (skills): create, edit, archive, delete when unused,
capacity limits, teachers/managers (g2) and learners/members (g3), moves between groups.

A group is the Casbin scope ``group:<name>``, a team ``team:<name>``; the links are g2/g3 rules
written in the same transaction as the ``group_members`` rows.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app import audit, notifications
from app.authz import RuleChange
from app.authz.conditions import Props
from app.database import in_transaction
from app.errors import ConflictError, NotFoundError, ValidationError
from app.extensions import authz
from app.inputs import check_text, is_id
from app.membership import access
from app.membership.members import _user_ids, begin, membership, search_members, unit_rule
from app.models import Group, GroupMember, User, Workspace
from app.policy import store as policy_store

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
KINDS = ("group", "team")
# kind -> (manager relation, member relation)
RELATIONS = {"group": ("teacher", "learner"), "team": ("manager", "member")}


# op -> (group operation, team operation); each tried before manage_<kind>s, the pack's catch-all.
_OPS = {
    "view": ("view_groups", "view_teams"),
    "create": ("create_groups", "create_teams"),
    "archive": ("archive_groups", "archive_teams"),
    "capacity": ("set_capacity", "set_team_capacity"),
    "delete": ("delete_groups", "delete_teams"),
    "add_manager": ("assign_teachers", "assign_team_managers"),
    "remove_manager": ("remove_teachers", "remove_team_managers"),
    "add_member": ("add_learners", "add_team_members"),
    "remove_member": ("remove_learners", "remove_team_members"),
    "move": ("move_learners", "move_team_members"),
}


def ops(kind: str, op: str) -> tuple[str, ...]:
    """Operation names to look up in the pack, most specific first, ending with manage_<kind>s."""
    base = f"manage_{kind}s"
    if op == "edit":
        return (base,)
    own = _OPS[op][KINDS.index(kind)]
    if op == "remove_manager":  # whoever may assign managers may also remove them
        return (own, _OPS["add_manager"][KINDS.index(kind)], base)
    return (own, base)


def check_kind(ws: Workspace, kind: str) -> None:
    """NotFoundError unless the workspace's pack has groups (or teams)."""
    if kind not in KINDS or not access.has_operation(access.pack_of(ws), f"manage_{kind}s"):
        raise NotFoundError(f"this workspace has no {kind}s")


def _name(raw: object) -> str:
    if not isinstance(raw, str) or not NAME.fullmatch(raw):
        raise ValidationError(
            "invalid name", errors=[{"field": "name", "message": "1-64 letters, digits, '.', '_' or '-'"}]
        )
    return raw


def get(session: Session, ws: Workspace, kind: str, name: str) -> Group:
    """A group or team of ws by name; NotFoundError otherwise."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise NotFoundError(f"no such {kind}")
    g = session.scalar(select(Group).where(Group.workspace_id == ws.id, Group.kind == kind, Group.name == name))
    if g is None:
        raise NotFoundError(f"no such {kind}")
    return g


def links(session: Session, group: Group, relation: str | None = None) -> list[GroupMember]:
    """The group's members (optionally of one relation)."""
    stmt = select(GroupMember).where(GroupMember.group_id == group.id)
    if relation:
        stmt = stmt.where(GroupMember.relation == relation)
    return list(session.scalars(stmt.order_by(GroupMember.id)).unique())


def serialize(session: Session, group: Group, actor: User | None = None, ws: Workspace | None = None) -> dict[str, Any]:
    """A group/team with its people, JSON-ready; with ``actor``, also what they may do to it."""
    manager_rel, member_rel = RELATIONS[group.kind]
    rows = links(session, group)
    people = {
        rel: [
            {"user_id": gm.user_id, "email": gm.user.email, "display_name": gm.user.display_name}
            for gm in rows
            if gm.relation == rel
        ]
        for rel in (manager_rel, member_rel)
    }
    body: dict[str, Any] = {
        "name": group.name,
        "kind": group.kind,
        "description": group.description,
        "capacity": group.capacity,
        "archived": group.archived,
        f"{manager_rel}s": people[manager_rel],
        f"{member_rel}s": people[member_rel],
    }
    if actor is not None and ws is not None:
        body["permissions"] = permissions(session, actor, ws, group)
    return body


def may_view(actor: User, ws: Workspace, kind: str, name: str | None = None) -> bool:
    """Casbin's answer: may actor see the group/team ``name`` (or, without a name, groups at all)?

    The pack's view operation (classroom ``view_assigned_groups``, skills ``view_team_members_list``
    for the teams one manages) or its workspace-wide management operation: skills owners manage
    every team without being a team's manager.
    """
    facts = access.unit_facts(kind, name) if name is not None else None
    return access.allowed(actor, ws, ops(kind, "view"), facts) or access.allowed(actor, ws, f"manage_{kind}s")


def require_view(actor: User, ws: Workspace, kind: str, name: str) -> None:
    """ForbiddenError unless actor may see the group/team (see :func:`may_view`)."""
    if not may_view(actor, ws, kind, name):
        access.require(actor, ws, ops(kind, "view"), access.unit_facts(kind, name))


def permissions(session: Session, actor: User, ws: Workspace, group: Group) -> dict[str, Any]:
    """What actor may do to this group/team, as Casbin answers it (permissions for UI).

    ``remove_member`` and ``remove_manager`` list the user ids actor may take out (the checks
    name the person, so a teacher's rank bound applies); the API re-checks every request.
    """
    facts = access.unit_facts(group.kind, group.name)
    out: dict[str, Any] = {
        op: access.allowed(actor, ws, ops(group.kind, op), facts)
        for op in ("edit", "archive", "capacity", "delete", "add_manager", "add_member", "move")
    }
    out["scoped_actions"] = scoped_actions(actor, ws, group)
    for op, rel in (("remove_member", RELATIONS[group.kind][1]), ("remove_manager", RELATIONS[group.kind][0])):
        out[op] = [
            gm.user_id
            for gm in links(session, group, rel)
            if access.allowed(actor, ws, ops(group.kind, op), access.unit_facts(group.kind, group.name, gm.user_id))
        ]
    return out


def scoped_actions(actor: User, ws: Workspace, group: Group) -> list[dict[str, str]]:
    """Actions Casbin allows actor on this group/team that it does not allow workspace-wide: what
    being its teacher (skills: its manager) adds, after the workspace's feature switches."""
    pack = access.pack_of(ws)
    here = authz.engine.permissions(actor.key, ws.key, access.unit_facts(group.kind, group.name), any_target=True)
    anywhere = authz.engine.permissions(actor.key, ws.key, any_target=True)
    return [
        {"id": a.id, "label": a.label}
        for a in pack.actions
        if here.get(a.id) is not None and here[a.id].allowed and not anywhere[a.id].allowed
    ]


def list_units(session: Session, actor: User, ws: Workspace, kind: str) -> list[dict[str, Any]]:
    """Groups/teams the actor may see (Casbin decides per group), each with the actor's permissions.

    Someone with no group (a learner in none yet) gets an empty list, not a refusal: the page says so.
    """
    check_kind(ws, kind)
    access.require(actor, ws, "view_workspace")  # strangers are refused, not shown an empty list
    return [serialize(session, g, actor, ws) for g in visible(session, actor, ws, kind)]


def visible(session: Session, actor: User, ws: Workspace, kind: str) -> list[Group]:
    """The groups/teams of ws that actor may see, by name (Casbin decides per group)."""
    rows = session.scalars(select(Group).where(Group.workspace_id == ws.id, Group.kind == kind).order_by(Group.name))
    return [g for g in rows if may_view(actor, ws, kind, g.name)]


def candidates(
    session: Session, actor: User, ws: Workspace, kind: str, name: str, relation_kind: str, q: str, limit: int = 20
) -> list[dict[str, Any]]:
    """Workspace members actor may add to the group/team as ``relation_kind``, matching ``q``.

    The people picker of a teacher: Casbin decides per person (``into_group`` bounds a teacher by
    rank, so only learners are offered). Raises ForbiddenError, NotFoundError.
    """
    check_kind(ws, kind)
    op = "add_manager" if relation_kind == "manager" else "add_member"
    access.require(actor, ws, ops(kind, op), access.unit_facts(kind, name) if NAME.fullmatch(name) else None)
    g = get(session, ws, kind, name)
    check_text(q, "q")
    relation = RELATIONS[kind][0 if relation_kind == "manager" else 1]
    present = {gm.user_id for gm in links(session, g, relation)}
    out: list[dict[str, Any]] = []
    for m in search_members(session, ws, q, limit=500):
        if m.user_id in present:
            continue
        if access.allowed(actor, ws, ops(kind, op), access.unit_facts(kind, name, m.user_id, grant=True)):
            out.append(
                {"user_id": m.user_id, "email": m.user.email, "display_name": m.user.display_name, "role": m.role}
            )
            if len(out) >= limit:
                break
    return out


def _member_count(session: Session, group: Group, relation: str) -> int:
    return int(
        session.scalar(
            select(func.count(GroupMember.id)).where(GroupMember.group_id == group.id, GroupMember.relation == relation)
        )
        or 0
    )


def create(
    session: Session,
    actor: User,
    ws: Workspace,
    kind: str,
    name: str,
    description: str = "",
    capacity: int | None = None,
) -> Group:
    """A new group/team (the blueprint's body gives the types and the limits of description and
    capacity). Raises ForbiddenError, ValidationError, ConflictError (name taken)."""
    check_kind(ws, kind)
    access.require(actor, ws, ops(kind, "create"))
    _name(name)
    check_text(description, "description", "text")
    if capacity is not None:
        access.require(actor, ws, ops(kind, "capacity"))
    with in_transaction(session):
        handle = begin(session, actor, kind, f"create {kind} {name} in {ws.key}")
        if session.scalar(select(Group.id).where(Group.workspace_id == ws.id, Group.kind == kind, Group.name == name)):
            raise ConflictError(f"a {kind} with this name exists")
        g = Group(workspace_id=ws.id, kind=kind, name=name, description=description, capacity=capacity)
        session.add(g)
        session.flush()
        audit.record(
            session,
            f"{kind}.create",
            workspace_id=ws.id,
            actor_id=actor.id,
            target=g.key,
            after={"description": description, "capacity": capacity},
            revision=handle.number,
        )
    return g


def update(session: Session, actor: User, ws: Workspace, kind: str, name: str, data: dict[str, Any]) -> Group:
    """Edit description, capacity, archived: ``data`` holds the fields a typed body carried (their
    types and limits checked at the blueprint). Raises ForbiddenError, ValidationError,
    NotFoundError, ConflictError."""
    check_kind(ws, kind)
    access.require(actor, ws, ops(kind, "edit"), access.unit_facts(kind, name) if NAME.fullmatch(name) else None)
    if not data:
        raise ValidationError("nothing to change", errors=[])
    if "description" in data:
        check_text(data["description"], "description", "text")
    if "capacity" in data:
        access.require(actor, ws, ops(kind, "capacity"), access.unit_facts(kind, name))
    if "archived" in data:
        access.require(actor, ws, ops(kind, "archive"), access.unit_facts(kind, name))
    with in_transaction(session):
        handle = begin(session, actor, kind, f"edit {kind} {name} in {ws.key}")
        g = get(session, ws, kind, name)
        before = {k: getattr(g, k) for k in data}
        if "capacity" in data and data["capacity"] is not None:
            count = _member_count(session, g, RELATIONS[kind][1])
            if data["capacity"] < count:
                raise ConflictError(f"the {kind} has {count} {RELATIONS[kind][1]}s, more than the new capacity")
        for k, v in data.items():
            setattr(g, k, v)
        audit.record(
            session,
            f"{kind}.update",
            workspace_id=ws.id,
            actor_id=actor.id,
            target=g.key,
            before=before,
            after=dict(data),
            revision=handle.number,
        )
    return g


def delete(session: Session, actor: User, ws: Workspace, kind: str, name: str) -> None:
    """Delete a group/team that nobody is in. Raises ForbiddenError, NotFoundError, ConflictError (in use).

    Casbin is told whether the unit is in use (``resource.properties.in_use``: people are in it), for
    packs whose rule is conditional (simulations: "Delete groups (when not actively in use)").
    """
    check_kind(ws, kind)
    facts = None
    if NAME.fullmatch(name):
        found = session.scalar(select(Group).where(Group.workspace_id == ws.id, Group.kind == kind, Group.name == name))
        used = found is not None and bool(links(session, found))
        facts = access.unit_facts(kind, name, props=Props(resource={"in_use": used}))
    access.require(actor, ws, ops(kind, "delete"), facts)
    with in_transaction(session):
        handle = begin(session, actor, kind, f"delete {kind} {name} in {ws.key}")
        g = get(session, ws, kind, name)
        in_use = links(session, g)
        if in_use:
            raise ConflictError(f"the {kind} is in use ({len(in_use)} people); remove them or archive it instead")
        audit.record(
            session,
            f"{kind}.delete",
            workspace_id=ws.id,
            actor_id=actor.id,
            target=g.key,
            before={"description": g.description, "capacity": g.capacity, "archived": g.archived},
            revision=handle.number,
        )
        session.delete(g)


def _people(session: Session, ws: Workspace, ids: list[int]) -> dict[int, User]:
    found = {}
    for uid in ids:
        m = membership(session, ws, uid)
        if m is not None:
            found[uid] = m.user
    missing = [uid for uid in ids if uid not in found]
    if missing:
        raise NotFoundError("not members of this workspace", user_ids=missing)
    return found


def add_people(
    session: Session, actor: User, ws: Workspace, kind: str, name: str, relation_kind: str, raw_ids: list[int]
) -> Group:
    """Add workspace members to a group/team as managers (``manager``) or members (``member``).

    Raises ForbiddenError, ValidationError, NotFoundError, ConflictError (archived, full, already in).
    """
    check_kind(ws, kind)
    op = "add_manager" if relation_kind == "manager" else "add_member"
    relation = RELATIONS[kind][0 if relation_kind == "manager" else 1]
    access.require(actor, ws, ops(kind, op), access.unit_facts(kind, name) if NAME.fullmatch(name) else None)
    ids = _user_ids(raw_ids)
    with in_transaction(session):
        handle = begin(session, actor, kind, f"add {relation}s to {kind} {name} in {ws.key}")
        access.require(actor, ws, ops(kind, op), access.unit_facts(kind, name))
        g = get(session, ws, kind, name)
        people = _people(session, ws, ids)
        for uid in ids:
            # Each person is checked too: a teacher adds learners, not owners or other teachers (issue 8).
            # ... and is the grantee of the link: nobody makes themselves a group's teacher (issue 21).
            access.require(actor, ws, ops(kind, op), access.unit_facts(kind, name, uid, grant=True))
        if g.archived:
            raise ConflictError(f"the {kind} is archived")
        present = {gm.user_id for gm in links(session, g, relation)}
        already = [uid for uid in ids if uid in present]
        if already:
            raise ConflictError(f"already {relation}s of this {kind}", user_ids=already)
        if relation == RELATIONS[kind][1] and g.capacity is not None and len(present) + len(ids) > g.capacity:
            raise ConflictError(f"the {kind} is full (capacity {g.capacity})", capacity=g.capacity)
        changes = [RuleChange("add", unit_rule(ws, g, uid, relation)) for uid in ids]
        policy_store.add_changes(session, handle, changes)
        for uid in ids:
            session.add(GroupMember(group_id=g.id, user_id=uid, relation=relation))
            audit.record(
                session,
                f"{kind}.add_{relation}",
                workspace_id=ws.id,
                actor_id=actor.id,
                target_user_id=uid,
                target=g.key,
                after={"relation": relation},
                revision=handle.number,
            )
            notifications.queue(
                session,
                people[uid].email,
                f"You were added to {kind} {g.name}",
                f"{actor.display_name} added you to the {kind} {g.name} in {ws.name} as {relation}.",
                f"{kind}_add",
            )
    return g


def remove_person(
    session: Session, actor: User, ws: Workspace, kind: str, name: str, relation_kind: str, user_id: int
) -> None:
    """Take a manager or member out of a group/team. Raises ForbiddenError, NotFoundError."""
    check_kind(ws, kind)
    op = "remove_manager" if relation_kind == "manager" else "remove_member"
    relation = RELATIONS[kind][0 if relation_kind == "manager" else 1]
    access.require(actor, ws, ops(kind, op), access.unit_facts(kind, name) if NAME.fullmatch(name) else None)
    if not is_id(user_id):
        raise NotFoundError(f"not a {relation} of this {kind}")
    with in_transaction(session):
        handle = begin(session, actor, kind, f"remove a {relation} from {kind} {name} in {ws.key}")
        access.require(actor, ws, ops(kind, op), access.unit_facts(kind, name, user_id))
        g = get(session, ws, kind, name)
        gm = session.scalar(
            select(GroupMember).where(
                GroupMember.group_id == g.id, GroupMember.user_id == user_id, GroupMember.relation == relation
            )
        )
        if gm is None:
            raise NotFoundError(f"not a {relation} of this {kind}")
        policy_store.add_changes(session, handle, [RuleChange("remove", unit_rule(ws, g, user_id, relation))])
        session.delete(gm)
        audit.record(
            session,
            f"{kind}.remove_{relation}",
            workspace_id=ws.id,
            actor_id=actor.id,
            target_user_id=user_id,
            target=g.key,
            before={"relation": relation},
            revision=handle.number,
        )


def move(session: Session, actor: User, ws: Workspace, kind: str, name: str, user_id: int, to: str) -> Group:
    """Move a learner/member to another group/team (capacity and archive checked on the target)."""
    check_kind(ws, kind)
    relation = RELATIONS[kind][1]
    to_name = _name(to)
    if to_name == name:
        raise ValidationError("source and target are the same", errors=[{"field": "to"}])
    facts_ok = NAME.fullmatch(name) is not None
    access.require(actor, ws, ops(kind, "move"), access.unit_facts(kind, name) if facts_ok else None)
    if not is_id(user_id):
        raise NotFoundError(f"not a {relation} of this {kind}")
    with in_transaction(session):
        handle = begin(session, actor, kind, f"move a {relation} from {kind} {name} to {to_name} in {ws.key}")
        # Moving gives the person a link to the destination: they are its grantee (never the actor).
        access.require(actor, ws, ops(kind, "move"), access.unit_facts(kind, name, user_id, grant=True))
        access.require(actor, ws, ops(kind, "move"), access.unit_facts(kind, to_name))
        src = get(session, ws, kind, name)
        dst = get(session, ws, kind, to_name)
        gm = session.scalar(
            select(GroupMember).where(
                GroupMember.group_id == src.id, GroupMember.user_id == user_id, GroupMember.relation == relation
            )
        )
        if gm is None:
            raise NotFoundError(f"not a {relation} of this {kind}")
        if dst.archived:
            raise ConflictError(f"the target {kind} is archived")
        present = {x.user_id for x in links(session, dst, relation)}
        if user_id in present:
            raise ConflictError(f"already a {relation} of the target {kind}")
        if dst.capacity is not None and len(present) + 1 > dst.capacity:
            raise ConflictError(f"the target {kind} is full (capacity {dst.capacity})", capacity=dst.capacity)
        policy_store.add_changes(
            session,
            handle,
            [
                RuleChange("remove", unit_rule(ws, src, user_id, relation)),
                RuleChange("add", unit_rule(ws, dst, user_id, relation)),
            ],
        )
        gm.group_id = dst.id
        audit.record(
            session,
            f"{kind}.move_{relation}",
            workspace_id=ws.id,
            actor_id=actor.id,
            target_user_id=user_id,
            target=dst.key,
            before={kind: src.name},
            after={kind: dst.name},
            revision=handle.number,
        )
    return dst
