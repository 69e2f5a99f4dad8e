"""`flask seed` loads DESIGN.md §6 exactly, and a second run changes nothing."""

from __future__ import annotations

from flask import Flask

from app.extensions import authz, db
from app.identity import users
from app.models import Group, GroupMember, Membership, User, Workspace
from app.policy import store as policy_store
from seed.demo import load_demo
from tests.factories import fast_password_hashing

ROLES = {
    "simulations": ["learner", "reviewer", "trainer", "owner"],
    "academy": ["learner", "trainer", "content_manager", "company_admin"],
    "classroom": ["learner", "teacher", "admin", "owner"],
    "skills": ["member", "author", "access_manager", "curation_admin", "owner"],
    "service": ["policy_viewer", "policy_editor", "policy_admin"],
}
SLUG = {
    "simulations": "simulations-demo",
    "academy": "academy-demo",
    "classroom": "classroom-demo",
    "skills": "skills-demo",
    "service": "service",
}


def test_seed_is_design_section_6(app: Flask) -> None:
    """Workspaces, one accepted member per role, the extras, groups, team, platform roles, password."""
    fast_password_hashing()
    summary = load_demo()
    assert "demo-password-1" in summary and "skipped" not in summary
    spaces = {w.slug: w.pack for w in db.session.query(Workspace)}
    assert spaces == {
        "simulations-demo": "simulations",
        "academy-demo": "academy",
        "classroom-demo": "classroom",
        "skills-demo": "skills",
        "service": "service",
    }
    expected: set[tuple[str, str, str]] = set()
    for pack, roles in ROLES.items():
        expected |= {(SLUG[pack], f"{r}@{pack}.example", r) for r in roles}
    expected |= {
        ("classroom-demo", "learner2@classroom.example", "learner"),
        ("classroom-demo", "owner2@classroom.example", "owner"),
        ("skills-demo", "manager@skills.example", "member"),
        ("classroom-demo", "multi@example.com", "owner"),
        ("simulations-demo", "multi@example.com", "learner"),
    }
    rows = db.session.query(Membership).all()
    assert {(m.workspace.slug, m.user.email, m.role) for m in rows} == expected
    assert {m.status for m in rows} == {"accepted"}
    for slug, email, role in expected:
        u = users.by_email(db.session(), email)
        assert u is not None
        assert authz.engine.workspace_role(u.key, f"ws:{slug}") == f"role:{slug.split('-')[0]}:{role}"
    emails = {u.email for u in db.session.query(User)}
    platform = {"admin@platform.example", "operator@platform.example", "account_manager@platform.example"}
    assert emails == {e for _, e, _ in expected} | platform
    for email in emails:
        u = users.by_email(db.session(), email)
        assert u is not None and users.verify_password(u, "demo-password-1")
    admin = users.by_email(db.session(), "admin@platform.example")
    operator = users.by_email(db.session(), "operator@platform.example")
    assert admin is not None and operator is not None
    assert authz.engine.roles_of(admin.key, "ws:simulations-demo") == ("role:simulations:admin",)
    assert authz.engine.roles_of(operator.key, "ws:academy-demo") == ("role:academy:operator",)
    units = {
        (g.name, g.kind, gm.user.email, gm.relation)
        for g in db.session.query(Group)
        for gm in db.session.query(GroupMember).filter_by(group_id=g.id)
    }
    assert units == {
        ("morning", "group", "teacher@classroom.example", "teacher"),
        ("morning", "group", "learner@classroom.example", "learner"),
        ("evening", "group", "learner2@classroom.example", "learner"),
        ("sales", "team", "manager@skills.example", "manager"),
        ("sales", "team", "member@skills.example", "member"),
        ("sales", "team", "author@skills.example", "member"),
    }
    assert {g.name for g in db.session.query(Group)} == {"morning", "evening", "sales"}
    eng = authz.engine
    assert eng.g2.has_link(f"user:{admin.id}", "group:morning", "ws:classroom-demo") is False
    teacher = users.by_email(db.session(), "teacher@classroom.example")
    manager = users.by_email(db.session(), "manager@skills.example")
    assert teacher is not None and manager is not None
    assert eng.g2.has_link(teacher.key, "group:morning", "ws:classroom-demo")
    assert eng.g2.has_link(manager.key, "team:sales", "ws:skills-demo")


def test_seed_is_idempotent(app: Flask) -> None:
    """The second run writes no row, rule or revision."""
    fast_password_hashing()
    load_demo()
    revision = policy_store.current_revision(db.session())
    rules = policy_store.count_rules(db.session())
    counts = [db.session.query(m).count() for m in (User, Workspace, Membership, Group, GroupMember)]
    assert "nothing changed" in load_demo()
    assert policy_store.current_revision(db.session()) == revision
    assert policy_store.count_rules(db.session()) == rules
    assert [db.session.query(m).count() for m in (User, Workspace, Membership, Group, GroupMember)] == counts
