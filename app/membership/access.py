"""Permission plumbing shared by the workspace services: pack operations → Casbin actions.

A pack's YAML maps generic service operations (``invite``, ``change_role``, ...) to its own
action ids under ``operations:``. Services name an operation (with fallbacks, most specific
first); Casbin decides. Nothing here compares ranks or roles: that is the model's job.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.authz import ANY_TARGET, NEWCOMER, Decision, Pack, Reason, ResourceFacts
from app.authz.conditions import NO_PROPS, Props
from app.authz.identifiers import group_key, team_key
from app.errors import ForbiddenError, NotFoundError, ValidationError
from app.extensions import authz
from app.models import User, Workspace


def pack_of(ws: Workspace) -> Pack:
    """The loaded pack of a workspace (NotFoundError if the pack is not loaded)."""
    pack = authz.engine.packset.packs.get(ws.pack)
    if pack is None:
        raise NotFoundError("workspace not found")
    return pack


def pack_by_id(pack_id: object) -> Pack:
    """A loaded pack by id; NotFoundError otherwise."""
    pack = authz.engine.packset.packs.get(pack_id) if isinstance(pack_id, str) else None
    if pack is None:
        raise NotFoundError("unknown pack")
    return pack


def operations(pack: Pack) -> dict[str, str]:
    """The pack's ``operations:`` mapping (operation → action id)."""
    ops = pack.meta.get("operations") or {}
    return {str(k): str(v) for k, v in ops.items()} if isinstance(ops, dict) else {}


def action_for(pack: Pack, ops: str | Sequence[str]) -> str:
    """The pack action of the first mapped operation; ForbiddenError if the pack maps none."""
    names = (ops,) if isinstance(ops, str) else tuple(ops)
    mapping = operations(pack)
    for name in names:
        action = mapping.get(name)
        if action and pack.action(action) is not None:
            return action
    raise ForbiddenError("This workspace's role model does not offer this operation.", reason="not_permitted")


def has_operation(pack: Pack, ops: str | Sequence[str]) -> bool:
    """True if the pack maps one of the operations to one of its actions."""
    try:
        action_for(pack, ops)
    except ForbiddenError:
        return False
    return True


def require(
    actor: User, ws: Workspace, ops: str | Sequence[str], facts: ResourceFacts | None = None, domain: str = ""
) -> Decision:
    """Casbin's permission for actor in ws (or ``domain``); ForbiddenError if denied.

    A named member who is not one (reason ``unknown_member``) is NotFoundError: services check the
    operation without a member first, so only an actor permitted to act on members learns that.
    """
    try:
        return authz.require(actor.key, domain or ws.key, action_for(pack_of(ws), ops), facts or ResourceFacts())
    except ForbiddenError as exc:
        if facts is not None and facts.member and exc.extra.get("reason") == Reason.UNKNOWN_MEMBER.value:
            raise NotFoundError("no such member in this workspace") from exc
        raise


def allowed(actor: User, ws: Workspace, ops: str | Sequence[str], facts: ResourceFacts | None = None) -> bool:
    """True if Casbin allows (False when the pack lacks the operation)."""
    try:
        action = action_for(pack_of(ws), ops)
    except ForbiddenError:
        return False
    return authz.check(actor.key, ws.key, action, facts or ResourceFacts()).allowed


def member_facts(target_id: int | None, new_role: str = "") -> ResourceFacts:
    """Facts for an action on user ``target_id`` as a member (the core resolves its current role).

    With a new role the member is also the grantee (model.conf: nobody grants themselves anything).
    ``None`` asks explicitly whether the actor may do it to anyone at all (target ``any``): the
    services' check before they know the target; the target is checked again once known.
    """
    if target_id is None:
        return ResourceFacts(type="member", new_role=new_role, target=ANY_TARGET)
    key = f"user:{target_id}"
    grantee = key if new_role else ""
    return ResourceFacts(type="member", id=str(target_id), member=key, new_role=new_role, grantee=grantee)


def grant_facts(grantee_id: int | None, new_role: str) -> ResourceFacts:
    """Facts for granting ``new_role`` to someone who is not a member (an invitee, a future platform
    role holder): ``grantee_id`` names an existing user, ``None`` an address without an account."""
    grantee = f"user:{grantee_id}" if grantee_id is not None else NEWCOMER
    return ResourceFacts(type="member", grantee=grantee, new_role=new_role)


def unit_facts(
    kind: str, name: str, member_id: int | None = None, grant: bool = False, props: Props = NO_PROPS
) -> ResourceFacts:
    """Facts for an action on a group (``group:<name>``) or team (``team:<name>``).

    ``grant``: the action gives ``member_id`` a link to the unit (manager or member), so they are
    its grantee too and the actor can never be. ``props``: what the pack's conditions read.
    """
    key = group_key(name) if kind == "group" else team_key(name)
    member = f"user:{member_id}" if member_id is not None else ""
    return ResourceFacts(
        type=kind,
        id=name,
        group=key if kind == "group" else "",
        team=key if kind == "team" else "",
        member=member,
        grantee=member if grant else "",
        props=props,
    )


def workspace_role(pack: Pack, raw: object, field: str = "role") -> str:
    """A workspace role id of the pack from ``admin`` or ``role:<pack>:admin``; ValidationError otherwise."""
    if not isinstance(raw, str) or not raw:
        raise ValidationError("role must be a string", errors=[{"field": field, "message": "a role id"}])
    role_id = raw
    if raw.startswith("role:"):
        parts = raw.split(":")
        if len(parts) != 3:
            raise ValidationError("unknown role", errors=[{"field": field, "message": f"unknown role {raw[:80]!r}"}])
        if parts[1] != pack.id:
            raise ValidationError(
                f"role {raw[:80]!r} belongs to another pack",
                errors=[
                    {"field": field, "message": f"roles of this workspace: {[r.id for r in pack.workspace_roles]}"}
                ],
            )
        role_id = parts[2]
    role = pack.role(role_id)
    if role is None or role.platform:
        raise ValidationError(
            f"unknown role {raw[:80]!r}",
            errors=[{"field": field, "message": f"one of {[r.id for r in pack.workspace_roles]}"}],
        )
    return role.id


def platform_role(pack: Pack, raw: object, field: str = "role") -> str:
    """A platform role id of the pack; ValidationError otherwise."""
    role = pack.role(raw) if isinstance(raw, str) else None
    if role is None or not role.platform:
        raise ValidationError(
            f"unknown platform role {str(raw)[:80]!r}",
            errors=[{"field": field, "message": f"one of {[r.id for r in pack.platform_roles]}"}],
        )
    return role.id
