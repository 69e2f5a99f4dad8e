"""Token creates and revokes as revisions: every process's token cache follows the revision log, so
a process that holds every live token and follows the log answers any bearer secret — live, revoked
or made up — without asking the database (issue 25: a decision worker with one thread must never
wait on it).

The oracle is the database itself, read by a connection of the test's own: after any sequence of
creates and revokes written by another process, the secrets this process accepts are exactly the
live rows, and it read ``service_tokens`` for none of them.
"""

from __future__ import annotations

import random
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, event, text

from app.policy import tokens
from tests.test_policy_sync_runtime import _listen, _until, apps, pg_url  # noqa: F401 - the fixtures

pytestmark = pytest.mark.postgres

BODY = {"subject": 4343, "workspace": "sync", "action": "view_dashboard"}


class TokenReads:
    """Statements that read ``service_tokens`` on an app's engine from the requests' thread (the
    test's: its test client runs requests there, the listener has a thread of its own), while active."""

    def __init__(self, app: Flask) -> None:
        from app.extensions import db

        with app.app_context():
            self.engine = db.engine
        self.reads: list[str] = []
        self.thread = threading.get_ident()

    def __call__(self, conn: object, cursor: object, statement: str, *args: object) -> None:
        if "FROM service_tokens" in statement and threading.get_ident() == self.thread:
            self.reads.append(statement)

    def __enter__(self) -> TokenReads:
        event.listen(self.engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self)


def _create(app: Flask, name: str) -> tuple[str, int]:
    """A token created through app (another process); its secret and the revision that logged it."""
    from app.extensions import authz, db

    with app.app_context():
        _, secret = tokens.create_token(db.session(), name, all_workspaces=True)
        db.session.commit()
        revision = authz.engine.revision
        db.session.remove()
    return secret, revision


def _revoke(app: Flask, name: str) -> int:
    from app.extensions import authz, db

    with app.app_context():
        tokens.revoke_token(db.session(), name)
        db.session.commit()
        revision = authz.engine.revision
        db.session.remove()
    return revision


def _status(app: Flask, secret: str) -> int:
    resp = app.test_client().post("/v1/check", json=BODY, headers={"Authorization": f"Bearer {secret}"})
    return resp.status_code


def _revision(app: Flask) -> int:
    from app.extensions import authz

    with app.app_context():
        return int(authz.engine.revision)


@pytest.fixture
def follower(apps: Callable[..., Flask]) -> Iterator[tuple[Flask, Flask, Any]]:  # noqa: F811 - the fixture
    """(writer, reader, the reader's listener): the reader loaded (every live token in its cache) and
    listening to the revision log."""
    writer, reader = apps(), apps(POLICY_POLL_SECONDS=30)
    assert _status(reader, "lat_" + "x" * 43) == 401  # loads the reader
    listener = _listen(reader)
    _until(lambda: listener.following)  # listening, and caught up since it connected
    yield writer, reader, listener


def test_a_made_up_token_is_refused_without_the_database_while_the_log_is_followed(
    follower: tuple[Flask, Flask, Any],
) -> None:
    _, reader, listener = follower
    with TokenReads(reader) as seen:
        for _ in range(20):
            assert _status(reader, "lat_" + secrets.token_urlsafe(32)) == 401
    assert seen.reads == []
    listener.stop()  # not following the log any more: a create elsewhere could be missed, so ask
    assert not listener.following
    with TokenReads(reader) as seen:
        assert _status(reader, "lat_" + secrets.token_urlsafe(32)) == 401
    assert len(seen.reads) == 1


def test_a_token_the_cache_cannot_hold_whole_is_looked_up(follower: tuple[Flask, Flask, Any]) -> None:
    """A cache that started over (full, or cleared) no longer holds every live token: a miss asks."""
    writer, reader, _ = follower
    secret, revision = _create(writer, "held")
    _until(lambda: _revision(reader) >= revision)
    with reader.app_context():
        cache = tokens.cache()
        assert cache is not None
        cache.clear()
    with TokenReads(reader) as seen:
        assert _status(reader, secret) == 200
        assert _status(reader, "lat_" + secrets.token_urlsafe(32)) == 401
    assert len(seen.reads) == 2


def test_creates_and_revokes_elsewhere_match_the_database_without_reading_it(
    follower: tuple[Flask, Flask, Any],
    pg_url: str,  # noqa: F811 - the fixture
) -> None:
    """Random creates and revokes through another process, each followed by the reader's listener:
    after each, every secret ever issued is accepted by the reader exactly when the database holds
    it live (the oracle: the test's own query of the table), and the reader never read the table."""
    writer, reader, _ = follower
    rng = random.Random(25)
    issued: dict[str, str] = {}  # name → secret
    oracle = create_engine(pg_url)
    try:
        with TokenReads(reader) as seen:
            for step in range(30):
                live_names = [n for n in issued if n not in _revoked(oracle)]
                if live_names and rng.random() < 0.4:
                    revision = _revoke(writer, rng.choice(live_names))
                else:
                    name = f"t{step}"
                    issued[name], revision = _create(writer, name)
                _until(lambda revision=revision: _revision(reader) >= revision)
                live = _live(oracle)
                for name, secret in issued.items():
                    assert (_status(reader, secret) == 200) == (tokens.hash_token(secret) in live), (step, name)
        assert seen.reads == []
    finally:
        oracle.dispose()


def _live(engine: Any) -> set[str]:
    with engine.connect() as conn:
        return {str(h) for (h,) in conn.execute(text("SELECT token_hash FROM service_tokens WHERE revoked_at IS NULL"))}


def _revoked(engine: Any) -> set[str]:
    with engine.connect() as conn:
        return {str(n) for (n,) in conn.execute(text("SELECT name FROM service_tokens WHERE revoked_at IS NOT NULL"))}


def test_a_token_used_from_the_cache_gets_its_last_used_at_from_the_listener(
    follower: tuple[Flask, Flask, Any],
    pg_url: str,  # noqa: F811 - the fixture
) -> None:
    """No request writes it; the reader's listener does at its next sync (a hint: any revision)."""
    writer, reader, _ = follower
    secret, revision = _create(writer, "used")
    _until(lambda: _revision(reader) >= revision)
    oracle = create_engine(pg_url)
    try:

        def used() -> Any:
            with oracle.connect() as conn:
                return conn.execute(text("SELECT last_used_at FROM service_tokens WHERE name = 'used'")).scalar()

        assert used() is None
        assert _status(reader, secret) == 200
        assert used() is None  # the request wrote nothing
        _create(writer, "another")  # a revision: the reader's listener syncs, and writes it
        assert _until(used, timeout=5) is not None
    finally:
        oracle.dispose()


def test_a_create_the_cache_could_not_take_leaves_it_incomplete(
    follower: tuple[Flask, Flask, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A create the reader's cache refuses (a revoke raced each of its reads): the cache no longer
    claims every live token, so the new secret is looked up, and accepted, rather than refused."""
    writer, reader, _ = follower
    monkeypatch.setattr(tokens.TokenCache, "put_many", lambda self, found, generation: False)
    secret, revision = _create(writer, "raced")
    _until(lambda: _revision(reader) >= revision)
    with TokenReads(reader) as seen:
        assert _status(reader, secret) == 200
    assert len(seen.reads) == 1
