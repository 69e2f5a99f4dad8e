"""The policy workbench in a real browser, for each role of the ``service`` meta-pack.

The "done when" walk of the issue: a policy admin finds why a reviewer may not launch simulations
(matrix + playground explain), drafts giving reviewers ``view_ai_spend``, reads the impact (which
users), applies it and rolls it back. Editors draft an edit a policy test rejects (the failing case
is named) and an escalating one (the verifier's counterexample is shown), and cannot apply; viewers
read only. Each page gets a screenshot (``test-artifacts/``) and an axe-core check (no serious or
critical violation).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser_support import axe
from tests.conftest import ROOT
from tests.test_browser import Browser, driver, live_app  # noqa: F401 - fixtures

ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", ROOT / "test-artifacts"))


@pytest.fixture
def browser(driver: Any, live_app: Any) -> Iterator[Browser]:  # noqa: F811
    b = Browser(driver, live_app[1])
    driver.delete_all_cookies()
    driver.get(live_app[1] + "/login")
    yield b
    driver.delete_all_cookies()


def shot(b: Browser, name: str) -> None:
    """Keep a screenshot of the page as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    b.d.save_screenshot(str(ARTIFACTS / f"workbench-{name}.png"))


def sign_in(b: Browser, email: str) -> None:
    b.sign_in(email)
    b.wait_signed_in()


def cell(b: Browser, action: str, role: str) -> Any:
    return b.css(f'#matrix tr[data-action="{action}"] td[data-role="{role}"]')


def wait_status(b: Browser, part: str) -> str:
    return str(b.wait(lambda d: part in b.css("#draft-status").text and b.css("#draft-status").text))


def explain(b: Browser, subject: str, workspace: str, action: str, draft: bool = False) -> dict[str, str]:
    b.go("/policy/playground")
    for name, value in (("subject", subject), ("workspace", workspace), ("action", action)):
        field = b.css(f"#play-form input[name={name}]")
        field.clear()
        field.send_keys(value)
    box = b.css("#play-draft")
    if box.is_selected() != draft:
        box.click()
    b.css("#play-form button[type=submit]").click()
    b.wait(lambda d: b.css("#play-result").is_displayed())
    b.wait(lambda d: b.css("#play-reason").text)
    return {k: b.css(f"#play-{k}").text for k in ("verdict", "reason", "rule", "path")}


def decision_api(live: Any, action: str) -> dict[str, Any]:
    """The reviewer's answer from the decision API itself (a service token, real HTTP)."""
    import requests

    app, base = live
    with app.app_context():
        from app.extensions import db
        from app.policy import tokens

        _, secret = tokens.create_token(db.session(), f"workbench-{os.urandom(4).hex()}", all_workspaces=True)
        db.session.commit()
    body = {"subject": "reviewer@simulations.example", "workspace": "simulations-demo", "action": action}
    resp = requests.post(f"{base}/v1/check", json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=10)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_admin_finds_why_drafts_applies_and_rolls_back(browser: Browser, live_app: Any) -> None:  # noqa: F811
    b = browser
    sign_in(b, "policy_admin@service.example")
    assert b.css("nav.policynav a").text == "Policy"
    b.go("/policy")
    assert "simulations" in [r.get_attribute("data-pack") for r in b.all("#packs tbody tr")]
    shot(b, "packs")
    axe(b)

    # Why may a reviewer not launch simulations? The matrix says —, with the deny rule behind it …
    b.go("/policy/packs/simulations")
    launch = cell(b, "launch_own_simulations", "reviewer")
    assert launch.get_attribute("data-value") == "—"
    assert "deny" in launch.get_attribute("title")
    graph = b.css("#role-graph svg").get_attribute("aria-label")
    assert "owner inherits reviewer" in graph
    shot(b, "pack-simulations")
    axe(b)
    # … and the playground explains it: the explicit deny, reached through the reviewer role.
    why = explain(b, "reviewer@simulations.example", "simulations-demo", "launch_own_simulations")
    assert why["verdict"] == "Denied" and why["reason"] == "denied_by_policy"
    assert why["rule"].endswith("launch_own_simulations, any, -, deny") and "role:simulations:reviewer" in why["path"]
    assert "subject=reviewer%40simulations.example" in b.d.current_url  # shareable
    shot(b, "playground")
    axe(b)
    b.d.get(b.d.current_url)  # the shared URL answers by itself
    b.wait(lambda d: b.css("#play-reason").text == "denied_by_policy")

    # Draft: reviewers get view_ai_spend; the impact names the reviewer; nothing live changes yet.
    b.go("/policy/packs/simulations")
    cell(b, "view_ai_spend", "reviewer").find_element("css selector", "button").click()
    wait_status(b, "Valid at revision")
    flips = b.all("#draft-flips tbody tr[data-role]")
    assert [(f.get_attribute("data-role"), f.get_attribute("data-change")) for f in flips] == [("reviewer", "gain")]
    assert "reviewer@simulations.example" in b.css("#draft-flips td.people").text
    assert cell(b, "view_ai_spend", "reviewer").text == "— → ✓"  # the draft's flip, shown in the matrix
    b.d.execute_script("document.querySelector('#draft').scrollIntoView()")
    shot(b, "draft")
    axe(b)
    assert explain(b, "reviewer@simulations.example", "simulations-demo", "view_ai_spend")["verdict"] == "Denied"
    assert decision_api(live_app, "view_ai_spend")["allowed"] is False  # the draft is not live
    assert explain(b, "reviewer@simulations.example", "simulations-demo", "view_ai_spend", draft=True)["verdict"] == (
        "Allowed on the draft"
    )

    # Apply with a message: a new revision; the matrix and the decisions change.
    b.go("/policy/packs/simulations")
    wait_status(b, "Valid at revision")
    b.css("#apply-message").send_keys("reviewers see AI spend")
    b.css("#apply").click()
    b.wait(lambda d: b.css("#confirm-dialog").is_displayed())
    assert "1 cell change (reviewer gains view_ai_spend)" in b.css("#confirm-text").text  # the impact, confirmed
    b.accept_confirm()
    b.wait_message("Applied as revision")
    b.wait(lambda d: cell(b, "view_ai_spend", "reviewer").get_attribute("data-value") == "✅")
    assert explain(b, "reviewer@simulations.example", "simulations-demo", "view_ai_spend")["verdict"] == "Allowed"
    assert decision_api(live_app, "view_ai_spend")["allowed"] is True

    # History: the revision with its author and message; roll back, previewed first, confirmed in a dialog.
    b.go("/policy/history")
    top = b.all("#revisions tbody tr")[0]
    assert "reviewers see AI spend" in top.text and "policy_admin@service.example" in top.text
    top.find_element("css selector", "button[aria-label^='Preview rolling back']").click()
    b.wait(lambda d: "Verified" in b.css("#rollback-status").text)
    assert "view_ai_spend" in b.css("#rollback-flips").text
    assert b.css("#rollback-flips tbody tr").get_attribute("data-change") == "lose"
    shot(b, "history")
    axe(b)
    b.css("#rollback-message").send_keys("undo")
    b.css("#rollback").click()
    b.wait(lambda d: b.css("#confirm-dialog").is_displayed())  # the pages' one confirm dialog
    b.css("#confirm-ok").click()
    b.wait_message("Rolled back to revision")
    assert explain(b, "reviewer@simulations.example", "simulations-demo", "view_ai_spend")["verdict"] == "Denied"
    assert decision_api(live_app, "view_ai_spend")["allowed"] is False


def test_editor_sees_failing_policy_tests_and_counterexamples_but_cannot_apply(browser: Browser) -> None:
    b = browser
    sign_in(b, "policy_editor@service.example")
    b.go("/policy/packs/simulations")
    assert not b.all("#apply")  # editors draft and preview; admins apply
    # Learners lose the dashboard: the policy test of the seed table fails, and is named.
    cell(b, "view_dashboard", "learner").find_element("css selector", "button").click()
    wait_status(b, "problem")
    problems = b.css("#draft-problems").text
    assert "policy test fails: simulations_test::table view_dashboard" in problems
    b.css("#discard").click()
    b.wait(lambda d: not b.css("#draft-problems").is_displayed())

    # An escalating edit typed as a rule line: the verifier's counterexample is shown.
    b.go("/policy/packs/classroom")
    b.css("#rule-line").send_keys("p, 90, role:classroom:teacher, change_user_roles, any, -, allow")
    b.css("#rule-form button[type=submit]").click()
    wait_status(b, "problem")
    problems = b.css("#draft-problems").text
    assert "delegation: teacher may grant owner through change_user_roles" in problems
    assert "escalation: teacher (rank 1) could change_user_roles granting owner" in problems
    b.d.execute_script("document.querySelector('#draft').scrollIntoView()")
    shot(b, "editor-counterexample")
    axe(b)
    b.css("#discard").click()


def test_viewer_reads_only(browser: Browser) -> None:
    b = browser
    sign_in(b, "policy_viewer@service.example")
    b.go("/policy/packs/classroom")
    assert b.all("#matrix td.cell") and not b.all("#matrix button.cellbtn")
    assert not b.all("#draft") and not b.all("#apply")
    assert "read-only" in b.css("#perm-summary").text
    b.go("/policy/history")
    assert b.all("#revisions tbody tr") and not b.all("#rollback-form")
    assert not b.all("button[aria-label^='Preview rolling back']")
    shot(b, "viewer-history")
    axe(b)
    # A member of a learning workspace has no policy pages at all.
    b.css("#signout").click()
    b.wait(lambda d: "/login" in d.current_url)
    sign_in(b, "owner@classroom.example")
    assert not b.all("nav.policynav")
    b.d.get(b.base + "/policy")
    assert b.css("#error-page h1").text == "You cannot open this page"
