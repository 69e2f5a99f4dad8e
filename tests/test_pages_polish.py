"""Pages in words (issue 26): one 403 page without the refused page's controls, one 404 page,
the platform console's feature areas and settings, the one-save feature switches, landing in
the only workspace, sessions in words. Through the app's HTTP interface on the demo data."""

from __future__ import annotations

from flask import Flask
from markupsafe import escape
from sqlalchemy import select

from app.authz.types import Reason
from app.extensions import authz, db
from app.models import AuditEvent
from app.web import words
from tests.factories import web_client

HTML = {"Accept": "text/html,application/xhtml+xml"}
JSON = {"Accept": "application/json"}


def test_teacher_gets_the_403_page_for_the_audit_trail(demo: Flask) -> None:
    wc = web_client(demo, "teacher@classroom.example")
    resp = wc.get("/w/classroom-demo/audit", headers=HTML)
    page = resp.get_data(as_text=True)
    assert resp.status_code == 403
    assert 'id="error-page"' in page and words.PAGE_TITLES[403] in page
    # none of the audit page's controls, no HTTP jargon
    for control in ("audit-filters", "Export CSV", "audit-csv", 'id="audit"'):
        assert control not in page
    assert "Forbidden" not in page
    assert words.REASONS[Reason.NOT_PERMITTED] in page


def test_a_workspace_of_someone_else_is_the_same_403_page(demo: Flask) -> None:
    wc = web_client(demo, "teacher@classroom.example")
    resp = wc.get("/w/skills-demo/overview", headers=HTML)
    assert resp.status_code == 403
    assert 'id="error-page"' in resp.get_data(as_text=True)
    assert words.REASONS[Reason.NO_ROLE] in resp.get_data(as_text=True)


def test_platform_console_without_a_platform_role_is_403_unknown_pack_404(demo: Flask) -> None:
    wc = web_client(demo, "owner@classroom.example")
    refused = wc.get("/platform/classroom", headers=HTML)
    assert refused.status_code == 403
    assert 'id="error-page"' in refused.get_data(as_text=True)
    assert "platform-console" not in refused.get_data(as_text=True)
    unknown = wc.get("/platform/no-such-pack", headers=HTML)
    assert unknown.status_code == 404
    assert words.PAGE_TITLES[404] in unknown.get_data(as_text=True)


def test_unknown_pages_get_one_404_page_and_the_api_keeps_problems(demo: Flask) -> None:
    wc = web_client(demo, "teacher@classroom.example")
    page = wc.get("/no/such/page", headers=HTML)
    assert page.status_code == 404
    assert page.mimetype == "text/html"
    assert 'id="error-page"' in page.get_data(as_text=True)
    assert "Not Found" not in page.get_data(as_text=True)
    for url, headers in (("/api/no-such-thing", HTML), ("/no/such/page", JSON)):
        resp = wc.get(url, headers=headers)
        assert resp.status_code == 404
        assert resp.mimetype == "application/problem+json"


def test_one_workspace_lands_in_it_and_the_list_stays_reachable(demo: Flask) -> None:
    wc = web_client(demo, "teacher@classroom.example")
    resp = wc.get("/", headers=HTML)
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/w/classroom-demo")
    listing = wc.get("/?all=1", headers=HTML)
    assert listing.status_code == 200 and 'id="workspaces"' in listing.get_data(as_text=True)
    # two workspaces: the list
    multi = web_client(demo, "multi@example.com").get("/", headers=HTML)
    assert multi.status_code == 200
    switcher = multi.get_data(as_text=True)
    assert 'id="workspace-switcher"' in switcher
    assert "/w/classroom-demo" in switcher and "/w/simulations-demo" in switcher


def test_skills_features_are_grouped_by_the_seed_sections(demo: Flask) -> None:
    wc = web_client(demo, "account_manager@platform.example")
    page = wc.get("/platform/skills", headers=HTML).get_data(as_text=True)
    pack = authz.engine.packset.packs["skills"]
    sections = {a.section for a in pack.actions if a.feature}
    assert len(pack.features) == 74
    for section in sections:
        assert f'data-area="{escape(section)}"' in page
    assert 'data-area="Other"' not in page  # every feature has its seed section
    assert page.count('class="feature"') == 74 * page.count('x-data="switches"')
    assert "save-switches" in page and "feature-search" in page


def test_feature_switches_are_saved_together_or_not_at_all(demo: Flask) -> None:
    wc = web_client(demo, "account_manager@platform.example")
    url = "/api/workspaces/skills-demo/features"
    bad = wc.patch(url, json={"switches": {"leaderboard": False, "no_such_feature": False}})
    assert bad.status_code == 422
    assert "leaderboard" not in authz.engine.features_off("ws:skills-demo")
    ok = wc.patch(url, json={"switches": {"leaderboard": False, "manager_ratings": False, "event_approvals": True}})
    assert ok.status_code == 200, ok.get_json()
    assert ok.get_json()["changed"] == {"leaderboard": False, "manager_ratings": False}
    assert {"leaderboard", "manager_ratings"} <= authz.engine.features_off("ws:skills-demo")
    rows = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "workspace.feature")).all()
    assert {r.target for r in rows} == {"feature:leaderboard", "feature:manager_ratings"}
    assert len({r.revision for r in rows}) == 1  # one revision
    again = wc.patch(url, json={"switches": {"leaderboard": False}})
    assert again.get_json()["changed"] == {}
    refused = web_client(demo, "owner@skills.example").patch(url, json={"switches": {"leaderboard": True}})
    assert refused.status_code == 403
    assert "leaderboard" in authz.engine.features_off("ws:skills-demo")


def test_sessions_name_the_browser_in_words(demo: Flask) -> None:
    wc = web_client(demo)
    ua = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
    resp = wc.post(
        "/api/auth/signin",
        json={"email": "learner@classroom.example", "password": "demo-password-1"},
        headers={"User-Agent": ua},
    )
    assert resp.status_code == 200
    items = wc.get("/api/auth/sessions").get_json()["items"]
    assert items[0]["browser"] == "Chrome on Linux"
    assert items[0]["user_agent"] == ua
