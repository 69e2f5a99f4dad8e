"""The policy snapshot (app/policy/snapshot.py): round trip, refusals, atomic and newest-wins writes,
and a start from it through PolicyRuntime.reload when the database cannot be reached."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy.exc import OperationalError

from app.policy import snapshot
from app.policy.snapshot import SnapshotError, State, TokenRow
from tests.conftest import ROOT, make_app

MODEL = snapshot.model_digest("model")
DB = "127.0.0.1:5432/x"


def _state(n: int = 3) -> State:
    return State(
        documents={"p": {"id": "p", "roles": [{"id": "owner", "rank": 1}]}},
        pack_rules=[("p", "1", "role:p:owner", "view", "*", "*", "allow"), ("g4", "pack:p", "role:p:owner")],
        facts=[("g", f"user:{i}", "role:p:owner", f"ws:w{i}") for i in range(n)] + [("g4", "ws:w0", "pack:p", "")],
        users=[(i, f"u{i}@x.example", None if i % 2 else f"ext-{i}") for i in range(n)],
        catalogs={"w0": {"doc": {"d1": {"owner": "u0"}}}, "w1": {}},
        tokens=[
            TokenRow("ab" * 32, 1, "t", "w0", ["ws:w0"], None, False),
            TokenRow("cd" * 32, 2, "w", None, [], None, True),
        ],
    )


def _bytes(revision: int = 7, current_at: float = 1000.0, state: State | None = None) -> bytes:
    return snapshot.encode(state or _state(), revision, current_at, MODEL, DB)


def test_round_trip() -> None:
    state = _state()
    snap = snapshot.decode(_bytes(9, 1234.5, state), MODEL, DB)
    assert snap.state == state
    assert (snap.meta.revision, snap.meta.current_at, snap.meta.format) == (9, 1234.5, snapshot.FORMAT)
    assert snap.meta.written_at >= snap.meta.current_at
    ids = snapshot.identities(snap.state.tokens)
    assert ids["ab" * 32].may_ask("ws:w0", "p") and not ids["ab" * 32].may_ask("ws:w1", "p")
    assert ids["cd" * 32].wide


def test_every_flipped_byte_and_every_truncation_is_refused() -> None:
    data = _bytes()
    for i in range(len(data)):  # header, checksum and payload alike
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        with pytest.raises(SnapshotError):
            snapshot.decode(bytes(flipped), MODEL, DB)
    for cut in range(len(data)):
        with pytest.raises(SnapshotError):
            snapshot.decode(data[:cut], MODEL, DB)
    with pytest.raises(SnapshotError, match="truncated"):
        snapshot.decode(data[:-1], MODEL, DB)
    with pytest.raises(SnapshotError, match="checksum"):
        snapshot.decode(data[:-1] + bytes([data[-1] ^ 0xFF]), MODEL, DB)


def test_foreign_and_other_format_are_refused(tmp_path: Path) -> None:
    data = _bytes()
    with pytest.raises(SnapshotError, match="another model"):
        snapshot.decode(data, snapshot.model_digest("other model"), DB)
    with pytest.raises(SnapshotError, match="another database"):
        snapshot.decode(data, MODEL, "db.example:5432/x")
    with pytest.raises(SnapshotError, match="format"):
        snapshot.decode(data.replace(b"SNAPSHOT 1\n", b"SNAPSHOT 2\n", 1), MODEL, DB)
    with pytest.raises(SnapshotError, match="no header"):
        snapshot.decode(b"\x00" * 100, MODEL, DB)
    assert snapshot.read(tmp_path / "none", MODEL, DB) is None  # no file: no snapshot, no error


def test_database_identity_has_no_credentials() -> None:
    ident = snapshot.database_identity("postgresql+psycopg://u:secret@db.example:6432/authz")
    assert ident == "db.example:6432/authz"
    assert snapshot.database_identity("postgresql://u:other@db.example:6432/authz") == ident


def test_write_replaces_atomically_and_the_newest_wins(tmp_path: Path) -> None:
    path = tmp_path / "snap" / "policy.snapshot"
    assert snapshot.write(path, _bytes(5, 100.0), 5, 100.0)
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # it names users and token hashes
    assert not snapshot.write(path, _bytes(4, 200.0), 4, 200.0)  # older revision: refused
    assert snapshot.read(path, MODEL, DB).meta.revision == 5  # type: ignore[union-attr]
    assert not snapshot.write(path, _bytes(5, 50.0), 5, 50.0)  # same revision, read earlier: refused
    assert snapshot.write(path, _bytes(5, 150.0), 5, 150.0)  # same revision, known current later
    assert snapshot.read(path, MODEL, DB).meta.current_at == 150.0  # type: ignore[union-attr]
    path.write_bytes(_bytes(99)[:-10])  # a damaged file in place never blocks a valid one
    assert snapshot.write(path, _bytes(6, 300.0), 6, 300.0)
    assert snapshot.read(path, MODEL, DB).meta.revision == 6  # type: ignore[union-attr]
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


def _write_many(path: str, revisions: list[int]) -> int:
    written = 0
    for r in revisions:
        written += snapshot.write(Path(path), _bytes(r, float(r)), r, float(r))
    return written


def test_concurrent_writers_in_several_processes_leave_the_newest(tmp_path: Path) -> None:
    path = tmp_path / "policy.snapshot"
    plans = [list(range(k, 80, 4))[::-1] if k % 2 else list(range(k, 80, 4)) for k in range(4)]
    with ProcessPoolExecutor(4) as pool:
        written = sum(pool.map(_write_many, [str(path)] * 4, plans))
    assert written >= 1
    assert snapshot.read(path, MODEL, DB).meta.revision == 79  # type: ignore[union-attr]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


CRASH = """
import os, signal, sys
from pathlib import Path
from app.policy import snapshot
from tests.test_snapshot import _bytes
def crash(src, dst):
    os.kill(os.getpid(), signal.SIGKILL)  # the machine dies between the write and the replace
os.replace = crash
snapshot.write(Path(sys.argv[1]), _bytes(8, 800.0), 8, 800.0)
"""


def test_a_crash_between_write_and_replace_leaves_the_old_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "policy.snapshot"
    assert snapshot.write(path, _bytes(7, 700.0), 7, 700.0)
    before = path.read_bytes()
    proc = subprocess.run([sys.executable, "-c", CRASH, str(path)], cwd=ROOT, capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    assert path.read_bytes() == before  # untouched, still valid
    assert snapshot.read(path, MODEL, DB).meta.revision == 7  # type: ignore[union-attr]
    leftovers = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1  # the crashed writer's complete temporary file, never read
    os.utime(leftovers[0], (time.time() - 3600, time.time() - 3600))
    assert snapshot.write(path, _bytes(9, 900.0), 9, 900.0)  # the next writer clears it
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_failed_replace_keeps_the_old_snapshot_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "policy.snapshot"
    assert snapshot.write(path, _bytes(7, 700.0), 7, 700.0)

    def full(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshot.os, "replace", full)
    with pytest.raises(OSError):
        snapshot.write(path, _bytes(8, 800.0), 8, 800.0)
    assert snapshot.read(path, MODEL, DB).meta.revision == 7  # type: ignore[union-attr]
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# -- the runtime: written after a full load, started from when the database is unreachable ----------
def _decisions(app: Flask) -> list[tuple[str, str, str, bool, str, int]]:
    """Every member's answer to every action of their workspace's pack."""
    from app.authz import AccessRequest, ResourceFacts
    from app.extensions import authz

    eng = authz.engine
    out = []
    for domain in sorted(eng.workspaces()):
        pack = eng.pack_of(domain)
        assert pack is not None
        for subject in sorted(eng.members_of(domain)):
            for action in sorted(a.id for a in pack.actions):
                d = eng.check(AccessRequest(subject, domain, ResourceFacts(), action))
                out.append((subject, domain, action, d.allowed, d.reason, d.revision))
    return out


def test_a_full_load_writes_the_snapshot_and_a_start_without_the_database_serves_it(
    demo: Flask, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.extensions import authz, db
    from app.policy import store as policy_store
    from app.policy import tokens
    from app.policy.runtime import PolicyRuntime

    path = tmp_path / "policy.snapshot"
    session = db.session()
    _, live = tokens.create_token(session, "live", all_workspaces=True)
    _, gone = tokens.create_token(session, "gone", all_workspaces=True)
    session.commit()
    tokens.revoke_token(session, "gone")
    session.commit()
    demo.config["POLICY_SNAPSHOT_PATH"] = str(path)
    authz.reload()
    authz.wait_snapshot()
    head = policy_store.current_revision(db.session())
    model = snapshot.model_digest(Path(demo.config["MODEL_PATH"]).read_text(encoding="utf-8"))
    snap = snapshot.read(path, model, snapshot.database_identity(database_url))
    assert snap is not None and snap.meta.revision == head == authz.engine.revision
    assert authz.last_snapshot is not None and authz.last_snapshot["written"] is True
    assert tokens.hash_token(live).encode() in path.read_bytes() and live.encode() not in path.read_bytes()
    assert {t.name for t in snap.state.tokens} == {"live"}
    expected = _decisions(demo)
    users = sorted(authz.directory.rows())  # type: ignore[union-attr]

    # A second process on the same database, which cannot reach it at start.
    def unreachable(self: PolicyRuntime, *args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    other = make_app(database_url, POLICY_SNAPSHOT_PATH=str(path))
    monkeypatch.setattr(PolicyRuntime, "build", unreachable)
    with other.app_context():
        assert not authz.loaded
        eng = authz.reload()
        assert eng.revision == head
        assert authz.source()["source"] == "snapshot"  # type: ignore[index]
        assert authz.source()["revision"] == head  # type: ignore[index]
        assert _decisions(other) == expected
        assert sorted(authz.directory.rows()) == users  # type: ignore[union-attr]
        assert tokens.cached_identity(other, live) is not None
        assert tokens.cached_identity(other, gone) is None
        assert authz.verification_problems() == ()
        db.session.remove()
        db.engine.dispose()


def test_a_corrupt_snapshot_is_refused_in_one_line_and_the_error_raised(
    demo: Flask, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from app.extensions import authz, db
    from app.policy.runtime import PolicyRuntime

    path = tmp_path / "policy.snapshot"
    demo.config["POLICY_SNAPSHOT_PATH"] = str(path)
    authz.reload()
    authz.wait_snapshot()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))

    def unreachable(self: PolicyRuntime, *args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    other = make_app(database_url, POLICY_SNAPSHOT_PATH=str(path))
    monkeypatch.setattr(PolicyRuntime, "build", unreachable)
    with other.app_context():
        with pytest.raises(OperationalError):
            authz.reload()
        with pytest.raises(OperationalError):
            authz.reload()  # tried once a process: no second log line
        assert not authz.loaded
        refused = [r for r in caplog.records if "refused" in r.getMessage()]
        assert len(refused) == 1 and "checksum mismatch" in refused[0].getMessage()
        assert refused[0].getMessage().count("\n") == 0
        db.session.remove()
        db.engine.dispose()


class _Listening:
    """A listener that never reads the database (the bound applies only with a listener)."""

    def status(self) -> dict[str, object]:
        return {"mode": "listen", "connected": False}

    def stop(self) -> None:
        pass


def _rewrite(path: Path, app: Flask, url: str, revision: int, current_at: float) -> None:
    """The snapshot at path, as if written at another revision or time."""
    model = snapshot.model_digest(Path(app.config["MODEL_PATH"]).read_text(encoding="utf-8"))
    database = snapshot.database_identity(url)
    snap = snapshot.read(path, model, database)
    assert snap is not None
    data = snapshot.encode(snap.state, revision, current_at, model, database)
    assert snapshot.write(path, data, revision, current_at, force=True)


@contextlib.contextmanager
def _started_from_snapshot(
    database_url: str, path: Path, monkeypatch: pytest.MonkeyPatch, **config: object
) -> Iterator[Flask]:
    """A second app (in its app context) whose first load could not reach the database: started
    from the snapshot at path; the database answers afterwards."""
    from app.extensions import authz, db
    from app.policy.runtime import PolicyRuntime

    def unreachable(self: PolicyRuntime, *args: object, **kwargs: object) -> None:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    other = make_app(database_url, POLICY_SNAPSHOT_PATH=str(path), **config)
    with other.app_context():
        with monkeypatch.context() as m:
            m.setattr(PolicyRuntime, "build", unreachable)
            authz.reload()
        assert authz.source()["source"] == "snapshot"  # type: ignore[index]
        try:
            yield other
        finally:
            authz.wait_snapshot()
            db.session.remove()
            db.engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_the_staleness_bound_counts_from_when_the_snapshot_was_read(
    demo: Flask, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.extensions import authz

    path = tmp_path / "policy.snapshot"
    demo.config["POLICY_SNAPSHOT_PATH"] = str(path)
    authz.reload()
    authz.wait_snapshot()
    _rewrite(path, demo, database_url, authz.engine.revision, time.time() - 120)  # read two minutes ago
    for bound, status in ((300.0, 200), (60.0, 503)):
        with _started_from_snapshot(
            database_url, path, monkeypatch, POLICY_MAX_STALENESS_SECONDS=bound, POLICY_READY_MAX_SYNC_AGE_SECONDS=0
        ) as other:
            authz.set_listener(other, _Listening())
            body = other.test_client().get("/readyz")
            assert body.status_code == status, body.get_json()
            out = body.get_json()
            assert out["source"] == "snapshot" and 119 < out["staleness_seconds"] < 180, out
            assert 119 < out["snapshot"]["age_seconds"] < 180, out
            if status == 503:
                assert out["checks"]["staleness"] == "stale"
                assert authz.serving(other) is None  # the fast path does not decide: fail closed
            else:
                assert authz.serving(other) is not None


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_database_behind_the_snapshot_is_the_truth(
    demo: Flask, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restored from an older backup: the head is behind the snapshot served; the first sync reloads
    from the database and its snapshot replaces the newer file."""
    from app.extensions import authz

    path = tmp_path / "policy.snapshot"
    demo.config["POLICY_SNAPSHOT_PATH"] = str(path)
    head = authz.reload().revision
    authz.wait_snapshot()
    _rewrite(path, demo, database_url, head + 5, time.time())
    with _started_from_snapshot(database_url, path, monkeypatch) as other:
        assert authz.engine.revision == head + 5
        assert authz.sync() == head  # the database answers: reloaded from it
        assert authz.source() == {"source": "database"}
        authz.wait_snapshot()
        model = snapshot.model_digest(Path(other.config["MODEL_PATH"]).read_text(encoding="utf-8"))
        snap = snapshot.read(path, model, snapshot.database_identity(database_url))
        assert snap is not None and snap.meta.revision == head


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_the_first_sync_after_a_snapshot_start_catches_up_and_writes_a_fresh_snapshot(
    demo: Flask, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.authz import AccessRequest, ResourceFacts
    from app.extensions import authz
    from tests.factories import add_member, create_user, create_workspace

    path = tmp_path / "policy.snapshot"
    demo.config["POLICY_SNAPSHOT_PATH"] = str(path)
    old = authz.reload().revision
    authz.wait_snapshot()
    ws = create_workspace("snapcatch", "simulations")
    newcomer = create_user("newcomer@snap.example")
    add_member(ws, newcomer, "learner")  # committed after the snapshot
    user_key, ws_key = newcomer.key, ws.key  # read here: demo's session must not refresh them in other's context
    with _started_from_snapshot(database_url, path, monkeypatch) as other:
        asked = AccessRequest(user_key, ws_key, ResourceFacts(), "view_dashboard")
        assert authz.engine.revision == old and not authz.engine.check(asked).allowed
        head = authz.sync()
        assert head > old and authz.engine.check(asked).allowed and authz.engine.revision == head
        assert authz.directory.lookup("newcomer@snap.example") == user_key  # type: ignore[union-attr]
        assert authz.source() == {"source": "database"}
        authz.wait_snapshot()
        model = snapshot.model_digest(Path(other.config["MODEL_PATH"]).read_text(encoding="utf-8"))
        snap = snapshot.read(path, model, snapshot.database_identity(database_url))
        assert snap is not None and snap.meta.revision == head
