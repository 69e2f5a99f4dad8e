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


def user_id(live: Any, email: str) -> int:
    """The id of a demo user, read from the live app's database."""
    from tests.factories import uid

    with live[0].app_context():
        return uid(email)


def page_is_forbidden(b: Browser, secret: str) -> None:
    """The 403 page: the status, no data about the person, no workspace controls."""
    assert b.d.execute_script("return document.body.dataset.page") == "error"
    assert b.css("#error-page").get_attribute("data-status") == "403"  # the one 403 page, in words
    assert secret not in b.d.page_source
    assert not b.all("#person, #members, table")


def test_teacher_opens_a_learner_of_his_group_only(browser: Browser, live_app: Any) -> None:  # noqa: F811
    """Runs first: learner2 is still only in the evening group, which the teacher does not teach."""
    b = browser
    sign_in(b, "teacher@classroom.example")
    b.go("/w/classroom-demo/groups")
    card = b.css('#units article[data-name="morning"]')
    link = card.find_element("css selector", 'ul.learners li[data-email="learner@classroom.example"] a.person-link')
    # His own entry among the teachers is no link: teachers do not open teachers.
    assert not card.find_elements("css selector", "ul.teachers a.person-link")
    link.click()
    b.wait_page("person")
    assert b.css("#person-name").text in b.d.title  # the name, in the heading and the title
    assert b.css("#person-email").text == "learner@classroom.example"
    assert b.css("#person-role .badge").text == "Learner"
    assert b.css("#person-status").text == "Active"
    assert "morning" in b.css("#person-units").text
    assert b.all('#person-actions li[data-action="personal_dashboard"]')
    assert not b.css("#person-audit").is_displayed()  # teachers read no audit trail
    check(b, "person-teacher-learner")
    # learner2 is in evening only: the 403 page, nothing about her.
    b.go(f"/w/classroom-demo/people/{user_id(live_app, 'learner2@classroom.example')}")
    page_is_forbidden(b, "learner2@classroom.example")
    check(b, "person-teacher-forbidden")
    b.go("/w/classroom-demo/people/999999")
    assert b.css("#error-page").get_attribute("data-status") == "404"


def test_team_manager_opens_a_team_member(browser: Browser) -> None:
    b = browser
    sign_in(b, "manager@skills.example")
    b.go("/w/skills-demo/teams")
    b.css('#units article[data-name="sales"] ul.members li[data-email="member@skills.example"] a.person-link').click()
    b.wait_page("person")
    assert b.css("#person-email").text == "member@skills.example"
    assert "sales" in b.css("#person-units").text
    check(b, "person-manager-member")


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
    summary = row.find_element("css selector", "details.role-menu summary")
    # Keyboard on the closed menu never commits (reproduction 3).
    summary.send_keys(Keys.ARROW_DOWN)
    summary.send_keys(Keys.ARROW_DOWN)
    assert not dialog_open(b)
    # Own row and other owners' rows carry no Remove for an admin; for the owner, not on himself.
    me = b.row("owner@classroom.example")
    assert not me.find_elements("css selector", "button.remove, input.pick, details.role-menu")
    # Escape closes an open menu without choosing.
    menu = row.find_element("css selector", "details.role-menu")
    summary.click()
    b.wait(lambda d: menu.get_attribute("open") is not None, timeout=5)  # the toggle lands after the click
    summary.send_keys(Keys.ESCAPE)
    b.wait(lambda d: menu.get_attribute("open") is None)
    assert not dialog_open(b)
    # The menu describes each role; choosing one opens the confirmation at once (one gesture).
    summary.click()
    option = row.find_element("css selector", 'button.role-option[data-role="owner"]')
    assert option.is_displayed() and row.find_element("css selector", 'button[data-role="teacher"] small').text
    check(b, "members-owner-role-menu")
    option.click()
    b.wait(lambda d: dialog_open(b))
    assert "top role" in b.css("#confirm-text").text
    check(b, "members-owner-confirm")
    b.css("#confirm-cancel").click()
    b.wait(lambda d: not dialog_open(b))
    # Cancelled: nothing is pending, the row shows the stored role.
    summary = b.row("learner2@classroom.example").find_element("css selector", "details.role-menu summary")
    assert summary.text == "Learner"
    # Now for real: teacher. The confirmation says what they gain and lose, from the matrix.
    summary.click()
    b.row("learner2@classroom.example").find_element("css selector", 'button[data-role="teacher"]').click()
    b.wait(lambda d: dialog_open(b))
    text = b.css("#confirm-text").text
    assert "goes from Learner to Teacher" in text
    assert "They gain" in text and "View detailed information about their group's learners" in text
    assert "They lose no permission" in text
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
        assert not row.find_elements("css selector", "button.remove, input.pick, details.role-menu"), who
    roles = [
        o.get_attribute("data-role")
        for o in b.row("learner@classroom.example").find_elements("css selector", "button.role-option")
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


def test_pages_fit_a_phone(browser: Browser, live_app: Any) -> None:  # noqa: F811
    b = browser
    b.d.set_window_size(390, 844)
    sign_in(b, "owner@classroom.example")
    no_horizontal_overflow(b)
    person = f"/w/classroom-demo/people/{user_id(live_app, 'learner@classroom.example')}"
    pages = (
        ("/", "home"),
        ("/w/classroom-demo/members", "members"),
        ("/w/classroom-demo/groups", "groups"),
        (person, "person"),
    )
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
    # The new workspace has nobody yet: its member page invites the first company admin.
    b.go("/w/academy-two/members")
    assert b.css("#member-count").text == "0 members"
    assert b.css("#empty-text").text == "Nobody is a member of this workspace yet."
    first = b.css("#invite-first")
    assert first.text == "Invite the first Company Admin"
    check(b, "members-empty-workspace")
    first.click()
    b.wait(lambda d: b.css("#invite-dialog").is_displayed())
    from selenium.webdriver.support.ui import Select

    assert Select(b.css("#invite-role")).first_selected_option.get_attribute("value") == "company_admin"


def test_simulations_owner_filters_changes_a_role_and_bulk_removes(browser: Browser) -> None:
    from selenium.webdriver.support.ui import Select

    b = browser
    sign_in(b, "owner@simulations.example")
    b.go("/w/simulations-demo/members")
    assert b.css("#member-count").text.endswith("members")
    assert not b.css("#bulk-bar").is_displayed()
    # Every name with initials; the owner may open every person's page.
    row = b.row("reviewer@simulations.example")
    assert row.find_element("css selector", ".avatar").text
    assert (
        row.find_element("css selector", "a.person-link")
        .get_attribute("href")
        .endswith("/w/simulations-demo/people/" + row.get_attribute("data-user-id"))
    )
    # Find a member by role: two clicks (open the filter, pick the role).
    Select(b.css("#filter-role")).select_by_value("reviewer")
    b.wait(lambda d: b.member_emails() == ["reviewer@simulations.example"])
    assert "role=reviewer" in b.d.current_url and b.css("#member-count").text == "1 member match"
    check(b, "members-sim-filtered")
    # Role change in one gesture: Reviewer -> Trainer states gains and losses from the matrix.
    b.row("reviewer@simulations.example").find_element("css selector", "details.role-menu summary").click()
    b.row("reviewer@simulations.example").find_element("css selector", 'button[data-role="trainer"]').click()
    b.wait(lambda d: dialog_open(b))
    text = b.css("#confirm-text").text
    assert "goes from Reviewer to Trainer" in text
    assert "They gain" in text and "Create & edit courses" in text
    assert "They lose 2 permissions: Review scores, Override grades." in text
    check(b, "members-sim-role-change")
    b.css("#confirm-ok").click()
    b.wait_message("reviewer@simulations.example is now Trainer")
    b.wait(lambda d: b.member_emails() == [])  # the filter still asks for reviewers
    assert "No member matches" in b.css("#empty-text").text
    check(b, "members-sim-empty-filter")
    b.css("#clear-filters").click()
    b.wait(lambda d: len(b.member_emails()) > 1)
    # Sorting by role, by rank: ascending, then descending.
    ranks = {"Learner": 1, "Reviewer": 2, "Trainer": 2, "Workspace Owner": 3, "Admin": 4}

    def shown() -> list[int]:
        cells = b.all("#members tbody tr td.role summary, #members tbody tr td.role .badge")
        return [ranks[e.text] for e in cells]

    b.css("#sort-role").click()
    b.wait(lambda d: "sort=role" in d.current_url and len(shown()) > 1 and shown() == sorted(shown()))
    assert b.css("#sort-role").find_element("xpath", "..").get_attribute("aria-sort") == "ascending"
    b.css("#sort-role").click()
    b.wait(lambda d: "sort=-role" in d.current_url and shown() == sorted(shown(), reverse=True))
    assert b.css("#sort-role").find_element("xpath", "..").get_attribute("aria-sort") == "descending"
    # The person page shows the change in the audit trail and what they may now do.
    b.row("reviewer@simulations.example").find_element("css selector", "a.person-link").click()
    b.wait_page("person")
    assert b.css("#person-role .badge").text == "Trainer"
    assert "changed the role of" in b.css("#person-audit").text and "Reviewer → Trainer" in b.css("#person-audit").text
    assert b.all('#person-actions li[data-action="create_and_edit_courses"]')
    check(b, "person-sim-owner")
    person_url = b.d.current_url
    # The audit trail links the people in it to their pages.
    b.go("/w/simulations-demo/audit")
    b.wait(lambda d: b.all("#audit tbody a.person-link"))
    links = {a.text: a.get_attribute("href") for a in b.all("#audit tbody a.person-link")}
    assert links["reviewer@simulations.example"] == person_url
    check(b, "audit-sim-owner-links")
    # Bulk removal: the bar appears with the selection and names the count in words.
    b.go("/w/simulations-demo/members")
    for who in ("reviewer@simulations.example", "learner@simulations.example"):
        b.row(who).find_element("css selector", "input.pick").click()
    b.wait(lambda d: b.css("#bulk-bar").is_displayed())
    assert b.css("#bulk-count").text == "2 members selected"
    check(b, "members-sim-bulk-bar")
    b.css("#bulk-remove").click()
    b.wait(lambda d: dialog_open(b))
    assert b.css("#confirm-title").text == "Remove 2 members?"
    b.css("#confirm-ok").click()
    b.wait_message("Removed 2 members.")
    emails = b.member_emails()
    assert "reviewer@simulations.example" not in emails and "learner@simulations.example" not in emails


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
