"""The JSON routes behind the member pages (issue 13), on both backends: team managers read their
teams, the teacher's people picker offers learners only, permissions for UI come with each row,
bulk refusals name the member, invitations are listed/revoked/resent, invites report per address."""

from __future__ import annotations

from flask import Flask

from app.extensions import db
from app.models import AuditEvent, Invitation
from tests.factories import uid, web_client

CLS = "/api/workspaces/classroom-demo"
SKL = "/api/workspaces/skills-demo"



def test_team_manager_reads_his_team(demo: Flask) -> None:
    """Reproduction 1: GET /teams/sales was 403 not_permitted for manager@skills.example."""
    wc = web_client(demo, "manager@skills.example")
    resp = wc.get(f"{SKL}/teams/sales")
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert sorted(p["email"] for p in body["members"]) == ["author@skills.example", "member@skills.example"]
    assert body["permissions"]["edit"] is False and body["permissions"]["remove_member"] == []
    assert [t["name"] for t in wc.get(f"{SKL}/teams").get_json()["items"]] == ["sales"]
    views = {a["id"] for a in body["permissions"]["scoped_actions"]}
    assert {"see_team_management_section", "view_team_members_list", "view_team_skill_report"} <= views
    # The views follow the pack's toggles: the account manager switches the skill report off.
    am = web_client(demo, "account_manager@platform.example")
    assert am.put(f"{SKL}/features/team_skill_report", json={"enabled": False}).status_code == 200
    views = {a["id"] for a in wc.get(f"{SKL}/teams/sales").get_json()["permissions"]["scoped_actions"]}
    assert "view_team_skill_report" not in views and "view_team_members_list" in views
    # Only his teams: the owner manages every team, a plain member sees none (an empty list, no 403).
    assert web_client(demo, "owner@skills.example").get(f"{SKL}/teams/sales").status_code == 200
    member = web_client(demo, "member@skills.example")
    assert member.get(f"{SKL}/teams/sales").status_code == 403
    assert member.get(f"{SKL}/teams").get_json()["items"] == []
    # A stranger to the workspace is still refused.
    assert web_client(demo, "owner@classroom.example").get(f"{SKL}/teams").status_code == 403


def test_teacher_picker_offers_learners_only(demo: Flask) -> None:
    wc = web_client(demo, "teacher@classroom.example")
    items = wc.get(f"{CLS}/groups/morning/learners/candidates?q=").get_json()["items"]
    assert [p["email"] for p in items] == ["learner2@classroom.example"]
    assert all(p["role"] == "learner" for p in items)
    assert wc.get(f"{CLS}/groups/morning/learners/candidates?q=owner").get_json()["items"] == []
    # Search by name works too; not for groups the teacher does not teach, nor as teacher.
    assert wc.get(f"{CLS}/groups/morning/learners/candidates?q=learner2").get_json()["items"]
    assert wc.get(f"{CLS}/groups/evening/learners/candidates").status_code == 403
    assert wc.get(f"{CLS}/groups/morning/teachers/candidates").status_code == 403
    assert wc.get(f"{CLS}/groups/morning/learners/candidates?q=" + "x" * 101).status_code == 422
    # The admin assigns teachers (scope any in the pack): the picker offers whom Casbin allows.
    admin = web_client(demo, "admin@classroom.example")
    offered = [p["email"] for p in admin.get(f"{CLS}/groups/evening/teachers/candidates").get_json()["items"]]
    assert "teacher@classroom.example" in offered
    # The teacher's group comes with what he may do: remove learners, not the teacher.
    perms = wc.get(f"{CLS}/groups/morning").get_json()["permissions"]
    assert perms["add_member"] is True and perms["add_manager"] is False and perms["delete"] is False
    assert perms["remove_member"] == [uid("learner@classroom.example")] and perms["remove_manager"] == []


def test_member_rows_carry_permissions_and_one_role_list(demo: Flask) -> None:
    wc = web_client(demo, "admin@classroom.example")
    body = wc.get(f"{CLS}/members?per_page=50").get_json()
    rows = {m["email"]: m["permissions"] for m in body["items"]}
    assert rows["learner@classroom.example"] == {
        "roles": ["learner", "teacher"],
        "change_role": True,
        "remove": True,
        "transfer_ownership": False,
        "view_person": True,
    }
    for no in ("admin@classroom.example", "owner@classroom.example"):
        assert rows[no]["remove"] is False and rows[no]["roles"] == [], no
    assert body["assignable_roles"] == ["learner", "teacher"]


def test_bulk_removal_names_the_blocking_member(demo: Flask) -> None:
    wc = web_client(demo, "admin@classroom.example")
    ids = [uid("learner@classroom.example"), uid("owner@classroom.example")]
    resp = wc.post(f"{CLS}/members/remove", json={"user_ids": ids})
    assert resp.status_code == 403
    body = resp.get_json()
    assert body["email"] == "owner@classroom.example" and body["reason"] == "rank_limit"
    assert "owner@classroom.example" in body["detail"]


def test_invite_reports_per_address(demo: Flask) -> None:
    wc = web_client(demo, "owner@classroom.example")
    emails = "learner@classroom.example, not@@valid, new.one@example.org"
    resp = wc.post(f"{CLS}/invitations", json={"emails": emails, "role": "learner", "partial": True})
    assert resp.status_code == 201, resp.get_json()
    status = {r["email"]: r["status"] for r in resp.get_json()["results"]}
    assert status == {"new.one@example.org": "invited", "learner@classroom.example": "member", "not@@valid": "invalid"}
    again = wc.post(f"{CLS}/invitations", json={"emails": "new.one@example.org", "partial": True}).get_json()
    assert again["results"] == [{"email": "new.one@example.org", "status": "invited_before"}]
    # Without partial the request stays all or nothing.
    assert wc.post(f"{CLS}/invitations", json={"emails": "new.one@example.org"}).status_code == 409


def test_pending_invitations_revoke_and_resend(demo: Flask) -> None:
    wc = web_client(demo, "owner@classroom.example")
    assert wc.post(f"{CLS}/invitations", json={"emails": "typo@exmaple.org", "role": "teacher"}).status_code == 201
    items = wc.get(f"{CLS}/invitations").get_json()["items"]
    (inv,) = [i for i in items if i["email"] == "typo@exmaple.org"]
    old_hash = db.session.get(Invitation, inv["id"]).token_hash
    resp = wc.post(f"{CLS}/invitations/{inv['id']}/resend")
    assert resp.status_code == 200 and resp.get_json()["email"] == "typo@exmaple.org"
    db.session.expire_all()
    assert db.session.get(Invitation, inv["id"]).token_hash != old_hash
    # The teacher may not touch invitations; the admin may not revoke one for a role above his grant.
    assert web_client(demo, "teacher@classroom.example").delete(f"{CLS}/invitations/{inv['id']}").status_code == 403
    assert wc.delete(f"{CLS}/invitations/{inv['id']}").status_code == 204
    assert wc.delete(f"{CLS}/invitations/{inv['id']}").status_code == 404
    assert wc.post(f"{CLS}/invitations/999999/resend").status_code == 404
    assert "typo@exmaple.org" not in [i["email"] for i in wc.get(f"{CLS}/invitations").get_json()["items"]]
    # A mistyped address no longer blocks a new invitation for 72 hours.
    assert wc.post(f"{CLS}/invitations", json={"emails": "typo@exmaple.org"}).status_code == 201
    actions = [e.action for e in db.session.query(AuditEvent).order_by(AuditEvent.id)]
    assert "member.invite_resend" in actions and "member.invite_revoke" in actions


def test_home_lists_role_labels_and_platform_packs(demo: Flask) -> None:
    body = web_client(demo, "teacher@classroom.example").get("/api/workspaces").get_json()
    assert [(w["slug"], w["role"], w["role_label"]) for w in body["items"]] == [
        ("classroom-demo", "teacher", "Teacher")
    ]
    assert body["platform"] == []
    op = web_client(demo, "operator@platform.example").get("/api/workspaces").get_json()
    assert op["items"] == []
    (pack,) = op["platform"]
    assert pack["pack"] == "academy" and [w["slug"] for w in pack["workspaces"]] == ["academy-demo"]


def test_members_open_on_a_page_they_may_use(demo: Flask) -> None:
    """Reproduction 1: teachers, learners and managers opened a workspace onto a 403 page."""
    for email, ws, where in (
        ("teacher@classroom.example", "classroom-demo", "/w/classroom-demo/groups"),
        ("learner@classroom.example", "classroom-demo", "/w/classroom-demo/groups"),
        ("learner@academy.example", "academy-demo", "/w/academy-demo/overview"),
        ("manager@skills.example", "skills-demo", "/w/skills-demo/teams"),
        ("owner@classroom.example", "classroom-demo", "/w/classroom-demo/members"),
    ):
        wc = web_client(demo, email)
        resp = wc.get(f"/w/{ws}")
        assert resp.status_code == 302 and resp.headers["Location"].endswith(where), (email, resp.headers)
        assert wc.get(where).status_code == 200, email
        if where != f"/w/{ws}/members":
            assert wc.get(f"/w/{ws}/members").status_code == 302, email
    page = web_client(demo, "learner@academy.example").get("/w/academy-demo/overview").get_data(as_text=True)
    assert "Learner" in page and "Forbidden" not in page


def test_audit_filters_labels_and_csv(demo: Flask) -> None:
    wc = web_client(demo, "owner@classroom.example")
    learner2 = uid("learner2@classroom.example")
    assert wc.patch(f"{CLS}/members/{learner2}", json={"role": "teacher"}).status_code == 200
    assert web_client(demo, "admin@classroom.example").post(f"{CLS}/groups", json={"name": "x1"}).status_code == 201
    items = wc.get(f"{CLS}/audit?action=member.change_role").get_json()["items"]
    assert items and {e["action"] for e in items} == {"member.change_role"}
    assert items[0]["label"] == "changed the role of"
    assert {e["action"] for e in wc.get(f"{CLS}/audit?action=group.").get_json()["items"]} == {"group.create"}
    by_admin = wc.get(f"{CLS}/audit?actor=admin@classroom").get_json()["items"]
    assert by_admin and all(e["actor"]["email"] == "admin@classroom.example" for e in by_admin)
    assert wc.get(f"{CLS}/audit?since=2999-01-01").get_json()["items"] == []
    assert wc.get(f"{CLS}/audit?until=2000-01-01").get_json()["items"] == []
    assert wc.get(f"{CLS}/audit?since=yesterday").status_code == 422
    resp = wc.get(f"{CLS}/audit.csv?action=member.change_role")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    lines = resp.get_data(as_text=True).splitlines()
    assert lines[0].startswith("id,at,actor,action,what") and "changed the role of" in lines[1]
    assert web_client(demo, "teacher@classroom.example").get(f"{CLS}/audit.csv").status_code == 403


def test_platform_role_granted_by_email(demo: Flask) -> None:
    wc = web_client(demo, "account_manager@platform.example")
    resp = wc.post("/api/platform/skills/roles", json={"email": "owner@skills.example", "role": "account_manager"})
    assert resp.status_code == 201, resp.get_json()
    assert (
        wc.post("/api/platform/skills/roles", json={"email": "nobody@x.org", "role": "account_manager"}).status_code
        == 404
    )
    # Someone without the platform role learns nothing about accounts.
    other = web_client(demo, "owner@classroom.example")
    assert (
        other.post("/api/platform/skills/roles", json={"email": "nobody@x.org", "role": "account_manager"}).status_code
        == 403
    )


def test_workspace_deletion_where_the_pack_has_it(demo: Flask) -> None:
    from app.extensions import authz
    from app.models import Membership, Workspace

    admin = web_client(demo, "admin@classroom.example")
    assert admin.delete(CLS, json={"confirm": "classroom-demo"}).status_code == 403  # owners only (003)
    owner = web_client(demo, "owner@classroom.example")
    assert owner.delete(CLS, json={"confirm": "wrong"}).status_code == 422
    # skills has no delete action: refused for its owner too
    assert web_client(demo, "owner@skills.example").delete(SKL, json={"confirm": "skills-demo"}).status_code == 403
    resp = owner.delete(CLS, json={"confirm": "classroom-demo"})
    assert resp.status_code == 200, resp.get_json()
    assert db.session.query(Workspace).filter_by(slug="classroom-demo").one_or_none() is None
    assert db.session.query(Membership).count() > 0  # other workspaces keep theirs
    assert not authz.engine.roles_of(f"user:{uid('teacher@classroom.example')}", "ws:classroom-demo")
    assert owner.get(CLS).status_code == 404
    (row,) = db.session.query(AuditEvent).filter_by(action="workspace.delete").all()
    assert row.target == "ws:classroom-demo" and row.before["members"] >= 7
