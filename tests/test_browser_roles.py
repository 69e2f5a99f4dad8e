"""Every role of the demo data (DESIGN.md §6) through its pages in headless Chromium (issue 13):
teacher, learner, team manager, owner, admin and platform operator. Each page gets a screenshot
(``test-artifacts/roles-*.png``) and the axe-core check (no serious or critical violation).

The module's live app is shared: tests that change data run last and touch distinct people.
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
    driver.set_window_size(1280, 900)
    driver.delete_all_cookies()
    yield b
    driver.delete_all_cookies()
    driver.set_window_size(1280, 900)


def sign_in(b: Browser, email: str) -> None:
    b.sign_in(email)
    b.wait_signed_in()


def check(b: Browser, name: str) -> None:
    """A screenshot, then axe-core on the page as it is now."""
    screenshot(b, f"roles-{name}")
    axe(b)


def no_horizontal_overflow(b: Browser) -> None:
    width = b.d.execute_script("return document.documentElement.scrollWidth")
    view = b.d.execute_script("return window.innerWidth")
    assert width <= view + 1, (width, view)


def dialog_open(b: Browser) -> bool:
    return bool(b.d.execute_script("return document.querySelector('#confirm-dialog').open"))


def test_teacher_adds_a_learner_with_the_people_picker(browser: Browser) -> None:
    b = browser
    sign_in(b, "teacher@classroom.example")
    b.wait_page("units")  # one workspace: sign-in lands in it, on the groups he teaches (issue 26)
    b.go("/?all=1")  # the switcher's "All workspaces"
    b.wait(lambda d: b.all('#workspaces tr[data-slug="classroom-demo"] .badge'))
    assert b.css('#workspaces tr[data-slug="classroom-demo"] .badge').text == "Teacher"  # a label, not an id
    check(b, "home-teacher")
    b.css('#workspaces tr[data-slug="classroom-demo"] a').click()
    b.wait_page("units")  # no Forbidden page: the teacher lands on the groups he teaches
    assert "/w/classroom-demo/groups" in b.d.current_url
    assert not b.all("#messages .problem")
    assert [a.get_attribute("data-name") for a in b.all("#units article.unit")] == ["morning"]
    assert not b.all('nav.wsnav a[href$="/members"]') and not b.all('nav.wsnav a[href$="/audit"]')
    card = b.css('#units article[data-name="morning"]')
    # Controls only where Casbin would allow: remove on the learner, nothing on the teacher, no edit/delete.
    assert card.find_elements("css selector", "ul.learners button.remove-person")
    assert not card.find_elements("css selector", "ul.teachers button")
    assert not card.find_elements("css selector", "button.delete, button.edit, button.archive, form.add-teachers")
    # The picker searches by name or email and offers learners only.
    field = card.find_element("css selector", "form.add-learners input[type=search]")
    field.send_keys("classroom")
    card.find_element("css selector", "form.add-learners button[type=submit]").click()
    b.wait(lambda d: b.all("#units form.add-learners ul.results li[data-email]"))
    offered = [li.get_attribute("data-email") for li in b.all("#units form.add-learners ul.results li[data-email]")]
    assert offered == ["learner2@classroom.example"], offered
    check(b, "groups-teacher-picker")
    b.css('#units form.add-learners li[data-email="learner2@classroom.example"] button.add').click()
    b.wait_message("learner2@classroom.example is now a learner of morning")
    learners = b.css('#units article[data-name="morning"] ul.learners').text
    assert "learner2@classroom.example" in learners


def test_learner_sees_own_groups_and_overview(browser: Browser) -> None:
    b = browser
    sign_in(b, "learner@classroom.example")
    b.go("/w/classroom-demo")
    b.wait_page("units")
    assert [a.get_attribute("data-name") for a in b.all("#units article.unit")] == ["morning"]
    assert not b.all("#units button") and not b.all("#units form")
    check(b, "groups-learner")
    b.go("/w/classroom-demo/overview")
    assert b.css("#my-role .badge").text == "Learner"
    assert b.all('#my-actions li[data-action="personal_dashboard"]')
    check(b, "overview-learner")
    # The members page is not the learner's: he is sent to his landing page, not to a 403.
    b.go("/w/classroom-demo/members")
    b.wait_page("units")


def test_team_manager_sees_his_team(browser: Browser) -> None:
    b = browser
    sign_in(b, "manager@skills.example")
    b.go("/w/skills-demo")
    b.wait_page("units")
    assert "/w/skills-demo/teams" in b.d.current_url
    assert not b.all("#messages .problem")
    card = b.css('#units article[data-name="sales"]')
    members = card.find_element("css selector", "ul.members").text
    assert "member@skills.example" in members and "author@skills.example" in members
    assert not card.find_elements("css selector", "button")  # the pack gives managers views, not changes
    card.find_element("css selector", "details.scoped summary").click()
    assert card.find_elements("css selector", 'details.scoped li[data-action="view_team_members_list"]')
    status = b.d.execute_async_script(
        "const done = arguments[0]; fetch('/api/workspaces/skills-demo/teams/sales').then(r => done(r.status))"
    )
    assert status == 200
    check(b, "teams-manager")


def test_platform_operator_finds_his_workspaces(browser: Browser) -> None:
    b = browser
    sign_in(b, "operator@platform.example")
    b.wait(lambda d: b.css("#platform-card").is_displayed())
    pack = b.css('#platform-packs li[data-pack="academy"]')
    assert "Operator" in pack.text and "1 workspace" in pack.text
    check(b, "home-operator")


def test_owner_changes_a_role_only_after_confirming(browser: Browser) -> None:
    from selenium.webdriver.common.keys import Keys

    b = browser
    sign_in(b, "owner@classroom.example")
    b.go("/w/classroom-demo/members")
    row = b.row("learner2@classroom.example")
    select = row.find_element("css selector", "select.role-select")
    # Keyboard navigation on the dropdown never commits (reproduction 3).
    select.send_keys(Keys.ARROW_DOWN)
    select.send_keys(Keys.ARROW_DOWN)
    assert not dialog_open(b)
    role = b.d.execute_async_script(
        "const done = arguments[0]; fetch('/api/workspaces/classroom-demo/members?q=learner2').then(r => r.json())"
        ".then(j => done(j.items[0].role))"
    )
    assert role == "learner"
    # Own row and other owners' rows carry no Remove for an admin; for the owner, not on himself.
    me = b.row("owner@classroom.example")
    assert not me.find_elements("css selector", "button.remove, input.pick, select.role-select")
    # Select, press Change, read the consequence, cancel: nothing happens.
    from selenium.webdriver.support.ui import Select

    Select(select).select_by_value("owner")
    row.find_element("css selector", "button.change-role").click()
    b.wait(lambda d: dialog_open(b))
    assert "top role" in b.css("#confirm-text").text
    check(b, "members-owner-confirm")
    b.css("#confirm-cancel").click()
    b.wait(lambda d: not dialog_open(b))
    assert (
        Select(
            b.row("learner2@classroom.example").find_element("css selector", "select")
        ).first_selected_option.get_attribute("value")
        == "learner"
    )
    # Now for real: teacher.
    Select(b.row("learner2@classroom.example").find_element("css selector", "select")).select_by_value("teacher")
    b.row("learner2@classroom.example").find_element("css selector", "button.change-role").click()
    b.wait(lambda d: dialog_open(b))
    assert "from Learner to Teacher" in b.css("#confirm-text").text
    b.css("#confirm-ok").click()
    b.wait_message("learner2@classroom.example is now Teacher")
    check(b, "members-owner")
    per_row = b.d.execute_script(
        "return performance.getEntriesByType('resource').filter(e => e.name.includes('assignable-roles')).length"
    )
    assert per_row == 0  # the roles come with the member page (reproduction 8)


def test_admin_sees_only_allowed_controls_and_refusals_in_words(browser: Browser) -> None:
    b = browser
    sign_in(b, "admin@classroom.example")
    b.go("/w/classroom-demo/members")
    assert not b.all("#delete-ws") and not b.all("#transfer-card")  # owners' actions (003)
    for who in ("owner@classroom.example", "owner2@classroom.example", "admin@classroom.example"):
        row = b.row(who)
        assert not row.find_elements("css selector", "button.remove, input.pick, select.role-select"), who
    roles = [
        o.get_attribute("value")
        for o in b.row("learner@classroom.example").find_elements("css selector", "select.role-select option")
    ]
    assert roles == ["learner", "teacher"]
    # A refusal arriving anyway (the policy changed meanwhile) is explained in words, not a code.
    b.d.execute_async_script(
        "const done = arguments[0]; import('/static/web/lib.js').then(m => {"
        " m.showError(new m.ApiError(403, {title: 'Forbidden', reason: 'rank_limit',"
        " email: 'owner@classroom.example', detail: 'you may not remove owner@classroom.example'})); done(); })"
    )
    text = b.wait_message("owner@classroom.example:")
    assert "owner@classroom.example: You can give only roles below your own" in text and "rank_limit" not in text
    assert "Forbidden" not in text
    check(b, "members-admin")


def test_owner_invites_revokes_and_sees_per_address_results(browser: Browser) -> None:
    b = browser
    sign_in(b, "owner@classroom.example")
    b.go("/w/classroom-demo/members")
    b.wait(lambda d: b.css("#open-invite").is_displayed())
    b.css("#open-invite").click()
    b.wait(lambda d: b.css("#invite-dialog").is_displayed())
    b.css("#invite-emails").send_keys("learner@classroom.example, not@@valid, fresh.person@example.org")
    b.css("#invite-form button[type=submit]").click()
    b.wait(lambda d: b.all("#invite-results li[data-status]"))
    status = {li.text.split(":")[0]: li.get_attribute("data-status") for li in b.all("#invite-results li")}
    assert status == {
        "learner@classroom.example": "member",
        "not@@valid": "invalid",
        "fresh.person@example.org": "invited",
    }
    check(b, "members-invite-dialog")
    b.css("#invite-close").click()
    b.css("#tab-invitations").click()
    b.wait(lambda d: b.all('#invitations tr[data-email="fresh.person@example.org"]'))
    check(b, "members-invitations")
    b.css('#invitations tr[data-email="fresh.person@example.org"] button.resend').click()
    b.wait_message("A new sign-up link was sent to fresh.person@example.org")
    b.css('#invitations tr[data-email="fresh.person@example.org"] button.revoke').click()
    b.wait(lambda d: dialog_open(b))
    b.css("#confirm-ok").click()
    b.wait_message("Revoked the invitation of fresh.person@example.org")
    assert not b.all('#invitations tr[data-email="fresh.person@example.org"]')


def test_owner_manages_groups_archive_capacity_move(browser: Browser) -> None:
    b = browser
    sign_in(b, "owner@classroom.example")
    b.go("/w/classroom-demo/groups")
    b.css("#unit-form input[name=name]").send_keys("spare")
    b.css("#unit-form button[type=submit]").click()
    b.wait_message("Created spare")
    # Edit with capacity.
    card = b.css('#units article[data-name="spare"]')
    card.find_element("css selector", "button.edit").click()
    cap = card.find_element("css selector", "form.edit-unit input[name=capacity]")
    cap.send_keys("5")
    card.find_element("css selector", "form.edit-unit button[type=submit]").click()
    b.wait_message("Saved spare")
    assert "0 of 5 places" in b.css('#units article[data-name="spare"]').text
    # Move a learner from morning to spare.
    from selenium.webdriver.support.ui import Select

    li = b.css('#units article[data-name="morning"] ul.learners li[data-email="learner@classroom.example"]')
    Select(li.find_element("css selector", "select.move-to")).select_by_value("spare")
    b.wait(lambda d: dialog_open(b))
    b.css("#confirm-ok").click()
    b.wait_message("moved from morning to spare")
    assert "learner@classroom.example" in b.css('#units article[data-name="spare"] ul.learners').text
    # In use: Delete is disabled and says why; archive instead.
    assert not b.css('#units article[data-name="spare"] button.delete').is_enabled()
    b.css('#units article[data-name="spare"] button.archive').click()
    b.wait(lambda d: dialog_open(b))
    b.css("#confirm-ok").click()
    b.wait_message("spare is archived")
    check(b, "groups-owner")
    # An empty group is deleted after typing its name.
    b.css("#unit-form input[name=name]").send_keys("empty1")
    b.css("#unit-form button[type=submit]").click()
    b.wait_message("Created empty1")
    b.css('#units article[data-name="empty1"] button.delete').click()
    b.wait(lambda d: dialog_open(b))
    assert not b.css("#confirm-ok").is_enabled()
    b.css("#confirm-typed").send_keys("empty1")
    b.css("#confirm-ok").click()
    b.wait_message("Deleted empty1")


def test_pages_fit_a_phone(browser: Browser) -> None:
    b = browser
    b.d.set_window_size(390, 844)
    sign_in(b, "owner@classroom.example")
    no_horizontal_overflow(b)
    pages = (("/", "home"), ("/w/classroom-demo/members", "members"), ("/w/classroom-demo/groups", "groups"))
    for path, name in (*pages, ("/w/classroom-demo/audit", "audit")):
        b.go(path)
        no_horizontal_overflow(b)
        check(b, f"{name}-390px")


def test_owner_transfers_ownership_with_typed_confirmation(browser: Browser) -> None:
    from selenium.webdriver.support.ui import Select

    b = browser
    sign_in(b, "owner2@classroom.example")
    b.go("/w/classroom-demo/members")
    b.wait(lambda d: b.css("#transfer-card").is_displayed())
    Select(b.css("#transfer-to")).select_by_visible_text("admin@classroom.example")
    b.css("#transfer-form button[type=submit]").click()
    b.wait(lambda d: dialog_open(b))
    assert not b.css("#confirm-ok").is_enabled()
    b.css("#confirm-typed").send_keys("classroom-demo")
    check(b, "members-transfer")
    b.css("#confirm-ok").click()
    b.wait_message("admin@classroom.example now owns this workspace")


def test_owner_reads_and_filters_the_audit(browser: Browser) -> None:
    from selenium.webdriver.support.ui import Select

    b = browser
    sign_in(b, "owner@classroom.example")
    b.go("/w/classroom-demo/groups")
    b.css("#unit-form input[name=name]").send_keys("audited")
    b.css("#unit-form button[type=submit]").click()
    b.wait_message("Created audited")
    b.go("/w/classroom-demo/audit")
    b.wait(lambda d: b.all("#audit tbody tr[data-action]"))
    # Labels, not codes; the table fits its card at 1280 px.
    assert "group.create" not in b.css("#audit tbody").text
    fits = b.d.execute_script(
        "const c = document.querySelector('main .card'); return c.scrollWidth <= c.clientWidth + 1"
    )
    assert fits
    Select(b.css("#audit-filters select[name=action]")).select_by_value("group.")
    b.css("#audit-filters button[type=submit]").click()
    rows = "#audit tbody tr[data-action]"
    b.wait(lambda d: b.all(rows) and all(r.get_attribute("data-action").startswith("group.") for r in b.all(rows)))
    assert "created group" in b.css("#audit tbody").text and "group audited" in b.css("#audit tbody").text
    assert "action=group." in b.css("#audit-csv").get_attribute("href")
    check(b, "audit-owner")


def test_platform_consoles(browser: Browser) -> None:
    b = browser
    # The skills account manager switches a feature off in a workspace of his pack, after confirming.
    sign_in(b, "account_manager@platform.example")
    b.css('#platform-packs li[data-pack="skills"] a').click()
    b.wait_page("platform")
    form = 'form.switches[data-slug="skills-demo"]'
    # 74 switches under the seed's areas; the search narrows them
    assert len(b.all(f"{form} input.feature")) == 74
    assert len(b.all(f"{form} fieldset.area")) >= 4
    b.css(f"{form} input.feature-search").send_keys("leaderboard")
    b.wait(lambda d: len([x for x in b.all(f"{form} label.check") if x.is_displayed()]) == 1)
    check(b, "platform-switches-search")
    box = b.css(f'{form} input[data-feature="leaderboard"]')
    assert box.is_selected()
    box.click()
    b.css(f"{form} input.feature-search").clear()
    b.css(f"{form} input.feature-search").send_keys("certificates")
    b.wait(lambda d: not b.css(f'{form} input[data-feature="leaderboard"]').is_displayed())
    b.css(f'{form} input[data-feature="issue_and_revoke_certificates"]').click()
    assert b.css(f"{form} .pending-count").text == "2 unsaved changes"
    # one save for both, after confirming; the message stays until dismissed
    b.css(f"{form} button.save-switches").click()
    b.wait(lambda d: dialog_open(b))
    assert "switch off 2 features" in b.css("#confirm-text").text
    b.css("#confirm-ok").click()
    b.wait_message("Saved 2 feature switches in skills-demo")
    assert b.css(f"{form} .pending-count").text == "No unsaved changes"
    import time

    time.sleep(1.0)  # no reload wipes it
    assert "Saved 2 feature switches" in b.css("#messages").text
    check(b, "platform-switches-saved")
    b.css("#messages button.dismiss").click()
    b.wait(lambda d: not b.css("#messages").is_displayed())
    b.go("/platform/skills")
    assert not b.css(f'{form} input[data-feature="leaderboard"]').is_selected()
    assert not b.css(f'{form} input[data-feature="issue_and_revoke_certificates"]').is_selected()
    assert b.all('#platform-holders tr[data-email="account_manager@platform.example"]')
    check(b, "platform-account-manager")
    b.css("#signout").click()
    b.wait(lambda d: "/login" in d.current_url)
    # The academy operator creates a workspace of his pack.
    sign_in(b, "operator@platform.example")
    b.go("/platform/academy")
    b.css("#create-workspace input[name=name]").send_keys("Academy Two")
    b.css("#create-workspace input[name=slug]").send_keys("academy-two")
    b.css("#create-workspace button[type=submit]").click()
    b.wait(lambda d: b.all('#pack-workspaces tr[data-slug="academy-two"]'))
    b.wait_message("Created Academy Two")  # kept across the reload that shows the new row
    check(b, "platform-operator")
    # its settings: a new name through the workspace API
    name = b.css('#pack-workspaces form.ws-settings[data-slug="academy-two"] input[name=name]')
    name.clear()
    name.send_keys("Academy Second")
    b.css('#pack-workspaces form.ws-settings[data-slug="academy-two"] button[type=submit]').click()
    b.wait_message("is now called Academy Second")
    assert "Academy Second" in b.css('#pack-workspaces tr[data-slug="academy-two"]').text
    # a name the API refuses is explained at the field
    name = b.css('#pack-workspaces form.ws-settings[data-slug="academy-two"] input[name=name]')
    name.clear()
    name.send_keys(" ")
    b.css('#pack-workspaces form.ws-settings[data-slug="academy-two"] button[type=submit]').click()
    b.wait_message("Check the field marked below")
    name = b.css('#pack-workspaces form.ws-settings[data-slug="academy-two"] input[name=name]')
    assert name.get_attribute("aria-invalid") == "true"
    assert b.css("#" + name.get_attribute("aria-describedby")).is_displayed()
    check(b, "platform-settings-field-error")


def test_owner_deletes_the_workspace_last(browser: Browser) -> None:
    """Runs last: classroom-demo is gone afterwards."""
    b = browser
    sign_in(b, "owner@classroom.example")
    b.go("/w/classroom-demo/members")
    b.css("#delete-ws").click()
    b.wait(lambda d: dialog_open(b))
    assert not b.css("#confirm-ok").is_enabled()
    b.css("#confirm-typed").send_keys("classroom-demo")
    check(b, "members-delete-workspace")
    b.css("#confirm-ok").click()
    b.wait_page("home")
    assert not b.all('#workspaces tr[data-slug="classroom-demo"]')
