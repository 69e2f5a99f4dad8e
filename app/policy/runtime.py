"""The engine's life in one process: load, swap, keep in step with the revision log, verify.

One :class:`PolicyRuntime` per process (``app.extensions.authz``). It builds a
:class:`~app.authz.PolicyEngine` from the database (``policy_store.read_policy``), swaps in a
new one instead of reloading in place, applies committed revisions incrementally (after commit,
from this process's writes, or from the listener's hints — ``policy_sync``), pack edits too (their
rules and documents move the engine to the new packs in place, ``PolicyEngine.apply_packs``; the
memberships are not touched), rebuilds on a gap or a ``model.conf`` change, waits a bounded time
for ``min_revision``, and runs the escalation verifier on every policy it loads or moves to
(``/readyz`` fails when it does not pass). Decisions go through :meth:`check` and
:meth:`require`, which never raise on a policy error: they deny.

A revision that needs a rebuild (a gap, another ``model.conf``, pack documents a later revision
overwrote before this process read them) written by *another* process (seen through a listener)
is not rebuilt in the request path: a background thread waits a random
0..``POLICY_REBUILD_JITTER_SECONDS`` (so many processes do not rebuild at once), builds the new
engine while the old one keeps answering at its revision, applies what was committed meanwhile,
and swaps it in under the lock. The process that wrote the change, and any process without a
listener, rebuilds at once (read-your-writes).

With ``POLICY_SNAPSHOT_PATH`` set, every full load also writes what it read to that file
(``app.policy.snapshot``, in a background thread after the swap), and a process that finds the
database unreachable at start builds its engine, directory and token cache from that file instead
(source ``snapshot``: its staleness counts from when the snapshot's state was read). The listener's
first successful sync catches up from the snapshot's revision (in place, or a rebuild where one is
needed, as always) and a fresh snapshot is written.

A process given ``POLICY_PARTITION`` ("k/N") or ``POLICY_WORKSPACES`` holds only those workspaces
(:attr:`PolicyRuntime.selection`, ``app.authz.selection``): it loads the facts of held workspaces
and of every non-workspace domain, the users those facts name (everyone else in the directory's
compact index), and its syncs skip the changes of workspaces it does not hold while still moving
to each revision. The decision surfaces answer 421 for a workspace not held. Such a process
writes no snapshot (the file would hold only the partition).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from flask import Flask, current_app, has_app_context
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.orm import Session

from app import schema
from app.authz import AccessRequest, Decision, InvalidRuleError, PolicyEngine, ResourceFacts, delegation
from app.authz.engine import RuleChange
from app.authz.packs import PackError, is_pack_rule, packset_from_documents
from app.authz.selection import Selection
from app.errors import ForbiddenError, UnavailableError, ValidationError
from app.policy import directory, snapshot, tokens
from app.policy import store as policy_store
from app.policy.directory import Directory
from app.policy.sync import start_listener

log = logging.getLogger("app.authz")

# What a load that cannot reach the database raises (a start from the snapshot is tried then).
UNREACHABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, psycopg.OperationalError)
SnapshotSettings = tuple[Path, str, str]  # path, model.conf's SHA-256, the database's host:port/name


def _held_facts(facts: Iterator[tuple[str, ...]], selection: Selection, named: set[int]) -> Iterator[tuple[str, ...]]:
    """The facts of the domains selection holds; the ids of the users they name go into ``named``."""
    keeps = selection.keeps
    for rule in facts:
        if keeps(rule):
            who = rule[1]
            if who.startswith("user:") and who[5:].isdigit():
                named.add(int(who[5:]))
            yield rule


_COMMITTING = "authz_committing"  # session.info: the revision numbers PolicyRuntime.committing marked


class Served:
    """What an app serves decisions with now, as plain attributes the runtime keeps current (the
    decision fast path holds it: no weak-dictionary lookup per request). ``engine`` and
    ``directory`` change together, replaced as a pair by the runtime (read both, then check both)."""

    __slots__ = ("runtime", "engine", "directory", "started", "selection")

    def __init__(self, runtime: PolicyRuntime, testing: bool) -> None:
        self.runtime = runtime
        self.engine: PolicyEngine | None = None
        self.directory: Directory | None = None
        self.started = testing  # its listener started (tests decide without one)
        self.selection = Selection()

    def now(self, app: Flask) -> tuple[PolicyEngine, Directory] | None:
        """(engine, directory) to decide with, or None: what ``PolicyRuntime.serving`` answers
        (the staleness bound, when set, is judged there)."""
        eng, users = self.engine, self.directory
        if eng is None or users is None or not self.started:
            return None
        if app.config.get("POLICY_MAX_STALENESS_SECONDS"):
            return self.runtime.serving(app)
        return eng, users


class PolicyRuntime:
    """The process's policy engine: loaded from the database, kept in step by revision.

    Changes reach the engine only after their transaction commits. A newer engine is built
    beside the old one and swapped in; the old one keeps answering until then.
    """

    def __init__(self) -> None:
        self._engines: weakref.WeakKeyDictionary[Flask, PolicyEngine] = weakref.WeakKeyDictionary()
        # The users the policy knows (and the AuthZEN catalogs), loaded and swapped with the engine.
        self._directories: weakref.WeakKeyDictionary[Flask, Directory] = weakref.WeakKeyDictionary()
        self._listeners: weakref.WeakKeyDictionary[Flask, Any] = weakref.WeakKeyDictionary()
        self._verification: weakref.WeakKeyDictionary[Flask, tuple[str, ...]] = weakref.WeakKeyDictionary()
        # When the engine last read the revision log successfully (monotonic): its staleness.
        self._synced: weakref.WeakKeyDictionary[Flask, float] = weakref.WeakKeyDictionary()
        self._listener_started: weakref.WeakSet[Flask] = weakref.WeakSet()
        # A background rebuild under way: {"state": "waiting" | "running", "from_revision", "started", "base"}.
        self._rebuilds: weakref.WeakKeyDictionary[Flask, dict[str, Any]] = weakref.WeakKeyDictionary()
        # app -> revisions this process is committing (marked before the commit, so before their
        # NOTIFY can reach a listener; cleared once applied or rolled back)
        self._committing: weakref.WeakKeyDictionary[Flask, set[int]] = weakref.WeakKeyDictionary()
        # The last revision whose token revocations were applied (they cannot wait for a rebuild).
        self._revocations_through: weakref.WeakKeyDictionary[Flask, int] = weakref.WeakKeyDictionary()
        self._refusals: weakref.WeakKeyDictionary[Flask, str] = weakref.WeakKeyDictionary()
        # The newest revision seen in the revision log (the head as of the last read): /readyz's
        # head and lag without a query of its own.
        self._heads: weakref.WeakKeyDictionary[Flask, int] = weakref.WeakKeyDictionary()
        self.last_rebuild: dict[str, Any] | None = None  # the last background rebuild (seconds, revisions)
        # Where the engine's state came from: {"source": "database"} or the snapshot's details.
        self._sources: weakref.WeakKeyDictionary[Flask, dict[str, Any]] = weakref.WeakKeyDictionary()
        self._snapshot_tried: weakref.WeakSet[Flask] = weakref.WeakSet()  # a start from the snapshot, once
        # The database went back behind the snapshot served: its next snapshot replaces any newer one.
        self._snapshot_forced: weakref.WeakSet[Flask] = weakref.WeakSet()
        # Full loads of the app's policy (start, reloads, background rebuilds, a start from the
        # snapshot): what a pack edit applied in place does not add to.
        self._loads: weakref.WeakKeyDictionary[Flask, int] = weakref.WeakKeyDictionary()
        self._snapshot_writers: list[threading.Thread] = []
        # Follower mode (a sidecar): the app's state comes from the change feed, never a database.
        self._followers: weakref.WeakKeyDictionary[Flask, Any] = weakref.WeakKeyDictionary()
        self.last_snapshot: dict[str, Any] | None = None  # the last snapshot write (revision, bytes, seconds)
        self._selections: weakref.WeakKeyDictionary[Flask, Selection] = weakref.WeakKeyDictionary()
        # app -> what the decision fast path reads per request (three weak-dictionary lookups cost ~1 µs)
        self._served: weakref.WeakKeyDictionary[Flask, Served] = weakref.WeakKeyDictionary()
        self._lock = threading.RLock()

    def init_app(self, app: Flask, db: SQLAlchemy) -> None:
        """Register the extension (``app.extensions["authz"]``); its after-commit step is called by
        :mod:`app.after_commit`."""
        self._db = db
        app.extensions["authz"] = self
        service = str(app.config.get("POLICY_WORKSPACE") or "")
        self._selections[app] = Selection.parse(
            str(app.config.get("POLICY_PARTITION") or ""),
            str(app.config.get("POLICY_WORKSPACES") or ""),
            frozenset({f"ws:{service}"}) if service else frozenset(),
        )
        self.served(app).selection = self._selections[app]
        app.before_request(self.ensure_listener)
        if self._starts_with_server(app):
            # `flask run`: load now, in the listener's thread (its first sync), not at the first request.
            self._listener_started.add(app)
            self.served(app).started = True

            start_listener(app)

    @staticmethod
    def _starts_with_server(app: Flask) -> bool:
        """True when this app is being created by ``flask run`` (not tests, other CLI commands or
        gunicorn, whose ``gunicorn.conf.py`` loads in the master or in each worker after the fork)."""
        if app.testing or os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn"):
            return False
        import click

        ctx = click.get_current_context(silent=True)
        return ctx is not None and ctx.info_name == "run"

    @property
    def loading(self) -> bool:
        """True while a start-up load runs in the background (the listener's first sync)."""
        app = self._key()
        return app not in self._engines and (app in self._listener_started or app in self._listeners)

    def ensure_listener(self) -> None:
        """A server that did not start this process's listener (``flask run``; gunicorn's
        ``post_worker_init`` does) gets it at its first request, in the serving process."""
        app = self._key()
        if app.testing or app in self._listeners or app in self._listener_started:
            return
        with self._lock:
            if app in self._listener_started:
                return
            self._listener_started.add(app)
            self.served(app).started = True

        start_listener(app)

    # -- which workspaces this process holds --------------------------------------------------
    @property
    def selection(self) -> Selection:
        """The workspaces this app holds (``Selection()``, every one, unless POLICY_PARTITION or
        POLICY_WORKSPACES says otherwise; the ``POLICY_WORKSPACE`` meta-pack's workspace always)."""
        return self.selection_of(self._key())

    def selection_of(self, app: Flask) -> Selection:
        """:attr:`selection` of app, without an app context (the decision fast path)."""
        return self._selections.get(app) or Selection()

    def _held(self, app: Flask, batch: list[tuple[int, str, list[Any]]]) -> list[tuple[int, str, list[Any]]]:
        """The revisions with only the changes of held domains (each revision kept: the engine still moves to it)."""
        selection = self.selection_of(app)
        if selection.everything:
            return batch
        return [(n, kind, [c for c in changes if selection.keeps(c.rule)]) for n, kind, changes in batch]

    # -- engine lifecycle ------------------------------------------------------------------
    def _key(self) -> Flask:
        return current_app._get_current_object()  # type: ignore[attr-defined,no-any-return]

    @property
    def loaded(self) -> bool:
        """True once this app's engine is loaded."""
        return self._key() in self._engines

    @property
    def engine(self) -> PolicyEngine:
        """The current engine, loading it on first use."""
        eng = self._engines.get(self._key())
        if eng is None:
            eng = self.reload()
        return eng

    @property
    def directory(self) -> Directory | None:
        """The directory loaded with the current engine (None before the first load or outside an
        app context; never loads)."""
        return self._directories.get(self._key()) if has_app_context() else None

    @staticmethod
    def _begin_load(session: Session) -> None:
        if session.get_bind().dialect.name == "postgresql" and not session.in_transaction():
            # One snapshot (as read_policy would open it), under the load's own statement timeout:
            # at 1M memberships two workers loading at once passed the 30 s request bound.
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            ms = int(float(current_app.config["POLICY_LOAD_STATEMENT_TIMEOUT_SECONDS"]) * 1000)
            session.execute(text(f"SET LOCAL statement_timeout = {max(ms, 0)}"))

    def build(
        self, session: Session, capture: snapshot.Capture | None = None, named: set[int] | None = None
    ) -> PolicyEngine:
        """A fresh engine from the database (pack documents and rules) at the committed head; what it
        read is also kept in ``capture`` (for a snapshot) when given. A partition keeps only the facts
        of the domains it holds, and puts the ids of the users they name into ``named``."""
        self._begin_load(session)
        selection = self.selection
        holds = None if selection.everything else selection.holds
        revision, documents, pack_rules, facts = policy_store.read_policy(session, holds)
        if not documents:
            raise UnavailableError("policy not imported; run `flask db-upgrade`")
        if capture is not None:
            capture.revision, capture.documents, capture.pack_rules = revision, documents, list(pack_rules)
            facts = capture.tee(facts)
        if not selection.everything:
            facts = _held_facts(facts, selection, named if named is not None else set())
        model_text = Path(current_app.config["MODEL_PATH"]).read_text(encoding="utf-8")
        packset = packset_from_documents(documents, pack_rules, model_text)
        return PolicyEngine(packset, facts, revision)

    def _load(
        self, session: Session, capture: snapshot.Capture | None
    ) -> tuple[PolicyEngine, Directory, Any]:
        """Engine, directory and live tokens read through one session (one snapshot of the database)."""
        selection = self.selection
        if selection.everything:
            eng = self.build(session, capture)
            return eng, directory.load(session), tokens.load_live(session)
        named: set[int] = set()
        eng = self.build(session, capture, named)
        return eng, directory.load(session, named, selection.holds), tokens.load_live(session)

    def reload(self) -> PolicyEngine:
        """Build a new engine from the database and swap it in (a pending background rebuild is dropped).

        The database unreachable and nothing loaded yet (a start): the engine comes from the
        snapshot (``POLICY_SNAPSHOT_PATH``) if one is there and valid; else the error is raised. A
        database not migrated to the head is refused (UnavailableError naming the command; the reason
        stays in :meth:`refusal` for ``/readyz`` until a load succeeds).
        """
        follower = self._followers.get(self._key())
        if follower is not None:
            return follower.load()  # type: ignore[no-any-return]  # a feed snapshot, no database
        with self._lock:
            app = self._key()
            generation = tokens.generation()
            settings = self._snapshot_settings(app)
            capture = snapshot.Capture() if settings is not None else None
            try:
                self._check_schema()
                with Session(self._db.engine) as session:
                    eng, users, live = self._load(session, capture)  # the same snapshot
            except UNREACHABLE:
                started = None if app in self._engines else self._start_from_snapshot(app, generation)
                if started is None:
                    raise
                return started
            state = capture.state(users, live) if capture is not None else None  # before others share them
            tokens.remember(live, generation)  # every live token: accepted without the database
            # Writers refuse a policy failing the verifier; one that got into the database anyway is
            # not served silently: logged, and /readyz answers 503 until it is fixed.
            self._swap(app, eng, tuple(delegation.problems(eng.packset)), users)
            self._sources[app] = {"source": "database"}
            self._rebuilds.pop(app, None)
            log.info("policy loaded at revision %s (%s users in the directory)", eng.revision, len(users))
            if state is not None and capture is not None and settings is not None:
                force = app in self._snapshot_forced
                self._snapshot_forced.discard(app)
                self._write_snapshot_later(settings, state, eng.revision, capture.current_at, force)
            return eng

    def _check_schema(self) -> None:
        app = self._key()
        try:
            with self._db.engine.connect() as connection:
                schema.check(connection)
        except schema.SchemaError as exc:
            if self._refusals.get(app) != str(exc):
                log.error("policy not loaded: %s", exc)
            self._refusals[app] = str(exc)
            raise UnavailableError(str(exc)) from None
        self._refusals.pop(app, None)

    def refusal(self) -> str | None:
        """Why the last load refused the database (its schema), None otherwise."""
        return self._refusals.get(self._key())

    # -- the snapshot on disk (app.policy.snapshot) ------------------------------------------
    @staticmethod
    def _snapshot_settings(app: Flask) -> SnapshotSettings | None:
        """(path, model digest, database identity) when POLICY_SNAPSHOT_PATH is set, else None."""
        raw = str(app.config.get("POLICY_SNAPSHOT_PATH") or "").strip()
        if not raw or app.config.get("POLICY_PARTITION") or app.config.get("POLICY_WORKSPACES"):
            return None  # (a partition writes none: the file would hold only its workspaces)
        model_text = Path(app.config["MODEL_PATH"]).read_text(encoding="utf-8")
        return (
            Path(raw),
            snapshot.model_digest(model_text),
            snapshot.database_identity(str(app.config["SQLALCHEMY_DATABASE_URI"])),
        )

    def _start_from_snapshot(self, app: Flask, generation: int) -> PolicyEngine | None:
        """The database unreachable at start: engine, directory and tokens from the snapshot (once a
        process); None (logged in one line) when there is none or it is refused."""
        if app in self._snapshot_tried:
            return None
        self._snapshot_tried.add(app)
        settings = self._snapshot_settings(app)
        if settings is None:
            return None
        path, model_sha, database = settings
        t0 = time.monotonic()
        try:
            snap = snapshot.read(path, model_sha, database)
            if snap is None:
                log.warning("database unreachable at start, no policy snapshot at %s: unready until it answers", path)
                return None
            model_text = Path(app.config["MODEL_PATH"]).read_text(encoding="utf-8")
            packset = packset_from_documents(snap.state.documents, snap.state.pack_rules, model_text)
            eng = PolicyEngine(packset, snap.state.facts, snap.meta.revision)
            users = directory.Directory.from_rows(snap.state.users, snap.state.catalogs)
            live = snapshot.identities(snap.state.tokens)
        except Exception as exc:  # noqa: BLE001 - refused whatever is wrong with it: as if there were none
            reason = str(exc).splitlines()[0] if str(exc) else ""
            log.error("policy snapshot %s refused (%s: %s); unready until the database answers",
                      path, type(exc).__name__, reason[:300])
            return None
        tokens.remember(live, generation)
        t1 = time.monotonic()
        problems = tuple(delegation.problems(eng.packset))
        age = max(0.0, time.time() - snap.meta.current_at)
        # Known current when the snapshot's state was read: the staleness bound counts from then.
        self._swap(app, eng, problems, users, synced=time.monotonic() - age)
        self._sources[app] = {
            "source": "snapshot",
            "path": str(path),
            "revision": snap.meta.revision,
            "current_at": snap.meta.current_at,
            "written_at": snap.meta.written_at,
        }
        log.warning(
            "database unreachable at start: serving the policy snapshot %s at revision %s, read from the "
            "database %.0f s ago (%s users, %s tokens; read and built in %.3f s, verified in %.3f s)",
            path, snap.meta.revision, age, len(users), len(live), t1 - t0, time.monotonic() - t1,
        )
        return eng

    def source(self) -> dict[str, Any] | None:
        """Where the engine's state came from: ``{"source": "database"}``, or the snapshot's
        revision, path, when its state was read (``current_at``, epoch seconds) and its age; None
        before a load."""
        src = self._sources.get(self._key())
        if src is None:
            return None
        out = dict(src)
        if "current_at" in out:
            out["age_seconds"] = round(max(0.0, time.time() - float(out["current_at"])), 3)
        return out

    def _write_snapshot_later(self, settings: SnapshotSettings, state: snapshot.State, revision: int,
                              current_at: float, force: bool = False) -> None:
        """Encode and write the snapshot in a thread of its own: never in a request's way."""
        thread = threading.Thread(
            target=self._write_snapshot, args=(settings, state, revision, current_at, force), name="policy-snapshot",
            daemon=True,
        )
        self._snapshot_writers = [t for t in self._snapshot_writers if t.is_alive()] + [thread]
        thread.start()

    def _write_snapshot(self, settings: SnapshotSettings, state: snapshot.State, revision: int,
                        current_at: float, force: bool = False) -> None:
        path, model_sha, database = settings
        try:
            t0 = time.monotonic()
            data = snapshot.encode(state, revision, current_at, model_sha, database)
            t1 = time.monotonic()
            written = snapshot.write(path, data, revision, current_at, force)
            t2 = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - a snapshot that cannot be written changes nothing else
            log.error("policy snapshot %s not written at revision %s: %s", path, revision, str(exc).splitlines()[0])
            return
        self.last_snapshot = {
            "revision": revision, "bytes": len(data), "written": written,
            "encode_seconds": round(t1 - t0, 4), "write_seconds": round(t2 - t1, 4),
        }
        if written:
            log.info("policy snapshot written: %s at revision %s (%s bytes, encoded in %.3f s, written in %.3f s)",
                     path, revision, len(data), t1 - t0, t2 - t1)
        else:
            log.info("policy snapshot at revision %s not written: %s holds a newer one", revision, path)

    def wait_snapshot(self, timeout: float = 60.0) -> None:
        """Wait for this process's snapshot writes under way (gunicorn's master, before it forks)."""
        deadline = time.monotonic() + timeout
        for thread in list(self._snapshot_writers):
            thread.join(max(0.0, deadline - time.monotonic()))

    def _left_snapshot(self, app: Flask, revision: int) -> int:
        """The first sync that read the database after a start from the snapshot: the engine is
        current again (source ``database``); a fresh snapshot is written unless a rebuild will.
        A database whose head is behind the snapshot's revision (restored from an older backup) is
        the truth: the engine is reloaded from it and its snapshot replaces the newer file."""
        with self._lock:
            src = self._sources.get(app)
            if src is None or src.get("source") != "snapshot":
                return revision
            eng = self._engines.get(app)
            with Session(self._db.engine) as session:
                head = policy_store.current_revision(session)
            if eng is not None and head < eng.revision:
                log.warning("the database's head revision %s is behind the snapshot's %s (restored from an older "
                            "backup?): reloading from the database", head, eng.revision)
                self._snapshot_forced.add(app)
                return self.reload().revision
            self._sources[app] = {"source": "database"}
            rebuilding = app in self._rebuilds
        log.info("database reachable: caught up from the snapshot's revision %s to %s",
                 src.get("revision"), eng.revision if eng is not None else None)
        settings = self._snapshot_settings(app)
        if settings is not None and not rebuilding:  # a rebuild writes its own when it swaps
            thread = threading.Thread(target=self._refresh_snapshot, args=(app, settings),
                                      name="policy-snapshot", daemon=True)
            self._snapshot_writers = [t for t in self._snapshot_writers if t.is_alive()] + [thread]
            thread.start()
        return revision

    def _refresh_snapshot(self, app: Flask, settings: SnapshotSettings) -> None:
        """Read the state (policy, directory, tokens: one transaction) and write it as the snapshot."""
        try:
            with app.app_context():
                capture = snapshot.Capture()
                with Session(self._db.engine) as session:
                    self._begin_load(session)
                    revision, documents, pack_rules, facts = policy_store.read_policy(session)
                    capture.documents, capture.pack_rules = documents, list(pack_rules)
                    capture.facts = [tuple(f) for f in facts]
                    state = capture.state(directory.load(session), tokens.load_live(session))
        except Exception as exc:  # noqa: BLE001 - the next full load writes one
            log.error("policy snapshot not refreshed: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            return
        self._write_snapshot(settings, state, revision, capture.current_at)

    def verification_problems(self) -> tuple[str, ...]:
        """The escalation verifier's counterexamples for the loaded policy (empty: it passes)."""
        self.engine  # noqa: B018 - loads the engine (and its verdict) on first use
        return self._verification.get(self._key(), ())

    @staticmethod
    def _needs_rebuild(at: int, number: int) -> bool:
        """A gap after revision ``at``: the engine cannot apply ``number`` in place (a model change or
        pack documents no longer known are found when the revision is applied: :meth:`_advance`)."""
        return number != at + 1

    def _advance(self, session: Session, eng: PolicyEngine, number: int, kind: str, changes: list[RuleChange]) -> bool:
        """Apply one revision to eng in place; False (nothing applied) when only a rebuild can.

        Facts go through ``apply``; a pack revision (pack rules, or a kind that may write documents)
        through ``apply_packs``, with the new pack set built from eng's packs, the documents the
        revision wrote (read in ``session``: a few small rows) and its rule changes. Refused there:
        another ``model.conf``, a pack removed, documents a later revision overwrote.
        """
        if kind not in policy_store.DOCUMENT_KINDS and not any(is_pack_rule(c.rule) for c in changes):
            eng.apply(changes, number)
            return True
        written = policy_store.documents_written_at(session, number) if kind in policy_store.DOCUMENT_KINDS else {}
        if written is None:
            log.info("revision %s: a pack document was saved again since; rebuilding", number)
            return False
        documents = {pid: dict(pack.document) for pid, pack in eng.packset.packs.items()}
        documents.update(written)
        rules = eng.packset.all_rules()
        for change in changes:
            if not is_pack_rule(change.rule):
                continue
            if change.op == "add":
                rules.append(change.rule)
            elif change.rule in rules:
                rules.remove(change.rule)
        model_text = Path(current_app.config["MODEL_PATH"]).read_text(encoding="utf-8")
        try:
            packset = packset_from_documents(documents, rules, model_text)
            eng.apply_packs(packset, changes, number)
        except (PackError, InvalidRuleError) as exc:
            log.info("revision %s not applied in place (%s); rebuilding", number, str(exc)[:300])
            return False
        app = self._key()
        if self._engines.get(app) is eng and (kind not in policy_store.DOCUMENT_KINDS or self._verification.get(app)):
            # The policy writers (edit, rollback, import) ran the verifier on the packs they change
            # before committing, and refuse a failing policy: a passing verdict stays, without seconds
            # of verifier CPU (and GIL) in every serving process. Anything else is verified aside.
            self._verify_later(app, eng)
        return True

    def _verify_later(self, app: Flask, eng: PolicyEngine) -> None:
        """Run the escalation verifier on eng's new packs in a thread of its own (seconds: never in
        the sync's way; the writer verified the edit before committing it) and record its verdict
        for ``/readyz`` if eng still serves those packs then."""
        packset = eng.packset

        def verify() -> None:
            try:
                problems = tuple(delegation.problems(packset))
            except Exception:  # noqa: BLE001 - a verifier crash is a failed verification
                log.exception("escalation verifier failed at revision %s", eng.revision)
                problems = ("the escalation verifier failed",)
            with self._lock:
                if self._engines.get(app) is eng and eng.packset is packset:
                    if problems:
                        log.error("policy at revision %s fails the escalation verifier: %s", eng.revision,
                                  "; ".join(problems))
                    self._verification[app] = problems

        threading.Thread(target=verify, name="policy-verify", daemon=True).start()

    def sync(self, background: bool | None = None) -> int:
        """Apply every committed revision newer than the engine's; returns the new revision.

        A revision that needs a rebuild is rebuilt at once, or — ``background`` (default: when a
        listener keeps this app in step) — by :meth:`_rebuild_later` while this engine keeps
        answering at its revision; until that rebuild swaps, syncs only apply token revocations.
        """
        app = self._key()
        if app in self._followers:
            return self.engine.revision  # the feed applies revisions as they come (apply_event)
        revision = self._sync(background)
        if self._sources.get(app, {}).get("source") == "snapshot":
            revision = self._left_snapshot(app, revision)  # the database answered: caught up from the snapshot
        return revision

    def sync_before(self, revision: int) -> int:
        """:meth:`sync` when every revision below ``revision`` is known to be committed (a writer
        holding the head lock at ``revision``; a NOTIFY of ``revision - 1``): nothing to read when the
        engine already holds ``revision - 1`` (revisions are gapless and applied in order) or will
        at once (the revision before it, and that one is this process's own commit, applied by
        :meth:`apply_committed` when it returns), no rebuild is pending and it does not serve a snapshot."""
        app = self._key()
        eng = self._engines.get(app)
        held = revision - 1
        if (
            eng is not None
            and (eng.revision >= held or (eng.revision == held - 1 and held in self._committing.get(app, ())))
            and app not in self._rebuilds
            and self._sources.get(app, {}).get("source") != "snapshot"
        ):
            return eng.revision
        return self.sync()

    def _sync(self, background: bool | None) -> int:
        app = self._key()
        if background is None:
            background = app in self._listeners
        with self._lock:
            eng = self.engine
            with Session(self._db.engine) as session:
                if app in self._rebuilds:
                    if not background:
                        return self.reload().revision  # read-your-writes: the rebuild's result is dropped
                    self._revocations_after(session, max(eng.revision, self._revocations_through.get(app, 0)))
                    self._synced[app] = time.monotonic()
                    return eng.revision
                while True:
                    batch = policy_store.revision_log_after(session, eng.revision)
                    if not batch:
                        break
                    # Token creates and revokes first: a rebuild below would return before reaching them.
                    notes = self._follow_tokens(session, batch)
                    self._revocations_through[app] = batch[-1][0]
                    self._saw(app, batch[-1][0])
                    incremental: list[tuple[int, str, list[Any]]] = []
                    at = eng.revision
                    for number, kind, changes in self._held(app, batch):
                        if self._needs_rebuild(at, number):
                            break
                        incremental.append((number, kind, changes))
                        at = number
                    # The directory before the engine: if its fetch fails nothing is applied, and the
                    # next sync reads the same revisions again (a rebuild loads a directory of its own).
                    self._follow_users(session, self._directories.get(app), incremental, notes)
                    applied = 0
                    for number, kind, changes in incremental:
                        if not self._advance(session, eng, number, kind, changes):
                            break
                        applied += 1
                    if applied < len(batch):
                        if background:
                            self._rebuild_later(app, eng)
                            self._synced[app] = time.monotonic()
                            return eng.revision
                        return self.reload().revision
                    if len(batch) < policy_store.LOG_BATCH:
                        break  # the log held no more when read (a later commit hints of its own)
            self._synced[app] = time.monotonic()
            return eng.revision

    def _revocations_after(self, session: Session, revision: int) -> None:
        # While a rebuild is under way: token creates and revokes, user and settings changes cannot wait for it.
        batch = policy_store.revision_log_after(session, revision)
        if batch:
            notes = self._follow_tokens(session, batch)
            changed = [r for r in batch if r[1] in directory.MESSAGE_KINDS]
            self._follow_users(session, self._directories.get(self._key()), changed, notes)
            self._revocations_through[self._key()] = batch[-1][0]
            self._saw(self._key(), batch[-1][0])

    def _saw(self, app: Flask, revision: int) -> None:
        """Remember revision as committed (read from the revision log)."""
        if revision > self._heads.get(app, 0):
            self._heads[app] = revision

    def touch_tokens(self) -> int:
        """Write the ``last_used_at`` of the tokens this process's requests used (:func:`tokens.touch_used`);
        a failure is logged, never raised into the listener."""
        try:
            return tokens.touch_used(self._db.engine)
        except Exception:  # noqa: BLE001 - a hint for operators: never worth the listener's loop
            log.exception("last_used_at of used tokens not written")
            return 0

    def follows_log(self) -> bool:
        """True while the app's listener is connected to LISTEN and has caught up since it connected:
        each committed revision reaches this process within the listener's delay, without a request
        asking the database."""
        app = self._key()
        if app in self._followers:
            return False  # a feed brings revocations, not creates: a token it lacks is not known unknown
        return bool(getattr(self._listeners.get(app), "following", False))

    def known_head(self) -> int | None:
        """The newest committed revision this process knows of, without asking the database: the
        last revision read from the log, or the engine's own (None before the first load)."""
        app = self._key()
        eng = self._engines.get(app)
        seen = self._heads.get(app)
        if eng is None:
            return seen
        return max(eng.revision, seen or 0)

    # -- background rebuilds (no stampede) -------------------------------------------------
    def _rebuild_later(self, app: Flask, base: PolicyEngine) -> None:
        # (base: the engine that keeps serving meanwhile; only its revision is recorded)
        """Start the background rebuild of app's engine (called under the lock)."""
        jitter = max(0.0, float(app.config.get("POLICY_REBUILD_JITTER_SECONDS") or 0))
        delay = random.uniform(0, jitter)  # noqa: S311 - spreading load, not security
        self._rebuilds[app] = {
            "state": "waiting",
            "from_revision": base.revision,
            "started": time.monotonic(),
            "delay": delay,
        }
        log.info("policy rebuild from revision %s scheduled in %.2f s", base.revision, delay)
        threading.Thread(
            target=self._rebuild_in_background, args=(app, delay), name="policy-rebuild", daemon=True
        ).start()

    def _rebuild_in_background(self, app: Flask, delay: float) -> None:
        state = self._rebuilds.get(app)
        if state is None:
            return
        try:
            time.sleep(delay)
            state["state"] = "running"
            t0 = time.monotonic()
            with app.app_context():
                while True:
                    generation = tokens.generation()
                    settings = self._snapshot_settings(app)
                    capture = snapshot.Capture() if settings is not None else None
                    with Session(self._db.engine) as session:
                        # outside the lock: the old engine keeps answering
                        new, users, live = self._load(session, capture)
                    saved = capture.state(users, live) if capture is not None else None  # before the catch-up
                    problems = tuple(delegation.problems(new.packset))
                    with self._lock:
                        if self._rebuilds.get(app) is not state:
                            return  # a synchronous reload (a local write) got there first
                        read = new.packset
                        if not self._catch_up(new, users):
                            continue  # a revision the catch-up cannot apply came while building: build again
                        self._swap(app, new, problems, users)
                        if new.packset is not read:
                            self._verify_later(app, new)  # a pack edit was caught up
                        self._sources[app] = {"source": "database"}
                        # dropped if a revocation came since the read (_catch_up does not forget tokens)
                        tokens.remember(live, generation)
                        self._rebuilds.pop(app, None)
                        if saved is not None and capture is not None and settings is not None:
                            self._write_snapshot_later(settings, saved, capture.revision, capture.current_at)
                        self.last_rebuild = {
                            "from_revision": state["from_revision"],
                            "to_revision": new.revision,
                            "seconds": round(time.monotonic() - t0, 3),
                            "delay": round(delay, 3),
                        }
                        log.info("policy rebuilt in the background: %s", self.last_rebuild)
                        return
        except Exception:  # noqa: BLE001 - the next sync schedules it again
            log.exception("background policy rebuild failed; keeping revision %s", state["from_revision"])
            with self._lock:
                if self._rebuilds.get(app) is state:
                    self._rebuilds.pop(app, None)

    def _catch_up(self, eng: PolicyEngine, users: Directory) -> bool:
        """Apply to eng and its directory (not yet serving) what was committed after they were read;
        False when a revision needs another rebuild."""
        with Session(self._db.engine) as session:
            while True:
                batch = policy_store.revision_log_after(session, eng.revision)
                if not batch:
                    return True
                for number, kind, changes in self._held(self._key(), batch):
                    if self._needs_rebuild(eng.revision, number):
                        return False
                    step = [(number, kind, changes)]
                    notes = directory.messages(session, [number]) if kind in directory.MESSAGE_KINDS else {}
                    self._follow_users(session, users, step, notes)
                    if not self._advance(session, eng, number, kind, changes):
                        return False

    def _swap(
        self, app: Flask, eng: PolicyEngine, problems: tuple[str, ...], users: Directory, synced: float | None = None
    ) -> None:
        """Serve eng and users from now on; ``synced``: when they were known current (monotonic; now)."""
        if problems:
            log.error("policy at revision %s fails the escalation verifier: %s", eng.revision, "; ".join(problems))
        self._verification[app] = problems
        self._directories[app] = users
        if self._engines.get(app) is not eng:
            self._loads[app] = self._loads.get(app, 0) + 1
        self._engines[app] = eng
        self._synced[app] = time.monotonic() if synced is None else synced
        served = self.served(app)
        served.engine, served.directory = eng, users

    def _follow_tokens(self, session: Session, batch: list[tuple[int, str, list[Any]]]) -> dict[int, str]:
        """Apply the batch's token revisions to the token cache (revoked ones dropped, created live
        ones put); the messages of its token, user and workspace changes."""
        kinds = (*tokens.TOKEN_KINDS, *directory.MESSAGE_KINDS)
        notes = directory.messages(session, [n for n, kind, _ in batch if kind in kinds])
        created = []
        for number, kind, _ in batch:
            if kind == tokens.TOKEN_REVOKE:
                tokens.forget_revoked(notes.get(number, ""))
            elif kind == tokens.TOKEN_CREATE:
                created.append(notes.get(number, ""))
        tokens.learn_created(session, created)
        return notes

    @staticmethod
    def _follow_users(
        session: Session,
        users: Directory | None,
        revisions: list[tuple[int, str, list[Any]]],
        notes: dict[int, str],
    ) -> None:
        """Fetch into the directory the users these revisions add facts for or change (one query)."""
        if users is None:
            return
        ids = directory.wanted(users, revisions, notes)
        if ids:
            directory.fetch(session, users, ids)

    def wait_for(self, min_revision: int, timeout: float | None = None) -> PolicyEngine:
        """The engine once it has reached min_revision.

        A revision past the database's committed head does not exist yet: ValidationError at
        once, so no request can hold a worker waiting for it. An existing revision is one sync
        away; UnavailableError after a bounded wait (or when the database cannot be read).
        """
        eng = self.engine
        if eng.revision >= min_revision:
            return eng
        if self._key() in self._followers:
            return self._wait_applied(min_revision, timeout, " through the feed")
        known = self.known_head()
        if self.follows_log() and known is not None and min_revision <= known:
            # Committed (read from the log) and the listener applies it: wait for that, without
            # asking the database from this request's thread.
            return self._wait_applied(min_revision, timeout)
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with Session(self._db.engine) as session:
                head = policy_store.current_revision(session)
        except SQLAlchemyError:
            raise UnavailableError(
                f"policy revision {min_revision} not reached (at {eng.revision}) and the database is unreachable",
                revision=eng.revision,
            ) from None
        if min_revision > head:
            raise ValidationError(
                f"policy revision {min_revision} does not exist yet (the newest is {head})",
                errors=[{"loc": ["min_revision"], "message": f"at most {head}"}],
                revision=eng.revision,
                head=head,
            )
        limit = timeout if timeout is not None else float(current_app.config["MIN_REVISION_WAIT_SECONDS"])
        deadline = time.monotonic() + limit
        while True:
            self.sync()
            eng = self.engine
            if eng.revision >= min_revision:
                return eng
            if time.monotonic() >= deadline:
                raise UnavailableError(
                    f"policy revision {min_revision} not reached (at {eng.revision})",
                    revision=eng.revision,
                )
            time.sleep(0.02)

    def _wait_applied(self, min_revision: int, timeout: float | None, through: str = "") -> PolicyEngine:
        """The engine once another thread applied min_revision (the listener, or a follower's feed:
        ``through`` names it in the refusal), without a query from this one; 503 after the bounded
        wait (a rebuild in the background, a lost connection; a follower cannot tell a revision not
        committed yet from one not delivered yet)."""
        limit = timeout if timeout is not None else float(current_app.config["MIN_REVISION_WAIT_SECONDS"])
        deadline = time.monotonic() + limit
        while True:
            eng = self.engine
            if eng.revision >= min_revision:
                return eng
            if time.monotonic() >= deadline:
                raise UnavailableError(
                    f"policy revision {min_revision} not reached{through} (at {eng.revision})", revision=eng.revision
                )
            time.sleep(0.002)

    # -- follower mode: state from the change feed (app.policy.follower) --------------------------
    def follow(self, app: Flask, follower: Any) -> None:
        """Serve app from ``follower`` (feed snapshots and events) instead of a database; the follower
        also stands as the app's listener (staleness, readiness, the fast path)."""
        self._followers[app] = follower
        self.set_listener(app, follower)

    def following(self) -> bool:
        """True when this app is a follower (a sidecar)."""
        return self._key() in self._followers

    def adopt(self, app: Flask, state: snapshot.State, revision: int, source: dict[str, Any]) -> PolicyEngine:
        """Build the engine, directory and token cache of a feed snapshot and serve them (in an app context)."""
        model_text = Path(app.config["MODEL_PATH"]).read_text(encoding="utf-8")
        packset = packset_from_documents(state.documents, state.pack_rules, model_text)
        eng = PolicyEngine(packset, state.facts, revision)
        users = directory.Directory.from_rows(state.users, state.catalogs)
        live = snapshot.identities(state.tokens)
        problems = tuple(delegation.problems(eng.packset))
        with self._lock:
            cache = tokens.cache()
            if cache is not None:
                cache.clear()  # only the snapshot's tokens: one revoked meanwhile is gone
            tokens.remember(live, tokens.generation())
            self._swap(app, eng, problems, users)
            self._sources[app] = source
            self._saw(app, revision)
        log.info("policy loaded from the feed at revision %s (%s users, %s tokens)", revision, len(users), len(live))
        return eng

    def apply_event(
        self,
        app: Flask,
        revision: int,
        changes: list[RuleChange],
        users: list[tuple[int, str, str | None]],
        catalogs: dict[str, Any],
        revoked: list[str],
        created: list[snapshot.TokenRow],
    ) -> bool:
        """Apply one feed event (in an app context); False when it cannot be applied in place (a gap,
        a pack rule): the follower loads a fresh snapshot."""
        with self._lock:
            eng = self._engines.get(app)
            held = self._directories.get(app)
            if eng is None or held is None:
                return False
            if revision <= eng.revision:
                return True
            if revision != eng.revision + 1 or any(is_pack_rule(c.rule) for c in changes):
                return False
            cache = tokens.cache()
            if cache is not None and revoked:
                cache.discard(*revoked)
            if cache is not None and created:
                cache.put_many(snapshot.identities(created), cache.generation)
            for uid, email, ext in users:
                held.put(uid, email, ext)
            held.catalogs.update(catalogs)
            eng.apply(changes, revision)
            self._synced[app] = time.monotonic()
            self._saw(app, revision)
        return True

    def heard(self, app: Flask, head: int | None = None) -> None:
        """The upstream answered (a heartbeat): the follower's state is current as of now."""
        self._synced[app] = time.monotonic()
        if head is not None:
            self._saw(app, head)

    def apply_committed(self, session: Session) -> None:
        """After a commit: the revisions the transaction wrote reach this process's engine (applied
        in place — pack edits too, :meth:`_advance` — or, when that cannot be, rebuilt at once:
        read-your-writes), and the directory fetches the users they name."""
        pending = session.info.pop("authz_pending", None)
        try:
            if pending and self.loaded:
                self._apply_own(pending)
        finally:
            self._committing.get(self._key(), set()).difference_update(session.info.pop(_COMMITTING, ()))

    def committing(self, session: Session) -> None:
        """Before a commit: the revisions it writes are this process's own, applied right after it
        (a listener hinted of one meanwhile need not read it: :meth:`sync_before`)."""
        pending = session.info.get("authz_pending")
        if pending:
            numbers = session.info[_COMMITTING] = [int(row.id) for row in pending]
            self._committing.setdefault(self._key(), set()).update(numbers)

    def rolled_back(self, session: Session) -> None:
        """After a rollback: the transaction's revisions are not being committed."""
        self._committing.get(self._key(), set()).difference_update(session.info.pop(_COMMITTING, ()))
        self.drop_pending(session)

    def _apply_own(self, pending: list[Any]) -> None:

        # Under the lock: the listener thread may be applying the same revisions right now.
        with self._lock:
            eng = self.engine
            users = self._directories.get(self._key())
            selection = self.selection
            applied: list[tuple[int, str, list[Any]]] = []
            notes: dict[int, str] = {}
            for row in pending:
                number = int(row.id)
                if number <= eng.revision:
                    continue  # the listener got there first
                changes = [RuleChange(op, tuple(rule)) for op, rule in (row.changes or [])]
                if not selection.everything:
                    changes = [c for c in changes if selection.keeps(c.rule)]
                if not self._needs_rebuild(eng.revision, number) and self._advance_committed(
                    eng, number, str(row.kind), changes
                ):
                    applied.append((number, str(row.kind), changes))
                    notes[number] = str(row.message or "")
                else:
                    self.sync(background=False)  # this process wrote it: catch up now (read-your-writes)
                    eng = self.engine
                    users = self._directories.get(self._key())
                    applied = [r for r in applied if r[0] > eng.revision]  # (none: the rebuild loaded them)
            if users is not None and applied:
                ids = directory.wanted(users, applied, notes)
                if ids:
                    self._fetch_users(users, ids)

    def _advance_committed(self, eng: PolicyEngine, number: int, kind: str, changes: list[RuleChange]) -> bool:
        """:meth:`_advance` after this process's commit (a pack revision reads its documents in a
        session of its own)."""
        if kind not in policy_store.DOCUMENT_KINDS and not any(is_pack_rule(c.rule) for c in changes):
            eng.apply(changes, number)
            return True
        with Session(self._db.engine) as session:
            return self._advance(session, eng, number, kind, changes)

    def _fetch_users(self, users: Directory, ids: set[int | str]) -> None:
        """Fetch users into the directory after a commit; when that fails the next sync retries."""
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with Session(self._db.engine) as session:
                directory.fetch(session, users, ids)
        except SQLAlchemyError as exc:
            users.pending.update(ids)
            log.warning("users %s not fetched into the directory (retried at the next sync): %s", sorted(ids)[:5], exc)

    # -- cross-process sync ------------------------------------------------------------------
    def set_listener(self, app: Flask, listener: Any) -> None:
        """Remember the app's policy listener (started by ``policy_sync.start_listener``)."""
        old = self._listeners.get(app)
        if old is not None and old is not listener:
            old.stop()
        self._listeners[app] = listener
        self.served(app).started = True

    def sync_status(self) -> dict[str, Any]:
        """The engine's revision and the listener's state (for readiness and metrics)."""
        app = self._key()
        eng = self._engines.get(app)
        listener = self._listeners.get(app)
        synced = self._synced.get(app)
        rebuild = self._rebuilds.get(app)
        return {
            "loaded": eng is not None,
            "revision": eng.revision if eng is not None else None,
            "source": (self._sources.get(app) or {}).get("source"),
            "loads": self._loads.get(app, 0),
            "seconds_since_sync": round(time.monotonic() - synced, 3) if synced is not None else None,
            "listener": listener.status() if listener is not None else None,
            "rebuild": None
            if rebuild is None
            else {
                "state": rebuild["state"],
                "from_revision": rebuild["from_revision"],
                "seconds": round(time.monotonic() - rebuild["started"], 3),
            },
        }

    def staleness(self) -> float | None:
        """Seconds since the engine last read the revision log, when a listener keeps it current.

        None without a listener (SQLite, ``POLICY_SYNC=off``): nothing refreshes the engine by
        time there, so its age says nothing about missed changes.
        """
        return self._age(self._key())

    def _age(self, app: Flask) -> float | None:
        synced = self._synced.get(app)
        if synced is None or self._listeners.get(app) is None:
            return None
        return time.monotonic() - synced

    def served(self, app: Flask) -> Served:
        """The :class:`Served` of app (one per app, kept current by this runtime): hold it."""
        got = self._served.get(app)
        if got is None:
            got = self._served.setdefault(app, Served(self, app.testing))
        return got

    def serving(self, app: Flask) -> tuple[PolicyEngine, Directory] | None:
        """(engine, directory) app decides with now, read without an app context (the decision
        fast path); None when only the full path may answer: not loaded yet, its listener not
        started, or past ``POLICY_MAX_STALENESS_SECONDS``."""
        eng = self._engines.get(app)
        users = self._directories.get(app)
        if eng is None or users is None:
            return None
        if not (app.testing or app in self._listeners or app in self._listener_started):
            return None
        bound = float(app.config.get("POLICY_MAX_STALENESS_SECONDS") or 0)
        age = self._age(app) if bound > 0 else None
        if age is not None and age > bound:
            return None  # the full path answers 503 (require_fresh)
        return eng, users

    def require_fresh(self) -> None:
        """UnavailableError when ``POLICY_MAX_STALENESS_SECONDS`` (> 0) is exceeded: fail closed."""
        bound = float(current_app.config.get("POLICY_MAX_STALENESS_SECONDS") or 0)
        if bound > 0:
            age = self.staleness()
            if age is not None and age > bound:
                raise UnavailableError(
                    f"the policy may be stale: last read from the database {age:.0f} s ago (bound {bound:g} s)",
                    headers={"Retry-After": "1"},
                    staleness_seconds=round(age, 3),
                )

    @staticmethod
    def drop_pending(session: Session) -> None:
        """After a rollback: forget the revisions the transaction had begun."""
        session.info.pop("authz_pending", None)

    # -- decisions -------------------------------------------------------------------------
    def check(self, subject: str, domain: str, action: str, obj: ResourceFacts | None = None) -> Decision:
        """Casbin's decision for one request (never raises)."""
        return self.engine.check(AccessRequest(subject, domain, obj or ResourceFacts(), action))

    def require(self, subject: str, domain: str, action: str, obj: ResourceFacts | None = None) -> Decision:
        """The decision if allowed; ForbiddenError (with the reason code only) if not."""
        decision = self.check(subject, domain, action, obj)
        if not decision.allowed:
            raise ForbiddenError("You are not allowed to do this.", reason=decision.reason)
        return decision
