"""Change requests in a real browser (issue 26): an editor drafts and submits, an admin reviews, comments,
approves and applies (the impact in the confirmation); the author cannot approve their own; the draft
belongs to its user (sign-out leaves nothing for the next one); the draft panel stays in view beside
the clicked cell; the history shows policy edits by default. Screenshots in ``test-artifacts/`` and
axe-core (no serious or critical violation) on every page and state visited. Clicks are counted for
"approve a policy change" (printed, and asserted so the figure in the report stays true).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser_support import axe, screenshot
from tests.test_browser import Browser, driver, live_app  # noqa: F401 - fixtures


@pytest.fixture
def browser(driver: Any, live_app: Any) -> Iterator[Browser]:  # noqa: F811
    b = Browser(driver, live_app[1])
    driver.delete_all_cookies()
    yield b
    driver.delete_all_cookies()


class Clicks:
    """Counts the clicks of a task."""

    def __init__(self, b: Browser) -> None:
        self.b = b
        self.n = 0

    def click(self, selector: str) -> None:
        self.n += 1
        self.b.css(selector).click()


def sign_in(b: Browser, email: str) -> None:
    b.sign_in(email)
    b.wait_signed_in()  # one workspace: its page; several: the list


def sign_out(b: Browser) -> None:
    b.css("#signout").click()
    b.wait(lambda d: "/login" in d.current_url)


def cell_button(action: str, role: str) -> str:
    return f'#matrix tr[data-action="{action}"] td[data-role="{role}"] button'


def wait_status(b: Browser, part: str) -> str:
    return str(b.wait(lambda d: part in b.css("#draft-status").text and b.css("#draft-status").text))


def in_view(b: Browser, selector: str) -> bool:
    script = (
        "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return r.top >= 0 && r.top < window.innerHeight && r.height > 0"
    )
    return bool(b.d.execute_script(script, selector))


def real_decisions(live: Any) -> None:
    """Traffic for the decision log: 3 asks that the change flips, 2 it does not (a service token, real HTTP)."""
    import requests

    from app.authz import decisionlog

    app, base = live
    with app.app_context():
        from app.extensions import db
        from app.policy import tokens

        _, secret = tokens.create_token(db.session(), "replay-browser", all_workspaces=True)
        db.session.commit()
    decisionlog.LOG.clear()
    asks = [("reviewer", "view_ai_spend")] * 3 + [("learner", "view_ai_spend"), ("reviewer", "view_dashboard")]
    for who, action in asks:
        body = {"subject": f"{who}@simulations.example", "workspace": "simulations-demo", "action": action}
        resp = requests.post(f"{base}/v1/check", json=body, headers={"Authorization": f"Bearer {secret}"}, timeout=10)
        assert resp.status_code == 200, resp.text


def test_editor_submits_admin_reviews_approves_and_applies(browser: Browser, live_app: Any) -> None:  # noqa: F811
    b = browser
    real_decisions(live_app)
    b.d.set_window_size(1280, 900)
    sign_in(b, "policy_editor@service.example")
    b.go("/policy/packs/simulations")
    # A cell far down the matrix: the draft panel shows up in view, where the click happened.
    b.d.execute_script("document.querySelector(arguments[0]).scrollIntoView({block: 'center'})",
                       cell_button("view_ai_spend", "reviewer"))  # fmt: skip
    b.css(cell_button("view_ai_spend", "reviewer")).click()
    wait_status(b, "Valid at revision")
    assert in_view(b, "#draft-status") and in_view(b, cell_button("view_ai_spend", "reviewer"))
    screenshot(b, "cr-editor-draft-in-view")
    axe(b)
    b.css("#cr-title").send_keys("Reviewers see AI spend")
    b.css("#cr-why").send_keys("They review the monthly cost report")
    b.css("#submit-cr").click()
    b.wait(lambda d: "/policy/changes/" in d.current_url)
    b.wait_page("policy-change")
    b.wait(lambda d: b.css("#cr-state").text == "Open")
    assert "Every policy test still passes" in b.css("#cr-tests").text
    assert "No escalation" in b.css("#cr-verifier").text
    assert "1 cell change, 1 people affected" in b.css("#cr-impact").text
    assert "Of the last 5 decisions in the edited packs (5 logged), 3 would flip." in b.css("#cr-replay").text
    assert not b.css("#cr-approve").is_displayed()  # editors do not approve
    screenshot(b, "cr-editor-submitted")
    axe(b)
    cr_url = b.d.current_url
    sign_out(b)

    # The admin: no leftover draft from the editor on this browser.
    sign_in(b, "policy_admin@service.example")
    clicks = Clicks(b)
    b.go("/policy/packs/simulations")
    assert b.css("#draft-count").get_attribute("hidden") is not None
    assert "No changes yet." in b.css("#draft-changes").text
    # Approve a policy change: from the home page, Policy → Change requests → the request → Approve →
    # Apply → Confirm.
    b.go("/")
    clicks.click("nav.policynav a")
    b.wait_page("policy-packs")
    clicks.click("nav.subnav a[href='/policy/changes']")
    b.wait_page("policy-changes")
    b.wait(lambda d: b.all("#change-requests tbody tr[data-cr]"))
    screenshot(b, "cr-admin-list")
    axe(b)
    clicks.click("#change-requests tbody tr[data-cr] a")
    b.wait_page("policy-change")
    b.wait(lambda d: b.css("#cr-approve").is_displayed())
    assert b.d.current_url == cr_url
    b.css("#cr-comment").send_keys("Checked with finance: fine.")
    b.css("#cr-comment-btn").click()  # commenting is not part of the approval count
    b.wait(lambda d: "Checked with finance" in b.css("#cr-events").text)
    clicks.click("#cr-approve")
    b.wait_message("Approved.")
    b.wait(lambda d: "1 of 1" in b.css("#cr-approvals").text)
    screenshot(b, "cr-admin-approved")
    axe(b)
    clicks.click("#cr-apply")
    b.wait(lambda d: b.css("#confirm-dialog").is_displayed())
    text = b.css("#confirm-text").text
    assert "1 cell change, 1 people affected" in text and "3 would flip" in text  # the impact, in the confirmation
    screenshot(b, "cr-admin-apply-confirm")
    axe(b)
    clicks.n += 1
    b.accept_confirm()
    b.wait_message("Applied as revision")
    b.wait(lambda d: b.css("#cr-state").text == "Applied")
    kinds = [e.get_attribute("data-kind") for e in b.all("#cr-events li")]
    assert kinds == ["submitted", "comment", "approved", "applied"]
    print(f"\napprove a policy change (admin, from the home page): {clicks.n} clicks")
    assert clicks.n == 6
    # History: policy edits by default, with rollback; membership data behind the filter, without.
    b.go("/policy/history")
    rows = b.all("#revisions tbody tr")
    assert rows and {r.get_attribute("data-category") for r in rows} == {"policy"}
    assert "change request #" in rows[0].text
    screenshot(b, "cr-history-policy")
    axe(b)
    from selenium.webdriver.support.ui import Select

    Select(b.css("#category")).select_by_value("membership")
    b.wait(lambda d: b.all("#revisions tbody tr[data-category='membership']"))
    assert not b.all("button[aria-label^='Preview rolling back']")
    assert "user:" not in b.css("#revisions").text
    screenshot(b, "cr-history-membership")
    axe(b)


def test_the_author_cannot_approve_their_own_and_drafts_stay_with_their_user(browser: Browser) -> None:
    b = browser
    sign_in(b, "policy_admin@service.example")
    b.go("/policy/packs/academy")
    b.css("#rule-line").send_keys("p, 90, role:academy:learner, view_own_progress, any, -, allow")
    b.css("#rule-form button[type=submit]").click()
    b.wait(lambda d: "view_own_progress" in b.css("#draft-changes").text)
    wait_status(b, "")
    b.css("#cr-title").send_keys("mine")
    b.css("#submit-cr").click()
    b.wait_page("policy-change")
    b.wait(lambda d: b.css("#cr-state").text == "Open")
    assert not b.css("#cr-approve").is_displayed()
    assert "you wrote it, so someone else approves it" in b.css("#cr-approvals").text
    assert b.css("#cr-apply").get_attribute("disabled") is not None  # 0 of 1 approvals
    screenshot(b, "cr-author-cannot-approve")
    axe(b)

    # An editor leaves a draft and signs out; the next person on this browser sees none of it.
    sign_out(b)
    sign_in(b, "policy_editor@service.example")
    b.go("/policy/packs/simulations")
    b.css(cell_button("view_ai_spend", "learner")).click()
    wait_status(b, "this draft cannot be applied")  # a seed table cell: the policy test names it
    b.wait(lambda d: b.css("#draft-count").get_attribute("hidden") is None)
    sign_out(b)
    sign_in(b, "policy_viewer@service.example")
    b.go("/policy/packs/simulations")
    assert not b.all("#draft") and b.css("#draft-count").get_attribute("hidden") is not None
    b.go("/policy/changes")
    screenshot(b, "cr-viewer-list")
    axe(b)
    sign_out(b)
    # The editor's draft is still theirs.
    sign_in(b, "policy_editor@service.example")
    b.go("/policy/packs/simulations")
    b.wait(lambda d: "view_ai_spend" in b.css("#draft-changes").text)
    b.css("#discard").click()
    b.wait(lambda d: "No changes yet." in b.css("#draft-changes").text)
