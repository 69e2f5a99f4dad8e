"""Web pages: each view renders a template (the markup); its Alpine.js component in ``static/app.js``
loads data and sends changes through the JSON API (``/api/...``) with the session cookie and the
``X-CSRFToken`` header (docs/pages.md).

The pages decide nothing themselves. Which controls a shell shows comes from Casbin
(``access.allowed`` for the signed-in user, the same checks the API makes); the API checks every
request again, and the page shows its problem detail when it refuses.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf.csrf import generate_csrf
from sqlalchemy import select
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response as BaseResponse

from app.authz.packs import FeatureDef, Pack
from app.errors import AppError, ForbiddenError, NotFoundError, problem
from app.extensions import authz, db
from app.membership import access, groups, people, platform_roles, workspaces
from app.membership import members as members_service
from app.models import Membership, User, Workspace

from . import words

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/static/web")

# Workspace operations whose answer decides which controls a shell shows (the API re-checks each).
MEMBER_OPS = ("view_members", "invite", "change_role", "remove", "transfer_ownership", "view_audit", "delete_workspace")


# Paths whose answers are always problem+json, even to a browser.
_API_PREFIXES = ("/api/", "/v1/", "/access/", "/.well-known/", "/openapi.json", "/metrics", "/healthz", "/readyz")


@bp.errorhandler(AppError)
def _error_page(exc: AppError) -> tuple[str, int]:
    """Problems on a page render as HTML in words, with no control of the refused page (the API
    keeps answering problem+json). A refusal says why in the sentence of its reason code."""
    title = words.PAGE_TITLES.get(exc.status, "Something went wrong")
    reason = exc.extra.get("reason")
    if exc.status == 403:
        detail = words.sentence(str(reason)) if reason else exc.detail
    elif exc.status == 404:
        detail = "The address may be mistyped, or what it named is gone."
    else:
        detail = exc.detail
    page = _page("error.html", "error", _signed_in(), status=exc.status, title=title, detail=detail)
    return page, exc.status


@bp.app_errorhandler(NotFound)
def _not_found(exc: NotFound) -> tuple[str, int] | Response:
    """An unknown address: the one 404 page for a browser, problem+json for everyone else."""
    html = request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"
    if not html or request.path.startswith(_API_PREFIXES):
        return problem(404, "Not Found", exc.description or "Not Found", "not-found")
    return _error_page(NotFoundError())


def my_workspaces(user: User | None) -> list[Workspace]:
    """The workspaces in which user's membership is accepted, by name (the header's switcher)."""
    if user is None:
        return []
    query = (
        select(Workspace)
        .join(Membership, Membership.workspace_id == Workspace.id)
        .where(Membership.user_id == user.id, Membership.status == "accepted")
        .order_by(Workspace.name)
    )
    return list(db.session.scalars(query))


@bp.app_context_processor
def _page_helpers() -> dict[str, Any]:
    return {"reason_words": words.for_script, "workspace_switcher": my_workspaces}


def safe_next(raw: str | None) -> str:
    """A same-origin path to return to after sign-in; anything else becomes ``/``.

    Browsers drop TAB/CR/LF from URLs and read ``\\`` as ``/``, so ``/\t/evil.example`` or
    ``/\\evil.example`` would leave the origin: any control or whitespace character, any
    backslash, a leading ``//``, a scheme or a host is refused.
    """
    if not raw or len(raw) > 500 or not raw.startswith("/") or raw.startswith("//") or "\\" in raw:
        return "/"
    if any(ord(c) < 0x21 or 0x7F <= ord(c) <= 0x9F or c.isspace() for c in raw):
        return "/"
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or parts.path.startswith("//"):
        return "/"
    return raw


def _signed_in() -> User | None:
    if not current_user.is_authenticated:
        return None
    user: User = current_user._get_current_object()
    return user


def _to_login() -> BaseResponse:
    path = request.full_path.rstrip("?") if request.query_string else request.path
    return redirect(url_for("web.login") + "?" + urlencode({"next": path}))


def _page(template: str, page: str, user: User | None, **ctx: Any) -> str:
    return render_template(template, page=page, user=user, csrf=generate_csrf(), **ctx)


def unit_kind(ws: Workspace) -> str | None:
    """``group`` or ``team`` if the workspace's pack has them, else None."""
    pack = access.pack_of(ws)
    for kind in groups.KINDS:
        if access.has_operation(pack, f"manage_{kind}s"):
            return kind
    return None


def capabilities(user: User, ws: Workspace) -> dict[str, bool]:
    """Casbin's answers for the workspace-wide operations a shell offers controls for (asked
    explicitly for anyone at all: each request re-checks its real target)."""
    anyone = access.member_facts(None)
    caps = {op: access.allowed(user, ws, op, anyone) for op in MEMBER_OPS}
    kind = unit_kind(ws)
    caps["units"] = kind is not None
    caps["create_unit"] = kind is not None and access.allowed(user, ws, groups.ops(kind, "create"))
    return caps


def _workspace_page(slug: str, template: str, page: str, **ctx: Any) -> str | BaseResponse:
    user = _signed_in()
    if user is None:
        return _to_login()
    ws = workspaces.get_by_slug(db.session(), slug)
    access.require(user, ws, "view_workspace")
    kind = unit_kind(ws)
    return _page(template, page, user, ws=ws, caps=capabilities(user, ws), kind=kind, **ctx)


# -- pages ---------------------------------------------------------------------------------------
@bp.get("/login")
def login() -> str | BaseResponse:
    """Sign-in form (posts to /api/auth/signin)."""
    nxt = safe_next(request.args.get("next"))
    if _signed_in() is not None:
        return redirect(nxt)
    return _page("login.html", "login", None, next=nxt)


@bp.get("/signup")
def signup() -> str:
    """Sign-up form for an invitation link (posts to /api/auth/signup)."""
    return _page("signup.html", "signup", _signed_in(), token=request.args.get("token", "")[:200])


@bp.get("/verify-email")
def verify_email() -> str:
    """Confirm an email change: the link mailed to the new address (posts to /api/auth/verify-email)."""
    return _page("verify_email.html", "verify-email", _signed_in(), token=request.args.get("token", "")[:200])


@bp.get("/")
def home() -> str | BaseResponse:
    """The signed-in user's workspaces; someone with exactly one (and no platform console) lands in
    it, unless they asked for the list (``?all=1``, the switcher's "All workspaces")."""
    user = _signed_in()
    if user is None:
        return _to_login()
    if not request.args.get("all"):
        mine = my_workspaces(user)
        if len(mine) == 1 and not platform_roles.console(db.session(), user):
            return redirect(url_for("web.workspace", slug=mine[0].slug))
    return _page("home.html", "home", user)


@bp.get("/me")
def me() -> str | BaseResponse:
    """Own profile form."""
    user = _signed_in()
    if user is None:
        return _to_login()
    return _page("me.html", "me", user)


def _landing(slug: str) -> BaseResponse:
    """The first page of a workspace the signed-in user may use (Casbin decides), never a refusal
    for a member: members for those who manage them, groups/teams, else the overview."""
    user = _signed_in()
    if user is None:
        return _to_login()
    ws = workspaces.get_by_slug(db.session(), slug)
    access.require(user, ws, "view_workspace")
    if access.allowed(user, ws, "view_members", access.member_facts(None)):
        return redirect(url_for("web.members", slug=slug))
    kind = unit_kind(ws)
    if kind is not None and (groups.may_view(user, ws, kind) or groups.visible(db.session(), user, ws, kind)):
        return redirect(url_for("web.units", slug=slug, kinds=f"{kind}s"))
    return redirect(url_for("web.overview", slug=slug))


@bp.get("/w/<slug>")
def workspace(slug: str) -> BaseResponse:
    """A workspace opens on the first page its visitor may use."""
    return _landing(slug)


@bp.get("/w/<slug>/overview")
def overview(slug: str) -> str | BaseResponse:
    """Every member's page: their role, their platform roles, and what Casbin lets them do here."""
    user = _signed_in()
    if user is None:
        return _to_login()
    ws = workspaces.get_by_slug(db.session(), slug)
    access.require(user, ws, "view_workspace")
    pack = access.pack_of(ws)
    mine = members_service.my_role(user, ws)
    role = pack.role(mine["role"]) if mine["role"] else None
    # Buttons ask explicitly "may they do this to anyone at all?"; every request re-checks its target.
    allowed = authz.engine.permissions(user.key, ws.key, any_target=True)
    actions = [a for a in pack.actions if allowed.get(a.id) is not None and allowed[a.id].allowed]
    platform = [pack.role(r) for r in mine["platform_roles"]]
    return _page(
        "overview.html",
        "overview",
        user,
        ws=ws,
        caps=capabilities(user, ws),
        kind=unit_kind(ws),
        pack=pack,
        role=role,
        platform_roles=[r for r in platform if r is not None],
        actions=actions,
    )


@bp.get("/w/<slug>/members")
def members(slug: str) -> str | BaseResponse:
    """Members: search, pagination, roles, invitations, removal (others go to their landing page)."""
    user = _signed_in()
    if user is not None:
        ws = workspaces.get_by_slug(db.session(), slug)
        access.require(user, ws, "view_workspace")
        if not access.allowed(user, ws, "view_members", access.member_facts(None)):
            return _landing(slug)
    return _workspace_page(slug, "members.html", "members")


@bp.get("/w/<slug>/people/<int:user_id>")
def person(slug: str, user_id: int) -> str | BaseResponse:
    """A member's page, for whoever Casbin lets see them (the 403 page otherwise, 404 for non-members);
    the page's component loads the same data from /api/workspaces/<slug>/people/<id>."""
    user = _signed_in()
    if user is None:
        return _to_login()
    ws = workspaces.get_by_slug(db.session(), slug)
    data = people.person(db.session(), user, ws, user_id)  # raises ForbiddenError / NotFoundError
    return _page(
        "person.html",
        "person",
        user,
        ws=ws,
        caps=capabilities(user, ws),
        kind=unit_kind(ws),
        person_id=user_id,
        person_name=data["display_name"] or data["email"],
    )


@bp.get("/w/<slug>/<any(groups, teams):kinds>")
def units(slug: str, kinds: str) -> str | BaseResponse:
    """Groups (classroom, simulations) or teams (skills)."""
    user = _signed_in()
    if user is None:
        return _to_login()
    ws = workspaces.get_by_slug(db.session(), slug)
    kind = unit_kind(ws)
    if kind is None:
        raise NotFoundError("This workspace has no groups or teams.")
    if kinds != f"{kind}s":
        return redirect(url_for("web.units", slug=slug, kinds=f"{kind}s"))
    return _workspace_page(slug, "units.html", "units")


@bp.get("/w/<slug>/audit")
def audit(slug: str) -> str | BaseResponse:
    """The workspace's audit trail; whoever may not read it gets the 403 page, not its controls."""
    user = _signed_in()
    if user is not None:
        access.require(user, workspaces.get_by_slug(db.session(), slug), "view_audit", access.member_facts(None))
    return _workspace_page(slug, "audit.html", "audit")


def feature_areas(pack: Pack) -> list[tuple[str, list[FeatureDef]]]:
    """The pack's features grouped by the seed's sections (the section of the actions each feature
    switches, from the pack YAML), in the pack's order; features without one go under "Other"."""
    areas: dict[str, list[FeatureDef]] = {}
    for f in pack.features:
        sections = [a.section for a in (pack.action(i) for i in f.actions) if a is not None and a.section]
        areas.setdefault(sections[0] if sections else "Other", []).append(f)
    return list(areas.items())


@bp.get("/platform/<pack>")
def platform(pack: str) -> str | BaseResponse:
    """The platform console of one pack for its platform-role holders: the pack's workspaces (and
    their settings), creating one, feature switches by area and platform roles (each control as
    Casbin allows it). An unknown pack is the 404 page; a pack without a platform role of the
    visitor's the 403 page."""
    user = _signed_in()
    if user is None:
        return _to_login()
    pack_def = access.pack_by_id(pack)
    entry = next((p for p in platform_roles.console(db.session(), user) if p["pack"] == pack), None)
    if entry is None:
        raise ForbiddenError("You hold no platform role of this pack.")
    rows, switches = [], []
    areas = feature_areas(pack_def)
    for w in entry["workspaces"]:
        ws = workspaces.get_by_slug(db.session(), w["slug"])
        rows.append({"slug": ws.slug, "name": ws.name, "edit": access.allowed(user, ws, "edit_settings")})
        if access.allowed(user, ws, "toggle_features"):
            off = authz.engine.features_off(ws.key)
            switches.append(
                {
                    "slug": ws.slug,
                    "name": ws.name,
                    "areas": [(area, [(f, f.id not in off) for f in fs]) for area, fs in areas],
                }
            )
    return _page(
        "platform.html", "platform", user, entry=entry, pack_def=pack_def, rows=rows, switches=switches
    )
