"""Test data factories that go through the real services and the real policy store."""

from __future__ import annotations

from typing import Any

from app.authz.engine import RuleChange
from app.extensions import db
from app.identity import users
from app.membership import workspaces
from app.models import Membership, User, Workspace
from app.policy import store as policy_store
from app.policy.files import file_packs

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


# -- web clients (cookie session + CSRF), for the member/group API tests ------------------------
class WebClient:
    """A test client signed in through POST /api/auth/signin, sending X-CSRFToken on changes.

    The tests keep an app context pushed, so flask's ``g`` outlives each request; flask-login
    (``g._login_user``) and flask-wtf (``g.csrf_token``) memoise there. Every request starts by
    clearing both, as a real server (a fresh ``g`` per request) would.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.token = ""

    @staticmethod
    def _fresh_g() -> None:
        from flask import g

        g.pop("_login_user", None)
        g.pop("csrf_token", None)

    def csrf(self) -> str:
        """Fetch (once per session) the CSRF token."""
        if not self.token:
            self._fresh_g()
            self.token = self.client.get("/api/auth/csrf").get_json()["csrf_token"]
        return self.token

    def get(self, url: str, **kw: Any) -> Any:
        """GET."""
        self._fresh_g()
        return self.client.get(url, **kw)

    def _send(self, method: str, url: str, json: Any = None, **kw: Any) -> Any:
        headers = {"X-CSRFToken": self.csrf(), **kw.pop("headers", {})}
        self._fresh_g()
        resp = self.client.open(url, method=method, json=json, headers=headers, **kw)
        if url in ("/api/auth/signin", "/api/auth/signup") and resp.status_code in (200, 201):
            self.token = resp.get_json()["csrf_token"]  # rotated at sign-in
        return resp

    def post(self, url: str, json: Any = None, **kw: Any) -> Any:
        """POST with CSRF."""
        return self._send("POST", url, json, **kw)

    def patch(self, url: str, json: Any = None, **kw: Any) -> Any:
        """PATCH with CSRF."""
        return self._send("PATCH", url, json, **kw)

    def put(self, url: str, json: Any = None, **kw: Any) -> Any:
        """PUT with CSRF."""
        return self._send("PUT", url, json, **kw)

    def delete(self, url: str, json: Any = None, **kw: Any) -> Any:
        """DELETE with CSRF (and a JSON body, if given)."""
        return self._send("DELETE", url, json, **kw)


def web_client(app: Any, email: str | None = None, password: str = PASSWORD) -> WebClient:
    """A fresh web client, signed in as email if given (asserts success)."""
    wc = WebClient(app.test_client())
    if email is not None:
        resp = wc.post("/api/auth/signin", json={"email": email, "password": password})
        assert resp.status_code == 200, resp.get_json()
    return wc


def fast_password_hashing() -> None:
    """Cheap argon2 parameters for tests (the hash format and verification stay the real ones)."""
    from argon2 import PasswordHasher

    users._hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def seed_demo() -> None:
    """Load DESIGN.md §6's demo data through seed/demo.py."""
    from seed.demo import load_demo

    load_demo()


def uid(email: str) -> int:
    """The id of the user with this email."""
    user = users.by_email(db.session(), email)
    assert user is not None, email
    return user.id
