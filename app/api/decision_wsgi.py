"""The decision API's common requests answered at the WSGI level, in front of Flask.

A plain ``POST /v1/check`` or ``POST /v1/check/batch`` (JSON, a known service token, a body the
msgspec structs accept, no query string, no ``min_revision`` above the engine's) is decided here:
the same token check, the same :func:`app.services.decisions.decide`, the same JSON, the same
headers (security headers, ``X-Request-ID``) and metrics as the Flask view — without Flask's
request context, URL routing and request/response hooks, which cost ~10 times the decision
itself (measured in-process: ~560 µs a request through Flask at W = 1,000, most of it hooks,
header objects and context locals). Anything else, and any request this path cannot answer
exactly as the view would (a missing or unknown token, a body the schema must judge, a revision
to wait for, a stale policy, rate limits or decision logging switched on, any exception), goes to
the Flask app unchanged with the body it sent, so every problem answer still comes from one place.
``tests/test_decision_wsgi.py`` compares both paths response by response.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from flask import Flask

from app import database, observability
from app.api import decision
from app.errors import AppError
from app.services import tokens
from app.services.decisions import decide

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
_ENDPOINTS = {"/v1/check": "decision.check", "/v1/check/batch": "decision.check_batch"}


class DecisionFastPath:
    """WSGI middleware: decides the common decision requests, hands everything else to ``wsgi_app``."""

    def __init__(self, app: Flask, wsgi_app: WSGIApp) -> None:
        self.app = app
        self.wsgi_app = wsgi_app
        self._timers: dict[str, Any] = {}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        endpoint = _ENDPOINTS.get(environ.get("PATH_INFO", ""))
        if endpoint is None or environ.get("REQUEST_METHOD") != "POST" or environ.get("QUERY_STRING"):
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        body = self._body(environ)
        answer = None
        if body is not None:
            try:
                answer = self._answer(endpoint, environ, body)
            except AppError:
                answer = None  # the view raises the same error as a problem answer
            except Exception:  # noqa: BLE001 - whatever failed here, the view answers it (or its error handler)
                log.debug("decision fast path fell back", exc_info=True)
                answer = None
        if answer is None:
            return self.wsgi_app(environ, start_response)
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(answer))),
            *self.app.extensions["security"]["headers"],
            (observability.REQUEST_ID_HEADER, observability.request_id_of(environ)),
            ("Vary", "Cookie"),  # as Flask's: its hooks look at the (absent) session of every request
        ]
        start_response("200 OK", headers)
        self._timer(endpoint).observe(time.perf_counter() - started)
        return [answer]

    def _body(self, environ: dict[str, Any]) -> bytes | None:
        """The JSON body (put back for the fallback), or None when Flask must read it."""
        ctype = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        if not (ctype == "application/json" or (ctype.startswith("application/") and ctype.endswith("+json"))):
            return None
        raw = environ.get("CONTENT_LENGTH", "")
        limit = self.app.config.get("MAX_CONTENT_LENGTH")
        if not (raw.isascii() and raw.isdigit()) or (limit is not None and int(raw) > int(limit)):
            return None  # chunked, malformed or too large: werkzeug's answers
        body = environ["wsgi.input"].read(int(raw))
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return bytes(body)

    def _answer(self, endpoint: str, environ: dict[str, Any], body: bytes) -> bytes | None:
        """The view's JSON for this request, or None when the view must answer it."""
        config = self.app.config
        if config.get("DECISION_RATE_LIMIT") or float(config.get("DECISION_LOG_SAMPLE") or 0) > 0:
            return None
        scheme, _, secret = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            return None
        serving = database.SERVING.set(True)  # request deadlines on the database, as in a request
        try:
            with self.app.app_context():
                return self._decide(endpoint, body, secret.strip())
        finally:
            database.SERVING.reset(serving)

    def _decide(self, endpoint: str, body: bytes, secret: str) -> bytes | None:
        """The decisions' JSON, in the app context; None when the view must answer."""
        from app.extensions import authz, db

        config = self.app.config
        authz.ensure_listener()
        if tokens.authenticate(db.session, secret) is None:  # type: ignore[arg-type]
            return None
        if endpoint == "decision.check":
            one = decision.fast_decode(decision.CHECK_BODY, body)
            if one is None:
                return None
            items: list[Any] = [one]
            min_revision = one.min_revision
        else:
            many = decision.fast_decode(decision.BATCH_BODY, body)
            if many is None or len(many.checks) > int(config["BATCH_MAX_CHECKS"]):
                return None
            items, min_revision = list(many.checks), many.min_revision
        authz.require_fresh()
        eng = authz.engine
        if min_revision and min_revision > eng.revision:
            return None  # the view waits for it (or refuses a revision past the head)
        t = time.perf_counter()
        decisions = decide(items, eng, False)
        seconds = time.perf_counter() - t
        observability.record_decisions((d.allowed, d.reason) for d in decisions)
        kind = "check" if endpoint == "decision.check" else "batch"
        observability.observe_decision_time(kind, seconds, len(items))
        if endpoint == "decision.check":
            return orjson.dumps(decisions[0].as_dict(False))
        return orjson.dumps(decision.batch_payload(decisions, eng.revision, False))

    def _timer(self, endpoint: str) -> Any:
        timer = self._timers.get(endpoint)
        if timer is None:
            with self.app.app_context():
                obs = observability.get()
                timer = obs.child(obs.request_seconds, endpoint, "200")
            self._timers[endpoint] = timer
        return timer


def install(app: Flask) -> None:
    """Put the fast path in front of the app's WSGI stack (``DECISION_FAST_PATH``, default on)."""
    if app.config.get("DECISION_FAST_PATH", True):
        app.wsgi_app = DecisionFastPath(app, app.wsgi_app)  # type: ignore[method-assign]
