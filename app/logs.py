"""Logging: one format for the app, gunicorn and granian; a request id on every line; one access line a request.

Settings (environment, read before the app exists so the servers' own lines match):

- ``LOG_LEVEL`` (or ``FLASK_LOG_LEVEL``): DEBUG, INFO (default), WARNING, ERROR.
- ``LOG_FORMAT`` (or ``FLASK_LOG_FORMAT``): ``json`` (one JSON object a line: ``timestamp``,
  ``level``, ``logger``, ``message``, ``request_id`` and the record's extra fields; the default
  under gunicorn and ``python -m app.serve``) or ``text`` (the default elsewhere: ``flask run``,
  the CLI, tests).

The access line (``ACCESS_LOG``, a ``FLASK_`` setting, default on) is written by
:class:`LoggingFlask`'s WSGI entry, outside every middleware, so the decision fast path has one
too: method, path (never the query string), status, duration in ms, request id and the kind of
credential presented (``token``, ``session``, ``none``) — no user, email or body. Personal data
goes to DEBUG only.
"""

from __future__ import annotations

import functools
import logging
import logging.config
import os
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from flask import Flask

from .config import ConfigError
from .database import SERVING
from .observability import request_id_of

access_log = logging.getLogger("app.access")

_request_id: ContextVar[str | None] = ContextVar("learnauthz_request_id", default=None)
_FORMATS = ("json", "text")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
_MAX_PATH = 256


def level() -> int:
    """LOG_LEVEL (or FLASK_LOG_LEVEL): DEBUG, INFO (default), WARNING, ERROR."""
    name = (os.environ.get("LOG_LEVEL") or os.environ.get("FLASK_LOG_LEVEL") or "INFO").strip().upper()
    value = logging.getLevelName(name)
    if not isinstance(value, int):
        raise ConfigError(f"LOG_LEVEL {name!r} is not one of DEBUG, INFO, WARNING, ERROR")
    return value


def log_format() -> str:
    """LOG_FORMAT (or FLASK_LOG_FORMAT): json | text; json by default under a production server."""
    raw = os.environ.get("LOG_FORMAT") or os.environ.get("FLASK_LOG_FORMAT") or ""
    name = raw.strip().lower()
    if not name:
        served = os.environ.get("SERVER_SOFTWARE", "").startswith(("gunicorn", "granian"))
        return "json" if served else "text"
    if name not in _FORMATS:
        raise ConfigError(f"LOG_FORMAT {raw!r} is not one of json, text")
    return name


class RequestIdFilter(logging.Filter):
    """Puts the current request's id (``-`` outside a request) on every record a handler writes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _request_id.get() or "-"
        return True


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the ``sys.stderr`` of the moment (as logging's last resort does): test runners
    swap it, and a handler holding a closed one would fail."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        logging.Handler.__init__(self, level)

    @property
    def stream(self) -> Any:
        return sys.stderr


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of LOG_FORMAT fmt (used by the handlers :func:`dict_config` describes)."""
    if fmt == "json":
        from pythonjsonlogger.orjson import OrjsonFormatter

        return OrjsonFormatter(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp=True,
        )
    return logging.Formatter(_TEXT_FORMAT)


# Libraries' loggers held at a level whatever configures logging: pycasbin logs every request it
# evaluates (allowed at INFO, denied at WARNING, with the subject and the resource: the engine's miss
# path) and switches its loggers off itself, but a ``dictConfig`` with ``disable_existing_loggers:
# False`` switches every existing logger on again (a granian server wrote 1,826 such lines in its
# first 7 s, at a cost in every cold decision). The engine's decisions have their own log.
QUIET = {"casbin": "ERROR"}


def dict_config(server: str | None = None) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of LOG_FORMAT and LOG_LEVEL: one stderr handler on the
    root logger; the servers' loggers (gunicorn's, granian's) write through it."""
    lvl = logging.getLevelName(level())
    own = {"handlers": [], "propagate": True}
    loggers: dict[str, Any] = {name: {**own, "level": quiet} for name, quiet in QUIET.items()}
    if server == "gunicorn":
        loggers |= {"gunicorn.error": {**own, "level": lvl}, "gunicorn.access": {**own, "level": "INFO"}}
    elif server == "granian":
        loggers |= {"_granian": {**own, "level": lvl}, "granian.access": {**own, "level": "INFO"}}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"app": {"()": formatter, "fmt": log_format()}},
        "handlers": {
            "stderr": {
                "class": "app.logs.StderrHandler",
                "formatter": "app",
                "filters": ["request_id"],
            }
        },
        "root": {"level": lvl, "handlers": ["stderr"]},
        "loggers": loggers,
    }


class NoQueryString(logging.Filter):
    """werkzeug's development server (``flask run``) logs each request line with its query string,
    where sign-up and email-verification links carry their token: the line keeps the path only."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and args and isinstance(args[0], str) and "?" in args[0]:
            method, _, rest = args[0].partition(" ")
            target, _, protocol = rest.partition(" ")
            record.args = (f"{method} {target.partition('?')[0]} {protocol}".rstrip(), *args[1:])
        return True


def _ours(handler: logging.Handler) -> bool:
    return any(isinstance(f, RequestIdFilter) for f in handler.filters)


def configure() -> None:
    """The app's logging on the root logger (ConfigError on a bad LOG_LEVEL or LOG_FORMAT): its
    handler replaces the one a server or an earlier app installed, never stacks on it, and
    leaves other handlers (a test runner's) alone."""
    fmt, lvl = log_format(), level()
    root = logging.getLogger()
    for handler in [h for h in root.handlers if _ours(h)]:
        root.removeHandler(handler)
    handler = StderrHandler()
    handler.setFormatter(formatter(fmt))
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    root.setLevel(lvl)
    for name, quiet in QUIET.items():
        logging.getLogger(name).setLevel(quiet)
    werkzeug = logging.getLogger("werkzeug")
    if not any(isinstance(f, NoQueryString) for f in werkzeug.filters):
        werkzeug.addFilter(NoQueryString())


def current_request_id() -> str | None:
    """The id of the request this thread is serving (None outside one)."""
    return _request_id.get()


def _credential(environ: dict[str, Any]) -> str:
    if environ.get("HTTP_AUTHORIZATION", "")[:7].lower() == "bearer ":
        return "token"
    if "session=" in environ.get("HTTP_COOKIE", ""):
        return "session"
    return "none"


# The decision endpoints: a request answered below 400 there writes no access line unless
# ACCESS_LOG_DECISIONS (the line costs 13-40 µs, more than the decision: measured, docs/configuration.md);
# their counts and latencies are in /metrics, and every refusal or error is still logged.
DECISION_PATHS = ("/v1/check", "/access/v1/")


class LoggingFlask(Flask):
    """Flask whose WSGI entry (``__call__``, around whatever ``wsgi_app`` is: ProxyFix, the body
    drain, Flask) first asks the decision fast path (``decision_fast_path``, set by
    ``app.api.decision_wsgi.install``), then sets the request id of every line logged during the
    request and, with ``access_lines`` (the ACCESS_LOG setting), writes the request's access line
    once it is answered (for a decision endpoint only on a 4xx/5xx, unless ``access_decisions``:
    ACCESS_LOG_DECISIONS, and then the fast path is asked inside, so its answers get their line)."""

    access_lines = True
    access_decisions = False
    decision_fast_path: Any = None  # app.api.decision_wsgi.DecisionFastPath, or None (switched off)

    def __call__(self, environ: Any, start_response: Any) -> Any:
        return _serve(self, environ, start_response)

    def entry(self) -> Callable[[Any, Any], Any]:
        """What calling the app does, as a plain callable (``functools.partial``, in C): what a WSGI
        server is handed (``app.serve``). Behind a server the caches are cold at every request, and
        there a call of the app object (the type's ``__call__`` looked up, a method bound) cost a
        single check ~5 µs more than a call of a function (7 Dec, in process, caches flushed before
        each request: 35.7 against 31.0 µs)."""
        return functools.partial(_serve, self)


def _serve(app: LoggingFlask, environ: Any, start_response: Any) -> Any:
    """A request through ``app``: the decision fast path first, then its WSGI stack (LoggingFlask)."""
    fast = app.decision_fast_path
    # access_decisions first: off (the default), the logger's level is not asked on the hot path
    if fast is not None and not (app.access_decisions and app.access_lines and access_log.isEnabledFor(logging.INFO)):
        # A decision it answers is below 400: no access line, nothing logged, nothing to drain.
        answered = fast.answer(environ, start_response)
        if answered is not None:
            return answered
        fast = None
    logged = app.access_lines and access_log.isEnabledFor(logging.INFO)
    token = _request_id.set(request_id_of(environ))
    # Every database wait on behalf of this request has the request's deadline, the app
    # context's teardown (its transaction's end) included, where Flask has no request context.
    serving = SERVING.set(True)
    if not logged:
        try:
            return app.wsgi_app(environ, start_response)
        finally:
            SERVING.reset(serving)
            _request_id.reset(token)
    started = time.perf_counter()
    status = ["500"]

    def record_status(code: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        status[0] = code[:3]
        return start_response(code, headers, exc_info) if exc_info else start_response(code, headers)

    try:
        answered = fast.answer(environ, record_status) if fast is not None else None
        return answered if answered is not None else app.wsgi_app(environ, record_status)
    finally:
        quiet = (
            not app.access_decisions and status[0] < "400" and environ.get("PATH_INFO", "").startswith(DECISION_PATHS)
        )
        if not quiet:
            _write_access(environ, status[0], started)
        SERVING.reset(serving)
        _request_id.reset(token)


def _write_access(environ: dict[str, Any], status: str, started: float) -> None:
    ms = round((time.perf_counter() - started) * 1000, 3)
    method = environ.get("REQUEST_METHOD", "-")
    path = environ.get("PATH_INFO", "")[:_MAX_PATH]  # the query string may carry a secret: never logged
    credential = _credential(environ)
    access_log.info(
        "%s %s %s %.3f ms %s",
        method,
        path,
        status,
        ms,
        credential,
        extra={
            "method": method,
            "path": path,
            "status": int(status) if status.isdigit() else 0,
            "duration_ms": ms,
            "credential": credential,
        },
    )
