"""Issue 21, reproductions 1 and 2 through the policy API: the edits the audit applied (201, valid)
are now refused (422) with a counterexample that names the feature state and the scope fact.

On SQLite and PostgreSQL (the ``app`` fixture's backends); the policy stays at its revision.
"""

from __future__ import annotations

import pytest
from flask import Flask

from app.extensions import authz, db
from app.policy import store as policy_store
from tests.factories import WebClient, web_client
from tests.test_policy_api import restore_pack_rows  # noqa: F401 - fixture (PostgreSQL pack rows)

ADMIN = "policy_admin@service.example"
SKILLS_ASSIGN = "create_edit_deactivate_users_assign_roles"

REPRO_1 = [
    {"op": "add_role", "pack": "skills", "role": {"id": "helper", "rank": 0}},
    {"op": "add", "rule": "g4, pack:skills, role:skills:helper"},
    {"op": "add", "rule": f"p, 1, role:skills:helper, {SKILLS_ASSIGN}, any, leaderboard, deny"},
    {"op": "add", "rule": f"p, 2, role:skills:helper, {SKILLS_ASSIGN}, any, -, allow"},
]
REPRO_2 = [
    {"op": "add_role", "pack": "academy", "role": {"id": "helper", "rank": 0}},
    {"op": "add", "rule": "g4, pack:academy, role:academy:helper"},
    {"op": "add", "rule": "p, 85, role:academy:helper, assign_roles, assignee, -, allow"},
]
# "The same edit shape at scope owner in simulations, and assign_roles / apply_policy_change at
# assignee for a new service role, are also accepted."
REPRO_2_OWNER = [
    {"op": "add_role", "pack": "simulations", "role": {"id": "helper", "rank": 0}},
    {"op": "add", "rule": "g4, pack:simulations, role:simulations:helper"},
    {"op": "add", "rule": "p, 85, role:simulations:helper, assign_roles, owner, -, allow"},
]
REPRO_2_SERVICE = [
    {"op": "add_role", "pack": "service", "role": {"id": "helper", "rank": 0}},
    {"op": "add", "rule": "g4, pack:service, role:service:helper"},
    {"op": "add", "rule": "p, 85, role:service:helper, assign_roles, assignee, -, allow"},
    {"op": "add", "rule": "p, 85, role:service:helper, apply_policy_change, assignee, -, allow"},
]



def _csrf(wc: WebClient) -> dict[str, str]:
    return {"X-CSRFToken": wc.get("/v1/policy/session").get_json()["csrf_token"]}


@pytest.mark.parametrize(
    ("changes", "pack", "expected"),
    [
        pytest.param(
            REPRO_1,
            "skills",
            [
                "skills: escalation: helper (rank 0) could create_edit_deactivate_users_assign_roles granting owner "
                "(rank 3: equal or higher rank) [features off: leaderboard; new_role: owner]",
                "skills: escalation: helper (rank 0) could create_edit_deactivate_users_assign_roles on members "
                "holding owner (rank 3: equal or higher rank) [features off: leaderboard; ",
            ],
            id="repro1-feature-gated-deny",
        ),
        pytest.param(
            REPRO_2,
            "academy",
            [
                "academy: escalation: helper (rank 0) could assign_roles granting operator (rank 4: equal or higher "
                "rank) [every feature on; assignee: themselves; new_role: operator]",
                "academy: escalation: helper (rank 0) could assign_roles on members holding company_admin (rank 3: "
                "equal or higher rank) [every feature on; assignee: themselves; ",
            ],
            id="repro2-assignee",
        ),
        pytest.param(
            REPRO_2_OWNER,
            "simulations",
            [
                "simulations: escalation: helper (rank 0) could assign_roles granting owner "
                "(rank 3: equal or higher rank) [every feature on; owner: themselves; new_role: owner]"
            ],
            id="repro2-owner",
        ),
        pytest.param(
            REPRO_2_SERVICE,
            "service",
            [
                "service: escalation: helper (rank 0) could assign_roles granting policy_admin (rank 3: equal or "
                "higher rank) [every feature on; assignee: themselves; new_role: policy_admin]"
            ],
            id="repro2-service",
        ),
    ],
)
def test_the_audits_edits_are_refused_with_their_counterexample(
    demo: Flask, changes: list[dict], pack: str, expected: list[str]
) -> None:
    admin = web_client(demo, ADMIN)
    rev = policy_store.current_revision(db.session())
    resp = admin.post("/v1/policy/validate", json={"changes": changes}, headers=_csrf(admin))
    assert resp.status_code == 200 and resp.get_json()["valid"] is False, resp.get_json()
    resp = admin.post("/v1/policy/apply", json={"changes": changes}, headers=_csrf(admin))
    assert resp.status_code == 422 and resp.mimetype == "application/problem+json", resp.get_json()
    problems = resp.get_json()["problems"]
    for line in expected:
        assert any(p.startswith(line) for p in problems), (line, problems)
    assert policy_store.current_revision(db.session()) == rev
    assert authz.engine.packset.packs[pack].role("helper") is None  # nothing of the edit was applied


def test_the_repaired_edit_applies(demo: Flask) -> None:
    """Reproduction 1 without the unscoped allow: the helper is a member-like role, granted by owners."""
    admin = web_client(demo, ADMIN)
    changes = [
        REPRO_1[0],
        REPRO_1[1],
        {"op": "add", "rule": "g, role:skills:helper, role:skills:member, *"},
        {"op": "add", "rule": "p, 1, role:skills:helper, create_edit_deactivate_users_assign_roles, any, -, deny"},
    ]
    resp = admin.post("/v1/policy/validate", json={"changes": changes}, headers=_csrf(admin))
    out = resp.get_json()
    # The account manager may grant every role below it; a new role is not in its exception yet.
    assert out["valid"] is False and all("account_manager may grant helper" in p for p in out["problems"]), out
