"""Writes that can be retried: the ``Idempotency-Key`` request header (draft-ietf-httpapi-idempotency-key-header).

:func:`init_app` wraps every view answering POST, PUT, PATCH or DELETE (except :data:`EXEMPT`:
the decision surfaces and drafts, which change nothing, and sign-in/up/out, which act before or
after there is a caller). A request without the header runs as before. With it, for the signed-in
caller (the key's scope; a request without a caller runs unwrapped and gets its 401):

1. **Reserve** (own short transaction): insert ``(scope, key)`` with the request's fingerprint
   (method, path, query and body, canonical JSON, HMAC'd with ``SECRET_KEY``) and a lease naming
   this attempt. A key already there answers at once: another fingerprint → 422; a stored
   outcome → that outcome again (``Idempotent-Replayed: true``); an attempt still holding its
   lease → 409 (``Retry-After``); a write that committed without a stored outcome → 409
   ``idempotency-applied`` (never applied twice); an expired lease of an attempt that applied
   nothing → this attempt takes over.
2. **Mark** (inside the write's own transaction): at the first commit of the view that writes,
   ``applied_at`` is set on the row *if this attempt still owns it* (``before_commit``): the write
   and the mark commit together or not at all, and an attempt whose lease was taken over cannot
   commit (409).
3. **Store** (after the view, own transaction): a non-5xx answer is stored as the key's outcome
   (a token's secret left out); a 5xx that applied nothing releases the key, so a retry applies.

A failure between 2 and 3 (a 503 after the commit, a crash) leaves ``applied_at`` without an
outcome: a retry is told that the write was applied and is not applied again. Keys expire after
``IDEMPOTENCY_TTL_SECONDS``; expired rows are pruned by the reservations (at most once a minute
per process).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from flask import Flask, Response, current_app, g, request
from flask_login import current_user
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Table, delete, event, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction

from app.database import in_transaction
from app.errors import BadRequestError, ConflictError, problem
from app.models import IdempotencyKey, utcnow

log = logging.getLogger("app.idempotency")

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_KEY = 255
PRUNE_EVERY_SECONDS = 60.0
# Endpoints answering unsafe methods that take no key (it is ignored), and why.
EXEMPT: dict[str, str] = {
    "decision.check": "decides; changes nothing",
    "decision.check_batch": "decides; changes nothing",
    "authzen.evaluation": "decides; changes nothing",
    "authzen.evaluations": "decides; changes nothing",
    "authzen.search_subject": "searches; changes nothing",
    "authzen.search_resource": "searches; changes nothing",
    "authzen.search_action": "searches; changes nothing",
    "policy.validate_change": "a draft; changes nothing",
    "policy.preview": "a draft; changes nothing",
    "policy.explain": "explains; changes nothing",
    "policy.rollback_preview": "a draft; changes nothing",
    "auth.signin": "no caller yet; a replay could not set the session cookie",
    "auth.signup": "no caller yet; the sign-up token is single-use",
    "auth.verify_email": "the emailed token is single-use",
    "auth.signout": "ends the caller; repeating it changes nothing",
}
# Fields of a stored outcome that are never stored (a secret shown once): replays carry null.
REDACT: dict[str, tuple[str, ...]] = {"policy.create_token": ("token",)}
_T = cast(Table, IdempotencyKey.__table__)
_INFO = "idempotency_attempt"
_WROTE = "idempotency_wrote"
_prune_lock = threading.Lock()
_pruned_at: dict[str, float] = {}


class KeyInvalidError(BadRequestError):
    """An Idempotency-Key header that is not 1..255 printable ASCII characters."""

    title = "Invalid Idempotency-Key"
    slug = "idempotency-key-invalid"


class TakenOverError(ConflictError):
    """This attempt's lease ran out and a retry took the key over: this one must not commit."""

    title = "Idempotency-Key taken over"
    slug = "idempotency-taken-over"


@dataclass
class Attempt:
    """The request now running under a reserved key (in ``session.info`` while it runs)."""

    row_id: int
    owner: str
    endpoint: str
    running: bool = True
    marked: bool = False  # the mark is in the current transaction
    applied: bool = False  # ... and that transaction committed


def parse_key(raw: str) -> str:
    """The key of a header value: 1..255 printable ASCII characters, optionally an sf-string in
    double quotes (the draft's syntax); BadRequestError otherwise."""
    value = raw.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if not 1 <= len(value) <= MAX_KEY or any(not 0x20 <= ord(c) <= 0x7E for c in value):
        raise KeyInvalidError(f"{HEADER} must be 1 to {MAX_KEY} printable ASCII characters")
    return value


def fingerprint(secret: str, method: str, path: str, query: bytes, body: bytes) -> str:
    """What makes two requests "the same": method, path, query string and body (JSON compared as
    canonical JSON, anything else byte for byte), keyed with the app's secret (bodies may hold passwords)."""
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode() if body else b""
    except ValueError:
        canonical = body
    message = b"\0".join((method.encode(), path.encode(), query, canonical))
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _scope() -> str | None:
    """The caller owning the key: the signed-in user (None: nobody; the view answers 401)."""
    if not current_user.is_authenticated:
        return None
    return f"user:{current_user.id}"


def _insert(session: Session) -> Any:
    return (pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert)(_T)


def _prune(session: Session, now: Any) -> None:
    """Delete expired keys, at most once a minute per process and database."""
    url = str(session.get_bind().engine.url)
    with _prune_lock:
        last = _pruned_at.get(url, 0.0)
        if time.monotonic() - last < PRUNE_EVERY_SECONDS:
            return
        _pruned_at[url] = time.monotonic()
    session.execute(delete(_T).where(_T.c.expires_at < now))


def _answer(row: Any) -> Response:
    """The stored outcome, again."""
    resp = Response(row.body or "", status=row.status, content_type=row.content_type or None)
    if row.location:
        resp.headers["Location"] = row.location
    resp.headers[REPLAYED] = "true"
    return resp


def reserve(session: Session, scope: str, key: str, fp: str, endpoint: str) -> Attempt | Response:
    """Step 1: reserve the key for this attempt, or answer from what the key already holds."""
    cfg = current_app.config
    now = utcnow()
    lease = timedelta(seconds=float(cfg["IDEMPOTENCY_LEASE_SECONDS"]))
    owner = uuid.uuid4().hex
    fresh = {
        "fingerprint": fp,
        "method": request.method,
        "path": request.path[:500],
        "owner": owner,
        "lease_until": now + lease,
        "applied_at": None,
        "status": None,
        "content_type": "",
        "location": "",
        "body": None,
        "created_at": now,
        "expires_at": now + timedelta(seconds=float(cfg["IDEMPOTENCY_TTL_SECONDS"])),
    }
    answer: Response | None = None
    with in_transaction(session):
        _prune(session, now)
        new = _insert(session).values(scope=scope, key=key, **fresh)
        session.execute(new.on_conflict_do_nothing(index_elements=["scope", "key"]))
        where = (_T.c.scope == scope) & (_T.c.key == key)
        row = session.execute(select(_T).where(where).with_for_update()).one()
        if row.owner != owner:
            if row.expires_at <= now:
                session.execute(update(_T).where(_T.c.id == row.id).values(**fresh))
            elif row.fingerprint != fp:
                answer = problem(
                    422,
                    "Idempotency key reused",
                    "This Idempotency-Key was used with another request (method, path or body); "
                    "use a new key for a new request.",
                    "idempotency-key-reused",
                )
            elif row.status is not None:
                answer = _answer(row)
            elif row.lease_until > now:
                answer = problem(
                    409,
                    "Request in progress",
                    "A request with this Idempotency-Key is still being processed; retry shortly.",
                    "idempotency-in-flight",
                )
                answer.headers["Retry-After"] = "1"
            elif row.applied_at is not None:
                answer = problem(
                    409,
                    "Request already applied",
                    "The request with this Idempotency-Key was applied; its response could not be recorded. "
                    "It is not applied again: read the resource for its state.",
                    "idempotency-applied",
                    applied=True,
                    applied_at=row.applied_at.isoformat(),
                )
                answer.headers[REPLAYED] = "true"
            else:  # the lease ran out and nothing was applied: this attempt takes over
                session.execute(update(_T).where(_T.c.id == row.id).values(owner=owner, lease_until=now + lease))
    if answer is not None:
        return answer
    return Attempt(row_id=int(row.id), owner=owner, endpoint=endpoint)


def _stored_body(response: Response, endpoint: str) -> str:
    """The body to store: as sent, with :data:`REDACT`'s fields of this endpoint set to null."""
    text = response.get_data(as_text=True)
    fields = REDACT.get(endpoint)
    if fields and response.is_json:
        data = json.loads(text)
        if isinstance(data, dict):
            data.update(dict.fromkeys(fields))
            text = json.dumps(data)
    return text


def _finish(session: Session, attempt: Attempt, response: Response) -> None:
    """Step 3: store the outcome (non-5xx), or release the key (5xx, nothing applied)."""
    mine = (_T.c.id == attempt.row_id) & (_T.c.owner == attempt.owner)
    now = utcnow()
    with in_transaction(session):
        if response.status_code < 500:
            session.execute(
                update(_T)
                .where(mine)
                .values(
                    status=response.status_code,
                    content_type=(response.content_type or "")[:100],
                    location=(response.headers.get("Location") or "")[:500],
                    body=_stored_body(response, attempt.endpoint),
                    lease_until=now,
                )
            )
        elif attempt.applied:
            session.execute(update(_T).where(mine).values(lease_until=now))  # retries learn it applied
        else:
            session.execute(delete(_T).where(mine & _T.c.applied_at.is_(None)))


def _wrap(view: Callable[..., Any], endpoint: str, db: SQLAlchemy) -> Callable[..., Any]:
    @functools.wraps(view)
    def idempotent(*args: Any, **kwargs: Any) -> Any:
        raw = request.headers.get(HEADER)
        if raw is None:
            return view(*args, **kwargs)
        key = parse_key(raw)
        scope = _scope()
        if scope is None:
            return view(*args, **kwargs)
        session = db.session()
        fp = fingerprint(
            str(current_app.config["SECRET_KEY"]),
            request.method,
            request.path,
            request.query_string,
            request.get_data(cache=True),
        )
        reserved = reserve(session, scope, key, fp, endpoint)
        if isinstance(reserved, Response):
            return reserved
        session.info[_INFO] = g.idempotency_attempt = reserved
        try:
            return view(*args, **kwargs)
        finally:
            reserved.running = False

    idempotent.__idempotent__ = True  # type: ignore[attr-defined]
    return idempotent


def takes_key(view: Any) -> bool:
    """Whether a view (or one it wraps) was wrapped by :func:`init_app`."""
    while view is not None:
        if getattr(view, "__idempotent__", False):
            return True
        view = getattr(view, "__wrapped__", None)
    return False


def header_parameter() -> dict[str, Any]:
    """The OpenAPI description of the header."""
    return {
        "name": HEADER,
        "in": "header",
        "required": False,
        "description": "A new random key per change, the same on its retries: a repeat answers the first "
        "outcome (Idempotent-Replayed: true); another body is 422; still running is 409 (docs/web-api.md).",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY},
    }


def _before_commit(session: Session) -> None:
    """Step 2: the mark, in the transaction of the view's first write."""
    attempt: Attempt | None = session.info.get(_INFO)
    if attempt is None or not attempt.running or attempt.marked:
        return
    if not (session.info.get(_WROTE) or session.new or session.dirty or session.deleted):
        return
    done = session.execute(
        update(_T)
        .where((_T.c.id == attempt.row_id) & (_T.c.owner == attempt.owner) & _T.c.applied_at.is_(None))
        .values(applied_at=utcnow())
    )
    if getattr(done, "rowcount", 0) != 1:
        raise TakenOverError(
            "Another request with this Idempotency-Key took over after this one's lease ran out; "
            "nothing of this one was applied."
        )
    attempt.marked = True


def _after_flush(session: Session, flush_context: UOWTransaction) -> None:
    session.info[_WROTE] = True


def _orm_execute(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        state.session.info[_WROTE] = True


def _after_commit(session: Session) -> None:
    session.info.pop(_WROTE, None)
    attempt: Attempt | None = session.info.get(_INFO)
    if attempt is not None and attempt.marked:
        attempt.applied = True


def _after_rollback(session: Session, previous_transaction: Any) -> None:
    session.info.pop(_WROTE, None)
    attempt: Attempt | None = session.info.get(_INFO)
    if attempt is not None and attempt.marked and not attempt.applied:
        attempt.marked = False


def init_app(app: Flask, db: SQLAlchemy) -> None:
    """Wrap every write view (after the blueprints are registered), store outcomes after each
    request, and install the session hooks (once per process)."""
    wrapped: set[str] = set()
    for rule in app.url_map.iter_rules():
        endpoint = rule.endpoint
        if endpoint in EXEMPT or endpoint in wrapped or not (rule.methods or set()) & WRITE_METHODS:
            continue
        app.view_functions[endpoint] = _wrap(app.view_functions[endpoint], endpoint, db)
        wrapped.add(endpoint)

    @app.after_request
    def _store_outcome(response: Response) -> Response:
        attempt: Attempt | None = g.pop("idempotency_attempt", None)
        if attempt is None:
            return response
        session = db.session()
        session.info.pop(_INFO, None)
        try:
            _finish(session, attempt, response)
        except SQLAlchemyError as exc:  # the database went away: the lease (and applied_at) still tell a retry
            log.warning("idempotency outcome not stored (%s): %s", attempt.endpoint, str(exc).splitlines()[0])
        return response

    @app.teardown_request
    def _forget(exc: BaseException | None) -> None:
        if g.pop("idempotency_attempt", None) is not None:  # after_request did not run
            db.session().info.pop(_INFO, None)

    hooks: tuple[tuple[str, Callable[..., Any]], ...] = (
        ("before_commit", _before_commit),
        ("after_commit", _after_commit),
        ("after_soft_rollback", _after_rollback),
        ("after_flush", _after_flush),
        ("do_orm_execute", _orm_execute),
    )
    for name, fn in hooks:
        if not event.contains(db.session, name, fn):
            event.listen(db.session, name, fn)
