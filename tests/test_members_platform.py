"""Platform-wide roles, workspace creation, settings and feature toggles, on both backends."""

from __future__ import annotations

from flask import Flask

from app.authz import RuleChange
from app.extensions import authz, db
from app.models import AuditEvent
from app.policy import store as policy_store
from tests.factories import create_user, uid, web_client


def test_only_holders_grant_platform_roles(demo: Flask) -> None:
    """Simulations' Admin is granted by Admins only (000 Security note), and acts in every workspace."""
    target = uid("owner@simulations.example")
    owner = web_client(demo, "owner@simulations.example")
    resp = owner.post(
        "/api/platform/simulations/roles", json={"user_id": uid("trainer@simulations.example"), "role": "admin"}
    )
    assert resp.status_code == 403
    admin = web_client(demo, "admin@platform.example")
    resp = admin.post("/api/platform/simulations/roles", json={"user_id": target, "role": "admin"})
    assert resp.status_code == 201 and resp.get_json()["revision"] == authz.engine.revision
    assert "role:simulations:admin" in authz.engine.roles_of(f"user:{target}", "ws:simulations-demo")
    assert admin.post("/api/platform/simulations/roles", json={"user_id": target, "role": "admin"}).status_code == 409
    holders = {h["email"] for h in admin.get("/api/platform/simulations/roles").get_json()["items"]}
    assert holders == {"admin@platform.example", "owner@simulations.example"}
    for body, status in [
        ({"user_id": target, "role": "owner"}, 422),  # a workspace role
        ({"user_id": target, "role": "operator"}, 422),  # another pack's platform role
        ({"user_id": 999999, "role": "admin"}, 404),
        ({"user_id": "x", "role": "admin"}, 422),
    ]:
        assert admin.post("/api/platform/simulations/roles", json=body).status_code == status, body
    assert admin.post("/api/platform/nope/roles", json={"user_id": target, "role": "admin"}).status_code == 404
    # Academy's operator is not simulations' admin.
    op = web_client(demo, "operator@platform.example")
    assert op.post("/api/platform/simulations/roles", json={"user_id": target, "role": "admin"}).status_code == 403
    assert op.post("/api/platform/academy/roles", json={"user_id": target, "role": "operator"}).status_code == 201
    assert admin.delete(f"/api/platform/simulations/roles/admin/{target}").status_code == 204
    assert admin.delete(f"/api/platform/simulations/roles/admin/{target}").status_code == 404
    assert admin.delete(f"/api/platform/simulations/roles/admin/{uid('admin@platform.example')}").status_code == 403
    assert db.session.query(AuditEvent).filter(AuditEvent.action.like("platform.%")).count() == 3


def test_create_workspace_from_a_pack(demo: Flask) -> None:
    """Platform-role holders create workspaces of their pack, with an owner; others cannot."""
    admin = web_client(demo, "admin@platform.example")
    owner_id = uid("trainer@simulations.example")
    resp = admin.post(
        "/api/workspaces", json={"slug": "acme", "name": "Acme", "pack": "simulations", "owner_id": owner_id}
    )
    assert resp.status_code == 201, resp.get_json()
    assert authz.engine.workspace_role(f"user:{owner_id}", "ws:acme") == "role:simulations:owner"
    assert (
        admin.post("/api/workspaces", json={"slug": "acme", "name": "Acme", "pack": "simulations"}).status_code == 409
    )
    assert (
        admin.post("/api/workspaces", json={"slug": "Bad Slug", "name": "x", "pack": "simulations"}).status_code == 422
    )
    assert admin.post("/api/workspaces", json={"slug": "acme2", "name": "x", "pack": "academy"}).status_code == 403
    assert admin.post("/api/workspaces", json={"slug": "acme3", "name": "x", "pack": "nope"}).status_code == 404
    owner = web_client(demo, "owner@simulations.example")
    assert owner.post("/api/workspaces", json={"slug": "mine", "name": "x", "pack": "simulations"}).status_code == 403
    mine = web_client(demo, "trainer@simulations.example").get("/api/workspaces").get_json()["items"]
    assert {w["slug"] for w in mine} == {"simulations-demo", "acme"}


def test_workspace_settings(demo: Flask) -> None:
    """Settings are edited by the role the pack names (classroom: admins and owners), audited."""
    admin = web_client(demo, "admin@classroom.example")
    resp = admin.patch("/api/workspaces/classroom-demo", json={"name": "Madame AI demo", "settings": {"theme": "blue"}})
    assert resp.status_code == 200 and resp.get_json()["settings"] == {"theme": "blue"}
    assert admin.patch("/api/workspaces/classroom-demo", json={"settings": []}).status_code == 422
    assert admin.patch("/api/workspaces/classroom-demo", json={"slug": "x"}).status_code == 422
    teacher = web_client(demo, "teacher@classroom.example")
    assert teacher.patch("/api/workspaces/classroom-demo", json={"name": "x"}).status_code == 403
    info = teacher.get("/api/workspaces/classroom-demo").get_json()
    assert info["name"] == "Madame AI demo" and info["me"] == {"role": "teacher", "platform_roles": []}
    assert web_client(demo, "owner@skills.example").get("/api/workspaces/classroom-demo").status_code == 403


def test_feature_toggles_only_by_the_account_manager(demo: Flask) -> None:
    """Skills features are switched by the account manager (004 notes); a switched-off feature denies."""
    am = create_user("am@platform.example")
    session = db.session()
    handle = policy_store.begin_write(session, "test-setup")
    policy_store.add_changes(session, handle, [RuleChange("add", ("g", am.key, "role:skills:account_manager", "*"))])
    session.commit()
    feature = "set_weekly_learning_goals"
    member = f"user:{uid('member@skills.example')}"
    assert authz.check(member, "ws:skills-demo", feature).allowed
    owner = web_client(demo, "owner@skills.example")
    assert owner.put(f"/api/workspaces/skills-demo/features/{feature}", json={"enabled": False}).status_code == 403
    wc = web_client(demo, "am@platform.example")
    resp = wc.put(f"/api/workspaces/skills-demo/features/{feature}", json={"enabled": False})
    assert resp.status_code == 200 and resp.get_json()["enabled"] is False
    decision = authz.check(member, "ws:skills-demo", feature)
    assert not decision.allowed and decision.reason == "feature_off"
    assert owner.get("/api/workspaces/skills-demo").get_json()["features"][feature] is False
    assert wc.put(f"/api/workspaces/skills-demo/features/{feature}", json={"enabled": "no"}).status_code == 422
    assert wc.put("/api/workspaces/skills-demo/features/warp_drive", json={"enabled": True}).status_code == 422
    assert wc.put(f"/api/workspaces/skills-demo/features/{feature}", json={"enabled": True}).status_code == 200
    assert authz.check(member, "ws:skills-demo", feature).allowed
    classroom = web_client(demo, "owner@classroom.example")
    assert (
        classroom.put(f"/api/workspaces/classroom-demo/features/{feature}", json={"enabled": False}).status_code == 403
    )
