"""The policy workbench's endpoints: matrix, explain (live and on a draft), rollback preview, samples."""

from __future__ import annotations

from flask import Flask

from app.extensions import authz, db
from app.policy import store as policy_store
from tests.factories import WebClient, web_client

REVIEWER_AI_SPEND = "p, 80, role:simulations:reviewer, view_ai_spend, any, -, allow"
TEACHER_ANY_ROLE = "p, 90, role:classroom:teacher, change_user_roles, any, -, allow"



def csrf(wc: WebClient) -> dict[str, str]:
    return {"X-CSRFToken": wc.get("/v1/policy/session").get_json()["csrf_token"]}


def test_matrix_is_the_engines_table_with_direct_rules(demo: Flask) -> None:
    wc = web_client(demo, "policy_viewer@service.example")
    resp = wc.get("/v1/policy/matrix", query_string={"pack": "simulations"})
    assert resp.status_code == 200, resp.get_json()
    out = resp.get_json()
    rows = {r["action"]: r for r in out["rows"]}
    assert rows["launch_own_simulations"]["cells"]["reviewer"] == "—"
    assert rows["launch_own_simulations"]["cells"]["learner"] == "✅"  # (assignee scope, still allowed)
    assert any("deny" in line for line in rows["launch_own_simulations"]["rules"]["reviewer"])
    spend = rows["view_ai_spend"]["cells"]
    assert spend == {r: ("✅" if r in ("owner", "admin") else "—") for r in spend}
    assert [r["id"] for r in out["roles"]][-1] == "admin"  # workspace roles by rank, then platform roles
    assert wc.get("/v1/policy/matrix", query_string={"pack": "nope"}).status_code == 404
    assert wc.get("/v1/policy/matrix").status_code == 422
    assert web_client(demo, "learner@classroom.example").get("/v1/policy/matrix?pack=simulations").status_code == 403


def test_explain_live_and_on_a_draft(demo: Flask) -> None:
    wc = web_client(demo, "policy_admin@service.example")  # a named person's decision: view_people
    check = {
        "subject": "reviewer@simulations.example",
        "workspace": "simulations-demo",
        "action": "launch_own_simulations",
    }
    out = wc.post("/v1/policy/explain", json=check, headers=csrf(wc)).get_json()
    assert out["allowed"] is False and out["reason"] == "denied_by_policy" and out["draft"] is False
    assert out["rule"][-1] == "deny" and out["role_path"][-1] == "role:simulations:reviewer"
    spend = {**check, "action": "view_ai_spend"}
    assert wc.post("/v1/policy/explain", json=spend, headers=csrf(wc)).get_json()["allowed"] is False
    drafted = {**spend, "changes": [{"op": "add", "rule": REVIEWER_AI_SPEND}]}
    out = wc.post("/v1/policy/explain", json=drafted, headers=csrf(wc)).get_json()
    assert out["allowed"] is True and out["draft"] is True and out["problems"] == []
    assert out["rule"] == ["p", *[x.strip() for x in REVIEWER_AI_SPEND.split(",")][1:]]
    # The draft is never the live policy.
    assert not authz.check(out["role_path"][0], "ws:simulations-demo", "view_ai_spend").allowed
    wc = web_client(demo, "policy_viewer@service.example")  # the rest asks about roles: any reader may
    # A draft that fails verification is still explained, with its problems.
    bad = {"subject": "role:classroom:teacher", "workspace": "classroom-demo", "action": "change_user_roles",
           "changes": [{"op": "add", "rule": TEACHER_ANY_ROLE}]}
    out = wc.post("/v1/policy/explain", json=bad, headers=csrf(wc)).get_json()
    assert out["allowed"] is True and any("escalation: teacher" in p for p in out["problems"])
    # A malformed change is left out of the draft and named.
    check = {**check, "subject": "role:simulations:reviewer"}
    resp = wc.post("/v1/policy/explain", json={**check, "changes": [{"op": "add", "rule": "p, x"}]}, headers=csrf(wc))
    assert resp.status_code == 200 and resp.get_json()["allowed"] is False
    assert any("p rule needs 6 fields" in p for p in resp.get_json()["problems"]), resp.get_json()
    assert wc.post("/v1/policy/explain", json={"subject": 1}, headers=csrf(wc)).status_code == 422


def test_preview_names_a_sample_of_the_people_affected_to_admins_only(demo: Flask) -> None:
    change = {"changes": [{"op": "add", "rule": REVIEWER_AI_SPEND}]}
    wc = web_client(demo, "policy_admin@service.example")
    flips = wc.post("/v1/policy/preview", json=change, headers=csrf(wc)).get_json()["flips"]
    assert flips[0]["sample"] == ["reviewer@simulations.example"] and flips[0]["users"] == 1
    wc = web_client(demo, "policy_editor@service.example")  # editors: how many, never who
    flips = wc.post("/v1/policy/preview", json=change, headers=csrf(wc)).get_json()["flips"]
    assert flips[0]["sample"] == [] and flips[0]["users"] == 1 and flips[0]["workspaces"] == 1


def test_rollback_preview_shows_what_a_rollback_would_do_and_writes_nothing(demo: Flask) -> None:
    admin = web_client(demo, "policy_admin@service.example")
    before = policy_store.current_revision(db.session())
    change = {"changes": [{"op": "add", "rule": REVIEWER_AI_SPEND}]}
    resp = admin.post("/v1/policy/apply", json=change, headers=csrf(admin))
    assert resp.status_code == 201, resp.get_json()
    head = policy_store.current_revision(db.session())
    editor = web_client(demo, "policy_editor@service.example")
    out = editor.post("/v1/policy/rollback/preview", json={"to_revision": before}, headers=csrf(editor)).get_json()
    assert out["valid"] is True and out["to_revision"] == before
    assert out["removed"] == [[x.strip() for x in REVIEWER_AI_SPEND.split(",")]] and out["added"] == []
    assert [(f["role"], f["action"], f["change"]) for f in out["flips"]] == [("reviewer", "view_ai_spend", "lose")]
    assert out["flips"][0]["sample"] == [] and out["flips"][0]["users"] == 1  # editors see counts, not emails
    assert policy_store.current_revision(db.session()) == head
    assert authz.check(f"user:{_uid('reviewer@simulations.example')}", "ws:simulations-demo", "view_ai_spend").allowed
    resp = editor.post("/v1/policy/rollback/preview", json={"to_revision": head + 5}, headers=csrf(editor))
    assert resp.status_code == 422
    out = admin.get("/v1/policy/revisions", query_string={"limit": 1}).get_json()
    assert out["items"][0]["actor"] == "policy_admin@service.example"


def _uid(email: str) -> int:
    from tests.factories import uid

    return uid(email)


# -- issue 21, reproduction 7: policy viewers see no people --------------------------------------------
def test_viewers_and_editors_cannot_test_memberships_through_explain(demo: Flask) -> None:
    """Any email used to come back with its role path (``["user:24", "role:classroom:owner"]``)."""
    for who in ("policy_viewer@service.example", "policy_editor@service.example"):
        wc = web_client(demo, who)
        for subject in ("owner@classroom.example", "nobody@example.org", 1, "user:1"):
            ask = {"subject": subject, "workspace": "classroom-demo", "action": "delete_organization"}
            resp = wc.post("/v1/policy/explain", json=ask, headers=csrf(wc))
            body = resp.get_json()
            assert resp.status_code == 403 and resp.content_type == "application/problem+json", body
            assert "role_path" not in body and "allowed" not in body and "view_people" in body["detail"]
        # people inside the resource are people too (the target's role would show in the answer)
        # remove_users is rank-scoped: a role is asked "to anyone at all?" explicitly (target "any", no person)
        anyone = {"type": "member", "attributes": {"target": "any"}}
        probe = {"subject": "role:classroom:admin", "workspace": "classroom-demo", "action": "remove_users",
                 "resource": anyone}  # fmt: skip
        people = {**probe, "resource": {"type": "member", "attributes": {"member": "owner@classroom.example"}}}
        assert wc.post("/v1/policy/explain", json=people, headers=csrf(wc)).status_code == 403
        # a role is answered, for a principal holding only that role: rules, no people
        out = wc.post("/v1/policy/explain", json=probe, headers=csrf(wc)).get_json()
        assert out["role_path"] == ["user:probe", "role:classroom:admin"] and out["rule"][2] == "role:classroom:admin"
        bad = {**probe, "subject": "role:simulations:owner"}  # not a role of classroom
        assert wc.post("/v1/policy/explain", json=bad, headers=csrf(wc)).status_code == 422
    admin = web_client(demo, "policy_admin@service.example")
    ask = {"subject": "owner@classroom.example", "workspace": "classroom-demo", "action": "delete_organization"}
    out = admin.post("/v1/policy/explain", json=ask, headers=csrf(admin)).get_json()
    assert out["allowed"] is True and out["role_path"][-1] == "role:classroom:owner"


def test_viewers_see_the_policy_audit_trail_without_people(demo: Flask) -> None:
    """Who changed a rule stays visible; membership revisions hide their actor, message and user keys."""
    admin = web_client(demo, "policy_admin@service.example")
    assert admin.post("/v1/policy/apply", json={"changes": [{"op": "add", "rule": REVIEWER_AI_SPEND}]},
                      headers=csrf(admin)).status_code == 201  # fmt: skip
    viewer = web_client(demo, "policy_viewer@service.example")
    items = viewer.get("/v1/policy/revisions", query_string={"limit": 200, "category": "all"}).get_json()["items"]
    edit = next(i for i in items if i["kind"] == "policy-edit")
    assert edit["actor"] == "policy_admin@service.example"
    others = [i for i in items if i["kind"] not in ("policy-edit", "policy-rollback", "import")]
    assert others and all(i["actor"] is None and i["actor_id"] is None for i in others)
    detail = viewer.get(f"/v1/policy/revisions/{others[0]['id']}").get_json()
    assert not any(v.startswith("user:") for c in detail["changes"] for v in c["rule"]), detail
    full = admin.get(f"/v1/policy/revisions/{others[0]['id']}").get_json()
    assert any(v.startswith("user:") for c in full["changes"] for v in c["rule"]), full
    assert admin.get("/v1/policy/session").get_json()["permissions"][-1] == "view_people"
    assert "view_people" not in viewer.get("/v1/policy/session").get_json()["permissions"]
