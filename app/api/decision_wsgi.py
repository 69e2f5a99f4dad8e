"""The decision API's common requests answered at the WSGI level, in front of Flask.

A plain ``POST /v1/check`` or ``POST /v1/check/batch`` (JSON, a known service token, a body the
msgspec structs accept, no query string, no ``min_revision`` above the engine's) is decided here:
the same token check and binding check (a workspace outside the token's binding goes to the view,
which answers the 403 problem), the same :func:`app.api.decision.parse_and_decide` (one parse of
the body, one decision), the same JSON, the same
headers (security headers, ``X-Request-ID``) and metrics as the Flask view — without Flask's
request context, URL routing and request/response hooks, which cost ~10 times the decision
itself (measured in-process: ~560 µs a request through Flask at W = 1,000, most of it hooks,
header objects and context locals). Anything else, and any request this path cannot answer
exactly as the view would (a missing or unknown token, a body the structs refuse, a revision
to wait for, a stale policy, rate limits or decision logging switched on, any exception), goes to
the Flask app, so every problem answer still comes from one place; a body already read is not
put back: the view takes it from the environ, parsed, or the refusal to raise.
``tests/test_decision_wsgi.py`` compares both paths response by response.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from time import perf_counter
from typing import Any, NamedTuple, cast

import msgspec
from flask import Flask
from msgspec import Raw, Struct

from app import observability
from app.api import decision
from app.authz import AccessRequest, Decision, decisionlog
from app.decisions.answers import Stamped
from app.decisions.resolution import CHECKS, Check, require_held
from app.errors import PROBLEM, AppError
from app.extensions import authz
from app.logs import LoggingFlask
from app.policy import tokens

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
_SINGLE = "decision.check"
_ENDPOINTS = {"/v1/check": _SINGLE, "/v1/check/batch": "decision.check_batch"}
# Single-check bodies answered at the current state, per token: (id of the token's identity, bytes) →
# (that identity, the decisions, the JSON answer, its decision-log entry): plain tuples, read with no
# Python call (a NamedTuple's constructor is one). Only bodies whose check has an entry in
# resolution.CHECKS (so no properties), ~0.6 KB each, put there once the parse's path answered them
# for that token: the workspace was held here and inside the token's binding at this state (the
# binding is the identity's, immutable; which pack a workspace has is the engine's, in the stamp), so a
# hit asks neither again. The identity is compared, not only its id: a freed one's id can come back.
BODIES: Stamped[
    tuple[int, bytes], tuple[tokens.TokenIdentity, Sequence[Decision], bytes, tuple[AccessRequest, bool] | None]
]
BODIES = Stamped(16_384)


# What the fast path answers: the decisions, the seconds deciding took, the JSON answer
_Done = tuple[Sequence[Decision], float, bytes]


class Item(NamedTuple):
    """A batch item's answer at one state (:data:`ITEMS`)."""

    logged: tuple[AccessRequest, bool] | None  # its decision-log entry (None: decided before the engine)
    decision: Decision
    json: bytes  # its JSON in the answer (decision.encoded)
    colons: int  # the colons of its text
    workspace: str
    check: Check


class _RawBatch(Struct, forbid_unknown_fields=True):
    """A batch body with its checks left as their JSON texts (msgspec checks the syntax, builds nothing)."""

    checks: list[Raw]
    min_revision: int | None = None


_RAW_BATCH = msgspec.json.Decoder(_RawBatch)
# A batch body in one of the two shapes clients write — compact (JavaScript's JSON.stringify,
# orjson) or spaced (Python's json.dumps) —, no min_revision: its head up to the first check's
# brace, the text from one check's closing brace to the next one's opening brace, its tail.
_SHAPES = ((b'{"checks":[{', b"},{"), (b'{"checks": [{', b"}, {"))
_TAIL = b"}]}"
# Batch items answered at the current state: the exact JSON text of a check (as it stood in a body
# the parse accepted) → its :class:`Item`; only checks with an entry in resolution.CHECKS (so no
# properties). A batch whose every item text is here is answered without decoding its checks, the
# parse's per-item proofs, the references, the engine or the JSON encoder (``DecisionFastPath._lane``).
ITEMS: Stamped[bytes, Item] = Stamped(32_768)
# The same items by their text between the outer braces (``text[1:-1]``): a batch of a known shape
# (_SHAPES) is split at its separators and each piece looked up here, neither decoded nor scanned
# (``DecisionFastPath._split``: the JSON decode of the item texts, their copies and the colon count
# of ``_lane`` were ~25 µs of a batch of 100's ~80).
INNER: Stamped[bytes, Item] = Stamped(32_768)
# endpoint → (authz_decision_seconds key, authz_http_request_seconds key of a 200): built once, not per request
_METRIC_KEYS = {
    endpoint: ((observability.DECISION_SECONDS, kind), (observability.REQUEST_SECONDS, endpoint, "200"))
    for endpoint, kind in (("decision.check", "check"), ("decision.check_batch", "batch"))
}
_JSON = "application/json"
_REQUEST_ID = observability.REQUEST_ID_HEADER
# What a decision listener (DECISION_ONLY) serves: the decision and AuthZEN APIs (the paths
# deploy/haproxy.cfg routes to its ``decide`` backend), the probes and the metrics. All are reads.
DECISION_PATHS = frozenset(
    {
        "/v1/check",
        "/v1/check/batch",
        "/v1/permissions",
        "/v1/assignable-roles",
        "/v1/who-can",
        "/.well-known/authzen-configuration",
        "/healthz",
        "/readyz",
        "/metrics",
    }
)
DECISION_PREFIXES = ("/access/v1/",)


class DecisionFastPath:
    """Decides the common decision requests before any middleware (:meth:`answer`, asked by
    ``LoggingFlask.__call__``); everything else goes on through the app's WSGI stack."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._obs: observability.Observability | None = None
        self._headers: tuple[tuple[str, str], ...] | None = None  # the fixed headers of every answer
        self._served = authz.served(app)  # kept current by the runtime

    def answer(self, environ: dict[str, Any], start_response: StartResponse) -> list[bytes] | None:
        """The 200 answer to a plain decision request (``start_response`` called), or None: the app's
        stack answers it (a body already read is left in the environ, parsed or refused, for the view).

        Asked first, outside the access log's wrapper (a decision answered below 400 writes no
        access line) and outside the body drain (this path reads the announced length, all of it).

        No app context, no database: the token must be one this process knows (a miss goes to the
        view, which looks it up and caches it), the engine and directory are the ones the runtime
        serves (``PolicyRuntime.serving``), so nothing here can wait on the database. A single
        check this token asked at this state (:data:`BODIES`) is answered in this one frame: what
        ``Served.now`` and ``Stamped.at`` decide is read inline (behind a server each Python call
        of the path is cold at every request; with granian calling ``LoggingFlask.entry``, this
        halved a single check's cost over the no-op's with the caches flushed, 7 Dec: +16–20 µs
        to +7.6–8.4). Anything else is :meth:`_decide`'s.
        """
        endpoint = _ENDPOINTS.get(environ.get("PATH_INFO", ""))
        if endpoint is None or environ.get("REQUEST_METHOD") != "POST" or environ.get("QUERY_STRING"):
            return None
        started = perf_counter()
        app = self.app
        config = app.config
        try:
            if config.get("DECISION_RATE_LIMIT") or float(config.get("DECISION_LOG_SAMPLE") or 0) > 0:
                return None
            scheme, _, secret = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
            token = tokens.cached_identity(app, secret.strip()) if scheme.lower() == "bearer" else None
            if token is None:
                return None
            served = self._served
            eng, users = served.engine, served.directory  # Served.now, read inline
            if eng is None or users is None or not served.started or config.get("POLICY_MAX_STALENESS_SECONDS"):
                serving = served.now(app)
                if serving is None:
                    return None
                eng, users = serving
            ctype = environ.get("CONTENT_TYPE", "")
            if ctype != _JSON and not _json_type(ctype):
                return None  # not JSON: the view's 415
            raw = environ.get("CONTENT_LENGTH", "")
            limit = config.get("MAX_CONTENT_LENGTH")
            if not (raw.isascii() and raw.isdigit()) or (limit is not None and int(raw) > int(limit)):
                return None  # chunked, malformed or too large: werkzeug's answers
            body = bytes(environ["wsgi.input"].read(int(raw)))  # one read of the announced length
            stamp = (eng.generation, users.version)  # read before deciding
            bodies = hit = None
            if endpoint == _SINGLE:
                held = BODIES.held  # Stamped.at, read inline
                bodies = held[1] if held[0] == stamp else BODIES.at(stamp)
                hit = bodies.get((id(token), body))
            if hit is not None and hit[0] is token:
                # A single-check body this token asked at this state: its answer without parse,
                # proofs or decision (app.decisions.answers; see BODIES for why nothing is asked again).
                decided = perf_counter()
                _, decisions, answer, logged = hit
                if logged is not None:
                    decisionlog.LOG.keep(logged)
                done: _Done | None = (decisions, perf_counter() - decided, answer)
            else:
                done = self._decide(endpoint, environ, body, token, eng, users, stamp, bodies)
        except (decision.Defer, AppError):
            return None  # the view answers it (a refusal of the body: left in the environ, raised there)
        except Exception:  # noqa: BLE001 - whatever failed here, the view answers it (or its error handler)
            log.debug("decision fast path fell back", exc_info=True)
            return None
        if done is None:
            return None
        # Only an answer made drops the body read: any refusal on the way (a Defer, an AppError, an
        # exception) leaves it for the view, whatever lane raised it
        environ.pop(decision.PARSED, None)
        decisions, seconds, answer = done
        headers = self._headers or self._fixed_headers()
        rid = observability.request_id_of(environ)
        start_response("200 OK", [*headers, ("Content-Length", str(len(answer))), (_REQUEST_ID, rid)])
        obs = self._obs or self._observability()
        decision_key, request_key = _METRIC_KEYS[endpoint]
        obs.hot.answered(decisions, decision_key, seconds, request_key, perf_counter() - started)
        return [answer]

    def _fixed_headers(self) -> tuple[tuple[str, str], ...]:
        self._headers = (
            ("Content-Type", _JSON),
            *self.app.extensions["security"]["headers"],
            ("Vary", "Cookie"),  # as Flask's: its hooks look at the (absent) session of every request
        )
        return self._headers

    def _observability(self) -> observability.Observability:
        obs: observability.Observability = self.app.extensions["observability"]
        self._obs = obs
        return obs

    def _decide(
        self,
        endpoint: str,
        environ: dict[str, Any],
        body: bytes,
        token: tokens.TokenIdentity,
        eng: Any,
        users: Any,
        stamp: tuple[int, int],
        bodies: dict[tuple[int, bytes], Any] | None,
    ) -> _Done | None:
        """The view's answer to a request :meth:`answer` found no remembered answer for, as
        (decisions, seconds deciding took, JSON), or None (or :class:`decision.Defer`) when the view
        must answer it; ``bodies``: the single checks' table at ``stamp`` (None for a batch).

        Once the body is read, what became of it (parsed, or refused) is left in the environ under
        ``decision.PARSED``: a view answering the request takes it from there.
        """
        config = self.app.config
        environ[decision.PARSED] = body  # the view parses these bytes if this path cannot answer
        served = self._served
        selection = served.selection

        def admit(workspaces: Iterable[str], _eng: Any) -> None:
            if not tokens.all_bound(token, workspaces, eng):
                raise decision.Defer  # outside the token's binding: the view's 403 problem

        items = ITEMS.at(stamp) if bodies is None else None
        limit = int(config["BATCH_MAX_CHECKS"])
        if items is not None:
            lane = self._split(body, INNER.at(stamp), limit) or self._lane(body, items, eng, limit)
            if lane is not None:
                return self._from_items(lane, eng, selection, admit)
        try:
            parsed = decision.parse(endpoint, body, limit)
        except AppError as exc:
            environ[decision.PARSED] = exc  # the view raises it: its problem answer
            raise
        environ[decision.PARSED] = parsed

        def engine_for(min_revision: int | None) -> Any:
            if min_revision and min_revision > eng.revision:
                raise decision.Defer  # the view waits for it (or refuses a revision past the head)
            return eng

        done = decision.parse_and_decide(endpoint, parsed, 0, engine_for, admit, False, users, selection)
        if bodies is not None:
            checks = CHECKS.peek(stamp)  # the check's own entry (a check with properties has none)
            entry = checks.get(done.items[0]) if checks is not None else None
            if entry is not None:
                logged = (entry[0], entry[1].allowed) if entry[0] is not None else None
                BODIES.remember(bodies, (id(token), body), (token, done.decisions, done.json, logged))
        elif items is not None:
            self._remember_items(items, stamp, body, done)
        return done.decisions, done.seconds, done.json

    @staticmethod
    def _split(body: bytes, inner: dict[bytes, Item], limit: int) -> list[Item] | None:
        """The items of a batch of a known shape (:data:`_SHAPES`) whose every check is in ``inner``
        (None: :meth:`_lane` or the parse's path answers it).

        The body is split at the shape's separators, not decoded. Each piece found is the inside of
        an item text that stood in a body the parse accepted: a complete JSON object repeating no
        key. So the body is exactly ``{"checks":[`` those objects ``]}``, which JSON reads one way
        only (an object's text ends at its own closing brace): an array of those checks, the one
        top-level member, nothing repeated, no ``min_revision``. A check whose text holds the
        separator splits into pieces not found: the other lanes answer it."""
        head, sep = _SHAPES[1] if body.startswith(_SHAPES[1][0]) else _SHAPES[0]
        if not (body.startswith(head) and body.endswith(_TAIL)):
            return None
        pieces = body[len(head) : -len(_TAIL)].split(sep, limit)  # more than limit: limit + 1 pieces
        if len(pieces) > limit:
            return None
        found = list(map(inner.get, pieces))
        return cast(list[Item], found) if all(found) else None

    @staticmethod
    def _lane(body: bytes, items: dict[bytes, Item], eng: Any, limit: int) -> list[Item] | None:
        """The items of a batch whose every check's text is in ``items`` (None: the parse's path
        answers it). The same proofs as that path: the body is JSON of the batch's shape; each item
        text stood in a body that path accepted (so none repeats a key); the body's top level repeats
        none either (its colons are those of its items' texts, plus one per top-level member the
        decoder kept); a ``min_revision`` reached."""
        try:
            decoded = _RAW_BATCH.decode(body)
        except Exception:  # noqa: BLE001 - the parse's path refuses it with the right problem
            return None
        raws = decoded.checks
        wanted = decoded.min_revision
        if not raws or len(raws) > limit or (wanted is not None and wanted > eng.revision):
            return None
        found = list(map(items.get, map(bytes, raws)))
        if not all(found):
            return None
        if body.count(b":") != 1 + (wanted is not None) + sum(item.colons for item in cast(list[Item], found)):
            return None  # a top-level member repeated (or a null spelled out): the parse's path decides
        return cast(list[Item], found)

    @staticmethod
    def _from_items(found: list[Item], eng: Any, selection: Any, admit: Callable[[Iterable[str], Any], None]) -> _Done:
        """The batch's answer from its items: every workspace held here and inside the token's
        binding (else the parse's path answers its 421 or 403), the decisions logged."""
        # The items' fields as columns, in one pass (zip in C: ~3 µs for 100, six itemgetter maps ~12 µs)
        logged, decisions, texts, _colons, named, _checks = zip(*found)
        workspaces = set(named)
        require_held(selection, workspaces)
        admit(workspaces, eng)
        started = perf_counter()
        decisionlog.LOG.record_all(filter(None, logged))
        answer = b'{"results":[%b],"revision":%d}' % (b",".join(texts), eng.revision)
        return decisions, perf_counter() - started, answer

    @staticmethod
    def _remember_items(items: dict[bytes, Item], stamp: tuple[int, int], body: bytes, done: decision.Answered) -> None:
        """The texts of the batch's checks (a body the parse accepted: none repeats a key) that have
        a CHECKS entry at ``stamp`` (decided at it, no properties) go into ``items``."""
        checks = CHECKS.peek(stamp)
        if checks is None:
            return
        inner = INNER.at(stamp)
        texts = _RAW_BATCH.decode(body).checks
        for raw, check, made in zip(texts, done.items, done.decisions):
            if check.properties is not None:
                continue
            text = bytes(raw)
            entry = checks.get(check)
            if text in items or entry is None or entry[1] is not made:
                continue
            logged = (entry[0], made.allowed) if entry[0] is not None else None
            item = Item(logged, made, decision.encoded(made), text.count(b":"), check.workspace, check)
            ITEMS.remember(items, text, item)
            if text.startswith(b"{") and text.endswith(b"}"):  # an object's text (a check always is)
                INNER.remember(inner, text[1:-1], item)


def _json_type(ctype: str) -> bool:
    """A JSON media type (``application/json`` or ``application/<x>+json``, any parameters), as the view's check."""
    ctype = ctype.partition(";")[0].strip().lower()
    return ctype == _JSON or (ctype.startswith("application/") and ctype.endswith("+json"))


class DecisionOnly:
    """WSGI middleware of a decision listener (``DECISION_ONLY``): decision, AuthZEN, probe and
    metrics paths go on to ``wsgi_app``; anything else is a 404 problem answered here, before
    Flask, so no write, page or sign-in can ever occupy one of its threads (docs/deploy.md)."""

    def __init__(self, app: Flask, wsgi_app: WSGIApp) -> None:
        self.app = app
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in DECISION_PATHS or path.startswith(DECISION_PREFIXES):
            return self.wsgi_app(environ, start_response)
        body = json.dumps(
            {
                "type": "https://learnauthz.dev/problems/not-found",
                "title": "Not Found",
                "status": 404,
                "detail": "This listener serves decisions only (DECISION_ONLY); send other requests to the main one.",
                "instance": path,
            }
        ).encode()
        start_response(
            "404 NOT FOUND",
            [
                ("Content-Type", PROBLEM),
                ("Content-Length", str(len(body))),
                *self.app.extensions["security"]["headers"],
                (observability.REQUEST_ID_HEADER, observability.request_id_of(environ)),
            ],
        )
        return [body]


def install(app: LoggingFlask) -> None:
    """The fast path asked before the app's WSGI stack (``DECISION_FAST_PATH``, default on), and
    the decision-only guard in front of that stack on a decision listener (``DECISION_ONLY``)."""
    app.decision_fast_path = DecisionFastPath(app) if app.config.get("DECISION_FAST_PATH", True) else None
    if app.config.get("DECISION_ONLY"):
        app.wsgi_app = DecisionOnly(app, app.wsgi_app)  # type: ignore[method-assign]
