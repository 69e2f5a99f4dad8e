"""Issue 24: a team manager's (a teacher's) check without ``team`` (``group``) is decided on the
teams (groups) the service stores, on every decision surface — allowed for the members of his teams,
denied for everyone else, and a team the caller names must still be the stored one."""

from __future__ import annotations

from flask import Flask

from app.extensions import db
from app.identity import users
from app.policy import tokens

SKILLS = {"workspace": "skills-demo", "action": "view_team_member_learning_progress"}


def _token() -> str:
    _, secret = tokens.create_token(db.session(), "derive", all_workspaces=True)
    db.session.commit()
    return secret


def _check(client, token: str, subject: str, member: str, **extra: str) -> dict:
    body = {**SKILLS, "subject": subject, "resource": {"type": "member", "attributes": {"member": member, **extra}}}
    resp = client.post("/v1/check", json=body, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def test_a_team_manager_needs_no_team_for_his_team_members(demo: Flask) -> None:
    client, token = demo.test_client(), _token()
    manager = "manager@skills.example"
    for teammate in ("member@skills.example", "author@skills.example"):
        out = _check(client, token, manager, teammate)
        assert (out["allowed"], out["reason"]) == (True, "granted"), teammate
    for outsider in ("owner@skills.example", "curation_admin@skills.example", "nobody@skills.example"):
        assert _check(client, token, manager, outsider)["allowed"] is False, outsider
    assert _check(client, token, manager, "owner@skills.example")["reason"] == "outside_team"
    # a team the caller names is checked against the stored ones, never replaced
    out = _check(client, token, manager, "member@skills.example", team="north")
    assert (out["allowed"], out["reason"]) == (False, "outside_team")
    # someone who manages no team derives nothing
    assert _check(client, token, "member@skills.example", "author@skills.example")["allowed"] is False


def test_a_batch_derives_the_same(demo: Flask) -> None:
    client, token = demo.test_client(), _token()
    items = [
        {**SKILLS, "subject": "manager@skills.example", "resource": {"type": "member", "attributes": {"member": m}}}
        for m in ("member@skills.example", "owner@skills.example")
    ]
    resp = client.post("/v1/check/batch", json={"checks": items}, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.get_json()
    assert [d["allowed"] for d in resp.get_json()["results"]] == [True, False]


def test_a_teacher_needs_no_group_for_his_learners(demo: Flask) -> None:
    client, token = demo.test_client(), _token()
    body = {"subject": "teacher@classroom.example", "workspace": "classroom-demo", "action": "view_learner_details"}

    def ask(member: str) -> dict:
        payload = {**body, "resource": {"type": "member", "attributes": {"member": member}}}
        resp = client.post("/v1/check", json=payload, headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200
        return resp.get_json()

    assert ask("learner@classroom.example")["allowed"] is True  # in his group "morning"
    out = ask("learner2@classroom.example")  # in "evening", which he does not teach
    assert (out["allowed"], out["reason"]) == (False, "outside_group")
    assert users.by_email(db.session(), "learner2@classroom.example") is not None


def test_explain_names_the_condition_of_the_matched_rule(demo: Flask) -> None:
    """A rule with an attribute condition: explain gives the rule, its role path and the condition's CEL."""
    client, token = demo.test_client(), _token()
    body = {
        "subject": "owner@simulations.example",
        "workspace": "simulations-demo",
        "action": "delete_groups",
        "resource": {"type": "group", "attributes": {"group": "g1"}},
        "properties": {"resource": {"in_use": False}},
    }
    resp = client.post("/v1/check?explain=true", json=body, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.get_json()
    out = resp.get_json()
    assert out["allowed"] is True and "when:group_not_in_use" in out["rule"]
    assert out["condition"] == {"id": "group_not_in_use", "when": "has(resource.in_use) && resource.in_use == false"}
    used = {**body, "properties": {"resource": {"in_use": True}}}
    resp = client.post("/v1/check?explain=true", json=used, headers={"Authorization": f"Bearer {token}"})
    out = resp.get_json()
    assert (out["allowed"], out["reason"]) == (False, "condition_not_met") and "condition" not in out
    plain = {**body, "action": "view_dashboard", "properties": None}
    del plain["properties"]
    out = client.post("/v1/check?explain=true", json=plain, headers={"Authorization": f"Bearer {token}"}).get_json()
    assert out["allowed"] is True and "condition" not in out  # a rule without a condition
