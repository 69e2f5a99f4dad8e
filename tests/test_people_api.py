"""People pages and member tables (issue 26), on both backends: who may open a person (Casbin
decides: teachers their groups' learners, team managers their teams' members, admins everyone, the
skills switches honoured), what the page holds, server-side filters and sorting, transfer
candidates from all members, and the consequence of a role change computed from the matrix."""

from __future__ import annotations

from flask import Flask

from tests.factories import uid, web_client

CLS = "/api/workspaces/classroom-demo"
SKL = "/api/workspaces/skills-demo"
SIM = "/api/workspaces/simulations-demo"


def test_teacher_opens_his_groups_learner_only(demo: Flask) -> None:
    teacher = web_client(demo, "teacher@classroom.example")
    learner = uid("learner@classroom.example")
    resp = teacher.get(f"{CLS}/people/{learner}")
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["email"] == "learner@classroom.example" and body["role"] == "learner"
    assert body["role_label"] == "Learner" and body["status"] == "accepted" and body["joined"]
    assert body["units"] == [{"kind": "group", "name": "morning", "relation": "learner", "archived": False}]
    assert body["audit"] is None  # teachers read no audit trail
    assert {"personal_dashboard"} <= {a["id"] for a in body["may_do"]["actions"]}
    assert body["permissions"]["change_role"] is False and body["permissions"]["remove"] is False
    # learner2 is in the evening group, which he does not teach: refused, nothing leaks.
    other = teacher.get(f"{CLS}/people/{uid('learner2@classroom.example')}")
    assert other.status_code == 403 and "learner2" not in other.get_data(as_text=True)
    # Another teacher (himself a teacher of the group) is not his to open: the rank bound of the scope.
    assert teacher.get(f"{CLS}/people/{uid('owner@classroom.example')}").status_code == 403
    # An id that names no member: 404 for him (he may open people's pages), 403 for a learner.
    assert teacher.get(f"{CLS}/people/999999").status_code == 404
    pupil = web_client(demo, "learner@classroom.example")
    assert pupil.get(f"{CLS}/people/999999").status_code == 403
    assert pupil.get(f"{CLS}/people/{uid('teacher@classroom.example')}").status_code == 403
    # Having signed in, the learner has a last-active time.
    assert body["last_active"] is None
    assert teacher.get(f"{CLS}/people/{learner}").get_json()["last_active"].startswith("20")


def test_admin_sees_everyone_with_audit_and_what_they_may_do(demo: Flask) -> None:
    owner = web_client(demo, "owner@classroom.example")
    learner2 = uid("learner2@classroom.example")
    assert owner.patch(f"{CLS}/members/{learner2}", json={"role": "teacher"}).status_code == 200
    body = owner.get(f"{CLS}/people/{learner2}").get_json()
    assert body["role"] == "teacher"
    assert [e["action"] for e in body["audit"]][0] == "member.change_role"
    assert body["audit"][0]["after"]["role"] == "teacher"
    assert body["role_labels"]["teacher"] == "Teacher" and body["last_active"] is None  # never signed in
    assert {"learner", "admin", "owner"} <= set(body["permissions"]["roles"])  # the owner may grant these
    assert body["permissions"]["remove"] is True
    # What he may do comes from the engine: as a teacher of evening, the group adds learner views.
    ids = {a["id"] for a in body["may_do"]["actions"]}
    assert "change_user_roles" not in ids and "personal_dashboard" in ids
    admin = web_client(demo, "admin@classroom.example")
    assert admin.get(f"{CLS}/people/{uid('teacher@classroom.example')}").status_code == 200
    # The page and the table agree: rows carry view_person.
    rows = admin.get(f"{CLS}/members?per_page=200").get_json()["items"]
    assert all(r["permissions"]["view_person"] for r in rows if r["role"] != "owner")
    # Lists of people ask which pages open.
    teacher = web_client(demo, "teacher@classroom.example")
    ids_q = ",".join(str(uid(e)) for e in ("learner@classroom.example", "learner2@classroom.example"))
    assert teacher.get(f"{CLS}/people?ids={ids_q}").get_json()["ids"] == [uid("learner@classroom.example")]
    assert teacher.get(f"{CLS}/people?ids=1,x").status_code == 422
    assert teacher.get(f"{CLS}/people?ids=" + ",".join(["1"] * 501)).status_code == 422


def test_team_manager_and_the_profile_switches(demo: Flask) -> None:
    manager = web_client(demo, "manager@skills.example")
    member = uid("member@skills.example")
    body = manager.get(f"{SKL}/people/{member}").get_json()
    assert body["email"] == "member@skills.example"
    assert body["units"] == [{"kind": "team", "name": "sales", "relation": "member", "archived": False}]
    assert manager.get(f"{SKL}/people/{uid('owner@skills.example')}").status_code == 403  # not in his team
    owner = web_client(demo, "owner@skills.example")
    assert owner.get(f"{SKL}/people/{member}").status_code == 200
    # The skills owner's member table (a rank-scoped action) was 403 target_required before issue 26.
    rows = owner.get(f"{SKL}/members").get_json()["items"]
    assert {r["email"] for r in rows if r["permissions"]["view_person"]} >= {"member@skills.example"}
    # The account manager switches detailed profiles off: owners and managers lose the pages.
    am = web_client(demo, "account_manager@platform.example")
    assert am.put(f"{SKL}/features/detailed_profile_manager", json={"enabled": False}).status_code == 200
    assert manager.get(f"{SKL}/people/{member}").status_code == 403
    assert owner.get(f"{SKL}/people/{member}").status_code == 200
    assert am.put(f"{SKL}/features/detailed_profile_owner", json={"enabled": False}).status_code == 200
    assert owner.get(f"{SKL}/people/{member}").status_code == 403
    rows = owner.get(f"{SKL}/members").get_json()["items"]
    assert rows and not any(r["permissions"]["view_person"] for r in rows)
    # A plain member opens nobody.
    assert web_client(demo, "member@skills.example").get(f"{SKL}/people/{member}").status_code == 403


def test_member_table_filters_sorts_and_validates(demo: Flask) -> None:
    owner = web_client(demo, "owner@classroom.example")
    learners = owner.get(f"{CLS}/members?role=learner").get_json()
    assert {r["email"] for r in learners["items"]} == {"learner@classroom.example", "learner2@classroom.example"}
    assert learners["total"] == 2
    by_role = [r["role"] for r in owner.get(f"{CLS}/members?sort=-role&per_page=200").get_json()["items"]]
    ranks = {"learner": 0, "teacher": 1, "admin": 2, "owner": 3}
    assert [ranks[r] for r in by_role] == sorted((ranks[r] for r in by_role), reverse=True)
    emails = [r["email"] for r in owner.get(f"{CLS}/members?sort=-email").get_json()["items"]]
    assert emails == sorted(emails, reverse=True)
    joined = owner.get(f"{CLS}/members?sort=joined").get_json()["items"]
    assert [r["since"] for r in joined] == sorted(r["since"] for r in joined)
    assert owner.get(f"{CLS}/members?status=accepted&role=owner").get_json()["total"] == 3
    for bad in ("sort=password", "sort=" + "e" * 11, "role=wizard", "status=gone", "per_page=0", "page=x"):
        resp = owner.get(f"{CLS}/members?{bad}")
        assert resp.status_code == 422, (bad, resp.get_json())
        assert resp.headers["Content-Type"].startswith("application/problem+json")


def test_transfer_candidates_come_from_all_members(demo: Flask) -> None:
    owner = web_client(demo, "owner@classroom.example")
    page = owner.get(f"{CLS}/members?per_page=1").get_json()
    cands = owner.get(f"{CLS}/ownership/candidates").get_json()["items"]
    emails = [c["email"] for c in cands]
    assert len(emails) > len(page["items"]) and emails == sorted(emails)
    assert "learner2@classroom.example" in emails and "owner2@classroom.example" not in emails  # owners are not
    assert web_client(demo, "teacher@classroom.example").get(f"{CLS}/ownership/candidates").status_code == 403


def test_role_change_states_gains_and_losses_from_the_matrix(demo: Flask) -> None:
    owner = web_client(demo, "owner@simulations.example")
    eff = owner.get(f"{SIM}/roles/change?from=reviewer&to=trainer").get_json()
    gained = {a["action"] for a in eff["gained"]}
    assert {"create_and_edit_courses", "launch_own_simulations", "create_and_manage_groups"} <= gained
    assert [a["action"] for a in eff["lost"]] == ["review_scores", "override_grades"]  # the pack's order
    assert "view_dashboard" not in gained | {a["action"] for a in eff["lost"]}  # both roles have it
    assert all(a["label"] for a in eff["gained"] + eff["lost"])
    roles = owner.get(f"{SIM}/roles").get_json()
    trainer = next(r for r in roles["roles"] if r["id"] == "trainer")
    assert trainer["description"] and trainer["actions"]["create_and_edit_courses"] == "✅"
    assert roles["actions"][0] == {"id": "manage_workspace_members", "label": "Manage workspace members"}
    assert owner.get(f"{SIM}/roles/change?from=reviewer&to=wizard").status_code == 422
    assert web_client(demo, "owner@classroom.example").get(f"{SIM}/roles").status_code == 403
