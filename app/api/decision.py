"""The decision API for services (bearer service token): check, batch, permissions, assignable roles, who-can.

Input errors are of two kinds. A body that does not match the schema (not JSON, missing fields,
wrong JSON types, unknown fields) is a 422 problem. A well-typed value that is not a valid
identifier (``"action": "Drop Table"``, ``"workspace": "a,b"``, ``"group": "*"``) is answered like
the decision core answers it: ``allowed: false, reason: invalid_request`` — so one bad item never
fails a whole batch, and the API can never be talked into a 500 by a value.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Blueprint, Response, current_app, jsonify, request
from pydantic import BaseModel
from sqlalchemy import or_, select

from app import observability
from app.api import api_doc, json_payload, parse_query, validate
from app.api.schemas import (
    AssignableQuery,
    AssignableResult,
    BatchRequest,
    BatchResult,
    CheckItem,
    CheckRequest,
    CheckResult,
    ExplainQuery,
    PermissionsQuery,
    PermissionsResult,
    Principal,
    WhoCanQuery,
    WhoCanResult,
)
from app.authz import AccessRequest, Decision, PolicyEngine, Reason, ResourceFacts
from app.authz.identifiers import InvalidIdentifierError, group_key, is_prefixed, team_key, valid_pack
from app.errors import (
    BadRequestError,
    PayloadTooLargeError,
    UnauthenticatedError,
    UnavailableError,
    ValidationError,
)
from app.models import User

bp = Blueprint("decision", __name__, url_prefix="/v1")

# A user reference that never names a real user (real keys are user:<digits>): unknown people
# in resource attributes simply match nothing.
NOBODY = "user:unknown"
# A user reference never holds whitespace, control characters, commas or "*": such a value names
# nobody (it is not trimmed into a real user), so a malformed subject can never be allowed.
_BAD_REF = re.compile(r"[\s\x00-\x1f\x7f,*]")
M = TypeVar("M", bound=BaseModel)
MAX_USER_ID = 2**31 - 1  # users.id is an INTEGER column: larger ids name nobody (PostgreSQL refuses to compare them)
WHO_CAN_SCAN_FACTOR = 20
WHO_CAN_MIN_SCAN = 2000


# -- authentication ------------------------------------------------------------------------------
@bp.before_request
def _authenticate() -> None:
    from app.extensions import db
    from app.services import tokens

    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="decision-api"'}
    if scheme.lower() != "bearer" or not secret.strip():
        raise UnauthenticatedError("send a service token: Authorization: Bearer <token>", headers=challenge)
    token = tokens.authenticate(db.session(), secret.strip())
    if token is None:
        raise UnauthenticatedError("the service token is invalid or revoked", headers=challenge)
    request.environ["learnauthz.service_token"] = token.name


# -- helpers -------------------------------------------------------------------------------------
def engine_at(min_revision: int | None) -> PolicyEngine:
    """The engine, at least at min_revision (503 problem with Retry-After after the bounded wait)."""
    from app.extensions import authz

    if not min_revision:
        return authz.engine
    try:
        return authz.wait_for(min_revision)
    except UnavailableError as exc:
        raise UnavailableError(exc.detail, headers={"Retry-After": "1"}, **exc.extra) from exc


def request_json() -> Any:
    """The JSON body (415/400 problems as json_payload); nesting too deep for the parser is a 400 too."""
    try:
        return json_payload()
    except RecursionError:
        raise BadRequestError("malformed JSON: nested too deeply") from None


def parse_json_body(model: type[M]) -> M:
    """The JSON object body validated by model (422 listing every problem)."""
    data = request_json()
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object", errors=[{"loc": [], "message": "expected an object"}])
    return validate(model, data)


def _query_min_revision() -> int | None:
    raw = request.args.get("min_revision")
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise ValidationError(
            "min_revision must be a non-negative integer",
            errors=[{"loc": ["query", "min_revision"], "message": "expected a non-negative integer"}],
        )
    return int(raw)


def _explain_flag() -> bool:
    q = parse_query(ExplainQuery)
    return q.explain in ("true", "1")


def _freshest(*values: int | None) -> int | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _ref(value: object) -> tuple[str, int | str] | None:
    """("id", n) or ("email", address) for a user reference; None if it can name nobody."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return ("id", value) if 0 < value <= MAX_USER_ID else None
    if not isinstance(value, str) or not value or len(value) > 254 or _BAD_REF.search(value):
        return None
    body = value[5:] if value.startswith("user:") else value
    if body.isascii() and body.isdigit():  # str.isdigit() alone admits "²" (int() fails) and "٣" (int() = 3)
        return ("id", int(body)) if len(body) < 19 and 0 < int(body) <= MAX_USER_ID else None
    if "@" in body:
        return ("email", body.lower())
    return None


def resolve_users(refs: Iterable[object]) -> dict[tuple[str, int | str], str]:
    """User references → user keys, in one query; unknown references are absent."""
    wanted = {r for r in (_ref(v) for v in refs) if r is not None}
    if not wanted:
        return {}
    from app.extensions import db

    ids = [v for k, v in wanted if k == "id"]
    emails = [v for k, v in wanted if k == "email"]
    conds = []
    if ids:
        conds.append(User.id.in_(ids))
    if emails:
        conds.append(User.email.in_(emails))
    out: dict[tuple[str, int | str], str] = {}
    for uid, email in db.session.execute(select(User.id, User.email).where(or_(*conds))):
        key = f"user:{uid}"
        out[("id", int(uid))] = key
        out[("email", str(email).lower())] = key
    return out


def _domain(workspace: str) -> str:
    return workspace if workspace.startswith(("ws:", "platform:")) else f"ws:{workspace}"


def _scope_key(value: str | None, kind: str) -> str:
    if not value:
        return ""
    if value.startswith(kind + ":"):
        if not is_prefixed(value, kind):
            raise InvalidIdentifierError(f"invalid {kind}")
        return value
    return group_key(value) if kind == "group" else team_key(value)


@dataclass(frozen=True)
class Prepared:
    """A check ready for the engine, or the decision already known without it."""

    request: AccessRequest | None
    early: str | None = None  # reason when decided before the engine


def prepare(item: CheckItem, users: dict[tuple[str, int | str], str], eng: PolicyEngine) -> Prepared:
    """Turn an API check into an AccessRequest (ids → keys); unknown subject and bad values decided here."""
    sref = _ref(item.subject)
    subject = users.get(sref) if sref else None
    if subject is None:
        return Prepared(None, Reason.UNKNOWN_SUBJECT.value)
    domain = _domain(item.workspace)
    res = item.resource
    if res is None:
        return Prepared(AccessRequest(subject, domain, ResourceFacts(), item.action))
    attrs = res.attributes

    def person(value: object) -> str:
        if value is None:
            return ""
        ref = _ref(value)
        return users.get(ref, NOBODY) if ref else NOBODY

    try:
        group = _scope_key(attrs.group, "group")
        team = _scope_key(attrs.team, "team")
    except InvalidIdentifierError:
        return Prepared(None, Reason.INVALID_REQUEST.value)
    new_role = ""
    if attrs.new_role:
        if attrs.new_role.startswith("role:"):
            new_role = attrs.new_role
        else:
            pack = eng.pack_of(domain)
            if not valid_pack(attrs.new_role):
                return Prepared(None, Reason.INVALID_REQUEST.value)
            new_role = pack.role_key(attrs.new_role) if pack is not None else ""
    obj = ResourceFacts(
        type=res.type,
        id=str(res.id),
        assignee=person(attrs.assignee),
        owner=person(attrs.owner),
        member=person(attrs.member),
        group=group,
        team=team,
        new_role=new_role,
    )
    return Prepared(AccessRequest(subject, domain, obj, item.action))


def _item_refs(items: Sequence[CheckItem]) -> list[object]:
    refs: list[object] = []
    for it in items:
        refs.append(it.subject)
        if it.resource is not None:
            a = it.resource.attributes
            refs.extend(v for v in (a.assignee, a.owner, a.member) if v is not None)
    return refs


def decide(items: Sequence[CheckItem], eng: PolicyEngine, explain: bool) -> list[Decision]:
    """Decisions for items, in order: one user query for all of them, then the engine."""
    users = resolve_users(_item_refs(items))
    out = []
    for it in items:
        prep = prepare(it, users, eng)
        if prep.request is None:
            out.append(Decision(False, prep.early or Reason.INVALID_REQUEST.value, eng.revision))
        else:
            out.append(eng.explain(prep.request) if explain else eng.check(prep.request))
    return out


def _record(endpoint: str, items: Sequence[CheckItem], decisions: Sequence[Decision], seconds: float) -> None:
    observability.record_decisions((d.allowed, d.reason) for d in decisions)
    observability.observe_decision_time(endpoint, seconds, len(decisions))
    if float(current_app.config.get("DECISION_LOG_SAMPLE", 0.0) or 0.0) <= 0.0:
        return
    per_ms = round(seconds * 1000 / max(len(decisions), 1), 3)
    observability.log_decisions(
        {
            "endpoint": endpoint,
            "token": request.environ.get("learnauthz.service_token"),
            "subject": it.subject,
            "workspace": it.workspace,
            "action": it.action,
            "resource": {"type": it.resource.type, "id": str(it.resource.id)} if it.resource else None,
            "allowed": d.allowed,
            "reason": d.reason,
            "revision": d.revision,
            "ms": per_ms,
        }
        for it, d in zip(items, decisions)
    )


def _as_result(d: Decision, explain: bool) -> dict[str, Any]:
    return d.as_dict(explain)


# -- endpoints -----------------------------------------------------------------------------------
@bp.post("/check")
@api_doc(
    "Decide one request: may subject do action in workspace (on resource)?",
    tags=["decision"],
    body=CheckRequest,
    query=ExplainQuery,
    response=CheckResult,
    auth="token",
    errors=(401, 415, 422, 503),
)
def check() -> Response:
    """Decide one request; ``?explain=true`` adds the matched rule and the role path."""
    explain = _explain_flag()
    body = parse_json_body(CheckRequest)
    eng = engine_at(_freshest(body.min_revision, _query_min_revision()))
    started = time.perf_counter()
    decision = decide([body], eng, explain)[0]
    _record("check", [body], [decision], time.perf_counter() - started)
    return jsonify(_as_result(decision, explain))


@bp.post("/check/batch")
@api_doc(
    "Decide many requests, answered in order (at most BATCH_MAX_CHECKS).",
    tags=["decision"],
    body=BatchRequest,
    query=ExplainQuery,
    response=BatchResult,
    auth="token",
    errors=(401, 413, 415, 422, 503),
)
def check_batch() -> Response:
    """Decide many requests in order; over BATCH_MAX_CHECKS is a 413 problem."""
    explain = _explain_flag()
    data = request_json()
    limit = int(current_app.config["BATCH_MAX_CHECKS"])
    if isinstance(data, dict) and isinstance(data.get("checks"), list) and len(data["checks"]) > limit:
        raise PayloadTooLargeError(f"at most {limit} checks per batch; got {len(data['checks'])}", max_checks=limit)
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object", errors=[{"loc": [], "message": "expected an object"}])
    body = validate(BatchRequest, data)
    eng = engine_at(_freshest(body.min_revision, _query_min_revision()))
    started = time.perf_counter()
    decisions = decide(body.checks, eng, explain)
    _record("batch", body.checks, decisions, time.perf_counter() - started)
    return jsonify({"results": [_as_result(d, explain) for d in decisions], "revision": eng.revision})


@bp.get("/permissions")
@api_doc(
    "Every action of the workspace's pack, decided for a subject (for UIs).",
    tags=["decision"],
    query=PermissionsQuery,
    response=PermissionsResult,
    auth="token",
    errors=(401, 422, 503),
)
def permissions() -> Response:
    """Every action of the workspace's pack, decided for the subject on no particular resource."""
    q = parse_query(PermissionsQuery)
    eng = engine_at(q.min_revision)
    domain = _domain(q.workspace)
    pack = eng.pack_of(domain)
    users = resolve_users([q.subject])
    sref = _ref(q.subject)
    subject = users.get(sref) if sref else None
    decisions: dict[str, Decision]
    if pack is None:
        decisions = {}
    elif subject is None:
        decisions = {a.id: Decision(False, Reason.UNKNOWN_SUBJECT.value, eng.revision) for a in pack.actions}
    else:
        decisions = eng.permissions(subject, domain)
    observability.record_decisions((d.allowed, d.reason) for d in decisions.values())
    reason = Reason.UNKNOWN_WORKSPACE.value if pack is None else (None if subject else Reason.UNKNOWN_SUBJECT.value)
    return jsonify(
        {
            "subject": subject or q.subject,
            "workspace": domain,
            "pack": pack.id if pack else None,
            "revision": eng.revision,
            "reason": reason,
            "allowed": [a for a, d in decisions.items() if d.allowed],
            "decisions": {a: d.as_dict() for a, d in decisions.items()},
        }
    )


@bp.get("/assignable-roles")
@api_doc(
    "Roles an actor may grant in a workspace (to a target member, if given).",
    tags=["decision"],
    query=AssignableQuery,
    response=AssignableResult,
    auth="token",
    errors=(401, 422, 503),
)
def assignable_roles() -> Response:
    """Role ids of the workspace's pack the actor may grant, per the rank rules and grant exceptions."""
    q = parse_query(AssignableQuery)
    eng = engine_at(q.min_revision)
    domain = _domain(q.workspace)
    users = resolve_users([q.actor] + ([q.target] if q.target else []))
    aref = _ref(q.actor)
    actor = users.get(aref) if aref else None
    target = ""
    if q.target:
        tref = _ref(q.target)
        target = users.get(tref, NOBODY) if tref else NOBODY
    roles = eng.assignable_roles(actor, domain, target) if actor else []
    reason = None
    if eng.pack_of(domain) is None:
        reason = Reason.UNKNOWN_WORKSPACE.value
    elif actor is None:
        reason = Reason.UNKNOWN_SUBJECT.value
    return jsonify(
        {
            "actor": actor or q.actor,
            "workspace": domain,
            "target": target or None,
            "revision": eng.revision,
            "reason": reason,
            "roles": roles,
        }
    )


def _encode_cursor(after: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{after}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, after = raw.partition(":")
        if version != "v1" or not after.isdigit():
            raise ValueError(raw)
        return int(after)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ValidationError(
            "invalid cursor", errors=[{"loc": ["query", "cursor"], "message": "use next_cursor as returned"}]
        ) from exc


def candidates(eng: PolicyEngine, domain: str) -> list[tuple[int, str]]:
    """(user id, via) of every workspace member and platform role holder of the pack, by id."""
    pack = eng.pack_of(domain)
    if pack is None:
        return []
    found: dict[int, str] = {}
    for user in eng.members_of(domain):
        if user.startswith("user:") and user[5:].isdigit():
            found[int(user[5:])] = "workspace"
    prefix = f"role:{pack.id}:"
    for user, roles in eng.g.links.get("*", {}).items():
        if user.startswith("user:") and user[5:].isdigit() and any(r.startswith(prefix) for r in roles):
            found.setdefault(int(user[5:]), "platform")
    return sorted(found.items())


@bp.get("/who-can")
@api_doc(
    "Who in a workspace may perform an action (paginated; complete tells whether every member was examined).",
    tags=["decision"],
    query=WhoCanQuery,
    response=WhoCanResult,
    auth="token",
    errors=(401, 422, 503),
)
def who_can() -> Response:
    """Members and platform role holders allowed the action (on no particular resource), a page at a time.

    A page ends when it holds ``limit`` people or after examining a bounded number of candidates;
    either way ``next_cursor`` continues and ``complete`` is true only when nobody is left.
    """
    q = parse_query(WhoCanQuery)
    eng = engine_at(q.min_revision)
    domain = _domain(q.workspace)
    after = _decode_cursor(q.cursor) if q.cursor else 0
    pool = [c for c in candidates(eng, domain) if c[0] > after]
    budget = max(q.limit * WHO_CAN_SCAN_FACTOR, WHO_CAN_MIN_SCAN)
    found: list[tuple[int, str]] = []
    examined = 0
    last = after
    for uid, via in pool:
        if len(found) >= q.limit or examined >= budget:
            break
        examined += 1
        last = uid
        if eng.check(AccessRequest(f"user:{uid}", domain, ResourceFacts(), q.action)).allowed:
            found.append((uid, via))
    complete = examined == len(pool)
    emails: dict[int, str] = {}
    if found:
        from app.extensions import db

        rows = db.session.execute(select(User.id, User.email).where(User.id.in_([u for u, _ in found])))
        emails = {int(uid): str(email) for uid, email in rows}
    items = [Principal(subject=f"user:{u}", user_id=u, email=emails.get(u), via=via) for u, via in found]
    return jsonify(
        WhoCanResult(
            workspace=domain,
            action=q.action,
            revision=eng.revision,
            items=items,
            next_cursor=None if complete else _encode_cursor(last),
            complete=complete,
            examined=examined,
        ).model_dump()
    )
