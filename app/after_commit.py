"""The one after-commit path: what a transaction of ``db.session`` changes in this process's memory.

:func:`init_app` installs it (once; nothing registers at import time). After a commit, in this order:

1. **policy**: the revisions the transaction wrote (``policy.store.begin_write``) reach the engine,
   applied in place or rebuilt, and the directory fetches the users they name
   (:meth:`PolicyRuntime.apply_committed <app.policy.runtime.PolicyRuntime.apply_committed>`).
   Other processes learn of them from the ``NOTIFY`` sent inside the transaction
   (``policy.sync.notify_revision``) or at their next poll.
2. **service tokens** created in it enter the token cache (``policy.tokens.learn_committed``), then
   those revoked in it leave it (``policy.tokens.forget_committed``).
3. **user handles**: users inserted in it, and emails and external ids changed in it, reach the
   directory the decision surfaces resolve references from (``decisions.resolution.apply_handles``).
4. **AuthZEN settings**: resource catalogs committed in it reach the directory
   (``decisions.authzen.apply_settings``).

After a rollback every note of the transaction is dropped. The notes are gathered in
``session.info`` while the transaction runs: by the writers themselves (revisions, revoked and
created tokens) and by the attribute listeners installed here (user handles, workspace settings).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.decisions import authzen, resolution
from app.models import User, Workspace
from app.policy import tokens
from app.policy.runtime import PolicyRuntime

# (target, event, listener): the notes gathered while a transaction runs
_NOTES: tuple[tuple[Any, str, Any], ...] = (
    (User.email, "set", resolution.email_set),
    (User.external_id, "set", resolution.external_id_set),
    (User, "after_insert", resolution.user_inserted),
    (Workspace.settings, "set", authzen.settings_set),
)


def init_app(app: Flask, db: SQLAlchemy) -> None:
    """Install the dispatcher on ``db.session`` and the note listeners (each once per process)."""
    hooks = (
        (db.session, "before_commit", before_commit),
        (db.session, "after_commit", after_commit),
        (db.session, "after_soft_rollback", after_rollback),
    )
    for target, name, fn in (*_NOTES, *hooks):
        if not event.contains(target, name, fn):
            event.listen(target, name, fn)


def before_commit(session: Session) -> None:
    """The revisions about to commit are marked as this process's own (``PolicyRuntime.committing``)."""
    runtime: PolicyRuntime | None = current_app.extensions.get("authz")
    if runtime is not None:
        runtime.committing(session)


def after_commit(session: Session) -> None:
    """Apply the committed transaction's notes to memory, in the order of the module docstring."""
    runtime: PolicyRuntime | None = current_app.extensions.get("authz")
    if runtime is not None:
        runtime.apply_committed(session)
    tokens.learn_committed(session)
    tokens.forget_committed(session)  # after: a token created and revoked in one transaction stays out
    directory = runtime.directory if runtime is not None else None
    resolution.apply_handles(session, directory)
    authzen.apply_settings(session, directory)


def after_rollback(session: Session, previous_transaction: Any) -> None:
    """Drop the notes of a transaction that did not commit."""
    runtime: PolicyRuntime | None = current_app.extensions.get("authz")
    if runtime is not None:
        runtime.rolled_back(session)
    else:
        PolicyRuntime.drop_pending(session)
    tokens.drop_pending(session)
    resolution.drop_handles(session)
    authzen.drop_settings(session)
