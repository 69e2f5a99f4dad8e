"""The web UI in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by
selenium against the app served over HTTP on 127.0.0.1, on a SQLite database with the demo data.

Without chromium/chromedriver/selenium these tests skip with the reason; under CI=true they fail.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.conftest import IN_CI, make_app
from tests.factories import fast_password_hashing, seed_demo

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
PASSWORD = "demo-password-1"
WAIT = 20.0  # a loaded 2-core CI machine took over 10 s for a sign-in (scrypt) plus the home page
# The machine's network is closed: without the background-networking switches Chromium stalls.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
]


def _missing() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            return f"{path} not found (apt-get install -y chromium chromium-driver; missing: {package})"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    return None


def _require_browser() -> None:
    reason = _missing()
    if reason:
        if IN_CI:
            pytest.fail("CI=true requires the browser tests to run: " + reason)
        pytest.skip(reason)


def clear_search(b: Browser) -> None:
    """Empty the members search field the way a person does (the table follows as they type)."""
    from selenium.webdriver.common.keys import Keys

    field = b.css("#search")
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(Keys.BACKSPACE)


# -- fixtures --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def live_app(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, str]]:
    """The app on a seeded SQLite copy, served by werkzeug on 127.0.0.1:<free port> in a thread."""
    _require_browser()
    from werkzeug.serving import make_server

    path = tmp_path_factory.mktemp("browser") / "app.db"
    shutil.copy(sqlite_template, path)
    app = make_app(f"sqlite:///{path}", PUBLIC_URL="http://127.0.0.1")
    fast_password_hashing()
    with app.app_context():
        seed_demo()
        from app.extensions import db

        db.session.remove()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield app, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        with app.app_context():
            from app.extensions import db

            db.engine.dispose()


@pytest.fixture(scope="module")
def driver(live_app: tuple[Flask, str]) -> Iterator[Any]:
    """One headless Chromium for the module, with a fresh profile directory."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in [*CHROMIUM_ARGS, f"--user-data-dir={profile}"]:
        options.add_argument(arg)
    drv = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    drv.set_page_load_timeout(20)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(driver: Any, live_app: tuple[Flask, str]) -> Iterator[Browser]:
    """The shared browser, signed out at the start of each test."""
    b = Browser(driver, live_app[1])
    driver.delete_all_cookies()
    yield b
    driver.delete_all_cookies()


class Browser:
    """Small helpers over the selenium driver: go to a path, wait for things, read the message area."""

    def __init__(self, driver: Any, base: str) -> None:
        self.d = driver
        self.base = base

    def go(self, path: str) -> None:
        self.d.get(self.base + path)
        self.wait(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))

    def wait_page(self, page: str) -> None:
        """Wait until the page named page (body data-page) has loaded its data."""
        script = "return document.body.dataset.page === arguments[0] && document.body.dataset.ready === '1'"
        self.wait(lambda d: d.execute_script(script, page))

    def wait(self, cond: Callable[[Any], Any], timeout: float = WAIT) -> Any:
        """Until cond holds; an element gone stale meanwhile (the page reloaded under the check) is
        asked again, not an error."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.d, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(cond)

    def css(self, selector: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.d.find_element(By.CSS_SELECTOR, selector)

    def all(self, selector: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.d.find_elements(By.CSS_SELECTOR, selector))

    def message(self) -> str:
        """The visible text of the message area, once it shows something."""
        return str(self.wait(lambda d: self.css("#messages").is_displayed() and self.css("#messages").text))

    def problem_status(self) -> str:
        """The HTTP status of the problem shown in the message area (waits for one)."""
        script = "const p = document.querySelector('#messages .problem'); return p ? p.dataset.status : null"
        return str(self.wait(lambda d: d.execute_script(script)))

    def wait_message(self, part: str) -> str:
        """Wait until the message area contains part."""
        return str(self.wait(lambda d: part in self.css("#messages").text and self.css("#messages").text))

    def sign_in(self, email: str, password: str = PASSWORD, next_path: str = "") -> None:
        """Fill and submit the sign-in form."""
        self.go("/login" + (f"?next={next_path}" if next_path else ""))
        self.css("#email").send_keys(email)
        self.css("#password").send_keys(password)
        self.css("#login-form button[type=submit]").click()

    def wait_signed_in(self) -> None:
        """Wait until sign-in has left /login and the page it led to has loaded (one workspace:
        that workspace; several: the list)."""
        script = "return document.body.dataset.ready === '1' && document.body.dataset.page !== 'login'"
        self.wait(lambda d: "/login" not in d.current_url and d.execute_script(script))

    def member_emails(self) -> list[str]:
        """Emails in the members table."""
        script = "return [...document.querySelectorAll('#members tbody tr[data-email]')].map(r => r.dataset.email)"
        return list(self.d.execute_script(script))

    def row(self, email: str) -> Any:
        """The members-table row of email."""
        return self.css(f'#members tbody tr[data-email="{email}"]')

    def accept_confirm(self) -> None:
        """Confirm in the page's modal dialog (the pages never use the browser's confirm())."""
        self.wait(lambda d: d.execute_script("return document.querySelector('#confirm-dialog').open"))
        self.css("#confirm-ok").click()
        self.wait(lambda d: not d.execute_script("return document.querySelector('#confirm-dialog').open"))

    def invite(self, emails: str, role: str = "") -> None:
        """Open the invite dialog, send emails (with role), close it once the results show."""
        from selenium.webdriver.support.ui import Select

        self.wait(lambda d: self.css("#open-invite").is_displayed())
        self.css("#open-invite").click()
        self.css("#invite-emails").send_keys(emails)
        if role:
            Select(self.css("#invite-role")).select_by_value(role)
        self.css("#invite-form button[type=submit]").click()
        self.wait(lambda d: self.all("#invite-results li, #invite-results .msg"))
        self.css("#invite-close").click()


# -- tests ---------------------------------------------------------------------------------------------
def test_missing_browser_skips_or_fails_under_ci(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import tests.test_browser as me

    monkeypatch.setattr(me, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setattr(me, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match="no-chromium not found"):
        me._require_browser()
    monkeypatch.setattr(me, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI=true requires"):
        me._require_browser()


def test_pages_need_sign_in(browser: Browser) -> None:
    browser.d.get(browser.base + "/w/classroom-demo/members")
    browser.wait(lambda d: "/login" in d.current_url)
    assert "next=%2Fw%2Fclassroom-demo%2Fmembers" in browser.d.current_url
    assert browser.css("#login-form").is_displayed()


def test_wrong_password_shows_the_problem(browser: Browser) -> None:
    browser.sign_in("owner@classroom.example", "not-the-password")
    text = browser.message()
    assert "Wrong email or password." in text, text
    assert "Authentication required" not in text
    assert browser.problem_status() == "401"
    assert "/login" in browser.d.current_url


def test_owner_manages_members(browser: Browser, live_app: tuple[Flask, str], tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import Select

    # sign in through the form, land on the requested page
    browser.sign_in("owner@classroom.example", next_path="/w/classroom-demo/members")
    browser.wait_page("members")
    assert "/w/classroom-demo/members?" in browser.d.current_url
    emails = browser.member_emails()
    for who in ("owner@classroom.example", "teacher@classroom.example", "learner2@classroom.example"):
        assert who in emails

    # the role menu offers exactly the roles the owner may grant (classroom: all four), the current one marked
    menu = browser.row("learner2@classroom.example").find_element("css selector", "details.role-menu")
    offered = [o.get_attribute("data-role") for o in menu.find_elements("css selector", "button.role-option")]
    assert offered == ["learner", "teacher", "admin", "owner"]
    current = menu.find_element("css selector", 'button.role-option[aria-current="true"]')
    assert current.get_attribute("data-role") == "learner"
    # nobody changes their own role: no menu on the owner's own row
    assert not browser.row("owner@classroom.example").find_elements("css selector", "details.role-menu")
    # the invite dialog offers the same roles
    browser.css("#open-invite").click()
    invite_roles = [o.get_attribute("value") for o in Select(browser.css("#invite-role")).options]
    assert invite_roles == ["learner", "teacher", "admin", "owner"]
    browser.css("#invite-close").click()

    # invite two emails: one existing user (joins pending), one unknown (sign-up link)
    browser.invite("learner@academy.example,\nnew.person@example.org", "teacher")
    text = browser.wait_message("Invited")  # one answer for both (issue 9: no account existence)
    assert "learner@academy.example" in text and "new.person@example.org" in text
    browser.wait(lambda d: "learner@academy.example" in browser.member_emails())
    assert "Pending" in browser.row("learner@academy.example").text

    # inviting the same address again: the dialog says so for that address
    browser.invite("learner@academy.example")
    assert "Nobody was invited" in browser.wait_message("Nobody")

    # change a role in one gesture: open the menu, choose, confirm
    browser.row("learner2@classroom.example").find_element("css selector", "details.role-menu summary").click()
    browser.row("learner2@classroom.example").find_element("css selector", 'button[data-role="teacher"]').click()
    browser.accept_confirm()
    browser.wait_message("learner2@classroom.example is now")
    browser.go("/w/classroom-demo/members")
    row = browser.row("learner2@classroom.example")
    current = row.find_element("css selector", 'button.role-option[aria-current="true"]')
    assert current.get_attribute("data-role") == "teacher"

    # pagination (page and size are kept in the address)
    browser.go("/w/classroom-demo/members?per_page=3")
    first = browser.member_emails()
    assert len(first) == 3
    total = len(emails) + 1  # + learner@academy.example (pending)
    assert browser.css("#page-info").text == f"1–3 of {total}"
    assert not browser.css("#prev-page").is_enabled()
    browser.css("#next-page").click()
    browser.wait(lambda d: "page=2" in d.current_url and browser.member_emails() and browser.member_emails() != first)
    assert browser.css("#page-info").text == f"4–6 of {total}"
    assert browser.css("#prev-page").is_enabled()
    browser.go("/w/classroom-demo/members")

    # search narrows the table as one types (no button)
    browser.css("#search").send_keys("skills")
    browser.wait(lambda d: browser.member_emails() == [])
    clear_search(browser)
    browser.css("#search").send_keys("classroom.example")
    browser.wait(lambda d: browser.member_emails() and "learner@academy.example" not in browser.member_emails())

    # remove one (with confirm)
    browser.row("learner2@classroom.example").find_element("css selector", "button.remove").click()
    browser.accept_confirm()
    browser.wait_message("Removed learner2@classroom.example")
    browser.wait(lambda d: "learner2@classroom.example" not in browser.member_emails())

    # bulk remove two members via checkboxes: the bar appears with the selection
    clear_search(browser)
    browser.wait(lambda d: "learner@academy.example" in browser.member_emails())
    assert not browser.css("#bulk-bar").is_displayed()
    for who in ("learner@academy.example", "multi@example.com"):
        browser.row(who).find_element("css selector", "input.pick").click()
    assert browser.css("#bulk-remove").text == "Remove 2 members"
    browser.css("#bulk-remove").click()
    browser.accept_confirm()
    browser.wait_message("Removed 2 members")
    emails = browser.member_emails()
    assert "learner@academy.example" not in emails and "multi@example.com" not in emails
    assert not browser.css("#bulk-bar").is_displayed()

    # no Remove on the owner's own row: the server would refuse it (self_change)
    assert not browser.row("owner@classroom.example").find_elements("css selector", "button.remove, input.pick")

    screenshot = Path(tempfile.gettempdir()) / "learnauthz-members.png"
    browser.d.save_screenshot(str(screenshot))

    # the audit trail shows what happened
    browser.css('nav.wsnav a[href$="/audit"]').click()
    browser.wait(lambda d: d.current_url.endswith("/w/classroom-demo/audit"))
    browser.wait(lambda d: browser.all("#audit tbody tr[data-action]"))
    actions = [tr.get_attribute("data-action") for tr in browser.all("#audit tbody tr[data-action]")]
    for action in ("member.invite", "member.invite_signup", "member.change_role", "member.remove"):
        assert action in actions, actions
    assert actions.count("member.remove") >= 3
    assert "owner@classroom.example" in browser.css("#audit tbody").text


def test_owner_manages_groups(browser: Browser) -> None:

    browser.sign_in("owner@classroom.example")
    browser.wait_signed_in()
    browser.go("/w/classroom-demo/groups")
    names = [a.get_attribute("data-name") for a in browser.all("#units article.unit")]
    assert names == ["evening", "morning"]
    browser.css("#unit-form input[name=name]").send_keys("b1-night")
    browser.css("#unit-form input[name=capacity]").send_keys("12")
    browser.css("#unit-form button[type=submit]").click()
    browser.wait_message("Created b1-night")
    card = browser.wait(lambda d: browser.css('#units article[data-name="b1-night"]'))
    card.find_element("css selector", "form.add-learners input[type=search]").send_keys("learner@classroom")
    card.find_element("css selector", "form.add-learners button[type=submit]").click()
    browser.wait(lambda d: browser.all('#units article[data-name="b1-night"] form.add-learners li[data-email]'))
    browser.css('#units article[data-name="b1-night"] li[data-email="learner@classroom.example"] button.add').click()
    browser.wait_message("is now a learner of b1-night")
    card = browser.css('#units article[data-name="b1-night"]')
    assert "learner@classroom.example" in card.find_element("css selector", "ul.learners").text
    card.find_element("css selector", "ul.learners button.remove-person").click()
    browser.accept_confirm()
    browser.wait_message("left b1-night")
    assert "nobody" in browser.css('#units article[data-name="b1-night"] ul.learners').text


def test_teacher_has_no_member_management(browser: Browser) -> None:
    browser.sign_in("teacher@classroom.example")
    # one workspace: sign-in lands in it (the groups he teaches); the list is one click away
    browser.wait_page("units")
    assert browser.d.current_url.endswith("/w/classroom-demo/groups")
    browser.go("/?all=1")
    browser.wait(lambda d: browser.all("#workspaces tbody tr[data-slug]"))
    assert [r.get_attribute("data-slug") for r in browser.all("#workspaces tbody tr[data-slug]")] == ["classroom-demo"]

    browser.go("/w/classroom-demo/members")
    # Casbin refuses view_members to teachers: they land on their groups instead of a 403 (issue 13)
    browser.wait_page("units")
    assert not browser.all("#messages .problem")
    assert not browser.all("#invite-form")
    assert not browser.all("#bulk-remove")
    assert not browser.all("details.role-menu")
    assert not browser.all("button.remove")
    assert not browser.all('nav.wsnav a[href$="/audit"]')

    # the teacher sees the group they teach
    browser.go("/w/classroom-demo/groups")
    assert [a.get_attribute("data-name") for a in browser.all("#units article.unit")] == ["morning"]
    assert not browser.all("#unit-form")

    # a workspace the teacher does not belong to: Casbin refuses the page itself
    browser.d.get(browser.base + "/w/academy-demo/members")
    assert browser.css("#error-page h1").text == "You cannot open this page"

    # the audit trail: the same 403 page, with none of the audit page's controls
    browser.go("/w/classroom-demo/audit")
    assert browser.css("#error-page h1").text == "You cannot open this page"
    assert not browser.all("#audit, #audit-filters, #audit-csv")


def test_profile_and_sign_out(browser: Browser) -> None:
    browser.sign_in("learner@classroom.example")
    browser.wait_signed_in()
    browser.go("/me")
    name = browser.css("#profile-form input[name=display_name]")
    assert name.get_attribute("value") == "learner"
    name.clear()
    name.send_keys("Lea Learner")
    browser.css("#profile-form button[type=submit]").click()
    browser.wait_message("Profile saved")
    assert browser.css("#me-link").text == "Lea Learner"
    # an email change without the current password: the 401 problem is shown
    email = browser.css("#profile-form input[name=email]")
    email.clear()
    email.send_keys("lea@example.org")
    browser.css("#profile-form button[type=submit]").click()
    assert "Check the field marked below." in browser.wait_message("Check the field")
    password = browser.css("#profile-form input[name=current_password]")
    assert password.get_attribute("aria-invalid") == "true"
    note = browser.css("#" + password.get_attribute("aria-describedby").split()[-1])
    assert note.text == "Enter your current password to change email or password."

    browser.css("#signout").click()
    browser.wait(lambda d: "/login" in d.current_url)
    browser.d.get(browser.base + "/")
    browser.wait(lambda d: "/login" in d.current_url)


@pytest.mark.parametrize(
    "next_path",
    [
        "/%09/evil.example/pwned",  # issue 9 (3): Chromium drops the TAB and went to http://evil.example/pwned
        "/%0A/evil.example/pwned",
        "/%5Cevil.example/pwned",  # a backslash: Chromium reads it as "/"
        "//evil.example/pwned",
        "https://evil.example/pwned",
    ],
)
def test_sign_in_never_redirects_off_site(browser: Browser, next_path: str) -> None:
    browser.sign_in("learner@classroom.example", next_path=next_path)
    browser.wait_signed_in()  # "/" and, with one workspace, on into it (issue 26)
    assert browser.d.current_url.startswith(browser.base + "/w/classroom-demo")
    assert "evil.example" not in browser.d.current_url


def test_docs_render_under_the_csp(browser: Browser) -> None:
    """/docs has no inline script or style: under the strict CSP its files still render the spec."""
    browser.d.get(browser.base + "/docs")
    browser.wait(lambda d: len(browser.all("#out details")) > 20)
    assert "learnauthz" in browser.css("#desc").text or browser.css("header h1").text == "learnauthz API"
    color = browser.d.execute_script("return getComputedStyle(document.querySelector('header')).backgroundColor")
    assert color == "rgb(29, 53, 87)"  # docs.css applied
    logs = [e["message"] for e in browser.d.get_log("browser") if "Content Security Policy" in e["message"]]
    assert logs == []


def test_profile_email_change_waits_and_sessions_end(browser: Browser, live_app: tuple[Flask, str]) -> None:
    """The profile asks for an email change (it waits for the link), lists sessions, and signs out
    the other ones; the other browser session is signed out for real."""
    app, base = live_app
    import requests

    other = requests.Session()  # a second session of the same user, outside the browser
    token = other.get(base + "/api/auth/csrf").json()["csrf_token"]
    resp = other.post(
        base + "/api/auth/signin",
        json={"email": "learner2@classroom.example", "password": PASSWORD},
        headers={"X-CSRFToken": token},
    )
    assert resp.status_code == 200
    browser.sign_in("learner2@classroom.example")
    browser.wait_signed_in()
    browser.go("/me")
    browser.wait(lambda d: len(browser.all("#sessions tbody tr")) >= 2)
    assert len(browser.all('#sessions tbody tr[data-current="1"]')) == 1

    email = browser.css("#profile-form input[name=email]")
    email.clear()
    email.send_keys("l2@example.org")
    browser.css("#profile-form input[name=current_password]").send_keys(PASSWORD)
    browser.css("#profile-form button[type=submit]").click()
    assert "follow the link" in browser.wait_message("follow the link")
    assert browser.css("#profile-form input[name=email]").get_attribute("value") == "learner2@classroom.example"
    assert "l2@example.org" in browser.css("#pending-email").text

    browser.css("#signout-others").click()
    browser.wait_message("Signed out")
    browser.wait(lambda d: len(browser.all("#sessions tbody tr")) == 1)
    assert other.get(base + "/api/auth/me").status_code == 401

    # the link mailed to the new address, followed in the browser, makes the change
    mails = [m for m in app.extensions["mail_memory"] if m["to"] == "l2@example.org"]
    link = mails[-1]["body"].split("Confirm it: ", 1)[1].split()[0]
    browser.d.get(link.replace("http://127.0.0.1", base))
    browser.wait(lambda d: d.execute_script("return document.body.dataset.ready === '1'"))
    browser.css("#verify-email-form button[type=submit]").click()
    assert "l2@example.org" in browser.wait_message("Your email address is now")
