"""Bounded database waits: a deadline on every connect, pool checkout and round trip.

PostgreSQL connections are made by :class:`BoundedConnection`, a psycopg connection whose every
wait on the server has a client-side deadline (``DATABASE_REQUEST_WAIT_SECONDS`` inside a request,
``DATABASE_WAIT_SECONDS`` elsewhere): a server-side ``statement_timeout`` cannot help when the
server is frozen, a client deadline can. A connection that misses its deadline is closed (its
transaction dies with it: a write is never half-applied) and the database is held *down* for
``DATABASE_RETRY_SECONDS`` (or, while a policy listener keeps trying in the background, until
the listener gets an answer, at most ``DATABASE_WAIT_SECONDS`` longer): meanwhile requests that
need it fail at once instead of each waiting out the deadline again, the response is 503 with
``Retry-After`` (``app.errors``), and the decision path answers from memory. Work outside a
request (the listener, the CLI) still tries, and its first answer clears the state. SQLite is
left as it is (a local file does not stall like a server).
"""

from __future__ import annotations

import contextvars
import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from flask import Flask, Response, current_app, has_app_context, has_request_context, request
from flask_sqlalchemy import SQLAlchemy
from psycopg import errors as pg_errors
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from app.errors import problem

EXT = "database"
log = logging.getLogger("app.database")
# Set for the whole WSGI call of a request (app.logs.LoggingFlask): its teardown, which ends the
# transaction after Flask's request context is gone, waits with the request's deadline too.
SERVING = contextvars.ContextVar("learnauthz_serving_request", default=False)


def in_request() -> bool:
    """True while this thread answers a request (request deadlines apply)."""
    return has_request_context() or SERVING.get()


@dataclass
class Guard:
    """One app's deadlines and whether its database is held down right now."""

    request_wait: float
    wait: float
    retry: float
    down_until: float = 0.0
    last_error: str = ""
    failures: int = field(default=0)
    # True while a background task (the policy listener) keeps trying: it, not a request, then
    # finds out when the database is back, so requests stay off it for up to ``wait + retry``.
    probed: bool = False

    def is_down(self) -> bool:
        """True while a recent failure holds the database down."""
        return self.down_until > time.monotonic()

    def failed(self, message: str) -> None:
        """Record a failure: hold the database down for ``retry`` seconds."""
        self.down_until = time.monotonic() + (self.wait + self.retry if self.probed else self.retry)
        self.last_error = message[:300]
        self.failures += 1

    def answered(self) -> None:
        """The database answered: it is up (requests may use it again)."""
        if self.down_until:
            self.down_until = 0.0

    def limit(self) -> float:
        """The deadline of one wait in the current context."""
        return self.request_wait if in_request() else self.wait

    @property
    def retry_after(self) -> int:
        """Seconds a client should wait before retrying (whole, at least 1)."""
        return max(1, math.ceil(self.retry))


def guard() -> Guard | None:
    """The current app's guard (None outside an app context or before init_app)."""
    if not has_app_context():
        return None
    return current_app.extensions.get(EXT)


def reachable() -> bool:
    """False while the database is held down (the hot path then skips its queries)."""
    g = guard()
    return g is None or not g.is_down()


class DatabaseDownError(psycopg.OperationalError):
    """The database did not answer within the deadline, or is held down after such a failure."""


class BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection whose waits on the server have a deadline (see the module docstring)."""

    guard: Guard | None = None

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        """Consume gen with the guard's deadline unless the caller gave one (LISTEN's notifies)."""
        g = self.guard
        if g is None or timeout is not None:
            return super().wait(gen, interval, timeout)
        if in_request() and g.is_down():
            raise DatabaseDownError(f"the database is unavailable ({g.last_error})")
        limit = g.limit()
        try:
            out = super().wait(gen, interval, limit)
        except pg_errors._WaitTimeout:
            self.pgconn.finish()  # the server may be frozen mid-statement: this connection is done
            g.failed(f"no answer within {limit:g} s")
            raise DatabaseDownError(f"the database did not answer within {limit:g} s") from None
        # A lost connection alone is not a lost database (the pool's pre-ping reconnects, and
        # connect() decides); a server that does not answer is.
        g.answered()
        return out


def connect(g: Guard, conninfo: str = "", **kwargs: Any) -> BoundedConnection:
    """A new bounded connection (refused at once inside a request while the database is held down)."""
    if in_request() and g.is_down():
        raise DatabaseDownError(f"the database is unavailable ({g.last_error})")
    try:
        conn = BoundedConnection.connect(conninfo, **kwargs)
    except psycopg.OperationalError as exc:
        g.failed(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    conn.guard = g
    g.answered()
    return conn


def engine_options(config: dict[str, Any]) -> dict[str, Any]:
    """SQLALCHEMY_ENGINE_OPTIONS with the configured pool, connect and statement timeouts filled in.

    Options already set (``pool_timeout``, ``connect_args``) win over the ``DATABASE_*`` settings.
    """
    opts = dict(config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
    opts.setdefault("hide_parameters", True)  # errors and logs name the statement, not its values (emails)
    if str(config["SQLALCHEMY_DATABASE_URI"]).startswith("postgresql"):
        opts.setdefault("pool_timeout", float(config["DATABASE_POOL_TIMEOUT_SECONDS"]))
        args = dict(opts.get("connect_args") or {})
        # libpq counts whole seconds and waits at least 2.
        args.setdefault("connect_timeout", max(2, math.ceil(float(config["DATABASE_CONNECT_TIMEOUT_SECONDS"]))))
        statement_ms = int(float(config["DATABASE_STATEMENT_TIMEOUT_SECONDS"]) * 1000)
        if statement_ms > 0 and "options" not in args:
            args["options"] = f"-c statement_timeout={statement_ms}"
        opts["connect_args"] = args
    return opts


@contextmanager
def in_transaction(session: Session) -> Iterator[None]:
    """The one transaction of a service write: commit when the block ends, roll back (and re-raise)
    when it or the commit raises. A block that ends the transaction itself (``session.rollback()``
    on a path that changes nothing) is not committed again."""
    try:
        yield
        if session.in_transaction():
            session.commit()
    except Exception:
        session.rollback()
        raise


def init_app(app: Flask, db: SQLAlchemy) -> None:
    """Before ``db.init_app``: put the timeouts into the engine options, create the guard, and
    answer 503 (with ``Retry-After``) when the database is unreachable, frozen or out of connections."""
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(app.config)
    app.extensions[EXT] = Guard(
        request_wait=float(app.config["DATABASE_REQUEST_WAIT_SECONDS"]),
        wait=float(app.config["DATABASE_WAIT_SECONDS"]),
        retry=float(app.config["DATABASE_RETRY_SECONDS"]),
    )

    @app.errorhandler(sa_exc.OperationalError)
    @app.errorhandler(sa_exc.InterfaceError)
    @app.errorhandler(sa_exc.TimeoutError)
    def _database_unavailable(exc: Exception) -> Response:
        # Nothing was committed: ask the client to retry (every wait here is bounded, so this
        # comes within the deadline).
        try:
            db.session.rollback()
        except Exception:  # noqa: BLE001 - the connection may already be gone
            log.debug("rollback after a database failure failed", exc_info=True)
        g = guard()
        log.warning("database unavailable on %s %s: %s", request.method, request.path, str(exc).splitlines()[0])
        resp = problem(503, "Service unavailable", "The database is unavailable; retry shortly.", "unavailable")
        resp.headers["Retry-After"] = str(g.retry_after if g is not None else 1)
        return resp


def bind(app: Flask, db: SQLAlchemy) -> None:
    """After ``db.init_app``: PostgreSQL engines make bounded connections, and the session's
    end-of-request rollback survives a database that died under it (no error after the answer)."""

    @app.teardown_appcontext
    def _release_session(exc: BaseException | None) -> None:
        # Runs before Flask-SQLAlchemy's own remove(), which then finds nothing left to do.
        try:
            db.session.remove()
        except SQLAlchemyError as err:
            log.warning("session closed with a lost database connection: %s", str(err).splitlines()[0])
            db.session.registry.clear()

    g: Guard = app.extensions[EXT]
    for engine in db.engines.values():
        if engine.dialect.name != "postgresql":
            continue

        @event.listens_for(engine, "do_connect")
        def _connect(dialect: Any, record: Any, cargs: Any, cparams: Any) -> BoundedConnection:
            return connect(g, *cargs, **cparams)
