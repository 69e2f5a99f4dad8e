"""Invitations on both backends: existing users join pending (accepted at next sign-in), unknown
emails get a single-use expiring sign-up link; parsing, limits, duplicates, all-or-nothing."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from flask import Flask

from app.extensions import authz, db
from app.models import AuditEvent, Invitation, Membership, OutboxEmail, User, utcnow
from app.policy import store as policy_store
from tests.factories import PASSWORD, uid, web_client

CLS = "/api/workspaces/classroom-demo"



def state() -> tuple[int, int, int, int, int]:
    """Revision and row counts a refused invitation must not change."""
    db.session.expire_all()
    return (
        policy_store.current_revision(db.session()),
        db.session.query(Membership).count(),
        db.session.query(Invitation).count(),
        db.session.query(OutboxEmail).count(),
        db.session.query(AuditEvent).count(),
    )


def token_for(app: Flask, email: str) -> str:
    """The sign-up token mailed to email (memory mail backend)."""
    for mail in reversed(app.extensions["mail_memory"]):
        if mail["to"] == email and mail["kind"] == "signup_link":
            found = re.search(r"token=([A-Za-z0-9_\-]+)", mail["body"])
            assert found
            return found.group(1)
    raise AssertionError(f"no sign-up mail for {email}")


def test_existing_user_joins_pending_then_accepted_at_next_sign_in(demo: Flask) -> None:
    """001: 'added immediately with Pending status and notified by email ... Accepted on their next login'."""
    wc = web_client(demo, "owner@classroom.example")
    resp = wc.post(f"{CLS}/invitations", json={"emails": "learner@academy.example", "role": "teacher"})
    assert resp.status_code == 201
    body = resp.get_json()
    # the same answer as for an unknown address (issue 9: no account existence, no user id)
    assert body == {
        "invited": [{"email": "learner@academy.example", "role": "teacher", "status": "invited"}],
        "revision": authz.engine.revision,
    }
    key = f"user:{uid('learner@academy.example')}"
    assert authz.engine.workspace_role(key, "ws:classroom-demo") == "role:classroom:teacher"
    assert demo.extensions["mail_memory"][-1]["to"] == "learner@academy.example"
    pending = wc.get(f"{CLS}/members?status=pending").get_json()["items"]
    assert [m["email"] for m in pending] == ["learner@academy.example"]
    web_client(demo, "learner@academy.example")
    db.session.expire_all()
    m = db.session.query(Membership).filter_by(user_id=uid("learner@academy.example"), status="accepted")
    assert m.count() == 2
    assert db.session.query(AuditEvent).filter_by(action="member.accept").count() == 1


def test_unknown_email_signs_up_once(demo: Flask) -> None:
    """A sign-up link creates the account, joins the workspace and signs in; the token is single-use."""
    wc = web_client(demo, "admin@classroom.example")
    resp = wc.post(f"{CLS}/invitations", json={"emails": "new.person@example.org", "role": "teacher"})
    assert resp.status_code == 201 and resp.get_json()["invited"] == [
        {"email": "new.person@example.org", "role": "teacher", "status": "invited"}
    ]
    assert "token" not in str(resp.get_json())
    token = token_for(demo, "new.person@example.org")
    inv = db.session.query(Invitation).one()
    assert inv.token_hash != token and len(inv.token_hash) == 64
    guest = web_client(demo)
    resp = guest.post("/api/auth/signup", json={"token": token, "password": "a-new-password", "display_name": "New"})
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["workspace"] == {"slug": "classroom-demo", "role": "teacher", "status": "accepted"}
    me = guest.get("/api/auth/me").get_json()
    assert me["email"] == "new.person@example.org" and me["workspaces"][0]["status"] == "accepted"
    assert authz.engine.workspace_role(f"user:{me['id']}", "ws:classroom-demo") == "role:classroom:teacher"
    again = web_client(demo).post("/api/auth/signup", json={"token": token, "password": "another-password"})
    assert again.status_code == 410 and again.mimetype == "application/problem+json"
    unknown = web_client(demo).post("/api/auth/signup", json={"token": "x" * 43, "password": "another-password"})
    assert unknown.status_code == 404
    assert web_client(demo).post("/api/auth/signup", json={"token": 5, "password": "p"}).status_code == 422


def test_expired_link_and_weak_password(demo: Flask) -> None:
    """An expired link is gone (410); a too-short password is 422 and keeps the link usable."""
    wc = web_client(demo, "owner@classroom.example")
    wc.post(f"{CLS}/invitations", json={"emails": "a@example.org\nb@example.org"})
    ta, tb = token_for(demo, "a@example.org"), token_for(demo, "b@example.org")
    guest = web_client(demo)
    assert guest.post("/api/auth/signup", json={"token": ta, "password": "short"}).status_code == 422
    assert db.session.query(User).filter_by(email="a@example.org").count() == 0
    assert guest.post("/api/auth/signup", json={"token": ta, "password": "long-enough-pw"}).status_code == 201
    inv = db.session.query(Invitation).filter_by(email="b@example.org").one()
    inv.expires_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    assert (
        web_client(demo).post("/api/auth/signup", json={"token": tb, "password": "long-enough-pw"}).status_code == 410
    )
    # An expired invitation no longer blocks a new one.
    assert wc.post(f"{CLS}/invitations", json={"emails": "b@example.org"}).status_code == 201


def test_many_emails_parsed_deduplicated_and_validated(demo: Flask) -> None:
    """Commas and newlines, case-insensitive duplicates, default role = the pack's default."""
    wc = web_client(demo, "owner@classroom.example")
    raw = "One@Example.org, two@example.org\n\none@example.org ;"
    resp = wc.post(f"{CLS}/invitations", json={"emails": raw})
    assert resp.status_code == 201
    assert [i["email"] for i in resp.get_json()["invited"]] == ["one@example.org", "two@example.org"]
    assert {i["role"] for i in resp.get_json()["invited"]} == {"learner"}
    listing = wc.get(f"{CLS}/invitations").get_json()["items"]
    assert [i["email"] for i in listing] == ["one@example.org", "two@example.org"]
    resp = wc.post(f"{CLS}/invitations", json={"emails": ["three@example.org", "four@example.org, five@example.org"]})
    assert len(resp.get_json()["invited"]) == 3


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"emails": "good@example.org, not-an-email, @x.org"}, 422),
        ({"emails": ""}, 422),
        ({"emails": " , \n"}, 422),
        ({"emails": 42}, 422),
        ({"emails": ["a@example.org", 7]}, 422),
        ({"emails": {"a": 1}}, 422),
        ({"emails": "x" * 300 + "@example.org"}, 422),
        ({"emails": "a@example.org", "role": "superuser"}, 422),
        ({"emails": "a@example.org", "role": "role:skills:owner"}, 422),
        ({"emails": "a@example.org", "role": 1}, 422),
        ({"emails": ",".join(f"u{i}@example.org" for i in range(10_000))}, 413),
        ({"emails": "learner2@classroom.example, fresh@example.org"}, 409),  # already a member
    ],
)
def test_bad_invitations_change_nothing(demo: Flask, body: dict[str, object], status: int) -> None:
    """Every refused invitation is a precise problem and leaves no row, rule or email behind."""
    wc = web_client(demo, "owner@classroom.example")
    before = state()
    resp = wc.post(f"{CLS}/invitations", json=body)
    assert resp.status_code == status, resp.get_json()
    assert resp.mimetype == "application/problem+json"
    assert state() == before


def test_duplicate_invitation_is_a_conflict(demo: Flask) -> None:
    """An open invitation for the same email is 409 for the whole request."""
    wc = web_client(demo, "owner@classroom.example")
    assert wc.post(f"{CLS}/invitations", json={"emails": "dup@example.org"}).status_code == 201
    before = state()
    resp = wc.post(f"{CLS}/invitations", json={"emails": "other@example.org, DUP@example.org"})
    assert resp.status_code == 409 and resp.get_json()["errors"] == [
        {"email": "dup@example.org", "message": "already invited"}
    ]
    assert state() == before


@pytest.mark.parametrize(
    ("actor", "role", "status"),
    [
        ("owner@classroom.example", "owner", 201),  # owners may invite owners (classroom decision)
        ("admin@classroom.example", "teacher", 201),
        ("admin@classroom.example", "admin", 403),  # strictly lower only
        ("teacher@classroom.example", "learner", 403),  # the matrix: teachers do not invite
        ("learner@classroom.example", "learner", 403),
        ("company_admin@academy.example", "learner", 403),  # another workspace
    ],
)
def test_invitation_role_is_a_grant(demo: Flask, actor: str, role: str, status: int) -> None:
    """Inviting with a role is granting it: Casbin's rank rules decide."""
    before = state()
    resp = web_client(demo, actor).post(f"{CLS}/invitations", json={"emails": "x@example.org", "role": role})
    assert resp.status_code == status, resp.get_json()
    if status != 201:
        assert state() == before


def test_platform_operator_invites_across_companies(demo: Flask) -> None:
    """Academy's operator (platform-wide) appoints a company admin in a company they do not belong to."""
    wc = web_client(demo, "operator@platform.example")
    resp = wc.post(
        "/api/workspaces/academy-demo/invitations", json={"emails": "boss@example.org", "role": "company_admin"}
    )
    assert resp.status_code == 201
    ca = web_client(demo, "company_admin@academy.example")
    resp = ca.post(
        "/api/workspaces/academy-demo/invitations", json={"emails": "boss2@example.org", "role": "company_admin"}
    )
    assert resp.status_code == 403 and resp.get_json()["reason"] == "rank_limit"


def test_invitation_answers_reveal_no_account(demo: Flask) -> None:
    """Issue 9 (4): inviting an address with an account elsewhere and one without answers alike:
    same shape, same fields, no user id (the invitee's mail differs, the inviter's answer not)."""
    wc = web_client(demo, "owner@classroom.example")
    known = wc.post(f"{CLS}/invitations", json={"emails": "member@skills.example", "role": "teacher"})
    unknown = wc.post(f"{CLS}/invitations", json={"emails": "nobody.yet@example.org", "role": "teacher"})
    assert known.status_code == unknown.status_code == 201
    k, u = known.get_json(), unknown.get_json()
    assert set(k) == set(u) == {"invited", "revision"}
    assert k["invited"][0].keys() == u["invited"][0].keys() == {"email", "role", "status"}
    assert k["invited"][0]["status"] == u["invited"][0]["status"] == "invited"
    assert u["revision"] == k["revision"] + 1  # both allocate a revision
    assert str(uid("member@skills.example")) not in known.get_data(as_text=True)


def test_sign_up_binds_the_invited_address(demo: Flask) -> None:
    """Sign-up creates the account with the invited address; an email field in the body is refused
    like every unknown field (the link proves control of the invited address only)."""
    wc = web_client(demo, "owner@classroom.example")
    wc.post(f"{CLS}/invitations", json={"emails": "bound@example.org"})
    token = token_for(demo, "bound@example.org")
    resp = web_client(demo).post(
        "/api/auth/signup", json={"token": token, "password": PASSWORD, "email": "x@evil.example"}
    )
    assert resp.status_code == 422 and resp.get_json()["errors"][0]["loc"] == ["email"], resp.get_json()
    assert db.session.query(User).filter_by(email="x@evil.example").count() == 0
    resp = web_client(demo).post("/api/auth/signup", json={"token": token, "password": PASSWORD})
    assert resp.status_code == 201 and resp.get_json()["email"] == "bound@example.org"
    assert db.session.query(User).filter_by(email="x@evil.example").count() == 0


def test_sign_up_with_taken_email_is_a_conflict(demo: Flask) -> None:
    """If the invited email got an account meanwhile, sign-up is refused and the link stays unused."""
    wc = web_client(demo, "owner@classroom.example")
    wc.post(f"{CLS}/invitations", json={"emails": "late@example.org"})
    token = token_for(demo, "late@example.org")
    db.session.add(User(email="late@example.org", password_hash="x", display_name="late"))
    db.session.commit()
    resp = web_client(demo).post("/api/auth/signup", json={"token": token, "password": PASSWORD})
    assert resp.status_code == 409
    assert db.session.query(Invitation).one().used_at is None
