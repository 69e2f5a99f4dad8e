"""Members API on both backends, signed in as the demo users: list, roles, removal, rank rules,
owner invariants, assignable roles, audit trail, deny-before-lookup, and bad input."""

from __future__ import annotations

import pytest
from flask import Flask

from app.extensions import authz, db
from app.models import AuditEvent, GroupMember, Membership
from app.policy import store as policy_store
from tests.factories import WebClient, uid, web_client

CLS = "/api/workspaces/classroom-demo"
SIM = "/api/workspaces/simulations-demo"



def role_of(slug: str, email: str) -> str | None:
    """The membership role in the database (None if not a member), after checking the g-rule agrees."""
    m = (
        db.session.query(Membership)
        .filter(Membership.user_id == uid(email), Membership.workspace.has(slug=slug))
        .one_or_none()
    )
    db.session.expire_all()
    engine_role = authz.engine.workspace_role(f"user:{uid(email)}", f"ws:{slug}")
    assert engine_role == (f"role:{m.workspace.pack}:{m.role}" if m else "")
    return m.role if m else None


def snapshot() -> tuple[int, int, int]:
    """What a refused request must leave untouched: revision, memberships, audit rows."""
    db.session.expire_all()
    return (
        policy_store.current_revision(db.session()),
        db.session.query(Membership).count(),
        db.session.query(AuditEvent).count(),
    )


def owner(app: Flask) -> WebClient:
    return web_client(app, "owner@classroom.example")


# -- list -----------------------------------------------------------------------------------------
def test_list_search_and_pagination(demo: Flask) -> None:
    """Search by email/name, filter by role, pages with a total; bad parameters are 422 problems."""
    wc = owner(demo)
    body = wc.get(f"{CLS}/members").get_json()
    assert body["total"] == 7 and len(body["items"]) == 7
    emails = [m["email"] for m in body["items"]]
    assert emails == sorted(emails)
    assert {m["email"] for m in wc.get(f"{CLS}/members?q=LEARNER").get_json()["items"]} == {
        "learner@classroom.example",
        "learner2@classroom.example",
    }
    page = wc.get(f"{CLS}/members?per_page=3&page=3").get_json()
    assert page["total"] == 7 and len(page["items"]) == 1
    owners = wc.get(f"{CLS}/members?role=owner").get_json()
    assert owners["total"] == 3
    for bad in ("page=0", "per_page=1000", "page=x", "role=nope", "status=gone", "q=" + "x" * 101):
        resp = wc.get(f"{CLS}/members?{bad}")
        assert resp.status_code == 422 and resp.mimetype == "application/problem+json", bad


def test_list_refused_to_roles_without_the_permission(demo: Flask) -> None:
    """Classroom teachers and learners do not manage members; outsiders are refused; 404 only for no workspace."""
    assert web_client(demo, "admin@classroom.example").get(f"{CLS}/members").status_code == 200
    for email in ("teacher@classroom.example", "learner@classroom.example", "company_admin@academy.example"):
        resp = web_client(demo, email).get(f"{CLS}/members")
        assert resp.status_code == 403 and resp.get_json()["reason"] in ("not_permitted", "no_role"), email
    assert web_client(demo).get(f"{CLS}/members").status_code == 401
    assert owner(demo).get("/api/workspaces/nope-demo/members").status_code == 404


# -- change role: rank rules from both sides ------------------------------------------------------
@pytest.mark.parametrize(
    ("actor", "target", "new_role", "status", "reason"),
    [
        ("owner", "learner", "teacher", 200, None),
        ("owner", "admin", "owner", 200, None),  # owners promote to owner (grant exception)
        ("owner", "owner2", "admin", 200, None),  # owners demote other owners
        ("admin", "learner", "teacher", 200, None),
        ("admin", "teacher", "learner", 200, None),
        ("admin", "learner", "admin", 403, "rank_limit"),  # not equal to own rank
        ("admin", "owner2", "learner", 403, "rank_limit"),  # not on owners
        ("owner", "owner", "admin", 403, "self_change"),  # never one's own role
        ("admin", "admin", "learner", 403, "self_change"),
        ("teacher", "learner", "teacher", 403, "not_permitted"),
        ("learner", "learner2", "teacher", 403, "not_permitted"),
    ],
)
def test_change_role_rank_rules(
    demo: Flask, actor: str, target: str, new_role: str, status: int, reason: str | None
) -> None:
    """Casbin's rank rules decide who changes whom to what (classroom, seed 003)."""
    wc = web_client(demo, f"{actor}@classroom.example")
    before = role_of("classroom-demo", f"{target}@classroom.example")
    state = snapshot()
    resp = wc.patch(f"{CLS}/members/{uid(f'{target}@classroom.example')}", json={"role": new_role})
    assert resp.status_code == status, resp.get_json()
    if status == 200:
        assert resp.get_json()["role"] == new_role
        assert resp.get_json()["revision"] == authz.engine.revision
        assert role_of("classroom-demo", f"{target}@classroom.example") == new_role
        ev = db.session.query(AuditEvent).order_by(AuditEvent.id.desc()).first()
        assert ev is not None and ev.action == "member.change_role"
        assert ev.before == {"role": before, "status": "accepted"} and ev.after["role"] == new_role
        assert ev.revision == resp.get_json()["revision"]
        mail = demo.extensions["mail_memory"][-1]
        assert mail["to"] == f"{target}@classroom.example" and mail["kind"] == "role_change"
    else:
        assert resp.get_json()["reason"] == reason
        assert snapshot() == state
        assert role_of("classroom-demo", f"{target}@classroom.example") == before


def test_simulations_owner_limits_and_platform_admin(demo: Flask) -> None:
    """Simulations owners assign trainer/reviewer/learner, never owner or admin; the platform admin may."""
    wc = web_client(demo, "owner@simulations.example")
    learner = uid("learner@simulations.example")
    for role in ("owner", "admin"):
        resp = wc.patch(f"{SIM}/members/{learner}", json={"role": role})
        assert resp.status_code in (403, 422), role
    assert wc.patch(f"{SIM}/members/{learner}", json={"role": "admin"}).status_code == 422  # platform role
    assert wc.patch(f"{SIM}/members/{learner}", json={"role": "owner"}).get_json()["reason"] == "rank_limit"
    assert wc.patch(f"{SIM}/members/{learner}", json={"role": "reviewer"}).status_code == 200
    admin = web_client(demo, "admin@platform.example")
    assert admin.patch(f"{SIM}/members/{learner}", json={"role": "owner"}).status_code == 200
    assert role_of("simulations-demo", "learner@simulations.example") == "owner"


def test_last_owner_is_kept(demo: Flask) -> None:
    """The platform admin may act on owners, but not demote or remove the only one (409)."""
    admin = web_client(demo, "admin@platform.example")
    only = uid("owner@simulations.example")
    state = snapshot()
    resp = admin.patch(f"{SIM}/members/{only}", json={"role": "trainer"})
    assert resp.status_code == 409 and resp.get_json()["invariant"] == "last_owner"
    resp = admin.delete(f"{SIM}/members/{only}")
    assert resp.status_code == 409 and resp.get_json()["invariant"] == "last_owner"
    assert snapshot() == state
    # With a second owner, the first may go.
    assert admin.patch(f"{SIM}/members/{uid('trainer@simulations.example')}", json={"role": "owner"}).status_code == 200
    assert admin.patch(f"{SIM}/members/{only}", json={"role": "trainer"}).status_code == 200


def test_change_role_bad_input_changes_nothing(demo: Flask) -> None:
    """Unknown role, another pack's role, wrong types, non-member, unknown workspace, same role."""
    wc = owner(demo)
    learner = uid("learner@classroom.example")
    state = snapshot()
    for body, status in [
        ({"role": "superuser"}, 422),
        ({"role": "role:simulations:trainer"}, 422),
        ({"role": "trainer"}, 422),  # a simulations role name, unknown in classroom
        ({"role": 3}, 422),
        ({"role": ["admin"]}, 422),
        ({}, 422),
        ({"role": "learner"}, 409),  # already
    ]:
        resp = wc.patch(f"{CLS}/members/{learner}", json=body)
        assert resp.status_code == status, (body, resp.get_json())
        assert resp.mimetype == "application/problem+json"
    assert wc.patch(f"{CLS}/members/999999", json={"role": "teacher"}).status_code == 404
    assert wc.patch(f"{CLS}/members/abc", json={"role": "teacher"}).status_code == 404
    assert wc.patch("/api/workspaces/no-such/members/1", json={"role": "teacher"}).status_code == 404
    assert wc.patch(f"{CLS}/members/{learner}", data="role=teacher").status_code == 415
    assert snapshot() == state


def test_deny_before_lookup(demo: Flask) -> None:
    """A member of another workspace looks exactly like nobody: 404 for the permitted, 403 for the rest."""
    elsewhere = uid("trainer@simulations.example")
    wc = owner(demo)
    a = wc.patch(f"{CLS}/members/{elsewhere}", json={"role": "teacher"})
    b = wc.patch(f"{CLS}/members/999999", json={"role": "teacher"})
    assert a.status_code == b.status_code == 404
    assert a.get_json()["detail"] == b.get_json()["detail"]
    learner = web_client(demo, "learner@classroom.example")
    c = learner.patch(f"{CLS}/members/{elsewhere}", json={"role": "teacher"})
    d = learner.patch(f"{CLS}/members/999999", json={"role": "teacher"})
    assert c.status_code == d.status_code == 403
    assert {**c.get_json(), "instance": ""} == {**d.get_json(), "instance": ""}


# -- remove ------------------------------------------------------------------------------------------
def test_remove_one_and_their_group_links(demo: Flask) -> None:
    """Removing a member drops the g-rule, the group links (g2/g3) and notifies them."""
    wc = web_client(demo, "admin@classroom.example")
    teacher = uid("teacher@classroom.example")
    assert authz.engine.g2.has_link(f"user:{teacher}", "group:morning", "ws:classroom-demo")
    assert wc.delete(f"{CLS}/members/{teacher}").status_code == 204
    assert role_of("classroom-demo", "teacher@classroom.example") is None
    assert not authz.engine.g2.has_link(f"user:{teacher}", "group:morning", "ws:classroom-demo")
    assert db.session.query(GroupMember).filter_by(user_id=teacher).count() == 0
    assert demo.extensions["mail_memory"][-1]["kind"] == "member_removed"
    assert wc.delete(f"{CLS}/members/{teacher}").status_code == 404


def test_bulk_remove_is_all_or_nothing(demo: Flask) -> None:
    """One refused or unknown id in the list and nobody is removed."""
    wc = web_client(demo, "admin@classroom.example")
    ids = [uid("learner@classroom.example"), uid("learner2@classroom.example")]
    state = snapshot()
    resp = wc.post(f"{CLS}/members/remove", json={"user_ids": [*ids, uid("owner2@classroom.example")]})
    assert resp.status_code == 403 and resp.get_json()["reason"] == "rank_limit"
    resp = wc.post(f"{CLS}/members/remove", json={"user_ids": [*ids, uid("company_admin@academy.example")]})
    assert resp.status_code == 404 and resp.get_json()["user_ids"] == [uid("company_admin@academy.example")]
    for bad in ({"user_ids": []}, {"user_ids": "1,2"}, {"user_ids": [True]}, {"user_ids": [-1]}, {}):
        assert wc.post(f"{CLS}/members/remove", json=bad).status_code == 422, bad
    assert wc.post(f"{CLS}/members/remove", json={"user_ids": list(range(1, 600))}).status_code == 413
    assert snapshot() == state
    resp = wc.post(f"{CLS}/members/remove", json={"user_ids": [*ids, ids[0]]})
    assert resp.status_code == 200 and resp.get_json()["removed"] == ids
    assert role_of("classroom-demo", "learner@classroom.example") is None
    assert role_of("classroom-demo", "learner2@classroom.example") is None


def test_owners_remove_owners_but_never_themselves(demo: Flask) -> None:
    """Owners remove other owners (003); nobody removes themselves (001, 003); admins never remove owners."""
    wc = owner(demo)
    me = uid("owner@classroom.example")
    resp = wc.delete(f"{CLS}/members/{me}")
    assert resp.status_code == 403 and resp.get_json()["reason"] == "self_change"
    assert web_client(demo, "admin@classroom.example").delete(f"{CLS}/members/{me}").status_code == 403
    assert wc.delete(f"{CLS}/members/{uid('owner2@classroom.example')}").status_code == 204
    assert wc.delete(f"{CLS}/members/{uid('multi@example.com')}").status_code == 204
    assert role_of("classroom-demo", "owner@classroom.example") == "owner"


# -- transfer ownership ------------------------------------------------------------------------------
def test_transfer_ownership(demo: Flask) -> None:
    """The target becomes owner, the owner steps down to admin; recorded in the audit trail."""
    wc = owner(demo)
    teacher = uid("teacher@classroom.example")
    resp = wc.post(f"{CLS}/ownership", json={"user_id": teacher})
    assert resp.status_code == 200 and resp.get_json()["role"] == "owner"
    assert role_of("classroom-demo", "teacher@classroom.example") == "owner"
    assert role_of("classroom-demo", "owner@classroom.example") == "admin"
    ev = db.session.query(AuditEvent).filter_by(action="member.transfer_ownership").one()
    assert ev.before == {"target_role": "teacher", "actor_role": "owner"}
    assert ev.after == {"target_role": "owner", "actor_role": "admin"}
    # Now an admin: no more transfers.
    assert wc.post(f"{CLS}/ownership", json={"user_id": uid("learner@classroom.example")}).status_code == 403


def test_transfer_ownership_refusals(demo: Flask) -> None:
    """Admins cannot transfer; not to oneself, a non-member, a pending member; not in packs without it."""
    assert (
        web_client(demo, "admin@classroom.example")
        .post(f"{CLS}/ownership", json={"user_id": uid("learner@classroom.example")})
        .status_code
        == 403
    )
    wc = owner(demo)
    assert wc.post(f"{CLS}/ownership", json={"user_id": uid("owner@classroom.example")}).status_code == 403
    assert wc.post(f"{CLS}/ownership", json={"user_id": uid("company_admin@academy.example")}).status_code == 404
    assert wc.post(f"{CLS}/ownership", json={"user_id": uid("owner2@classroom.example")}).status_code == 409
    assert wc.post(f"{CLS}/ownership", json={"user_id": "7"}).status_code == 422
    wc.post(f"{CLS}/invitations", json={"emails": "learner@academy.example", "role": "learner"})
    assert wc.post(f"{CLS}/ownership", json={"user_id": uid("learner@academy.example")}).status_code == 409
    sim = web_client(demo, "owner@simulations.example")
    resp = sim.post(f"{SIM}/ownership", json={"user_id": uid("trainer@simulations.example")})
    assert resp.status_code == 403


# -- assignable roles and audit --------------------------------------------------------------------------
def test_assignable_roles(demo: Flask) -> None:
    """What a role picker offers, decided by Casbin for the actor (and the target)."""

    def roles(email: str, target: str | None = None) -> list[str]:
        q = f"?member={uid(target)}" if target else ""
        resp = web_client(demo, email).get(f"{CLS}/assignable-roles{q}")
        assert resp.status_code == 200
        return sorted(resp.get_json()["roles"])

    assert roles("owner@classroom.example") == ["admin", "learner", "owner", "teacher"]
    assert roles("admin@classroom.example") == ["learner", "teacher"]
    assert roles("admin@classroom.example", "owner2@classroom.example") == []
    assert roles("owner@classroom.example", "owner@classroom.example") == []
    assert roles("teacher@classroom.example") == []
    sim = web_client(demo, "owner@simulations.example").get(f"{SIM}/assignable-roles").get_json()["roles"]
    assert sorted(sim) == ["learner", "reviewer", "trainer"]
    assert web_client(demo, "company_admin@academy.example").get(f"{CLS}/assignable-roles").status_code == 403
    assert owner(demo).get(f"{CLS}/assignable-roles?member=x").status_code == 422


def test_audit_trail_readable_by_the_roles_the_seed_allows(demo: Flask) -> None:
    """Classroom owners read the audit logs (003 Owner Capabilities); admins do not."""
    wc = owner(demo)
    wc.patch(f"{CLS}/members/{uid('learner@classroom.example')}", json={"role": "teacher"})
    body = wc.get(f"{CLS}/audit?limit=1").get_json()
    item = body["items"][0]
    assert item["action"] == "member.change_role" and item["actor"]["email"] == "owner@classroom.example"
    assert item["target_user"]["email"] == "learner@classroom.example"
    assert item["before"]["role"] == "learner" and item["after"]["role"] == "teacher" and item["revision"]
    assert body["next_before"] == item["id"]
    assert wc.get(f"{CLS}/audit?limit=0").status_code == 422
    assert web_client(demo, "admin@classroom.example").get(f"{CLS}/audit").status_code == 403
