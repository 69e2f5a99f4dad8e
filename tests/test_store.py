"""The policy store and the Authz extension: rules in the DB, revisions, apply-after-commit."""

from __future__ import annotations

import pytest
from flask import Flask

from app.authz import AccessRequest, ResourceFacts
from app.authz.engine import RuleChange
from app.errors import ConflictError, NotFoundError
from app.extensions import authz, db
from app.policy import store as policy_store
from tests.factories import add_member, create_user, create_workspace


def test_role_change_reaches_engine_only_after_commit(app: Flask) -> None:
    """A g-rule written in a transaction is invisible to decisions until commit."""
    ws = create_workspace("acme", "simulations")
    user = create_user("u@example.com")
    before = authz.engine.revision
    session = db.session()
    handle = policy_store.begin_write(session, "test")
    policy_store.add_changes(session, handle, [RuleChange("add", ("g", user.key, "role:simulations:owner", ws.key))])
    assert not authz.check(user.key, ws.key, "view_ai_spend").allowed
    session.commit()
    decision = authz.check(user.key, ws.key, "view_ai_spend")
    assert decision.allowed and decision.revision == before + 1


def test_rollback_leaves_nothing(app: Flask) -> None:
    """A failed transaction writes no rule, no revision, and the engine does not move."""
    ws = create_workspace("acme", "simulations")
    user = create_user("u@example.com")
    head = policy_store.current_revision(db.session())
    session = db.session()
    handle = policy_store.begin_write(session, "test")
    policy_store.add_changes(session, handle, [RuleChange("add", ("g", user.key, "role:simulations:owner", ws.key))])
    session.rollback()
    assert policy_store.current_revision(db.session()) == head
    assert not policy_store.rule_exists(db.session(), ("g", user.key, "role:simulations:owner", ws.key))
    assert authz.engine.revision == head
    assert not authz.check(user.key, ws.key, "view_ai_spend").allowed


def test_duplicate_and_missing_rules_are_conflicts(app: Flask) -> None:
    """Re-adding an existing link is refused (pycasbin would store a second copy)."""
    ws = create_workspace("acme", "simulations")
    user = create_user("u@example.com")
    add_member(ws, user, "learner")
    session = db.session()
    handle = policy_store.begin_write(session, "test")
    with pytest.raises(ConflictError):
        policy_store.add_changes(
            session, handle, [RuleChange("add", ("g", user.key, "role:simulations:learner", ws.key))]
        )
    session.rollback()
    handle = policy_store.begin_write(session, "test")
    with pytest.raises(NotFoundError):
        policy_store.add_changes(
            session, handle, [RuleChange("remove", ("g", user.key, "role:simulations:owner", ws.key))]
        )
    session.rollback()


def test_new_engine_loads_same_state(app: Flask) -> None:
    """A process that starts now (fresh engine from the DB) decides like the running one."""
    ws = create_workspace("acme", "simulations")
    user = create_user("u@example.com")
    add_member(ws, user, "trainer")
    fresh = authz.build(db.session())
    assert fresh.revision == authz.engine.revision
    for action in ("create_and_edit_courses", "review_scores", "view_dashboard"):
        mine = fresh.check(AccessRequest(user.key, ws.key, ResourceFacts(), action))
        assert mine.allowed == authz.check(user.key, ws.key, action).allowed


def test_a_writer_reads_the_revision_log_only_when_its_engine_is_behind(app: Flask) -> None:
    """members.begin locks the head at revision N: an engine at N - 1 holds every committed revision
    (they are gapless), so nothing is read; an engine behind (another process committed) catches up
    before the writer decides anything."""
    from sqlalchemy import event

    from app.membership import members

    ws = create_workspace("acme", "simulations")
    user = create_user("u@example.com")
    assert authz.engine.revision == policy_store.current_revision(db.session())  # loaded, current
    reads: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "FROM policy_revisions" in statement:
            reads.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        session = db.session()
        handle = members.begin(session, None, "member", "current")
        assert authz.engine.revision == handle.number - 1 and reads == []
        session.rollback()
        stale = authz.build(db.session())
        add_member(ws, user, "owner")  # committed "elsewhere": the stale engine misses it
        authz._engines[app] = stale
        assert not authz.check(user.key, ws.key, "view_ai_spend").allowed
        handle = members.begin(session, None, "member", "behind")
        assert reads and authz.engine.revision == handle.number - 1
        assert authz.check(user.key, ws.key, "view_ai_spend").allowed
        session.rollback()
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


def test_sync_catches_up_from_revision_log(app: Flask) -> None:
    """An engine that missed commits (another process) catches up incrementally by revision."""
    ws = create_workspace("acme", "simulations")
    user = create_user("u@example.com")
    stale = authz.build(db.session())
    add_member(ws, user, "owner")
    # Simulate another process: swap the stale engine in, then sync.
    authz._engines[app] = stale
    assert not authz.check(user.key, ws.key, "view_ai_spend").allowed
    rev = authz.sync()
    assert rev == policy_store.current_revision(db.session())
    assert authz.check(user.key, ws.key, "view_ai_spend").allowed
