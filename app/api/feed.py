"""The change feed for followers (sidecars): ``GET /v1/snapshot`` and ``GET /v1/changes``.

Both take a service token with the ``feed`` capability (403 ``feed-not-allowed`` without it) and
show only what its binding reaches, narrowed further by ``?partition=k/N&workspaces=a,b``
(:mod:`app.policy.feed`). The snapshot is the on-disk snapshot's format (``app.policy.snapshot``:
header, SHA-256, msgspec MessagePack) streamed in chunks, its revision in ``X-Policy-Revision``.
The changes are server-sent events, one per revision after ``since`` (or ``Last-Event-ID``), ``id``
the revision; a heartbeat event every ``FEED_HEARTBEAT_SECONDS``; the stream ends after
``FEED_MAX_SECONDS`` (the follower resumes from its last id). A held stream occupies a server thread:
at most ``FEED_MAX_CONNECTIONS`` per process, 503 with Retry-After above it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
from flask import Blueprint, Flask, Response, current_app, request, stream_with_context
from sqlalchemy.orm import Session

from app.api import api_doc
from app.api.params import parse_query, service_token
from app.api.schemas import FeedQuery
from app.authz.selection import Selection
from app.errors import ForbiddenError, GoneError, UnavailableError, ValidationError
from app.extensions import authz, db
from app.policy import feed, snapshot
from app.policy import store as policy_store
from app.policy.tokens import TokenIdentity

bp = Blueprint("feed", __name__, url_prefix="/v1")

CHUNK = 64 * 1024
MEDIA_TYPE = "application/vnd.learnauthz.snapshot"
_SLOTS = "feed_slots"
_WAKE_SECONDS = 0.005  # how often a stream looks at this process's known head (memory, no query)


class FeedNotAllowedError(ForbiddenError):
    """The service token may not follow the feed (created without ``--feed``)."""

    slug = "feed-not-allowed"


def _view(token: TokenIdentity, q: FeedQuery) -> feed.View:
    if not token.feed:
        raise FeedNotAllowedError(
            f"service token {token.name!r} may not follow the change feed (flask token create --feed)",
            token=token.name,
        )
    try:
        selection = Selection.parse(partition=q.partition, workspaces=q.workspaces)
    except ValueError as exc:
        raise ValidationError(str(exc), errors=[{"loc": ["query"], "message": str(exc)}]) from None
    return feed.View(token, selection)


@bp.get("/snapshot")
@api_doc(
    "The policy state a feed token may see, at one revision (MessagePack with a SHA-256 header; X-Policy-Revision).",
    tags=["feed"],
    query=FeedQuery,
    auth="token",
    errors=(401, 403, 422, 503),
)
def get_snapshot() -> Response:
    """Stream the view's snapshot (the format of ``app.policy.snapshot``)."""
    view = _view(service_token("feed"), parse_query(FeedQuery))
    current_at = time.time()
    with Session(db.engine) as session:
        revision, state = feed.snapshot_state(session, view)
    model_text = Path(current_app.config["MODEL_PATH"]).read_text(encoding="utf-8")
    data = snapshot.encode(state, revision, current_at, snapshot.model_digest(model_text), feed.DATABASE)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), CHUNK):
            yield data[i : i + CHUNK]

    resp = Response(chunks(), mimetype=MEDIA_TYPE)
    resp.headers["X-Policy-Revision"] = str(revision)
    resp.headers["Content-Length"] = str(len(data))
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _slots(app: Flask) -> threading.BoundedSemaphore:
    slots = app.extensions.get(_SLOTS)
    if slots is None:
        slots = app.extensions.setdefault(_SLOTS, threading.BoundedSemaphore(int(app.config["FEED_MAX_CONNECTIONS"])))
    return slots  # type: ignore[no-any-return]


def _since(q: FeedQuery) -> int:
    if q.since is not None:
        return q.since
    raw = request.headers.get("Last-Event-ID", "").strip()
    if raw.isascii() and raw.isdigit() and len(raw) < 19:
        return int(raw)
    raise ValidationError(
        "send since=REVISION (or Last-Event-ID): the revision the follower holds",
        errors=[{"loc": ["query", "since"], "message": "required"}],
    )


@bp.get("/changes")
@api_doc(
    "Server-sent events: every revision after `since` (or Last-Event-ID) as the feed token sees it; 410 "
    "when `since` is outside the retained log (load /v1/snapshot again).",
    tags=["feed"],
    query=FeedQuery,
    auth="token",
    errors=(401, 403, 410, 422, 503),
)
def changes() -> Response:
    """Follow the revision log through the view, from ``since``."""
    q = parse_query(FeedQuery)
    view = _view(service_token("feed"), q)
    since = _since(q)
    config = current_app.config
    with Session(db.engine) as session:
        head = policy_store.current_revision(session)
        oldest = feed.oldest_revision(session)
        filt = feed.current_filter(session, view)
    retained = int(config["FEED_RETAINED_REVISIONS"])
    if since > head or head - since > retained or (oldest is not None and since < head and since + 1 < oldest):
        raise GoneError(
            f"revision {since} is outside the retained log (head {head}, at most {retained} revisions back): "
            "load GET /v1/snapshot again",
            since=since,
            head=head,
        )
    slots = _slots(current_app._get_current_object())  # type: ignore[attr-defined]
    if not slots.acquire(blocking=False):
        raise UnavailableError(
            f"at most {config['FEED_MAX_CONNECTIONS']} feed connections per process (FEED_MAX_CONNECTIONS)",
            headers={"Retry-After": "5"},
        )
    once = threading.Lock()

    def release() -> None:
        if once.acquire(blocking=False):  # the stream's end and the response's close: one release
            slots.release()

    resp = Response(stream_with_context(_stream(filt, since, release)), mimetype="text/event-stream")
    resp.call_on_close(release)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Accel-Buffering"] = "no"
    resp.headers["X-Policy-Revision"] = str(head)
    return resp


_ENCODE = msgspec.json.Encoder()


def _stream(filt: feed.Filter, since: int, release: Callable[[], None]) -> Iterator[bytes]:
    """The events: woken by this process's known head (NOTIFY keeps it current), with a read of the
    log at least every FEED_POLL_SECONDS, a heartbeat every FEED_HEARTBEAT_SECONDS; ends after
    FEED_MAX_SECONDS. The connection slot is released whichever way it ends."""
    try:
        config = current_app.config
        poll, beat = float(config["FEED_POLL_SECONDS"]), float(config["FEED_HEARTBEAT_SECONDS"])
        last = seen = since
        now = time.monotonic()
        end, next_read, next_beat = now + float(config["FEED_MAX_SECONDS"]), now, now + beat
        yield b"retry: 1000\n\n"
        while now < end:
            hint = authz.known_head()
            if (hint is not None and hint > max(last, seen)) or now >= next_read:
                seen = max(seen, hint or 0)
                with Session(db.engine) as session:
                    events = feed.events_after(session, filt, last)
                next_read = time.monotonic() + poll
                if events:
                    yield b"".join(b"id: %d\ndata: %s\n\n" % (ev.revision, _ENCODE.encode(ev)) for ev in events)
                    last = events[-1].revision
                    next_beat = time.monotonic() + beat
                    continue
            if now >= next_beat:
                yield b'event: heartbeat\ndata: {"head": %d}\n\n' % last
                next_beat = now + beat
            time.sleep(_WAKE_SECONDS)
            now = time.monotonic()
    finally:
        release()
