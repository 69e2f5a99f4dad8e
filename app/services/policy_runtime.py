"""The engine's life in one process: load, swap, keep in step with the revision log, verify.

One :class:`PolicyRuntime` per process (``app.extensions.authz``). It builds a
:class:`~app.authz.PolicyEngine` from the database (``policy_store.read_policy``), swaps in a
new one instead of reloading in place, applies committed revisions incrementally (after commit,
from this process's writes, or from the listener's hints — ``policy_sync``), rebuilds on a gap or a
pack change, waits a bounded time for ``min_revision``, and runs the escalation verifier on every
policy it loads (``/readyz`` fails when it does not pass). Decisions go through :meth:`check` and
:meth:`require`, which never raise on a policy error: they deny.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from app.authz import AccessRequest, Decision, PolicyEngine, ResourceFacts, delegation
from app.authz.packs import is_pack_rule, packset_from_documents
from app.errors import ForbiddenError, UnavailableError, ValidationError

from . import policy_store, tokens

log = logging.getLogger("app.authz")


class PolicyRuntime:
    """The process's policy engine: loaded from the database, kept in step by revision.

    Changes reach the engine only after their transaction commits. A newer engine is built
    beside the old one and swapped in; the old one keeps answering until then.
    """

    def __init__(self) -> None:
        self._engines: weakref.WeakKeyDictionary[Flask, PolicyEngine] = weakref.WeakKeyDictionary()
        self._listeners: weakref.WeakKeyDictionary[Flask, Any] = weakref.WeakKeyDictionary()
        self._verification: weakref.WeakKeyDictionary[Flask, tuple[str, ...]] = weakref.WeakKeyDictionary()
        # When the engine last read the revision log successfully (monotonic): its staleness.
        self._synced: weakref.WeakKeyDictionary[Flask, float] = weakref.WeakKeyDictionary()
        self._listener_started: weakref.WeakSet[Flask] = weakref.WeakSet()
        self._lock = threading.RLock()

    def init_app(self, app: Flask, db: SQLAlchemy) -> None:
        """Register the extension (``app.extensions["authz"]``) and the after-commit hook of db's session."""
        self._db = db
        app.extensions["authz"] = self
        event.listen(db.session, "after_commit", self._after_commit)
        event.listen(db.session, "after_soft_rollback", self._after_rollback)
        app.before_request(self._ensure_listener)

    def _ensure_listener(self) -> None:
        """A server that did not start this process's listener (``flask run``; gunicorn's
        ``post_worker_init`` does) gets it at its first request, in the serving process."""
        app = self._key()
        if app.testing or app in self._listeners or app in self._listener_started:
            return
        with self._lock:
            if app in self._listener_started:
                return
            self._listener_started.add(app)
        from app.services.policy_sync import start_listener

        start_listener(app)

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

    def build(self, session: Session) -> PolicyEngine:
        """A fresh engine from the database (pack documents and rules) at the committed head."""
        revision, documents, pack_rules, facts = policy_store.read_policy(session)
        if not documents:
            raise UnavailableError("policy not imported; run `flask db-upgrade`")
        model_text = Path(current_app.config["MODEL_PATH"]).read_text(encoding="utf-8")
        packset = packset_from_documents(documents, pack_rules, model_text)
        return PolicyEngine(packset, facts, revision)

    def reload(self) -> PolicyEngine:
        """Build a new engine from the database and swap it in."""
        with self._lock:
            with Session(self._db.engine) as session:
                eng = self.build(session)
            problems = tuple(delegation.problems(eng.packset))
            if problems:
                # Writers refuse such a policy; one that got into the database anyway is not served
                # silently: logged, and /readyz answers 503 until it is fixed.
                log.error("policy at revision %s fails the escalation verifier: %s", eng.revision, "; ".join(problems))
            self._verification[self._key()] = problems
            self._engines[self._key()] = eng
            self._synced[self._key()] = time.monotonic()
            log.info("policy loaded at revision %s", eng.revision)
            return eng

    def verification_problems(self) -> tuple[str, ...]:
        """The escalation verifier's counterexamples for the loaded policy (empty: it passes)."""
        self.engine  # noqa: B018 - loads the engine (and its verdict) on first use
        return self._verification.get(self._key(), ())

    def sync(self) -> int:
        """Apply every committed revision newer than the engine's; returns the new revision."""
        with self._lock:
            eng = self.engine
            with Session(self._db.engine) as session:
                while True:
                    batch = policy_store.revision_log_after(session, eng.revision)
                    if not batch:
                        break
                    # Token revocations first: a rebuild below would return before reaching them.
                    self._forget_revoked_tokens(session, [n for n, kind, _ in batch if kind == tokens.TOKEN_REVOKE])
                    for number, kind, changes in batch:
                        # A gap, a change to pack rules, or a revision that may have changed pack
                        # documents (new roles, actions, ranks): rebuild from the database.
                        if (
                            number != eng.revision + 1
                            or kind in policy_store.DOCUMENT_KINDS
                            or any(is_pack_rule(ch.rule) for ch in changes)
                        ):
                            return self.reload().revision
                        eng.apply(changes, number)
            self._synced[self._key()] = time.monotonic()
            return eng.revision

    def _forget_revoked_tokens(self, session: Session, numbers: list[int]) -> None:
        if numbers:
            from app.models import PolicyRevision

            for message in session.scalars(select(PolicyRevision.message).where(PolicyRevision.id.in_(numbers))):
                tokens.forget_revoked(str(message or ""))

    def wait_for(self, min_revision: int, timeout: float | None = None) -> PolicyEngine:
        """The engine once it has reached min_revision.

        A revision past the database's committed head does not exist yet: ValidationError at
        once, so no request can hold a worker waiting for it. An existing revision is one sync
        away; UnavailableError after a bounded wait (or when the database cannot be read).
        """
        eng = self.engine
        if eng.revision >= min_revision:
            return eng
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

    def _after_commit(self, session: Session) -> None:
        pending = session.info.pop("authz_pending", None)
        if not pending or not self.loaded:
            return
        from app.authz.engine import RuleChange
        # Under the lock: the listener thread may be applying the same revisions right now.
        with self._lock:
            eng = self.engine
            for row in pending:
                number = int(row.id)
                if number <= eng.revision:
                    continue  # the listener got there first
                changes = [RuleChange(op, tuple(rule)) for op, rule in (row.changes or [])]
                if (
                    number == eng.revision + 1
                    and row.kind not in policy_store.DOCUMENT_KINDS
                    and not any(is_pack_rule(c.rule) for c in changes)
                ):
                    eng.apply(changes, number)
                else:
                    self.sync()
                    eng = self.engine

    # -- cross-process sync ------------------------------------------------------------------
    def set_listener(self, app: Flask, listener: Any) -> None:
        """Remember the app's policy listener (started by ``policy_sync.start_listener``)."""
        old = self._listeners.get(app)
        if old is not None and old is not listener:
            old.stop()
        self._listeners[app] = listener

    def sync_status(self) -> dict[str, Any]:
        """The engine's revision and the listener's state (for readiness and metrics)."""
        app = self._key()
        eng = self._engines.get(app)
        listener = self._listeners.get(app)
        synced = self._synced.get(app)
        return {
            "loaded": eng is not None,
            "revision": eng.revision if eng is not None else None,
            "seconds_since_sync": round(time.monotonic() - synced, 3) if synced is not None else None,
            "listener": listener.status() if listener is not None else None,
        }

    def staleness(self) -> float | None:
        """Seconds since the engine last read the revision log, when a listener keeps it current.

        None without a listener (SQLite, ``POLICY_SYNC=off``): nothing refreshes the engine by
        time there, so its age says nothing about missed changes.
        """
        app = self._key()
        synced = self._synced.get(app)
        if synced is None or self._listeners.get(app) is None:
            return None
        return time.monotonic() - synced

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

    def _after_rollback(self, session: Session, previous_transaction: Any) -> None:
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
