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

from flask import Blueprint, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf.csrf import generate_csrf
from werkzeug.wrappers import Response as BaseResponse

from app.errors import AppError, NotFoundError
from app.extensions import authz, db
from app.membership import access, groups, people, platform_roles, workspaces
from app.membership import members as members_service
from app.models import User, Workspace

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/static/web")

# Workspace operations whose answer decides which controls a shell shows (the API re-checks each).
MEMBER_OPS = ("view_members", "invite", "change_role", "remove", "transfer_ownership", "view_audit", "delete_workspace")


@bp.errorhandler(AppError)
def _error_page(exc: AppError) -> tuple[str, int]:
    """Problems on a page render as HTML (the API keeps answering problem+json)."""
    page = _page("error.html", "error", _signed_in(), status=exc.status, title=exc.title, detail=exc.detail)
    return page, exc.status


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
    """The signed-in user's workspaces."""
    user = _signed_in()
    if user is None:
        return _to_login()
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
    """The workspace's audit trail."""
    return _workspace_page(slug, "audit.html", "audit")


@bp.get("/platform/<pack>")
def platform(pack: str) -> str | BaseResponse:
    """The platform console of one pack for its platform-role holders: the pack's workspaces,
    creating one, feature switches and platform roles (each control as Casbin allows it)."""
    user = _signed_in()
    if user is None:
        return _to_login()
    entry = next((p for p in platform_roles.console(db.session(), user) if p["pack"] == pack), None)
    if entry is None:
        raise NotFoundError("You hold no platform role of this pack.")
    pack_def = access.pack_by_id(pack)
    switches = []
    for w in entry["workspaces"]:
        ws = workspaces.get_by_slug(db.session(), w["slug"])
        if access.allowed(user, ws, "toggle_features"):
            off = authz.engine.features_off(ws.key)
            switches.append(
                {"slug": ws.slug, "name": ws.name, "features": [(f, f.id not in off) for f in pack_def.features]}
            )
    return _page("platform.html", "platform", user, entry=entry, pack_def=pack_def, switches=switches)
