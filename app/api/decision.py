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
import operator
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any, NamedTuple

import msgspec
import orjson
from flask import Blueprint, Response, current_app, jsonify, request
from msgspec import Meta, Struct
from sqlalchemy import select

from app import observability
from app.api import api_doc, bodies
from app.api.params import bound_to, members_unique, parse_json, parse_query, service_token
from app.api.schemas import (
    AssignableQuery,
    AssignableResult,
    BatchResult,
    CheckResult,
    ExplainQuery,
    PermissionsQuery,
    PermissionsResult,
    Principal,
    WhoCanQuery,
    WhoCanResult,
)
from app.authz import ANY_TARGET, AccessRequest, Decision, PolicyEngine, Reason, ResourceFacts
from app.authz.selection import Selection

# Reference resolution and fact preparation live in app.decisions.resolution (shared with AuthZEN);
# these names stay importable from here for existing callers.
from app.decisions.resolution import (
    NO_ATTRIBUTES,
    NOBODY,
    Check,
    CheckAttributes,
    candidates,
    decide,
    require_held,
    resolve_users,
)
from app.decisions.resolution import domain_of as _domain
from app.decisions.resolution import user_ref as _ref
from app.errors import (
    AppError,
    PayloadTooLargeError,
    UnavailableError,
    ValidationError,
)
from app.extensions import authz, db
from app.models import User
from app.policy.directory import Directory

bp = Blueprint("decision", __name__, url_prefix="/v1")

WHO_CAN_SCAN_FACTOR = 20
WHO_CAN_MIN_SCAN = 2000


# -- authentication ------------------------------------------------------------------------------
@bp.before_request
def _authenticate() -> None:
    service_token("decision-api")


# -- helpers -------------------------------------------------------------------------------------
def engine_at(min_revision: int | None) -> PolicyEngine:
    """The engine, at least at min_revision: 422 at once for a revision that does not exist yet,
    503 problem with Retry-After after the bounded wait for one that does."""
    authz.require_fresh()  # POLICY_MAX_STALENESS_SECONDS: past it, 503 rather than an old policy
    if not min_revision:
        return authz.engine
    try:
        return authz.wait_for(min_revision)
    except UnavailableError as exc:
        raise UnavailableError(exc.detail, headers={"Retry-After": "1"}, **exc.extra) from exc


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


# -- request bodies: one schema, one parse ---------------------------------------------------------
# The msgspec structs below (with app.decisions.resolution.Check) are the only schema of a check
# request: they decode the body, and /openapi.json is generated from them (app.api.docs). Measured
# on one /v1/check body (same run): the former hand-written checks 3.53 µs, pydantic 2.21 µs,
# msgspec 0.32 µs. The WSGI fast path (app.api.decision_wsgi) and the views call the same
# parse_and_decide; a body the fast path read is left parsed (or refused) in the WSGI environ
# for the view, which never reads or parses it again.
class CheckRequest(Check, frozen=True, forbid_unknown_fields=True):
    """``POST /v1/check``: one authorization question."""

    min_revision: Annotated[int, Meta(ge=0, description="answer from a policy at least this fresh")] | None = None


class BatchRequest(Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /v1/check/batch``: answered in order."""

    checks: list[Check]
    min_revision: Annotated[int, Meta(ge=0, description="answer from a policy at least this fresh")] | None = None


Body = CheckRequest | BatchRequest
CHECK_BODY = msgspec.json.Decoder(CheckRequest)
BATCH_BODY = msgspec.json.Decoder(BatchRequest)
PARSED = "learnauthz.decision_body"  # environ: the body the fast path read, parsed (or its AppError, or its bytes)
_SINGLE = "decision.check"


class Defer(Exception):  # noqa: N818 - a signal, not an error
    """The caller cannot answer this request exactly as the view would (the fast path hands it on)."""


def parse(endpoint: str, raw: bytes, limit: int) -> Body:
    """The body of ``endpoint`` (``decision.check`` or ``decision.check_batch``): 400 if not I-JSON
    (malformed, a repeated key), 413 over ``limit`` checks, 422 what the structs refuse."""
    single = endpoint == _SINGLE
    try:
        decoded: Body = (CHECK_BODY if single else BATCH_BODY).decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
        doc = parse_json(raw)  # 400 for what is not I-JSON, with the app's one wording
        if not isinstance(doc, dict):
            raise bodies.not_an_object() from None
        checks = doc.get("checks")
        if not single and isinstance(checks, list) and len(checks) > limit:
            raise _too_many(len(checks), limit) from None
        if isinstance(exc, msgspec.ValidationError):
            raise ValidationError(bodies.SCHEMA_MISMATCH, errors=bodies.errors_of(exc)) from None
        # JSON the parser reads and msgspec could not (none known): the structs judge the document
        decoded = bodies.convert(doc, CheckRequest) if single else bodies.convert(doc, BatchRequest)
    if isinstance(decoded, CheckRequest):
        counted = _members(decoded)
    else:
        counted = 1 + sum(map(_members, decoded.checks))
        if len(decoded.checks) > limit:
            raise _too_many(len(decoded.checks), limit)
    if decoded.min_revision is not None:
        counted += 1
    if not (_plain_unique(decoded, raw, counted) or members_unique(raw, counted)):
        parse_json(raw)  # msgspec keeps the last of two equal keys: the parser refuses them (400)
    return decoded


def _plain_unique(decoded: Body, raw: bytes, counted: int) -> bool:
    """:func:`members_unique` for the commonest body, a check of three strings (or an id) without
    backslash: its colons inside strings are those of the decoded strings (no escape can hide one),
    so the colons outside them are counted without splitting the body."""
    if not isinstance(decoded, CheckRequest) or decoded.resource is not None or decoded.properties is not None:
        return False
    if b"\\" in raw:
        return False
    subject = decoded.subject
    inside = decoded.workspace.count(":") + decoded.action.count(":")
    if isinstance(subject, str):
        inside += subject.count(":")
    return raw.count(b":") - inside == counted


def _too_many(count: int, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"at most {limit} checks per batch; got {count}", max_checks=limit)


_ATTRIBUTE_DEFAULTS = tuple(f.default for f in msgspec.structs.fields(CheckAttributes))


def _members(check: Check) -> int:
    """JSON members a decoded check provably had (subject, workspace, action, and every non-default
    resource field): a lower bound for :func:`members_unique`, never counting what may be absent."""
    r = check.resource
    if r is None:
        return 3
    attributes = r.attributes
    if attributes is NO_ATTRIBUTES:  # msgspec's default object: no "attributes" member
        return 4 + (r.type != "") + (r.id != "")
    present: int = sum(map(operator.ne, msgspec.structs.astuple(attributes), _ATTRIBUTE_DEFAULTS))
    # resource, its type and id when not the default "", attributes (sent, if empty: a new object) and
    # its members that are not their defaults
    return 5 + (r.type != "") + (r.id != "") + present


class Answered(NamedTuple):
    """A decided request: its checks, their decisions, the seconds deciding took, the JSON answer."""

    items: Sequence[Check]
    decisions: Sequence[Decision]
    seconds: float
    json: bytes


def parse_and_decide(
    endpoint: str,
    body: bytes | Body,
    limit: int,
    engine_for: Callable[[int | None], PolicyEngine],
    admit: Callable[[list[str], PolicyEngine], None],
    explain: bool = False,
    directory: Directory | None = None,
    selection: Selection | None = None,
) -> Answered:
    """The one way a check or batch request is answered, by the view and by the fast path: parse
    the body (unless already parsed), the workspaces held here (``selection``, default the runtime's:
    else 421), the engine for its ``min_revision`` (``engine_for``), the token's binding (``admit``
    the workspaces), the decisions, their JSON."""
    parsed = parse(endpoint, body, limit) if isinstance(body, bytes) else body
    single = isinstance(parsed, CheckRequest)
    items: list[Check] = [parsed] if isinstance(parsed, CheckRequest) else parsed.checks
    workspaces = [it.workspace for it in items]
    require_held(authz.selection if selection is None else selection, workspaces)
    eng = engine_for(parsed.min_revision)
    admit(workspaces, eng)
    started = time.perf_counter()
    decisions = decide(items, eng, explain, directory)
    seconds = time.perf_counter() - started
    if explain:
        payload = decisions[0].as_dict(True) if single else batch_payload(decisions, eng.revision, True)
        return Answered(items, decisions, seconds, orjson.dumps(payload))
    if single:
        return Answered(items, decisions, seconds, encoded(decisions[0]))
    return Answered(
        items,
        decisions,
        seconds,
        b'{"results":[%b],"revision":%d}' % (b",".join(map(encoded, decisions)), eng.revision),
    )


# A decision's JSON (``Decision.as_dict()`` as orjson writes it), kept per decision object: the
# engine shares its decisions (one per memo entry and revision, one per fixed denial), so a batch
# joins cached bytes instead of building and encoding a dict per item. Keyed by id with the object
# held, so an id is never reused while its entry lives; cleared when full.
_ENCODED: dict[int, tuple[Decision, bytes]] = {}
_ENCODED_LIMIT = 4096


def encoded(d: Decision) -> bytes:
    """A decision's JSON in an answer (``as_dict()`` as orjson writes it; cached per decision object)."""
    hit = _ENCODED.get(id(d))
    if hit is not None and hit[0] is d:
        return hit[1]
    raw = orjson.dumps(d.as_dict())
    if len(_ENCODED) >= _ENCODED_LIMIT:
        _ENCODED.clear()
    _ENCODED[id(d)] = (d, raw)
    return raw


def _request_body() -> bytes | Body:
    """What the fast path left in the environ (raising its refusal), else the body's bytes (415 unless JSON)."""
    left = request.environ.pop(PARSED, None)
    if isinstance(left, AppError):
        raise left
    if left is not None:
        return left  # type: ignore[no-any-return]
    return bodies.raw_json()


def _record(endpoint: str, items: Sequence[Check], decisions: Sequence[Decision], seconds: float) -> None:
    observability.record_decisions([(d.allowed, d.reason) for d in decisions])
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


def batch_payload(decisions: Sequence[Decision], revision: int, explain: bool) -> dict[str, Any]:
    """The /v1/check/batch answer."""
    return {"results": [d.as_dict(explain) for d in decisions], "revision": revision}


def json_response(payload: Any) -> Response:
    """A JSON response encoded by orjson (several times faster than the stdlib for big batches)."""
    return Response(orjson.dumps(payload), mimetype="application/json")


def _explain_flag_fast() -> bool:
    return _explain_flag() if request.args else False


# -- endpoints -----------------------------------------------------------------------------------
@bp.post("/check")
@api_doc(
    "Decide one request: may subject do action in workspace (on resource)?",
    tags=["decision"],
    body=CheckRequest,
    query=ExplainQuery,
    response=CheckResult,
    auth="token",
    errors=(401, 403, 415, 422, 503),
)
def check() -> Response:
    """Decide one request; ``?explain=true`` adds the matched rule and the role path."""
    return _answer(_SINGLE, 1, None)


@bp.post("/check/batch")
@api_doc(
    "Decide many requests, answered in order (at most BATCH_MAX_CHECKS).",
    tags=["decision"],
    body=BatchRequest,
    query=ExplainQuery,
    response=BatchResult,
    auth="token",
    errors=(401, 403, 413, 415, 422, 503),
)
def check_batch() -> Response:
    """Decide many requests in order; over BATCH_MAX_CHECKS is a 413 problem."""
    limit = int(current_app.config["BATCH_MAX_CHECKS"])
    return _answer("decision.check_batch", limit, lambda i: f"checks[{i}].workspace")


def _answer(endpoint: str, limit: int, where: Callable[[int], str] | None) -> Response:
    explain = _explain_flag_fast()
    body = _request_body()
    done = parse_and_decide(
        endpoint,
        body,
        limit,
        lambda min_revision: engine_at(_freshest(min_revision, _query_min_revision())),
        lambda workspaces, eng: bound_to(workspaces, eng, where),  # one foreign item of a batch: 403
        explain,
    )
    _record("check" if endpoint == _SINGLE else "batch", done.items, done.decisions, done.seconds)
    return Response(done.json, mimetype="application/json")


@bp.get("/permissions")
@api_doc(
    "Every action of the workspace's pack, decided for a subject (for UIs).",
    tags=["decision"],
    query=PermissionsQuery,
    response=PermissionsResult,
    auth="token",
    errors=(401, 403, 422, 503),
)
def permissions() -> Response:
    """Every action of the workspace's pack, decided for the subject on no particular resource."""
    q = parse_query(PermissionsQuery)
    eng = engine_at(q.min_revision)
    bound_to([q.workspace], eng)
    domain = _domain(q.workspace)
    pack = eng.pack_of(domain)
    users = resolve_users([q.subject], eng, domain)
    sref = _ref(q.subject)
    subject = users.get(sref) if sref else None
    decisions: dict[str, Decision]
    if pack is None:
        decisions = {}
    elif subject is None:
        decisions = {a.id: Decision(False, Reason.UNKNOWN_SUBJECT.value, eng.revision) for a in pack.actions}
    else:
        decisions = eng.permissions(subject, domain, any_target=q.any_target)
    observability.record_decisions([(d.allowed, d.reason) for d in decisions.values()])
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
    errors=(401, 403, 422, 503),
)
def assignable_roles() -> Response:
    """Role ids of the workspace's pack the actor may grant, per the rank rules and grant exceptions."""
    q = parse_query(AssignableQuery)
    eng = engine_at(q.min_revision)
    bound_to([q.workspace], eng)
    domain = _domain(q.workspace)
    users = resolve_users([q.actor] + ([q.target] if q.target else []), eng, domain)
    aref = _ref(q.actor)
    actor = users.get(aref) if aref else None
    target = ""
    if q.target:
        tref = _ref(q.target)
        target = users.get(tref, NOBODY) if tref else NOBODY
    roles = eng.assignable_roles(actor, domain, target, any_target=q.any_target) if actor else []
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


def _emails(ids: list[int]) -> dict[int, str]:
    """User id → email, from the directory (no query; a decision listener's thread never waits on
    it); the users it does not hold (none once loaded, bar a partition's) in one query."""
    users = authz.directory
    out: dict[int, str] = {}
    for uid in ids:
        email = users.email(uid) if users is not None else None
        if email is not None:
            out[uid] = email
    missing = [uid for uid in ids if uid not in out]
    if missing:
        rows = db.session.execute(select(User.id, User.email).where(User.id.in_(missing)))
        out.update((int(uid), str(email)) for uid, email in rows)
    return out


@bp.get("/who-can")
@api_doc(
    "Who in a workspace may perform an action (paginated; complete tells whether every member was examined).",
    tags=["decision"],
    query=WhoCanQuery,
    response=WhoCanResult,
    auth="token",
    errors=(401, 403, 422, 503),
)
def who_can() -> Response:
    """Members and platform role holders allowed the action (on no particular resource), a page at a time.

    A page ends when it holds ``limit`` people or after examining a bounded number of candidates;
    either way ``next_cursor`` continues and ``complete`` is true only when nobody is left.
    """
    q = parse_query(WhoCanQuery)
    eng = engine_at(q.min_revision)
    bound_to([q.workspace], eng)
    domain = _domain(q.workspace)
    after = _decode_cursor(q.cursor) if q.cursor else 0
    pool = [c for c in candidates(eng, domain) if c[0] > after]
    budget = max(q.limit * WHO_CAN_SCAN_FACTOR, WHO_CAN_MIN_SCAN)
    found: list[tuple[int, str]] = []
    examined = 0
    last = after
    res = ResourceFacts(target=ANY_TARGET) if q.any_target else ResourceFacts()
    for uid, via in pool:
        if len(found) >= q.limit or examined >= budget:
            break
        examined += 1
        last = uid
        if eng.check(AccessRequest(f"user:{uid}", domain, res, q.action)).allowed:
            found.append((uid, via))
    complete = examined == len(pool)
    emails = _emails([u for u, _ in found])
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
