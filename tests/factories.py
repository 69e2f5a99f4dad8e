"""Test data factories that go through the real services and the real policy store."""

from __future__ import annotations

from app.authz.engine import RuleChange
from app.extensions import db, file_packs
from app.models import Membership, User, Workspace
from app.services import policy_store, users, workspaces

PASSWORD = "demo-password-1"


def create_user(email: str, password: str = PASSWORD, **kw: object) -> User:
    """A committed user."""
    user = users.create_user(db.session(), email, password, **kw)  # type: ignore[arg-type]
    db.session.commit()
    return user


def create_workspace(slug: str, pack: str, name: str | None = None) -> Workspace:
    """A committed workspace of a pack."""
    ws, _ = workspaces.create_workspace(db.session(), file_packs(), slug, name or slug, pack)
    db.session.commit()
    return ws


def add_member(ws: Workspace, user: User, role: str, status: str = "accepted") -> Membership:
    """A committed membership and its g-rule, without any permission check (test setup only)."""
    session = db.session()
    handle = policy_store.begin_write(session, "test-setup", None, "factory add_member")
    m = Membership(workspace_id=ws.id, user_id=user.id, role=role, status=status)
    session.add(m)
    policy_store.add_changes(session, handle, [RuleChange("add", ("g", user.key, f"role:{ws.pack}:{role}", ws.key))])
    session.commit()
    return m
