"""Issue 26 in a real browser: errors in words at the field, one 403 and one 404 page, the
platform console's switcher and landing, and the bugs of item 9 (title, skip link, keyboard-
reachable matrix, audit times, the playground's role path, sessions in words). Every page and
state visited gets a screenshot (``test-artifacts/polish-*.png``) and axe 0 serious/critical."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from app.authz.types import Reason
from app.web import words
from tests.browser_support import axe, screenshot
from tests.test_browser import Browser, driver, live_app  # noqa: F401 - fixtures


@pytest.fixture
def browser(driver: Any, live_app: Any) -> Iterator[Browser]:  # noqa: F811
    b = Browser(driver, live_app[1])
    driver.set_window_size(1280, 900)
    driver.delete_all_cookies()
    yield b
    driver.delete_all_cookies()


def check(b: Browser, name: str) -> None:
    screenshot(b, f"polish-{name}")
    axe(b)


def sign_in(b: Browser, email: str) -> None:
    b.sign_in(email)
    b.wait_signed_in()


def lib(b: Browser, expr: str) -> Any:
    """Evaluate expr with lib.js imported as m."""
    script = "const done = arguments[0]; import('/static/web/lib.js').then(m => done(" + expr + "))"
    return b.d.execute_async_script(script)


def test_problems_in_words_never_http_titles(browser: Browser) -> None:
    b = browser
    sign_in(b, "owner@classroom.example")
    full = lib(
        b,
        "m.problemWords(new m.ApiError(409, {title: 'Conflict', status: 409,"
        " detail: 'the group is full (capacity 1)', capacity: 1}))",
    )
    assert full == "The group is full (1 place)."
    login = lib(
        b,
        "m.problemWords(new m.ApiError(422, {title: 'Validation failed', status: 422,"
        " detail: 'Validation failed'}))",
    )
    assert login == "Some of what you entered needs fixing."
    for code, sentence in words.for_script().items():
        shown = lib(b, f"m.problemWords(new m.ApiError(403, {{title: 'Forbidden', reason: '{code}'}}))")
        assert shown == sentence
    # the message area: the sentence, no title
    lib(b, "m.showError(new m.ApiError(403, {title: 'Forbidden', status: 403, reason: 'rank_limit'}))")
    text = b.wait_message("only roles below your own")
    assert "Forbidden" not in text and "rank_limit" not in text
    check(b, "rank-refusal")


def test_sign_in_without_a_password_says_so_at_the_field(browser: Browser) -> None:
    b = browser
    b.go("/login")
    b.css("#email").send_keys("owner@classroom.example")
    b.css("#login-form button[type=submit]").click()
    text = b.wait_message("Check the field marked below")
    assert "Validation failed" not in text and "strings" not in text
    assert b.css("#password").get_attribute("aria-invalid") == "true"
    assert b.css("#" + b.css("#password").get_attribute("aria-describedby")).text == "Fill this in."
    assert b.css("#email").get_attribute("aria-invalid") is None
    check(b, "sign-in-field-error")


def test_a_group_name_error_shows_at_the_field(browser: Browser) -> None:
    b = browser
    sign_in(b, "owner@classroom.example")
    b.go("/w/classroom-demo/groups")
    name = b.css("#unit-form input[name=name]")
    name.send_keys("no spaces allowed")
    b.css("#unit-form button[type=submit]").click()
    text = b.wait_message("Check the field marked below")
    assert "Validation failed" not in text and "invalid name" not in text
    name = b.css("#unit-form input[name=name]")
    assert name.get_attribute("aria-invalid") == "true"
    note = b.css("#" + name.get_attribute("aria-describedby"))
    assert note.text == "Use 1-64 letters, digits, '.', '_' or '-'."
    # it sits right after the field's label, inside the form, not at the top of the page
    assert b.d.execute_script("return arguments[0].closest('form').id", note) == "unit-form"
    check(b, "group-name-error")
    # fixing and sending again clears the marks
    name.clear()
    name.send_keys("c1-day")
    b.css("#unit-form button[type=submit]").click()
    b.wait_message("Created c1-day")
    assert not b.all(".field-error") and b.css("#unit-form input[name=name]").get_attribute("aria-invalid") is None


def test_the_403_page_has_no_controls(browser: Browser) -> None:
    b = browser
    sign_in(b, "teacher@classroom.example")
    for path in ("/w/classroom-demo/audit", "/w/skills-demo", "/platform/classroom"):
        b.go(path)
        if path.endswith("/audit"):
            assert words.REASONS[Reason.NOT_PERMITTED] in b.css("#error-page").text
        assert b.css("#error-page").get_attribute("data-status") == "403", path
        assert b.css("#error-page h1").text == words.PAGE_TITLES[403]
        controls = b.all("main form, main button, main input, main select, #audit-csv, nav.wsnav")
        shown = [e for e in controls if e.is_displayed()]
        assert not shown and not b.all("#audit, #audit-filters"), path
        assert "Forbidden" not in b.css("main").text
    check(b, "403")
    for path in ("/no/such/page", "/w/no-such-workspace", "/platform/no-such-pack"):
        b.go(path)
        assert b.css("#error-page").get_attribute("data-status") == "404", path
        assert b.css("#error-page h1").text == words.PAGE_TITLES[404]
    check(b, "404")


def test_landing_switcher_and_skip_link(browser: Browser) -> None:
    b = browser
    from selenium.webdriver.common.keys import Keys

    sign_in(b, "multi@example.com")  # two workspaces: the list
    b.wait_page("home")
    # the skip link is the first stop of the tab order
    b.css("body").send_keys(Keys.TAB)
    assert b.d.execute_script("return document.activeElement.className") == "skip"
    switcher = b.css("#workspace-switcher")
    switcher.find_element("css selector", "summary").click()
    links = [a.text for a in switcher.find_elements("css selector", "li a")]
    assert "All workspaces" in links and len(links) == 3
    check(b, "switcher")
    switcher.find_element("css selector", 'a[href="/w/simulations-demo"]').click()
    b.wait(lambda d: "/w/simulations-demo" in d.current_url)
    b.css("#signout").click()
    b.wait(lambda d: "/login" in d.current_url)
    sign_in(b, "learner@classroom.example")  # one workspace: lands in it
    assert "/w/classroom-demo" in b.d.current_url


def test_item_9_bugs(browser: Browser) -> None:
    b = browser
    sign_in(b, "owner@classroom.example")
    # <title> of classroom's Members page is text only
    b.go("/w/classroom-demo/members")
    assert re.fullmatch(r"Members · [^<>]+ · learnauthz", b.d.title), b.d.title
    # audit: human local time to the minute, no internal revision column
    b.go("/w/classroom-demo/audit")
    b.wait(lambda d: b.all("#audit tbody tr[data-action]"))
    heads = [th.text for th in b.all("#audit thead th")]
    assert "Revision" not in heads
    when = b.css("#audit tbody tr[data-action] td.when").text
    assert not re.search(r"\d{2}:\d{2}:\d{2}|\.\d{3,}|T\d|\+00:00", when), when
    assert re.search(r"\d{4}", when) and re.search(r"\d{1,2}:\d{2}", when), when
    check(b, "audit-times")
    # /me: sessions in words
    b.go("/me")
    b.wait(lambda d: b.all("#sessions tbody tr"))
    browser_cell = b.css('#sessions tbody tr[data-current="1"] td:last-child').text
    assert browser_cell == "Chrome (headless) on Linux", browser_cell
    check(b, "me-sessions")


def test_matrix_region_and_playground_path(browser: Browser) -> None:
    b = browser
    sign_in(b, "policy_viewer@service.example")
    b.go("/policy/packs/classroom")
    region = b.css(".table-wrap")
    assert region.get_attribute("tabindex") == "0" and region.get_attribute("role") == "region"
    assert region.get_attribute("aria-label")
    check(b, "matrix-viewer")
    b.d.delete_all_cookies()
    sign_in(b, "policy_admin@service.example")  # explaining a named person needs view_people
    b.go("/policy/playground?subject=teacher%40classroom.example&workspace=classroom-demo&action=personal_dashboard")
    b.wait(lambda d: b.css("#play-reason").text)
    path = b.css("#play-path").text
    assert path.startswith("teacher@classroom.example →"), path
    assert "user:" not in path
    check(b, "playground-path")


def test_policy_history_ids_are_unique(browser: Browser) -> None:
    b = browser
    sign_in(b, "policy_admin@service.example")
    b.go("/policy/history")
    script = (
        "const ids = [...document.querySelectorAll('[id]')].map(e => e.id);"
        "return ids.filter((id, i) => ids.indexOf(id) !== i)"
    )
    assert b.d.execute_script(script) == []
    rows = b.all("#revisions tbody tr[data-revision] button.small")
    if rows:  # a revision's details and a rollback preview, where one is offered
        rows[0].click()
        previews = [x for x in b.all("#revisions tbody tr button.small") if "rollback" in x.text.lower()]
        if previews:
            previews[0].click()
        assert b.d.execute_script(script) == []
    check(b, "policy-history")
