"""Identity for web clients: CSRF, sign-in/out, throttling, own profile, session invalidation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask

from app.extensions import db
from app.models import AuditEvent
from tests.factories import PASSWORD, fast_password_hashing, seed_demo, web_client


@pytest.fixture
def demo(app: Flask) -> Iterator[Flask]:
    """The app with DESIGN.md §6's demo data."""
    fast_password_hashing()
    seed_demo()
    yield app


def test_sign_in_me_sign_out(demo: Flask) -> None:
    """A session cookie carries the user; sign-out ends it."""
    wc = web_client(demo, "owner@classroom.example")
    me = wc.get("/api/auth/me").get_json()
    assert me["email"] == "owner@classroom.example"
    assert {"slug": "classroom-demo", "role": "owner"}.items() <= me["workspaces"][0].items()
    assert wc.post("/api/auth/signout").status_code == 204
    resp = wc.get("/api/auth/me")
    assert resp.status_code == 401 and resp.mimetype == "application/problem+json"


def test_changes_need_csrf_token(demo: Flask) -> None:
    """An unsafe request without X-CSRFToken is refused, signed in or not."""
    client = demo.test_client()
    resp = client.post("/api/auth/signin", json={"email": "owner@classroom.example", "password": PASSWORD})
    assert resp.status_code == 400 and resp.get_json()["type"].endswith("/csrf-failed")
    wc = web_client(demo, "owner@classroom.example")
    wc._fresh_g()
    resp = wc.client.patch("/api/auth/me", json={"display_name": "x"})
    assert resp.status_code == 400
    wc._fresh_g()
    resp = wc.client.patch("/api/auth/me", json={"display_name": "x"}, headers={"X-CSRFToken": "forged"})
    assert resp.status_code == 400
    assert wc.patch("/api/auth/me", json={"display_name": "Olive Owner"}).status_code == 200


def test_wrong_credentials_and_bad_input(demo: Flask) -> None:
    """Wrong password 401, wrong types 422, non-JSON 415, malformed JSON 400."""
    wc = web_client(demo)
    assert wc.post("/api/auth/signin", json={"email": "owner@classroom.example", "password": "nope"}).status_code == 401
    assert wc.post("/api/auth/signin", json={"email": "nobody@example.com", "password": "x"}).status_code == 401
    assert wc.post("/api/auth/signin", json={"email": 5, "password": []}).status_code == 422
    assert wc.post("/api/auth/signin", data="email=x", content_type="text/plain").status_code == 415
    assert wc.post("/api/auth/signin", data="{", content_type="application/json").status_code == 400
    assert wc.post("/api/auth/signin", json=["x"]).status_code == 400


def test_sign_in_is_throttled(demo: Flask) -> None:
    """After LOGIN_MAX_FAILURES failures the right password is refused too (429) for the window."""
    wc = web_client(demo)
    limit = demo.config["LOGIN_MAX_FAILURES"]
    for _ in range(limit):
        assert (
            wc.post("/api/auth/signin", json={"email": "admin@classroom.example", "password": "wrong-1"}).status_code
            == 401
        )
    resp = wc.post("/api/auth/signin", json={"email": "admin@classroom.example", "password": PASSWORD})
    assert resp.status_code == 429 and resp.mimetype == "application/problem+json"
    # Other accounts are not affected.
    assert (
        wc.post("/api/auth/signin", json={"email": "owner@classroom.example", "password": PASSWORD}).status_code == 200
    )


def test_profile_update(demo: Flask) -> None:
    """Display name and username change freely; email needs the current password; all audited."""
    wc = web_client(demo, "learner@classroom.example")
    resp = wc.patch("/api/auth/me", json={"display_name": "Lea", "username": "lea"})
    assert resp.status_code == 200 and resp.get_json()["username"] == "lea"
    assert wc.patch("/api/auth/me", json={"email": "lea@example.org"}).status_code == 401
    assert wc.patch("/api/auth/me", json={"email": "bad", "current_password": PASSWORD}).status_code == 422
    taken = wc.patch("/api/auth/me", json={"email": "owner@classroom.example", "current_password": PASSWORD})
    assert taken.status_code == 409
    other = web_client(demo, "learner2@classroom.example")
    assert other.patch("/api/auth/me", json={"username": "lea"}).status_code == 409
    assert wc.patch("/api/auth/me", json={"username": "x y"}).status_code == 422
    assert wc.patch("/api/auth/me", json={"role": "owner"}).status_code == 422
    ok = wc.patch("/api/auth/me", json={"email": "lea@example.org", "current_password": PASSWORD})
    assert ok.status_code == 200 and ok.get_json()["email"] == "lea@example.org"
    assert (
        web_client(demo).post("/api/auth/signin", json={"email": "lea@example.org", "password": PASSWORD}).status_code
        == 200
    )
    assert db.session.query(AuditEvent).filter_by(action="profile.update").count() == 2


def test_password_change_ends_other_sessions(demo: Flask) -> None:
    """Changing the password bumps session_version: other sessions end, this one stays."""
    laptop = web_client(demo, "teacher@classroom.example")
    phone = web_client(demo, "teacher@classroom.example")
    resp = laptop.patch("/api/auth/me", json={"password": "new-password-2", "current_password": PASSWORD})
    assert resp.status_code == 200
    assert laptop.get("/api/auth/me").status_code == 200
    assert phone.get("/api/auth/me").status_code == 401
    assert (
        laptop.patch("/api/auth/me", json={"password": "short", "current_password": "new-password-2"}).status_code
        == 422
    )
    fresh = web_client(demo)
    assert (
        fresh.post("/api/auth/signin", json={"email": "teacher@classroom.example", "password": PASSWORD}).status_code
        == 401
    )
    assert (
        fresh.post(
            "/api/auth/signin", json={"email": "teacher@classroom.example", "password": "new-password-2"}
        ).status_code
        == 200
    )
