"""Feature switches per workspace (g5 = switched off): only the role the pack names may flip them."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app import audit
from app.authz import RuleChange
from app.database import in_transaction
from app.errors import ValidationError
from app.membership import access
from app.membership.members import begin
from app.models import User, Workspace
from app.policy import store as policy_store


def toggle(session: Session, actor: User, ws: Workspace, feature: str, enabled: bool) -> bool:
    """Switch a pack feature on or off in ws (g5 rule = off); returns the new state.

    Only whoever holds the pack's ``operations.toggle_features`` action (the platform role the
    seed names) may. Raises ForbiddenError, ValidationError, NotFoundError.
    """
    pack = access.pack_of(ws)
    access.require(actor, ws, "toggle_features")
    if feature not in {f.id for f in pack.features}:
        raise ValidationError(
            "unknown feature", errors=[{"field": "feature", "message": f"one of {[f.id for f in pack.features]}"}]
        )
    rule = ("g5", ws.key, feature)
    with in_transaction(session):
        handle = begin(session, actor, "feature", f"{'enable' if enabled else 'disable'} {feature} in {ws.key}")
        access.require(actor, ws, "toggle_features")
        is_off = policy_store.rule_exists(session, rule)
        if is_off == (not enabled):
            session.rollback()
            return enabled
        policy_store.add_changes(session, handle, [RuleChange("remove" if enabled else "add", rule)])
        _record(session, actor, ws, feature, enabled, handle.number)
    return enabled


def _record(session: Session, actor: User, ws: Workspace, feature: str, enabled: bool, revision: int) -> None:
    """The audit entry of one switch flipped."""
    audit.record(
        session,
        "workspace.feature",
        workspace_id=ws.id,
        actor_id=actor.id,
        target=f"feature:{feature}",
        before={"enabled": not enabled},
        after={"enabled": enabled},
        revision=revision,
    )


def set_switches(session: Session, actor: User, ws: Workspace, wanted: dict[str, bool]) -> dict[str, bool]:
    """Set several switches of ws at once (the platform console's one save): all in one revision
    and one transaction, or none. Returns the switches that changed, with their new state.

    Raises ForbiddenError, ValidationError (an unknown feature: nothing is written), NotFoundError.
    """
    pack = access.pack_of(ws)
    access.require(actor, ws, "toggle_features")
    known = {f.id for f in pack.features}
    unknown = sorted(set(wanted) - known)
    if unknown:
        errors = [{"field": "switches", "message": f"unknown feature {f[:80]!r}"} for f in unknown[:20]]
        raise ValidationError("unknown feature", errors=errors)
    with in_transaction(session):
        handle = begin(session, actor, "feature", f"set {len(wanted)} feature switches in {ws.key}")
        access.require(actor, ws, "toggle_features")
        changed = {
            f: on for f, on in sorted(wanted.items()) if policy_store.rule_exists(session, ("g5", ws.key, f)) == on
        }
        if not changed:
            session.rollback()
            return {}
        policy_store.add_changes(
            session, handle, [RuleChange("remove" if on else "add", ("g5", ws.key, f)) for f, on in changed.items()]
        )
        for f, on in changed.items():
            _record(session, actor, ws, f, on, handle.number)
    return changed
