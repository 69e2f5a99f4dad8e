"""Platform-wide roles (simulations' Admin, academy's Operator, skills' account manager).

A platform role is the g-rule ``g, user:<id>, role:<pack>:<role>, *``: it applies in every
workspace of its pack. Only holders grant it: Casbin decides in the domain ``platform:<pack>``
(where only platform roles count) with the pack's ``operations.grant_platform_role`` action and
the rank rules (``mayGrant``: the pack's grant exceptions).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import audit, notifications
from app.authz import RuleChange
from app.authz.identifiers import PLATFORM_DOMAIN, platform_domain
from app.database import in_transaction
from app.errors import ConflictError, ForbiddenError, NotFoundError
from app.extensions import authz
from app.identity.users import by_email
from app.inputs import is_id
from app.membership import access
from app.membership.members import begin
from app.models import User, Workspace
from app.policy import store as policy_store


def rule(user_id: int, pack_id: str, role: str) -> tuple[str, ...]:
    """The g-rule of a platform role."""
    return ("g", f"user:{user_id}", f"role:{pack_id}:{role}", PLATFORM_DOMAIN)


def holders(session: Session, actor: User, pack_id: object) -> list[dict[str, Any]]:
    """Who holds the pack's platform roles (visible to holders only)."""
    pack = access.pack_by_id(pack_id)
    authz.require(
        actor.key, platform_domain(pack.id), access.action_for(pack, "grant_platform_role"), access.member_facts(None)
    )
    out = []
    for r in pack.platform_roles:
        rows = policy_store.load_rules(session, ["g"])
        ids = [
            int(x[1][5:])
            for x in rows
            if x[2] == pack.role_key(r.id) and x[3] == PLATFORM_DOMAIN and x[1].startswith("user:")
        ]
        emails = dict(session.execute(select(User.id, User.email).where(User.id.in_(ids))).all()) if ids else {}
        out += [{"role": r.id, "user_id": i, "email": emails.get(i)} for i in ids]
    return out


def _change(session: Session, actor: User, pack_id: object, raw_role: object, target_id: int, op: str) -> int:
    pack = access.pack_by_id(pack_id)
    domain = platform_domain(pack.id)
    action = access.action_for(pack, "grant_platform_role")
    authz.require(actor.key, domain, action, access.member_facts(None))
    role = access.platform_role(pack, raw_role)
    if not is_id(target_id):
        raise NotFoundError("no such user")
    with in_transaction(session):
        handle = begin(session, actor, "platform", f"{op} platform role {role} of {pack.id} for user:{target_id}")
        # A grant names the target as grantee (they hold no role of the pack yet, so no member; Casbin
        # refuses granting oneself); a revoke acts on a holder, whose platform role the rank rules see.
        if op == "grant":
            facts = access.grant_facts(target_id, pack.role_key(role))
        else:
            facts = access.member_facts(target_id, pack.role_key(role))
        try:
            authz.require(actor.key, domain, action, facts)
        except ForbiddenError as exc:
            if exc.extra.get("reason") == "unknown_member":
                raise NotFoundError("the user does not hold this role") from exc
            raise
        target = session.get(User, target_id)
        if target is None:
            raise NotFoundError("no such user")
        exists = policy_store.rule_exists(session, rule(target_id, pack.id, role))
        if op == "grant" and exists:
            raise ConflictError("the user already holds this role")
        if op == "revoke" and not exists:
            raise NotFoundError("the user does not hold this role")
        policy_store.add_changes(
            session, handle, [RuleChange("add" if op == "grant" else "remove", rule(target_id, pack.id, role))]
        )
        audit.record(
            session,
            f"platform.{op}",
            workspace_id=None,
            actor_id=actor.id,
            target_user_id=target_id,
            target=pack.role_key(role),
            before=None if op == "grant" else {"role": role},
            after={"role": role} if op == "grant" else None,
            revision=handle.number,
        )
        notifications.queue(
            session,
            target.email,
            f"Platform role {role} {'granted' if op == 'grant' else 'revoked'}",
            f"{actor.display_name} {'granted you' if op == 'grant' else 'revoked your'} "
            f"platform role {role} ({pack.title}).",
            "platform_role",
        )
    return handle.number


def grant(session: Session, actor: User, pack_id: object, role: object, target_id: int) -> int:
    """Grant a platform role; returns the revision.

    Raises ForbiddenError, ValidationError, NotFoundError, ConflictError.
    """
    return _change(session, actor, pack_id, role, target_id, "grant")


def revoke(session: Session, actor: User, pack_id: object, role: object, target_id: int) -> int:
    """Revoke a platform role; returns the revision. Raises ForbiddenError, ValidationError, NotFoundError."""
    return _change(session, actor, pack_id, role, target_id, "revoke")


def console(session: Session, actor: User) -> list[dict[str, Any]]:
    """The packs in which actor holds a platform role, each with the workspaces of the pack and
    what Casbin lets actor do there (create a workspace, grant platform roles): the operator's home."""
    mine = set(authz.engine.roles_of(actor.key, PLATFORM_DOMAIN))
    out = []
    for pack in sorted(authz.engine.packset.packs.values(), key=lambda p: p.id):
        held = [r for r in pack.platform_roles if pack.role_key(r.id) in mine]
        if not held:
            continue
        domain = platform_domain(pack.id)
        may = {
            op: access.has_operation(pack, ops)
            and authz.check(actor.key, domain, access.action_for(pack, ops), access.member_facts(None)).allowed
            for op, ops in (
                ("create_workspace", ("create_workspace", "edit_settings")),
                ("grant_platform_role", ("grant_platform_role",)),
            )
        }
        rows = session.scalars(select(Workspace).where(Workspace.pack == pack.id).order_by(Workspace.slug))
        out.append(
            {
                "pack": pack.id,
                "title": pack.title,
                "roles": [{"id": r.id, "label": r.label or r.id} for r in held],
                "workspaces": [{"slug": w.slug, "name": w.name} for w in rows],
                "permissions": may,
            }
        )
    return out


def user_id_by_email(session: Session, actor: User, pack_id: object, email: object) -> int:
    """The id of the account with this email, for a holder granting a platform role by email.

    Checked first (only those who may grant learn whether an account exists). Raises
    ForbiddenError, NotFoundError.
    """
    pack = access.pack_by_id(pack_id)
    authz.require(
        actor.key, platform_domain(pack.id), access.action_for(pack, "grant_platform_role"), access.member_facts(None)
    )
    user = by_email(session, email) if isinstance(email, str) and 0 < len(email) <= 254 else None
    if user is None:
        raise NotFoundError("no account with this email")
    return user.id
