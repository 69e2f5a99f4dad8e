"""Keeping every process's policy in step: a PostgreSQL LISTEN thread plus a revision poll.

A policy writer sends ``NOTIFY policy, '<revision>'`` inside its transaction
(``policy_store.begin_write``), so PostgreSQL delivers it only if and when the change commits.
The notification is a *hint*: on one, or every ``POLICY_POLL_SECONDS`` without one, the listener
calls the process's ``PolicyRuntime.sync()`` (``app.extensions["authz"]``), which reads the
revision log after the engine's revision and applies each revision incrementally (a gap or a
pack change means a rebuild). A dropped connection is retried with backoff, and the first thing
after reconnecting is a sync, so nothing sent while disconnected is lost: the revision log, not
the notification, is the source of truth.

The LISTEN connection has its own URL, ``POLICY_LISTEN_URL`` (default: the application's): behind
PgBouncer in transaction mode, application queries go through the pooler while LISTEN needs a
session of its own (PostgreSQL directly, or a session-mode pool). While LISTEN cannot be used the
listener polls the revision head every ``POLICY_POLL_SECONDS`` through the application's pool and
retries LISTEN with backoff; ``status()`` says which it does and why (``/readyz`` ``checks.sync``).

One listener per process, started after the server forks (``gunicorn.conf.py``): a connection
or thread created before ``fork`` would be shared by every worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import Any

import psycopg
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import make_url

from app import database

log = logging.getLogger("app.policy_sync")

CHANNEL = "policy"
BACKOFF_START = 0.05
BACKOFF_MAX = 5.0


def libpq_url(sqlalchemy_url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as a plain libpq URL for psycopg."""
    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def notify_sql() -> str:
    """The statement a writer runs inside its transaction (delivered at commit)."""
    return f"SELECT pg_notify('{CHANNEL}', :revision)"


class PolicyListener:
    """A daemon thread: LISTEN for revision hints, poll as a safety net, resync after reconnects."""

    def __init__(
        self, app: Flask, poll_seconds: float | None = None, listen: bool = True, poll_reason: str = ""
    ) -> None:
        self.app = app
        self.poll_seconds = float(poll_seconds if poll_seconds is not None else app.config["POLICY_POLL_SECONDS"])
        self.listen = listen
        self.poll_reason = poll_reason  # why this listener never LISTENs (POLICY_SYNC=poll, SQLite)
        self.listen_url = libpq_url(str(app.config.get("POLICY_LISTEN_URL") or app.config["SQLALCHEMY_DATABASE_URI"]))
        self.connected = False
        # LISTENing and caught up since connecting: every revision committed from then on reaches
        # this process without a request asking the database (``PolicyRuntime.follows_log``)
        self.following = False
        self.backend_pid: int | None = None
        self.reconnects = 0
        self.syncs = 0
        self.last_sync = 0.0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> PolicyListener:
        """Start the thread (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="policy-listener", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and close its connection."""
        self._stop.set()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                conn.close()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def mode(self) -> str:
        """``listen`` while a LISTEN connection is up, ``poll`` otherwise (configured, or falling back)."""
        return "listen" if self.listen and self.connected else "poll"

    @property
    def reason(self) -> str:
        """Why the listener polls ("" while it listens)."""
        if not self.listen:
            return self.poll_reason or "configured to poll"
        if self.connected:
            return ""
        return f"LISTEN unavailable: {self.last_error}" if self.last_error else "LISTEN connecting"

    def status(self) -> dict[str, Any]:
        """What readiness and metrics report about the listener."""
        return {
            "mode": self.mode,
            "reason": self.reason,
            "connected": self.connected,
            "backend_pid": self.backend_pid,
            "reconnects": self.reconnects,
            "syncs": self.syncs,
            "seconds_since_sync": round(time.monotonic() - self.last_sync, 3) if self.last_sync else None,
            "last_error": self.last_error,
        }

    # -- work ------------------------------------------------------------------------------
    def sync(self, hinted: int = 0) -> int:
        """One incremental sync in the app's context; returns the engine's revision. ``hinted``: the
        revision a NOTIFY named; nothing is read when the engine already holds it (this process
        wrote it: applied at its commit)."""
        with self.app.app_context():
            runtime = self.app.extensions["authz"]
            revision = int(runtime.sync_before(hinted + 1) if hinted else runtime.sync())
            runtime.touch_tokens()  # the tokens requests answered for since: their last_used_at
        self.syncs += 1
        self.last_sync = time.monotonic()
        return revision

    def _run(self) -> None:
        backoff = BACKOFF_START
        while not self._stop.is_set():
            try:
                if self.listen:
                    self._listen_loop()
                else:
                    self._poll_loop()
                backoff = BACKOFF_START
            except Exception as exc:  # noqa: BLE001 - any failure: back off, reconnect, resync
                self.connected = False
                self.last_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                if self._stop.is_set():
                    break
                log.warning("policy listener: %s; polling, LISTEN again in %.2fs", self.last_error, backoff)
                self._poll_for(backoff)
                backoff = min(BACKOFF_MAX, backoff * 2)
                self.reconnects += 1

    def _poll_for(self, seconds: float) -> None:
        """Without LISTEN: keep syncing every poll interval (through the application's pool) for
        seconds; a failing sync (database down) is only remembered."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            if self.listen:
                with contextlib.suppress(Exception):  # the database itself may be down: retried
                    self.sync()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(self.poll_seconds, left))

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self.sync()
            self._stop.wait(self.poll_seconds)

    def _listen_loop(self) -> None:
        url = self.listen_url
        guard = self.app.extensions.get(database.EXT)
        conn: psycopg.Connection[Any]
        if guard is not None:  # every wait bounded (DATABASE_WAIT_SECONDS): a frozen server is noticed
            guard.probed = True  # this thread finds out when a lost database is back
            conn = database.connect(guard, url, autocommit=True, application_name=f"policy-listener-{os.getpid()}")
        else:
            conn = psycopg.connect(url, autocommit=True, application_name=f"policy-listener-{os.getpid()}")
        self._conn = conn
        try:
            conn.execute(f"LISTEN {CHANNEL}")
            self.backend_pid = conn.info.backend_pid
            self.connected = True
            self.last_error = ""
            # Anything committed while we were not listening is in the revision log.
            self.sync()
            self.following = True
            while not self._stop.is_set():
                hinted = False
                newest = 0  # the revision the hint names (0: unreadable)
                for note in conn.notifies(timeout=self.poll_seconds, stop_after=1):
                    hinted = True
                    newest = int(note.payload) if note.payload.isdigit() else 0
                if self._stop.is_set():
                    break
                if hinted:
                    self.sync(newest)
                else:
                    # Safety net: a quiet period is also a chance to catch up, and proves
                    # the connection alive (notifies() does not notice a dead server).
                    conn.execute("SELECT 1")
                    self.sync()
        finally:
            self.following = False
            self.connected = False
            self._conn = None
            with contextlib.suppress(Exception):
                conn.close()


def start_listener(app: Flask) -> PolicyListener | None:
    """Start this process's listener as configured by ``POLICY_SYNC`` (auto | listen | poll | off).

    ``auto`` listens on PostgreSQL and polls elsewhere (SQLite has no NOTIFY): a revision written
    by another process — ``flask seed``, ``flask policy import`` beside a running ``make run`` —
    reaches this one within ``POLICY_POLL_SECONDS``.
    """
    mode = str(app.config.get("POLICY_SYNC", "auto"))
    uri = str(app.config["SQLALCHEMY_DATABASE_URI"])
    is_pg = uri.startswith("postgresql")
    if mode == "off":
        return None
    reason = "POLICY_SYNC=poll" if mode == "poll" else "" if is_pg else f"{uri.split(':', 1)[0]} has no LISTEN"
    listener = PolicyListener(app, listen=is_pg and mode in ("auto", "listen"), poll_reason=reason)
    app.extensions["authz"].set_listener(app, listener)
    return listener.start()


def notify_revision(session: Any, revision: int) -> None:
    """Inside a writer's transaction: hint every listener at commit (PostgreSQL only)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(notify_sql()), {"revision": str(revision)})
