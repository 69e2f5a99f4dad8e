"""A follower: the process's policy from the central tier's change feed, never from a database.

``learnauthz sidecar`` (``app.sidecar``) runs the decision API beside a service with a
:class:`Follower` in place of the database: it loads ``GET /v1/snapshot`` (the state its feed token
may see, at one revision; ``PolicyRuntime.adopt``), then follows ``GET /v1/changes`` from that
revision in a thread of its own, applying each event (``PolicyRuntime.apply_event``). A stream that
ends (the upstream's ``FEED_MAX_SECONDS``, a restart, a network failure) is resumed from the last
revision with back-off (0.1 s doubling to ``FOLLOWER_RETRY_MAX_SECONDS``); a 410 (the revision is
outside the upstream's retained log), an event that cannot be applied in place (a gap, a pack rule)
or one marked ``resnapshot`` (pack documents may have changed) loads a fresh snapshot.

Every event and heartbeat marks the state current (``PolicyRuntime.heard``): staleness is the time
since the upstream last answered, and ``POLICY_MAX_STALENESS_SECONDS`` fails decisions closed (503)
past it, as on the central tier. The follower stands as the app's policy listener, so ``/readyz``
reports it (``status``: upstream, connected, the last failure).
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
from flask import Flask

from app.authz import PolicyEngine
from app.authz.engine import RuleChange
from app.policy import feed, snapshot
from app.policy.runtime import PolicyRuntime

log = logging.getLogger("app.follower")

FIRST_RETRY_SECONDS = 0.1
_EVENT = msgspec.json.Decoder(feed.Event)


class FeedGoneError(Exception):
    """The upstream answered 410: the follower's revision is outside its log (load a snapshot)."""


class Follower:
    """Snapshot, then the change feed, for one app (see the module docstring)."""

    def __init__(self, app: Flask, runtime: PolicyRuntime, upstream: str, token: str, query: dict[str, str]) -> None:
        self.app = app
        self.runtime = runtime
        self.upstream = upstream.rstrip("/")
        self._auth = {"Authorization": f"Bearer {token}"}
        self._query = {k: v for k, v in query.items() if v}
        self.retry_max = float(app.config.get("FOLLOWER_RETRY_MAX_SECONDS") or 5.0)
        # heartbeats come every FEED_HEARTBEAT_SECONDS upstream: a read silent this long is a dead stream
        self.read_timeout = max(3.0, float(app.config.get("FOLLOWER_READ_TIMEOUT_SECONDS") or 15.0))
        self.connected = False
        self.reason: str | None = None
        self.snapshots = 0
        self.events = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._load_lock = threading.Lock()
        self.model_sha = snapshot.model_digest(Path(app.config["MODEL_PATH"]).read_text(encoding="utf-8"))

    # -- the snapshot ------------------------------------------------------------------------
    def _url(self, path: str, **extra: str) -> str:
        query = urllib.parse.urlencode({**self._query, **extra})
        return f"{self.upstream}{path}" + (f"?{query}" if query else "")

    def load(self) -> PolicyEngine:
        """Fetch the snapshot and serve it (call in an app context); raises on any failure."""
        with self._load_lock:
            t0 = time.monotonic()
            req = urllib.request.Request(self._url("/v1/snapshot"), headers=self._auth)
            with urllib.request.urlopen(req, timeout=self.read_timeout * 4) as resp:  # noqa: S310 - the configured upstream
                data = resp.read()
            snap = snapshot.decode(data, self.model_sha, feed.DATABASE)
            source = {
                "source": "upstream",
                "upstream": self.upstream,
                "revision": snap.meta.revision,
                "bytes": len(data),
                "seconds": round(time.monotonic() - t0, 3),
            }
            eng = self.runtime.adopt(self.app, snap.state, snap.meta.revision, source)
            self.snapshots += 1
            return eng

    # -- the feed ----------------------------------------------------------------------------
    def start(self) -> Follower:
        """Follow the feed in a daemon thread (the first snapshot is loaded there if not yet)."""
        self.runtime.follow(self.app, self)
        self._thread = threading.Thread(target=self._run, name="policy-follower", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop following (the thread ends at its next read)."""
        self._stop.set()

    def status(self) -> dict[str, Any]:
        """What ``/readyz`` reports as the listener."""
        return {
            "mode": "feed",
            "upstream": self.upstream,
            "connected": self.connected,
            "reason": self.reason,
            "snapshots": self.snapshots,
            "events": self.events,
        }

    def _run(self) -> None:
        delay = FIRST_RETRY_SECONDS
        fresh = False  # True when the next round must load a snapshot first
        with self.app.app_context():
            while not self._stop.is_set():
                try:
                    if fresh or not self.runtime.loaded:
                        self.load()
                        fresh = False
                    fresh = self._follow(self.runtime.engine.revision)
                    delay = FIRST_RETRY_SECONDS
                except FeedGoneError:
                    log.warning(
                        "the upstream no longer holds revision %s: loading a snapshot", self.runtime.engine.revision
                    )
                    fresh = True
                except Exception as exc:  # noqa: BLE001 - any failure: keep deciding from memory, retry with back-off
                    self.connected = False
                    self.reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
                    log.warning("upstream %s: %s; retrying in %.1f s", self.upstream, self.reason, delay)
                    self._stop.wait(delay)
                    delay = min(delay * 2, self.retry_max)

    def _follow(self, since: int) -> bool:
        """Apply the stream from ``since`` until it ends; True when a snapshot must be loaded next."""
        req = urllib.request.Request(
            self._url("/v1/changes", since=str(since)),
            headers={**self._auth, "Accept": "text/event-stream", "Last-Event-ID": str(since)},
        )
        try:
            resp = urllib.request.urlopen(req, timeout=self.read_timeout)  # noqa: S310 - the configured upstream
        except urllib.error.HTTPError as exc:
            if exc.code == 410:
                raise FeedGoneError from None
            raise
        with resp:
            self.connected, self.reason = True, None
            self.runtime.heard(self.app)
            for name, data in _sse(resp):
                if self._stop.is_set():
                    return False
                if name == "heartbeat":
                    self.runtime.heard(self.app, int(msgspec.json.decode(data).get("head") or 0) or None)
                    continue
                ev = _EVENT.decode(data)
                self.events += 1
                if ev.resnapshot:
                    return True
                changes = [RuleChange(op, tuple(rule)) for op, rule in ev.changes]
                if not self.runtime.apply_event(
                    self.app, ev.revision, changes, ev.users, ev.catalogs, ev.revoked, ev.created
                ):
                    return True
        self.connected = False
        return False


def _sse(stream: Any) -> Iterator[tuple[str, bytes]]:
    """(event name, data) of each server-sent event (``message`` when unnamed); comments skipped."""
    name, data = "message", b""
    for raw in stream:
        line = raw.rstrip(b"\r\n")
        if not line:
            if data:
                yield name, data
            name, data = "message", b""
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("ascii", "replace")
        elif line.startswith(b"data:"):
            data += line[5:].strip()
