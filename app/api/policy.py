"""The policy-editor API: read the model and rules, validate, preview, apply, roll back, revisions, tokens.

Callers are signed-in users (cookie session from ``POST /api/auth/signin``; changes carry the CSRF
token as ``X-CSRFToken``) holding a role of the ``service`` meta-pack in the policy workspace
(``ws:<POLICY_WORKSPACE>``, default ``ws:service``). Every endpoint declares its meta-policy action
and Casbin decides, like everywhere else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, jsonify, request
from flask_wtf.csrf import generate_csrf
from sqlalchemy import select

from app import observability
from app.api import api_doc, bodies
from app.api.auth import actor, protect
from app.api.decision import engine_at
from app.api.params import parse_body, parse_query
from app.api.policy_bodies import (
    ApplyRequestIn,
    ChangeRequestIn,
    ChangeRequestPatch,
    CommentIn,
    DraftIn,
    ReviewIn,
    stored,
)
from app.api.schemas import (
    ApplyResult,
    ChangeIn,
    ExplainIn,
    ExplainResult,
    MatrixQuery,
    MatrixResult,
    ModelResult,
    PreviewResult,
    ProposalIn,
    RevisionsQuery,
    RevisionsResult,
    RollbackIn,
    RollbackPreviewResult,
    RulesQuery,
    RulesResult,
    SessionResult,
    TokenIn,
    TokenOut,
    TokensResult,
    ValidationResult,
)
from app.authz import Decision, Reason
from app.authz.matrix import matrix_rows
from app.authz.packs import rule_pack
from app.database import in_transaction
from app.decisions import resolution as decisions
from app.errors import ForbiddenError, NotFoundError, ValidationError
from app.extensions import authz, db
from app.models import ChangeRequest, PolicyRevision, ServiceToken, User
from app.policy import change_requests as crs
from app.policy import edits as policy_edits
from app.policy import store as policy_store
from app.policy import tokens

bp = Blueprint("policy", __name__, url_prefix="/v1/policy")
F = TypeVar("F", bound=Callable[..., Any])
MAX_ID = 2**31 - 1  # ids are INTEGER columns: larger ones name nothing (and PostgreSQL refuses to compare them)
# Revisions of the policy itself: who changed a rule is part of the audit trail every viewer reads.
# Every other revision (memberships, groups, workspaces, users, tokens) is about people: its actor,
# message and the user keys of its rules are shown only with view_people.
POLICY_KINDS = frozenset({"policy-edit", "policy-rollback", "import"})
HIDDEN = "(hidden: needs view_people)"
META_ACTIONS = (
    "read_policy",
    "read_policy_audit",
    "propose_policy_change",
    "apply_policy_change",
    "rollback_policy",
    "manage_service_tokens",
    "edit_change_request",
    "comment_change_request",
    "approve_change_request",
    "reject_change_request",
    "view_people",
)


def _protect() -> None:
    protect()


bp.before_request(_protect)


def policy_domain() -> str:
    """The Casbin domain of the meta-policy workspace."""
    return "ws:" + str(current_app.config.get("POLICY_WORKSPACE", "service"))


def requires(action: str) -> Callable[[F], F]:
    """The signed-in user must be allowed ``action`` of the service meta-pack (401/403 otherwise)."""

    def deco(fn: F) -> F:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = actor()
            authz.require(user.key, policy_domain(), action)
            return fn(*args, **kwargs)

        wrapper.__meta_action__ = action  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco


def _editor() -> User:
    return actor()


def _sees_people() -> bool:
    """The signed-in editor may see people in the policy tools (``view_people``: policy admins)."""
    return authz.check(_editor().key, policy_domain(), "view_people").allowed


def _model_text() -> str:
    return Path(current_app.config["MODEL_PATH"]).read_text(encoding="utf-8")


def _edits(changes: list[ChangeIn]) -> list[policy_edits.Edit]:
    return [
        policy_edits.Edit(
            op=c.op,
            rule=c.rule,
            with_=c.with_,
            pack=c.pack,
            role=c.role.model_dump() if c.role else None,
            action=c.action.model_dump() if c.action else None,
        )
        for c in changes
    ]


def _engine(min_revision: int | None) -> Any:
    return engine_at(min_revision)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


# -- session -------------------------------------------------------------------------------------
@bp.get("/session")
@api_doc(
    "The signed-in editor's meta-policy permissions and a CSRF token.",
    tags=["policy"],
    response=SessionResult,
    auth="session",
    errors=(401,),
)
def session_info() -> Response:
    """Who is signed in, what the meta-policy allows them, and the CSRF token for changes."""
    user = _editor()
    allowed = [a for a in META_ACTIONS if authz.check(user.key, policy_domain(), a).allowed]
    return jsonify(
        SessionResult(user_id=user.id, email=user.email, permissions=allowed, csrf_token=generate_csrf()).model_dump()
    )


# -- reading -------------------------------------------------------------------------------------
@bp.get("/model")
@api_doc(
    "The Casbin model and every pack's roles, actions, features and grant exceptions.",
    tags=["policy"],
    response=ModelResult,
    auth="session",
    errors=(401, 403),
)
@requires("read_policy")
def model() -> Response:
    """The model text and the pack documents as loaded by the engine."""
    eng = _engine(None)
    packs = {}
    for pid, pack in sorted(eng.packset.packs.items()):
        packs[pid] = {
            "title": pack.title,
            "roles": [{"id": r.id, "label": r.label, "rank": r.rank, "platform": r.platform} for r in pack.roles],
            "actions": [{"id": a.id, "label": a.label, "feature": a.feature or None} for a in pack.actions],
            "features": [{"id": f.id, "label": f.label} for f in pack.features],
            "grants": [
                {"role": g.role, "may_grant": list(g.may_grant), "may_manage": list(g.may_manage), "why": g.why}
                for g in pack.grants
            ],
            "decisions": list(pack.decisions),
            "rules": len(pack.rules),
        }
    return jsonify({"revision": eng.revision, "model": eng.packset.model_text, "packs": packs})


@bp.get("/rules")
@api_doc(
    "Pack rules, filtered by pack, type (p or g) and role.",
    tags=["policy"],
    query=RulesQuery,
    response=RulesResult,
    auth="session",
    errors=(401, 403, 422),
)
@requires("read_policy")
def rules() -> Response:
    """Pack rules (p, role inheritance, pack → role links); ``role`` matches a rule's subject or an end of a link."""
    q = parse_query(RulesQuery)
    eng = _engine(q.min_revision)
    out = []
    role = q.role
    if role and not role.startswith("role:"):
        role = f"role:{q.pack}:{role}" if q.pack and ":" not in role else f"role:{role}"
    for pid, pack in sorted(eng.packset.packs.items()):
        if q.pack and pid != q.pack:
            continue
        for r in pack.rules:
            if q.type and r[0] != q.type:
                continue
            if role and not ((r[0] in ("p", "g4") and r[2] == role) or (r[0] == "g" and role in (r[1], r[2]))):
                continue
            out.append(list(r))
    return jsonify({"revision": eng.revision, "count": len(out), "rules": out})


@bp.get("/revisions")
@api_doc(
    "The revision log, newest first.",
    tags=["policy"],
    query=RevisionsQuery,
    response=RevisionsResult,
    auth="session",
    errors=(401, 403, 422),
)
@requires("read_policy_audit")
def revisions() -> Response:
    """Revisions (policy edits, rollbacks, imports, membership changes), newest first, paged by ``before``."""
    q = parse_query(RevisionsQuery)
    stmt = select(PolicyRevision).order_by(PolicyRevision.id.desc()).limit(q.limit)
    if q.before and q.before <= MAX_ID:
        stmt = stmt.where(PolicyRevision.id < q.before)
    if q.category != "all":
        stmt = stmt.where(PolicyRevision.category == q.category)
    rows = list(db.session.scalars(stmt))
    people = _sees_people()
    named = _named_users(rows) if people else {}
    emails = _emails({r.actor_id for r in rows if r.actor_id is not None and (people or r.kind in POLICY_KINDS)})
    items = [
        {
            "id": r.id,
            "kind": r.kind,
            "category": r.category,
            "message": _readable(r.message, named) if people or r.kind in POLICY_KINDS else HIDDEN,
            "actor_id": r.actor_id if people or r.kind in POLICY_KINDS else None,
            "actor": emails.get(r.actor_id) if r.actor_id is not None else None,
            "created_at": _iso(r.created_at),
            "changes": len(r.changes or []),
            "rollback": r.category == "policy",  # only policy revisions are undone by a rollback
        }
        for r in rows
    ]
    return jsonify({"revision": policy_store.current_revision(db.session()), "category": q.category, "items": items})


_USER_KEY = re.compile(r"user:(\d{1,10})\b")


def _named_users(rows: list[PolicyRevision]) -> dict[int, str]:
    """Emails of the people revision messages name as ``user:<id>``."""
    ids = {int(m) for r in rows for m in _USER_KEY.findall(r.message or "") if int(m) <= MAX_ID}
    return _emails(ids)


def _readable(message: str, emails: dict[int, str]) -> str:
    """A revision message with ``user:<id>`` replaced by the person's email (for those who see people)."""
    return _USER_KEY.sub(lambda m: emails.get(int(m.group(1)), m.group(0)), message or "")


@bp.get("/revisions/<int:number>")
@api_doc("One revision with its rule changes.", tags=["policy"], auth="session", errors=(401, 403, 404))
@requires("read_policy_audit")
def revision(number: int) -> Response:
    """One revision: kind, message, actor and the rules it added and removed."""
    row = db.session.get(PolicyRevision, number) if number <= MAX_ID else None
    if row is None:
        raise NotFoundError(f"no revision {number}")
    shown = _sees_people() or row.kind in POLICY_KINDS
    named = _named_users([row]) if shown else {}

    def rule_of(rule: list[str]) -> list[str]:
        return rule if shown else [HIDDEN if v.startswith("user:") else v for v in rule]

    return jsonify(
        {
            "id": row.id,
            "kind": row.kind,
            "category": row.category,
            "message": _readable(row.message, named) if shown else HIDDEN,
            "actor_id": row.actor_id if shown else None,
            "created_at": _iso(row.created_at),
            "changes": [
                {"op": op, "rule": rule_of(rule), "pack": rule_pack(tuple(rule)) or None}
                for op, rule in row.changes or []
            ],
        }
    )


# -- proposing -----------------------------------------------------------------------------------
def _draft_of(changes: list[ChangeIn]) -> policy_edits.Draft:
    """Changes drafted on the live policy and validated (nothing written)."""
    d = policy_edits.draft(db.session(), _edits(changes), _model_text(), current_app.config["POLICY_DIR"])
    db.session.rollback()
    return d


def _draft_of_body() -> policy_edits.Draft:
    """The request's proposal, validated against the live policy (nothing written)."""
    return _draft_of(parse_body(ProposalIn).changes)


@bp.post("/validate")
@api_doc(
    "Validate a proposed change; every problem is listed.",
    tags=["policy"],
    body=ProposalIn,
    response=ValidationResult,
    auth="session",
    errors=(400, 401, 403, 415, 422),
)
@requires("propose_policy_change")
def validate_change() -> Response:
    """Validate: shapes, unknown roles/actions, cycles, rank escalations, broken policy tests."""
    d = _draft_of_body()
    return jsonify({"valid": d.valid, "revision": d.revision, "problems": d.problems})


@bp.post("/preview")
@api_doc(
    "Preview a change: the role × action × pack decisions that flip and who gains or loses them. "
    "An invalid change is refused (422) with every problem.",
    tags=["policy"],
    body=ProposalIn,
    response=PreviewResult,
    auth="session",
    errors=(400, 401, 403, 415, 422),
)
@requires("propose_policy_change")
def preview() -> Response:
    """The flips of an edit and its impact on users and workspaces; 422 problem if the edit is invalid."""
    d = _draft_of_body()
    if not d.valid:
        raise ValidationError("the change is invalid; nothing to preview", problems=d.problems, revision=d.revision)
    return jsonify(_preview_payload(policy_edits.preview(d, authz.engine)))


def _emails(user_ids: set[int]) -> dict[int, str]:
    if not user_ids:
        return {}
    rows = db.session.execute(select(User.id, User.email).where(User.id.in_(user_ids))).all()
    return {int(i): str(e) for i, e in rows}


def _preview_payload(p: policy_edits.Preview) -> dict[str, Any]:
    """A preview as JSON: flips with how many people and workspaces they affect, impact per action;
    a sample of the people (emails) only for those who may see people (``view_people``)."""
    d = p.draft
    people = _sees_people()
    ids = {int(k[5:]) for f in p.flips for k in f.sample if k[5:].isdigit()} if people else set()
    emails = _emails(ids)
    flips = []
    for f in p.flips:
        out = dict(f.__dict__)
        out["sample"] = [emails.get(int(k[5:]), k) if k[5:].isdigit() else k for k in f.sample] if people else []
        flips.append(out)
    return {
        "valid": d.valid,
        "revision": d.revision,
        "problems": list(d.problems),
        "packs": sorted(d.packs),
        "flips": flips,
        "impact": [i.__dict__ for i in p.impact],
    }


@bp.get("/matrix")
@api_doc(
    "A pack's role × action table as the engine computes it, with each cell's direct rules.",
    tags=["policy"],
    query=MatrixQuery,
    response=MatrixResult,
    auth="session",
    errors=(401, 403, 404, 422),
)
@requires("read_policy")
def matrix() -> Response:
    """The live matrix of one pack (what ``flask policy matrix`` prints), for the workbench."""
    q = parse_query(MatrixQuery)
    eng = _engine(None)
    pack = eng.packset.packs.get(q.pack)
    if pack is None:
        raise NotFoundError(f"unknown pack {q.pack[:64]!r}")
    roles = [
        {"id": r.id, "label": r.label, "rank": r.rank, "platform": r.platform}
        for r in sorted(pack.roles, key=lambda r: (r.platform, r.rank))
    ]
    rows = matrix_rows(eng.packset, pack.id)
    return jsonify({"revision": eng.revision, "pack": pack.id, "roles": roles, "rows": rows})


@bp.post("/explain")
@api_doc(
    "Explain one decision (reason, matched rule, role path) at the live revision, or on a draft (changes).",
    tags=["policy"],
    body=ExplainIn,
    response=ExplainResult,
    auth="session",
    errors=(400, 401, 403, 415, 422),
)
@requires("read_policy")
def explain() -> Response:
    """The playground: a check as the decision API answers it with ``explain``, live or on a draft."""
    body = parse_body(ExplainIn)
    probe = isinstance(body.subject, str) and body.subject.startswith("role:")
    attrs = body.resource.attributes if body.resource is not None else None
    named = ("assignee", "owner", "member", "grantee")  # every attribute that names a person
    people = attrs is not None and any(getattr(attrs, k, None) is not None for k in named)
    if (people or not probe) and not _sees_people():
        raise ForbiddenError(
            "explaining a named person's decision needs view_people (policy admins): ask about a role instead, "
            "subject role:<pack>:<role>, with no person in the resource",
            reason="view_people",
        )
    live = authz.engine
    eng = live
    problems: list[str] = []
    domain = decisions.domain_of(body.workspace)
    packs = live.packset
    if body.changes:
        d = _draft_of(body.changes)
        if d.after is None:
            raise ValidationError("the draft does not load", problems=d.problems, revision=d.revision)
        problems = [p for p in d.problems if p != "the change changes nothing"]
        packs = d.after
        eng = policy_edits.draft_engine(d.after, live, domain)
    if probe:  # a role, decided for a principal holding only it: no person's facts involved
        role_eng = policy_edits.role_engine(packs, live, domain, str(body.subject))
        if role_eng is None:
            raise ValidationError(
                f"{body.subject!s:.80} is not a role of the workspace's pack",
                errors=[{"loc": ["subject"], "message": "a role of the workspace's pack", "type": "value_error"}],
            )
        directory = authz.directory
        role = body.subject

        def person_of(value: object) -> str | None:
            if value == role:
                return policy_edits.PROBE
            return directory.lookup(value) if directory is not None else None

        prep = decisions.prepare(body.as_check(), person_of, role_eng)
        if prep.request is None:
            decision = Decision(False, prep.early or Reason.INVALID_REQUEST.value, live.revision)
        else:
            decision = role_eng.decide(prep.request, explain=True)
    else:
        decision = decisions.decide([body.as_check()], eng, explain=True)[0]
    out = decision.as_dict(explain=True)
    out.update({"draft": bool(body.changes), "problems": problems})
    return jsonify(out)


@bp.post("/rollback/preview")
@api_doc(
    "What rolling back to a revision would do (verified like any edit): rules, flips, people. Nothing is written.",
    tags=["policy"],
    body=RollbackIn,
    response=RollbackPreviewResult,
    auth="session",
    errors=(400, 401, 403, 415, 422),
)
@requires("propose_policy_change")
def rollback_preview() -> Response:
    """The preview shown before a rollback; ``valid: false`` lists why it would be refused."""
    body = parse_body(RollbackIn)
    d = policy_edits.rollback_draft(db.session(), body.to_revision, _model_text(), current_app.config["POLICY_DIR"])
    if d.before is None and d.after is not None:
        d.before = d.after
    out = _preview_payload(policy_edits.preview(d, authz.engine))
    out.update(
        {
            "to_revision": body.to_revision,
            "added": [list(c.rule) for c in d.changes if c.op == "add"],
            "removed": [list(c.rule) for c in d.changes if c.op == "remove"],
            "documents": sorted(d.touched_documents),
        }
    )
    return jsonify(out)


@bp.post("/apply")
@api_doc(
    "Apply a change atomically as a new revision (audited). 409 if expected_revision is stale.",
    tags=["policy"],
    body=ProposalIn,
    response=ApplyResult,
    status=201,
    auth="session",
    errors=(400, 401, 403, 409, 415, 422),
)
@requires("apply_policy_change")
def apply_change() -> tuple[Response, int]:
    """Validate and apply; every decision after it reports the new revision."""
    body = parse_body(ProposalIn)
    user = _editor()
    d = policy_edits.commit(
        db.session(),
        authz,
        lambda session: policy_edits.apply(
            session,
            _edits(body.changes),
            _model_text(),
            current_app.config["POLICY_DIR"],
            actor_id=user.id,
            message=body.message,
            expected_revision=body.expected_revision,
        ),
    )
    observability.get().policy_edits.labels("edit").inc()
    return jsonify({"revision": d.revision, "changes": len(d.changes), "documents": sorted(d.touched_documents)}), 201


@bp.post("/rollback")
@api_doc(
    "Roll pack rules and documents back to an earlier revision, as a new revision.",
    tags=["policy"],
    body=RollbackIn,
    response=ApplyResult,
    status=201,
    auth="session",
    errors=(400, 401, 403, 415, 422),
)
@requires("rollback_policy")
def rollback() -> tuple[Response, int]:
    """Undo every pack-rule and document change after ``to_revision`` (memberships are kept)."""
    body = parse_body(RollbackIn)
    user = _editor()
    d = policy_edits.commit(
        db.session(),
        authz,
        lambda session: policy_edits.rollback(
            session,
            body.to_revision,
            _model_text(),
            actor_id=user.id,
            message=body.message,
            policy_dir=current_app.config["POLICY_DIR"],
        ),
    )
    observability.get().policy_edits.labels("rollback").inc()
    return jsonify({"revision": d.revision, "changes": len(d.changes), "documents": sorted(d.touched_documents)}), 201


# -- service tokens ------------------------------------------------------------------------------
def _token_out(t: ServiceToken, secret: str | None = None) -> dict[str, Any]:
    return TokenOut(
        name=t.name,
        created_at=_iso(t.created_at) or "",
        revoked_at=_iso(t.revoked_at),
        last_used_at=_iso(t.last_used_at),
        binding=t.binding,
        migrated=bool(t.migrated),
        feed=bool(t.feed),
        token=secret,
    ).model_dump(exclude_none=True)


@bp.get("/tokens")
@api_doc(
    "Service tokens of the decision API (never their secrets).",
    tags=["tokens"],
    response=TokensResult,
    auth="session",
    errors=(401, 403),
)
@requires("manage_service_tokens")
def list_tokens() -> Response:
    """Every service token."""
    return jsonify({"items": [_token_out(t) for t in tokens.list_tokens(db.session())]})


@bp.post("/tokens")
@api_doc(
    "Create a service token; its secret is in this response only.",
    tags=["tokens"],
    body=TokenIn,
    response=TokenOut,
    status=201,
    auth="session",
    errors=(400, 401, 403, 409, 415, 422),
)
@requires("manage_service_tokens")
def create_token() -> tuple[Response, int]:
    """Create a token; the secret is shown once."""
    body = parse_body(TokenIn)
    with in_transaction(db.session()):
        row, secret = tokens.create_token(
            db.session(),
            body.name,
            actor_id=_editor().id,
            workspaces=body.workspaces,
            platform=body.platform,
            all_workspaces=body.all_workspaces,
            feed=body.feed,
        )
    return jsonify(_token_out(row, secret)), 201


@bp.delete("/tokens/<name>")
@api_doc("Revoke a service token.", tags=["tokens"], response=TokenOut, auth="session", errors=(400, 401, 403, 404))
@requires("manage_service_tokens")
def revoke_token(name: str) -> Response:
    """Revoke a token by name (idempotent)."""
    with in_transaction(db.session()):
        row = tokens.revoke_token(db.session(), name, actor_id=_editor().id)
    return jsonify(_token_out(row))


# -- drafts and change requests ------------------------------------------------------------------------
def _checks(changes: list[dict[str, Any]]) -> dict[str, Any]:
    """The checks of changes at the live revision (verifier, policy tests, flips, replay; nothing written)."""
    return crs.evaluate(db.session(), authz, changes, _model_text(), current_app.config["POLICY_DIR"])


def _checks_out(checks: dict[str, Any], people: bool) -> dict[str, Any]:
    """Stored checks as shown: the replay's sample names people (emails) only with view_people."""
    out = dict(checks)
    replay = out.get("replay")
    if isinstance(replay, dict):
        sample = replay.get("sample") or []
        ids = {int(s[0][5:]) for s in sample if str(s[0])[5:].isdigit()} if people else set()
        emails = _emails(ids)

        def who(key: str) -> str:
            return emails.get(int(key[5:]), key) if people and key[5:].isdigit() else "someone"

        out["replay"] = {
            **replay,
            "sample": [
                {"subject": who(str(s[0])), "workspace": s[1], "action": s[2], "type": s[3], "allowed_after": s[4]}
                for s in sample
            ],
        }
    return out


def _cr_out(cr: ChangeRequest, full: bool = False) -> dict[str, Any]:
    user = _editor()
    steps = crs.events(db.session(), cr)
    approved = crs.approvers(steps)
    ids = {i for i in [cr.author_id, *(e.actor_id for e in steps)] if i is not None}
    emails = _emails(ids)
    approvals = current_app.config.get("POLICY_APPROVALS") or {}
    domain = policy_domain()
    out: dict[str, Any] = {
        "id": cr.id,
        "status": cr.status,
        "title": cr.title,
        "why": cr.why,
        "author": emails.get(cr.author_id) if cr.author_id is not None else None,
        "mine": cr.author_id == user.id,
        "packs": list(cr.packs or []),
        "base_revision": cr.base_revision,
        "current_revision": authz.engine.revision,
        "applied_revision": cr.applied_revision,
        "created_at": _iso(cr.created_at),
        "updated_at": _iso(cr.updated_at),
        "changes": len(cr.changes or []),
        "valid": bool((cr.checks or {}).get("valid")),
        "approvals": [emails.get(i, f"#{i}") for i in approved],
        "approvals_required": crs.required_approvals(approvals, list(cr.packs or [])),
    }
    if full:
        is_open = cr.status == crs.OPEN
        out.update(
            {
                "edits": list(cr.changes or []),
                "checks": _checks_out(dict(cr.checks or {}), _sees_people()),
                "events": [
                    {
                        "kind": e.kind,
                        "actor": emails.get(e.actor_id) if e.actor_id is not None else None,
                        "body": e.body,
                        "created_at": _iso(e.created_at),
                    }
                    for e in steps
                ],
                "may": {
                    "edit": is_open and crs.allowed(authz, user, domain, "edit_change_request", cr),
                    "comment": crs.allowed(authz, user, domain, "comment_change_request", cr),
                    "approve": is_open
                    and user.id not in approved
                    and crs.allowed(authz, user, domain, "approve_change_request", cr),
                    "reject": is_open and crs.allowed(authz, user, domain, "reject_change_request", cr),
                    "apply": is_open and crs.allowed(authz, user, domain, "apply_policy_change", cr),
                },
            }
        )
    return out


@bp.get("/draft")
@api_doc("The signed-in editor's working draft (kept on the server for its owner).", tags=["change requests"],
         auth="session", errors=(401, 403))  # fmt: skip
@requires("propose_policy_change")
def get_draft() -> Response:
    """The working draft: its changes (empty when there is none)."""
    cr = crs.draft_of(db.session(), _editor())
    return jsonify({"changes": list(cr.changes) if cr else [], "updated_at": _iso(cr.updated_at) if cr else None})


@bp.put("/draft")
@api_doc("Replace the working draft (an empty list discards it).", tags=["change requests"], body=DraftIn,
         auth="session", errors=(400, 401, 403, 415, 422))  # fmt: skip
@requires("propose_policy_change")
def put_draft() -> Response:
    """Save the working draft; nothing is checked or applied."""
    body = bodies.parse(DraftIn)
    cr = crs.save_draft(db.session(), authz, policy_domain(), _editor(), stored(body.changes))
    return jsonify({"changes": list(cr.changes) if cr else [], "updated_at": _iso(cr.updated_at) if cr else None})


@bp.get("/change-requests")
@api_doc("Submitted change requests, newest first (?status=open|applied|rejected).", tags=["change requests"],
         auth="session", errors=(401, 403, 422))  # fmt: skip
@requires("read_policy")
def list_change_requests() -> Response:
    """Change requests with their status and approvals."""
    status = request.args.get("status") or None
    if status is not None and status not in crs.STATUSES[1:]:
        raise ValidationError("status must be open, applied or rejected", errors=[{"loc": ["status"]}])
    rows = crs.listing(db.session(), status)
    return jsonify({"items": [_cr_out(cr) for cr in rows]})


@bp.post("/change-requests")
@api_doc("Submit a change request (title, why; changes, or the working draft), checked at the live revision.",
         tags=["change requests"], body=ChangeRequestIn, status=201, auth="session",
         errors=(400, 401, 403, 415, 422))  # fmt: skip
@requires("propose_policy_change")
def create_change_request() -> tuple[Response, int]:
    """A new open change request with its checks; the working draft it came from is gone."""
    body = bodies.parse(ChangeRequestIn)
    user = _editor()
    changes = stored(body.changes) if body.changes is not None else None
    if changes is None:
        mine = crs.draft_of(db.session(), user)
        changes = list(mine.changes) if mine is not None else []
    if not changes:
        raise ValidationError("a change request needs at least one change (your draft is empty)")
    checks = _checks(changes)
    cr = crs.submit(db.session(), authz, policy_domain(), user, body.title, body.why,
                    stored(body.changes) if body.changes is not None else None, checks)  # fmt: skip
    return jsonify(_cr_out(cr, full=True)), 201


@bp.get("/change-requests/<int:cr_id>")
@api_doc("One change request: changes, checks, impact, replay, review steps, what you may do.",
         tags=["change requests"], auth="session", errors=(401, 403, 404))  # fmt: skip
@requires("read_policy")
def get_change_request(cr_id: int) -> Response:
    """One change request in full."""
    return jsonify(_cr_out(crs.get(db.session(), min(cr_id, MAX_ID)), full=True))


@bp.patch("/change-requests/<int:cr_id>")
@api_doc("The author edits an open change request; new changes are checked again and need new approvals.",
         tags=["change requests"], body=ChangeRequestPatch, auth="session",
         errors=(400, 401, 403, 404, 409, 415, 422))  # fmt: skip
@requires("propose_policy_change")
def update_change_request(cr_id: int) -> Response:
    """Update title, why or changes."""
    body = bodies.parse(ChangeRequestPatch)
    changes = stored(body.changes) if body.changes is not None else None
    checks = _checks(changes) if changes else None
    cr = crs.update(db.session(), authz, policy_domain(), _editor(), min(cr_id, MAX_ID), body.title, body.why,
                    changes, checks)  # fmt: skip
    return jsonify(_cr_out(cr, full=True))


@bp.post("/change-requests/<int:cr_id>/comments")
@api_doc("Comment on a change request.", tags=["change requests"], body=CommentIn, status=201, auth="session",
         errors=(400, 401, 403, 404, 415, 422))  # fmt: skip
@requires("comment_change_request")
def comment_change_request(cr_id: int) -> tuple[Response, int]:
    """Add a comment."""
    body = bodies.parse(CommentIn)
    cr = crs.comment(db.session(), authz, policy_domain(), _editor(), min(cr_id, MAX_ID), body.body)
    return jsonify(_cr_out(cr, full=True)), 201


@bp.post("/change-requests/<int:cr_id>/approve")
@api_doc("Approve a change request (policy admins; never one's own).", tags=["change requests"], body=ReviewIn,
         auth="session", errors=(400, 401, 403, 404, 409, 415, 422))  # fmt: skip
@requires("read_policy")
def approve_change_request(cr_id: int) -> Response:
    """Approve (Casbin: approve_change_request with the author as owner)."""
    body = bodies.parse(ReviewIn)
    cr = crs.approve(db.session(), authz, policy_domain(), _editor(), min(cr_id, MAX_ID), body.comment)
    return jsonify(_cr_out(cr, full=True))


@bp.post("/change-requests/<int:cr_id>/reject")
@api_doc("Reject a change request (policy admins).", tags=["change requests"], body=ReviewIn, auth="session",
         errors=(400, 401, 403, 404, 409, 415, 422))  # fmt: skip
@requires("reject_change_request")
def reject_change_request(cr_id: int) -> Response:
    """Close without applying."""
    body = bodies.parse(ReviewIn)
    cr = crs.reject(db.session(), authz, policy_domain(), _editor(), min(cr_id, MAX_ID), body.comment)
    return jsonify(_cr_out(cr, full=True))


@bp.post("/change-requests/<int:cr_id>/apply")
@api_doc("Apply an approved change request as a new revision (validated again at the current revision; 409 if "
         "it lacks approvals or no longer applies cleanly).", tags=["change requests"], body=ApplyRequestIn,
         status=201, auth="session", errors=(400, 401, 403, 404, 409, 415, 422))  # fmt: skip
@requires("apply_policy_change")
def apply_change_request(cr_id: int) -> tuple[Response, int]:
    """Apply through the same path as ``POST /v1/policy/apply``."""
    body = bodies.parse(ApplyRequestIn)
    d = crs.apply(
        db.session(),
        authz,
        policy_domain(),
        _editor(),
        min(cr_id, MAX_ID),
        body.message,
        _model_text(),
        current_app.config["POLICY_DIR"],
        current_app.config.get("POLICY_APPROVALS") or {},
    )
    observability.get().policy_edits.labels("edit").inc()
    return jsonify({"revision": d.revision, "changes": len(d.changes), "documents": sorted(d.touched_documents)}), 201
