"""Two owners demoting (or removing) each other at the same moment on PostgreSQL leave exactly one
owner: the writers serialise on the policy head row, and the second one decides on fresh state."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask

from app.errors import AppError
from app.extensions import authz, db
from app.membership import members
from app.models import Membership, User, Workspace
from app.policy import store as policy_store
from tests.conftest import require_postgres
from tests.factories import add_member, create_user, create_workspace


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"])
@pytest.mark.parametrize("operation", ["demote", "remove"])
def test_two_owners_acting_on_each_other_leave_one_owner(
    app: Flask, monkeypatch: pytest.MonkeyPatch, operation: str
) -> None:
    """Both pass their permission check, meet at a barrier, then race for the lock: one wins."""
    require_postgres()
    ws = create_workspace("race", "classroom")
    a = create_user("a@example.org")
    b = create_user("b@example.org")
    add_member(ws, a, "owner")
    add_member(ws, b, "owner")
    ids = {"a": a.id, "b": b.id}
    barrier = threading.Barrier(2, timeout=20)
    real_begin = policy_store.begin_write

    def begin_at_the_same_moment(*args: Any, **kw: Any) -> Any:
        barrier.wait()
        return real_begin(*args, **kw)

    monkeypatch.setattr(policy_store, "begin_write", begin_at_the_same_moment)
    outcomes: dict[str, object] = {}

    def act(me: str, other: str) -> None:
        with app.app_context():
            session = db.session()
            try:
                actor = session.get(User, ids[me])
                space = session.get(Workspace, ws.id)
                assert actor is not None and space is not None
                if operation == "demote":
                    members.change_role(session, actor, space, ids[other], "admin")
                else:
                    members.remove_members(session, actor, space, [ids[other]])
                outcomes[me] = "ok"
            except AppError as exc:
                outcomes[me] = exc.status
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                outcomes[me] = repr(exc)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=act, args=("a", "b")), threading.Thread(target=act, args=("b", "a"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(map(str, outcomes.values())) in (["403", "ok"], ["409", "ok"]), outcomes
    db.session.expire_all()
    owners = db.session.query(Membership).filter_by(workspace_id=ws.id, role="owner").all()
    assert len(owners) == 1
    authz.sync()
    engine_owners = [u for u, r in authz.engine.members_of(ws.key).items() if r == "role:classroom:owner"]
    assert engine_owners == [f"user:{owners[0].user_id}"]
    # The database's rules agree with the engine (nothing half-written).
    fresh = authz.build(db.session())
    assert fresh.members_of(ws.key) == authz.engine.members_of(ws.key)
