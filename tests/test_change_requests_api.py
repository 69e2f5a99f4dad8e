"""Change requests (issue 26): server-side drafts, review (comment, approve, reject, apply), four eyes,
N approvals per pack, stale bases validated again, impact replay of the decision log; and the policy
history's categories (issue 26, found item 1). Both databases (the demo fixture)."""

from __future__ import annotations

from flask import Flask

from app.authz import decisionlog
from app.extensions import authz, db
from app.models import Workspace
from app.policy import store as policy_store
from tests.factories import WebClient, add_member, create_user, uid, web_client

REVIEWER_AI_SPEND = "p, 80, role:simulations:reviewer, view_ai_spend, any, -, allow"
TEACHER_ANY_ROLE = "p, 90, role:classroom:teacher, change_user_roles, any, -, allow"
CR = "/v1/policy/change-requests"


def csrf(wc: WebClient) -> dict[str, str]:
    return {"X-CSRFToken": wc.get("/v1/policy/session").get_json()["csrf_token"]}


def post(wc: WebClient, url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    resp = wc.post(url, json=body, headers=csrf(wc))
    return resp.status_code, resp.get_json()


def test_draft_belongs_to_its_user_not_the_tab(demo: Flask) -> None:
    editor = web_client(demo, "policy_editor@service.example")
    change = [{"op": "add", "rule": REVIEWER_AI_SPEND}]
    resp = editor.put("/v1/policy/draft", json={"changes": change}, headers=csrf(editor))
    assert resp.status_code == 200 and resp.get_json()["changes"] == change
    # Signed out and in again (a new session): the draft is still the editor's.
    assert web_client(demo, "policy_editor@service.example").get("/v1/policy/draft").get_json()["changes"] == change
    # Another user on the same machine sees none of it.
    admin = web_client(demo, "policy_admin@service.example")
    assert admin.get("/v1/policy/draft").get_json() == {"changes": [], "updated_at": None}
    # Drafts are never listed as change requests, and viewers have no draft at all.
    assert admin.get(CR).get_json()["items"] == []
    assert web_client(demo, "policy_viewer@service.example").get("/v1/policy/draft").status_code == 403
    # An empty list discards it; a malformed change is a 422 problem.
    assert editor.put("/v1/policy/draft", json={"changes": []}, headers=csrf(editor)).get_json()["changes"] == []
    bad = editor.put("/v1/policy/draft", json={"changes": [{"op": "nope"}]}, headers=csrf(editor))
    assert bad.status_code == 422 and bad.content_type == "application/problem+json"


def test_editor_submits_admin_reviews_and_applies(demo: Flask) -> None:
    editor = web_client(demo, "policy_editor@service.example")
    editor.put("/v1/policy/draft", json={"changes": [{"op": "add", "rule": REVIEWER_AI_SPEND}]}, headers=csrf(editor))
    status, cr = post(editor, CR, {"title": "Reviewers see AI spend", "why": "cost reviews"})
    assert status == 201, cr
    assert cr["status"] == "open" and cr["author"] == "policy_editor@service.example" and cr["valid"] is True
    checks = cr["checks"]
    assert checks["added"] == [REVIEWER_AI_SPEND] and checks["problems"] == [] and checks["tests"] == []
    assert [(f["role"], f["action"], f["change"], f["users"]) for f in checks["flips"]] == [
        ("reviewer", "view_ai_spend", "gain", 1)
    ]
    assert cr["may"] == {"edit": True, "comment": True, "approve": False, "reject": False, "apply": False}
    assert editor.get("/v1/policy/draft").get_json()["changes"] == []  # the draft became the request
    # The editor cannot approve, reject or apply.
    assert post(editor, f"{CR}/{cr['id']}/approve", {})[0] == 403
    assert post(editor, f"{CR}/{cr['id']}/apply", {})[0] == 403
    admin = web_client(demo, "policy_admin@service.example")
    seen = admin.get(f"{CR}/{cr['id']}").get_json()
    assert seen["may"] == {"edit": False, "comment": True, "approve": True, "reject": True, "apply": True}
    # Apply before any approval: 409, nothing written.
    head = policy_store.current_revision(db.session())
    status, problem = post(admin, f"{CR}/{cr['id']}/apply", {})
    assert status == 409 and problem["approvals_required"] == 1 and problem["approvals"] == 0
    assert post(admin, f"{CR}/{cr['id']}/comments", {"body": "Looks right"})[0] == 201
    status, out = post(admin, f"{CR}/{cr['id']}/approve", {"comment": "ok"})
    assert status == 200 and out["approvals"] == ["policy_admin@service.example"] and out["may"]["approve"] is False
    assert post(admin, f"{CR}/{cr['id']}/approve", {})[0] == 409  # once per reviewer
    status, res = post(admin, f"{CR}/{cr['id']}/apply", {})
    assert status == 201 and res["revision"] == head + 1, res
    reviewer = f"user:{uid('reviewer@simulations.example')}"
    assert authz.check(reviewer, "ws:simulations-demo", "view_ai_spend").allowed
    done = admin.get(f"{CR}/{cr['id']}").get_json()
    assert done["status"] == "applied" and done["applied_revision"] == head + 1
    assert [e["kind"] for e in done["events"]] == ["submitted", "comment", "approved", "applied"]
    assert done["events"][1]["body"] == "Looks right" and done["events"][1]["actor"] == "policy_admin@service.example"
    assert post(admin, f"{CR}/{cr['id']}/apply", {})[0] == 409  # applied once
    assert [i["id"] for i in admin.get(CR, query_string={"status": "applied"}).get_json()["items"]] == [cr["id"]]
    assert admin.get(CR, query_string={"status": "open"}).get_json()["items"] == []
    assert admin.get(CR, query_string={"status": "bogus"}).status_code == 422


def test_the_author_cannot_approve_their_own(demo: Flask) -> None:
    admin = web_client(demo, "policy_admin@service.example")
    status, cr = post(admin, CR, {"title": "mine", "changes": [{"op": "add", "rule": REVIEWER_AI_SPEND}]})
    assert status == 201 and cr["may"]["approve"] is False and cr["may"]["apply"] is True
    status, problem = post(admin, f"{CR}/{cr['id']}/approve", {})
    assert status == 403 and problem["reason"] == "denied_by_policy", problem  # the service pack's deny rule
    assert post(admin, f"{CR}/{cr['id']}/apply", {})[0] == 409  # so it cannot be applied alone
    # A second admin approves; then it applies.
    other = create_user("admin2@service.example")
    ws = db.session.query(Workspace).filter_by(slug="service").one()
    add_member(ws, other, "policy_admin")
    authz.sync()
    second = web_client(demo, "admin2@service.example")
    assert post(second, f"{CR}/{cr['id']}/approve", {})[0] == 200
    assert post(admin, f"{CR}/{cr['id']}/apply", {})[0] == 201


def test_n_approvals_per_pack_and_updates_reset_them(demo: Flask) -> None:
    demo.config["POLICY_APPROVALS"] = {"simulations": 2}
    editor = web_client(demo, "policy_editor@service.example")
    status, cr = post(editor, CR, {"title": "two needed", "changes": [{"op": "add", "rule": REVIEWER_AI_SPEND}]})
    assert status == 201 and cr["approvals_required"] == 2
    other = create_user("admin2@service.example")
    add_member(db.session.query(Workspace).filter_by(slug="service").one(), other, "policy_admin")
    authz.sync()
    admin, second = web_client(demo, "policy_admin@service.example"), web_client(demo, "admin2@service.example")
    assert post(admin, f"{CR}/{cr['id']}/approve", {})[0] == 200
    status, problem = post(admin, f"{CR}/{cr['id']}/apply", {})
    assert status == 409 and problem["approvals"] == 1 and problem["approvals_required"] == 2
    # The author changes the rules: approvals start again.
    resp = editor.patch(
        f"{CR}/{cr['id']}", json={"changes": [{"op": "add", "rule": REVIEWER_AI_SPEND}]}, headers=csrf(editor)
    )
    assert resp.status_code == 200 and resp.get_json()["approvals"] == []
    assert [e["kind"] for e in resp.get_json()["events"]] == ["submitted", "approved", "updated"]
    # Only the author edits it.
    assert admin.patch(f"{CR}/{cr['id']}", json={"title": "x"}, headers=csrf(admin)).status_code == 403
    assert post(admin, f"{CR}/{cr['id']}/approve", {})[0] == 200
    assert post(second, f"{CR}/{cr['id']}/approve", {})[0] == 200
    assert post(admin, f"{CR}/{cr['id']}/apply", {})[0] == 201


def test_reject_closes_and_invalid_requests_cannot_be_approved(demo: Flask) -> None:
    editor = web_client(demo, "policy_editor@service.example")
    status, cr = post(editor, CR, {"title": "escalate", "changes": [{"op": "add", "rule": TEACHER_ANY_ROLE}]})
    assert status == 201 and cr["valid"] is False
    assert any("escalation: teacher" in p for p in cr["checks"]["problems"]), cr["checks"]
    admin = web_client(demo, "policy_admin@service.example")
    assert post(admin, f"{CR}/{cr['id']}/approve", {})[0] == 409
    status, out = post(admin, f"{CR}/{cr['id']}/reject", {"comment": "escalates"})
    assert status == 200 and out["status"] == "rejected" and out["may"]["apply"] is False
    assert post(admin, f"{CR}/{cr['id']}/apply", {})[0] == 409
    assert post(editor, CR, {"title": "  ", "changes": [{"op": "add", "rule": REVIEWER_AI_SPEND}]})[0] == 422
    assert post(editor, CR, {"title": "empty draft"})[0] == 422
    assert post(editor, CR, {"title": "x", "extra": 1})[0] == 422
    assert admin.get(f"{CR}/999999").status_code == 404
    viewer = web_client(demo, "policy_viewer@service.example")
    assert viewer.get(f"{CR}/{cr['id']}").status_code == 200  # readers read
    assert post(viewer, f"{CR}/{cr['id']}/comments", {"body": "hi"})[0] == 403


def test_a_stale_base_is_validated_again(demo: Flask) -> None:
    editor = web_client(demo, "policy_editor@service.example")
    admin = web_client(demo, "policy_admin@service.example")
    status, first = post(editor, CR, {"title": "a", "changes": [{"op": "add", "rule": REVIEWER_AI_SPEND}]})
    status, second = post(editor, CR, {"title": "b", "changes": [{"op": "add", "rule": REVIEWER_AI_SPEND}]})
    for cr in (first, second):
        assert post(admin, f"{CR}/{cr['id']}/approve", {})[0] == 200
    assert post(admin, f"{CR}/{first['id']}/apply", {})[0] == 201
    head = policy_store.current_revision(db.session())
    status, problem = post(admin, f"{CR}/{second['id']}/apply", {})
    assert status == 409 and "no longer applies cleanly" in problem["detail"], problem
    assert any("already exists" in p for p in problem["problems"])
    assert policy_store.current_revision(db.session()) == head  # nothing written
    assert admin.get(f"{CR}/{second['id']}").get_json()["status"] == "open"


def test_impact_replays_recent_decisions(demo: Flask) -> None:
    decisionlog.LOG.clear()
    token = _token(demo)
    reviewer, learner = "reviewer@simulations.example", "learner@simulations.example"
    asks = [(reviewer, "view_ai_spend")] * 3 + [(learner, "view_ai_spend")] * 2 + [(reviewer, "view_simulations")]
    client = demo.test_client()
    for who, action in asks:
        resp = client.post(
            "/v1/check",
            json={"subject": who, "workspace": "simulations-demo", "action": action},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert resp.status_code == 200
    assert len(decisionlog.LOG.recent()) == len(asks)
    editor = web_client(demo, "policy_editor@service.example")
    status, cr = post(editor, CR, {"title": "spend", "changes": [{"op": "add", "rule": REVIEWER_AI_SPEND}]})
    replay = cr["checks"]["replay"]
    assert (replay["logged"], replay["replayed"], replay["flipped"]) == (6, 6, 3), replay
    assert replay["sample"][0]["subject"] == "someone" and replay["sample"][0]["allowed_after"] is True
    admin = web_client(demo, "policy_admin@service.example")  # view_people: who
    assert admin.get(f"{CR}/{cr['id']}").get_json()["checks"]["replay"]["sample"][0]["subject"] == reviewer
    # The playground's explain is not traffic.
    post(admin, "/v1/policy/explain", {"subject": reviewer, "workspace": "simulations-demo", "action": "view_ai_spend"})
    assert len(decisionlog.LOG.recent()) == len(asks)


def _token(app: Flask) -> str:
    admin = web_client(app, "policy_admin@service.example")
    status, out = post(admin, "/v1/policy/tokens", {"name": "replay-test", "all_workspaces": True})
    assert status == 201, out
    return str(out["token"])


def test_history_shows_policy_edits_by_default_and_people_by_name(demo: Flask) -> None:
    admin = web_client(demo, "policy_admin@service.example")
    assert post(admin, "/v1/policy/apply", {"changes": [{"op": "add", "rule": REVIEWER_AI_SPEND}]})[0] == 201
    owner = web_client(demo, "owner@classroom.example")
    learner = uid("learner@classroom.example")
    resp = owner.patch(f"/api/workspaces/classroom-demo/members/{learner}", json={"role": "teacher"})
    assert resp.status_code == 200, resp.get_json()
    out = admin.get("/v1/policy/revisions", query_string={"limit": 500}).get_json()
    assert out["category"] == "policy" and out["items"]
    assert {i["category"] for i in out["items"]} == {"policy"} and all(i["rollback"] for i in out["items"])
    members = admin.get("/v1/policy/revisions", query_string={"limit": 500, "category": "membership"}).get_json()
    assert members["items"] and all(not i["rollback"] for i in members["items"])
    assert not any("user:" in i["message"] for i in members["items"]), [i["message"] for i in members["items"]][:5]
    everything = admin.get("/v1/policy/revisions", query_string={"limit": 500, "category": "all"}).get_json()
    assert len(everything["items"]) >= len(out["items"]) + len(members["items"])
    change = next(i for i in members["items"] if i["message"].startswith("change role of"))
    assert change["message"] == "change role of learner@classroom.example in ws:classroom-demo", change
    assert admin.get("/v1/policy/revisions", query_string={"category": "nope"}).status_code == 422
