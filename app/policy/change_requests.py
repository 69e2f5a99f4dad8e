"""Change requests: policy edits reviewed before they reach the live policy.

An editor's working draft lives here, on the server and owned by its user (status ``draft``, at most
one per user: it ends with its owner, not with a browser tab). Submitting it makes a change request
(``open``) with a title, why, the rule changes and what the checks said at its base revision: the
escalation verifier, the policy tests, the decisions that flip (:func:`app.policy.edits.preview`) and
the replay of recent real decisions (:func:`app.policy.edits.replay`). Admins comment, approve or
reject; applying goes through :func:`app.policy.edits.commit` like ``POST /v1/policy/apply``, at the
current head: a request whose base revision is stale is validated again and refused (409) if it no
longer applies cleanly.

Who may do what is Casbin's (the ``service`` pack): every step checks its action with the request's
author as the resource's owner, so "nobody approves their own" is a rule of the pack
(``approve_change_request``, a deny with scope ``owner``). Approvals needed: ``POLICY_APPROVALS``
(pack → count, default 1), the largest of the packs the request edits; an update of the changes
starts the count again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.authz import ResourceFacts, decisionlog
from app.authz.packs import format_rule
from app.database import in_transaction
from app.errors import ConflictError, NotFoundError, ValidationError
from app.models import ChangeRequest, ChangeRequestEvent, User, utcnow
from app.policy import edits as policy_edits
from app.policy import store as policy_store
from app.policy.runtime import PolicyRuntime

DRAFT, OPEN, APPLIED, REJECTED = "draft", "open", "applied", "rejected"
STATUSES = (DRAFT, OPEN, APPLIED, REJECTED)
MAX_CHANGES = 500


def edits_of(changes: Sequence[Mapping[str, Any]]) -> list[policy_edits.Edit]:
    """Stored changes (the JSON of ``ChangeIn``: op, rule, with, pack, role, action) as edits."""
    return [
        policy_edits.Edit(
            op=str(c.get("op", "")),
            rule=c.get("rule"),
            with_=c.get("with"),
            pack=c.get("pack"),
            role=c.get("role"),
            action=c.get("action"),
        )
        for c in changes
    ]


def facts(cr: ChangeRequest) -> ResourceFacts:
    """The change request as Casbin sees it: its author is the owner."""
    owner = f"user:{cr.author_id}" if cr.author_id is not None else ""
    return ResourceFacts(type="change_request", id=str(cr.id), owner=owner)


def allowed(runtime: PolicyRuntime, user: User, domain: str, action: str, cr: ChangeRequest | None = None) -> bool:
    """Casbin's answer for one step on a change request."""
    return runtime.check(user.key, domain, action, facts(cr) if cr is not None else None).allowed


def _require(runtime: PolicyRuntime, user: User, domain: str, action: str, cr: ChangeRequest | None = None) -> None:
    runtime.require(user.key, domain, action, facts(cr) if cr is not None else None)


# -- the checks --------------------------------------------------------------------------------------------
def evaluate(
    session: Session,
    runtime: PolicyRuntime,
    changes: Sequence[Mapping[str, Any]],
    model_text: str,
    policy_dir: Path | str | None,
    log: Sequence[decisionlog.Logged] | None = None,
) -> dict[str, Any]:
    """What the checks say of changes at the current revision (nothing written; the read is rolled back).

    ``problems`` (escalation verifier and shapes), ``tests`` (policy tests it breaks), ``flips`` (role ×
    action cells that change, with how many people and workspaces: user keys are left out), ``impact`` and
    ``replay`` (recent real decisions that would flip)."""
    try:
        d = policy_edits.draft(session, edits_of(changes), model_text, policy_dir)
    finally:
        session.rollback()
    tests = [p for p in d.problems if p.startswith("policy test fails") or p.startswith("... and ")]
    out: dict[str, Any] = {
        "revision": d.revision,
        "valid": d.valid,
        "problems": [p for p in d.problems if p not in tests],
        "tests": tests,
        "packs": sorted(d.packs),
        "added": [format_rule(c.rule) for c in d.changes if c.op == "add"],
        "removed": [format_rule(c.rule) for c in d.changes if c.op == "remove"],
        "flips": [],
        "impact": [],
        "replay": None,
    }
    if not d.valid:
        return out
    live = runtime.engine
    p = policy_edits.preview(d, live)
    out["flips"] = [{k: v for k, v in f.__dict__.items() if k != "sample"} for f in p.flips]
    out["impact"] = [i.__dict__ for i in p.impact]
    r = policy_edits.replay(d, live, decisionlog.LOG.recent() if log is None else log)
    out["replay"] = {
        "logged": r.logged,
        "replayed": r.replayed,
        "flipped": r.flipped,
        "skipped": r.skipped,
        "sample": [list(s) for s in r.sample],
    }
    return out


def required_approvals(approvals: Mapping[str, Any], packs: Sequence[str]) -> int:
    """Approvals a change request of these packs needs: the largest setting among them (default 1)."""
    return max([1, *(int(approvals.get(p, 1)) for p in packs)])


# -- reading -----------------------------------------------------------------------------------------------
def get(session: Session, cr_id: int) -> ChangeRequest:
    """A submitted change request (drafts are private to their author: not found)."""
    cr = session.get(ChangeRequest, cr_id)
    if cr is None or cr.status == DRAFT:
        raise NotFoundError(f"no change request {cr_id}")
    return cr


def listing(session: Session, status: str | None, limit: int = 100) -> list[ChangeRequest]:
    """Submitted change requests, newest first (``status`` one of open, applied, rejected)."""
    stmt = select(ChangeRequest).where(ChangeRequest.status != DRAFT).order_by(ChangeRequest.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(ChangeRequest.status == status)
    return list(session.scalars(stmt))


def events(session: Session, cr: ChangeRequest) -> list[ChangeRequestEvent]:
    """The review steps of a change request, oldest first."""
    stmt = select(ChangeRequestEvent).where(ChangeRequestEvent.change_request_id == cr.id)
    return list(session.scalars(stmt.order_by(ChangeRequestEvent.id)))


def approvers(steps: Sequence[ChangeRequestEvent]) -> list[int]:
    """Who approved since the changes last changed (submission or update), in order."""
    out: list[int] = []
    for ev in steps:
        if ev.kind in ("submitted", "updated"):
            out = []
        elif ev.kind == "approved" and ev.actor_id is not None and ev.actor_id not in out:
            out.append(ev.actor_id)
    return out


# -- the working draft -------------------------------------------------------------------------------------
def draft_of(session: Session, user: User) -> ChangeRequest | None:
    """The user's working draft, if any."""
    stmt = select(ChangeRequest).where(ChangeRequest.author_id == user.id, ChangeRequest.status == DRAFT)
    return session.scalars(stmt.order_by(ChangeRequest.id).limit(1)).first()


def save_draft(
    session: Session, runtime: PolicyRuntime, domain: str, user: User, changes: list[dict[str, Any]]
) -> ChangeRequest | None:
    """Replace the user's working draft (an empty list discards it)."""
    _require(runtime, user, domain, "propose_policy_change")
    with in_transaction(session):
        cr = draft_of(session, user)
        if not changes:
            if cr is not None:
                session.delete(cr)
            return None
        if cr is None:
            cr = ChangeRequest(author_id=user.id, status=DRAFT, changes=changes, packs=[], checks={})
            session.add(cr)
        else:
            cr.changes = changes
            cr.updated_at = utcnow()
        session.flush()
    return cr


# -- review ------------------------------------------------------------------------------------------------
def _clean(text: str, field: str, limit: int, required: bool = False) -> str:
    value = text.strip()
    if required and not value:
        raise ValidationError(
            f"{field} is required", errors=[{"loc": [field], "message": "required", "type": "missing"}]
        )
    if len(value) > limit:
        raise ValidationError(
            f"{field} is too long", errors=[{"loc": [field], "message": f"at most {limit} characters"}]
        )
    return value


def _event(session: Session, cr: ChangeRequest, user: User, kind: str, body: str = "") -> None:
    session.add(
        ChangeRequestEvent(change_request_id=cr.id, actor_id=user.id, kind=kind, body=body, revision=cr.base_revision)
    )


def submit(
    session: Session,
    runtime: PolicyRuntime,
    domain: str,
    user: User,
    title: str,
    why: str,
    changes: list[dict[str, Any]] | None,
    checks: dict[str, Any] | None,
) -> ChangeRequest:
    """A new open change request of ``changes`` (None: the user's working draft, which it replaces).

    ``checks`` is :func:`evaluate` of the same changes (run by the caller first, outside this transaction)."""
    _require(runtime, user, domain, "propose_policy_change")
    title = _clean(title, "title", 200, required=True)
    why = _clean(why, "why", 2000)
    with in_transaction(session):
        cr = draft_of(session, user)
        if changes is None:
            if cr is None or not cr.changes:
                raise ValidationError("your draft is empty: add changes first")
            changes = list(cr.changes)
        if not changes:
            raise ValidationError("a change request needs at least one change")
        if checks is None:
            raise ValidationError("the change request was not checked")
        if cr is None:
            cr = ChangeRequest(author_id=user.id)
            session.add(cr)
        cr.status, cr.title, cr.why, cr.changes = OPEN, title, why, changes
        cr.packs, cr.base_revision, cr.checks = checks["packs"], int(checks["revision"]), checks
        cr.created_at = cr.updated_at = utcnow()
        session.flush()
        _event(session, cr, user, "submitted")
    return cr


def _open(session: Session, cr_id: int) -> ChangeRequest:
    cr = get(session, cr_id)
    if cr.status != OPEN:
        raise ConflictError(f"change request {cr_id} is {cr.status}, no longer open", status_now=cr.status)
    return cr


def update(
    session: Session,
    runtime: PolicyRuntime,
    domain: str,
    user: User,
    cr_id: int,
    title: str | None,
    why: str | None,
    changes: list[dict[str, Any]] | None,
    checks: dict[str, Any] | None,
) -> ChangeRequest:
    """The author edits an open request; new changes (with their ``checks``) start the approvals again."""
    with in_transaction(session):
        cr = _open(session, cr_id)
        _require(runtime, user, domain, "edit_change_request", cr)
        if title is not None:
            cr.title = _clean(title, "title", 200, required=True)
        if why is not None:
            cr.why = _clean(why, "why", 2000)
        if changes is not None:
            if not changes or checks is None:
                raise ValidationError("a change request needs at least one change")
            cr.changes, cr.packs, cr.checks = changes, checks["packs"], checks
            cr.base_revision = int(checks["revision"])
        cr.updated_at = utcnow()
        session.flush()
        _event(session, cr, user, "updated" if changes is not None else "edited")
    return cr


def comment(session: Session, runtime: PolicyRuntime, domain: str, user: User, cr_id: int, body: str) -> ChangeRequest:
    """A comment on a change request (any status)."""
    text = _clean(body, "body", 2000, required=True)
    with in_transaction(session):
        cr = get(session, cr_id)
        _require(runtime, user, domain, "comment_change_request", cr)
        _event(session, cr, user, "comment", text)
        cr.updated_at = utcnow()
    return cr


def approve(session: Session, runtime: PolicyRuntime, domain: str, user: User, cr_id: int, body: str) -> ChangeRequest:
    """An approval (Casbin: policy admins, never of their own request)."""
    text = _clean(body, "comment", 2000)
    with in_transaction(session):
        cr = _open(session, cr_id)
        _require(runtime, user, domain, "approve_change_request", cr)
        if user.id in approvers(events(session, cr)):
            raise ConflictError("you have already approved this change request")
        if not cr.checks.get("valid"):
            raise ConflictError("an invalid change request cannot be approved", problems=cr.checks.get("problems"))
        _event(session, cr, user, "approved", text)
        cr.updated_at = utcnow()
    return cr


def reject(session: Session, runtime: PolicyRuntime, domain: str, user: User, cr_id: int, body: str) -> ChangeRequest:
    """Close a request without applying it."""
    text = _clean(body, "comment", 2000)
    with in_transaction(session):
        cr = _open(session, cr_id)
        _require(runtime, user, domain, "reject_change_request", cr)
        cr.status = REJECTED
        cr.updated_at = utcnow()
        _event(session, cr, user, "rejected", text)
    return cr


def apply(
    session: Session,
    runtime: PolicyRuntime,
    domain: str,
    user: User,
    cr_id: int,
    message: str,
    model_text: str,
    policy_dir: Path | str | None,
    approvals: Mapping[str, Any],
) -> policy_edits.Draft:
    """Apply an approved request as one revision (``edits.apply`` at the current head, so a stale base is
    validated again); the request is marked applied in the same transaction."""
    cr = _open(session, cr_id)
    _require(runtime, user, domain, "apply_policy_change", cr)
    need = required_approvals(approvals, list(cr.packs or []))
    have = len(approvers(events(session, cr)))
    if have < need:
        raise ConflictError(f"needs {need} approval(s), has {have}", approvals_required=need, approvals=have)
    session.rollback()
    text = _clean(message, "message", 500) or f"change request #{cr_id}: {cr.title}"

    def write(s: Session) -> policy_edits.Draft:
        row = _open(s, cr_id)
        try:
            d = policy_edits.apply(s, edits_of(row.changes), model_text, policy_dir, actor_id=user.id, message=text)
        except ValidationError as exc:
            head = policy_store.current_revision(s) - 1
            if head != row.base_revision:
                raise ConflictError(
                    f"the policy moved on since revision {row.base_revision} (now {head}) and this change request "
                    "no longer applies cleanly: update it",
                    problems=exc.extra.get("problems", []),
                    revision=head,
                ) from None
            raise
        row.status, row.applied_revision, row.updated_at = APPLIED, d.revision, utcnow()
        _event(s, row, user, "applied", text)
        return d

    return policy_edits.commit(session, runtime, write)
