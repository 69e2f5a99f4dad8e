"""Web-client identity: CSRF token, sign-in/out, sign-up from an invitation, own profile.

Also the helpers every cookie-authenticated blueprint uses: ``actor()`` (the signed-in user or
401), ``json_body()`` (a JSON object or 400/415), ``protect()`` (CSRF on unsafe methods) and
``after_change()`` (sends the outbox once the change has committed).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState
from flask_login import current_user, login_user, logout_user
from flask_wtf.csrf import CSRFError, generate_csrf

from app.api.params import json_object
from app.errors import CSRFFailedError, UnauthenticatedError
from app.extensions import csrf, db, login_manager
from app.models import Membership, User
from app.services import invitations, notifications, sessions
from app.services.inputs import check_text

log = logging.getLogger("app.api")
bp = Blueprint("auth", __name__, url_prefix="/api/auth")
SAFE = {"GET", "HEAD", "OPTIONS"}


# -- helpers shared by the web-client blueprints ----------------------------------------------
def actor() -> User:
    """The signed-in user; UnauthenticatedError otherwise."""
    if not current_user.is_authenticated:
        raise UnauthenticatedError("Sign in first (POST /api/auth/signin).")
    user: User = current_user._get_current_object()  # type: ignore[attr-defined]
    return user


def json_body() -> dict[str, Any]:
    """The request's JSON object; 415 if not JSON, 400 if malformed, too deeply nested or not an object."""
    return json_object()


def protect() -> None:
    """before_request: CSRF check for unsafe methods (token from GET /api/auth/csrf, header X-CSRFToken)."""
    if request.method in SAFE or not current_app.config.get("WTF_CSRF_ENABLED", True):
        return
    try:
        csrf.protect()
    except CSRFError as exc:
        raise CSRFFailedError(str(exc.description)) from None


def after_change(response: Response) -> Response:
    """after_request: deliver the outbox written by a successful change (it has committed)."""
    if request.method not in SAFE and response.status_code < 400:
        try:
            notifications.dispatch(db.session())
        except Exception:  # noqa: BLE001 - mail must never fail a committed change; rows stay queued
            log.exception("outbox dispatch failed")
            db.session.rollback()
    return response


bp.before_request(protect)
bp.after_request(after_change)


@bp.record_once
def _setup(state: BlueprintSetupState) -> None:
    login_manager.user_loader(lambda sid: sessions.load_session_user(db.session(), sid))
    login_manager.session_protection = "basic"


# -- routes --------------------------------------------------------------------------------------
@bp.get("/csrf")
def csrf_token() -> Response:
    """A CSRF token for this session; send it back as header X-CSRFToken on every change."""
    return jsonify(csrf_token=generate_csrf())


@bp.post("/signin")
def signin() -> Response:
    """Sign in with email + password (throttled); pending memberships become accepted."""
    data = json_body()
    cfg = current_app.config
    user = sessions.sign_in(
        db.session(),
        data.get("email"),
        data.get("password"),
        request.remote_addr or "",
        int(cfg["LOGIN_MAX_FAILURES"]),
        int(cfg["LOGIN_WINDOW_SECONDS"]),
    )
    login_user(user)
    return jsonify(sessions.profile(user))


@bp.post("/signout")
def signout() -> tuple[str, int]:
    """End this session."""
    logout_user()
    return "", 204


@bp.post("/signup")
def signup() -> tuple[Response, int]:
    """Create an account from a sign-up link's token and join its workspace; signs in."""
    data = json_body()
    # invitations.signup hashes the token and stores the names: refuse what text cannot hold first
    for name, kind in (("token", "name"), ("display_name", "name"), ("username", "name"), ("password", "secret")):
        check_text(data.get(name), name, kind)
    user, m = invitations.signup(
        db.session(), data.get("token"), data.get("password"), data.get("display_name", ""), data.get("username")
    )
    login_user(user)
    body = sessions.profile(user)
    body["workspace"] = {"slug": m.workspace.slug, "role": m.role, "status": m.status}
    return jsonify(body), 201


@bp.get("/me")
def me() -> Response:
    """Own profile and memberships."""
    user = actor()
    rows = db.session.scalars(db.select(Membership).where(Membership.user_id == user.id)).unique()
    body = sessions.profile(user)
    body["workspaces"] = [
        {
            "slug": m.workspace.slug,
            "name": m.workspace.name,
            "pack": m.workspace.pack,
            "role": m.role,
            "status": m.status,
        }
        for m in sorted(rows, key=lambda m: m.workspace.slug)
    ]
    return jsonify(body)


@bp.patch("/me")
def update_me() -> Response:
    """Change own display name, username, email or password (the last two need current_password)."""
    user = actor()
    user, bumped = sessions.update_profile(db.session(), user, json_body())
    if bumped:
        login_user(user)  # this session carries the new session_version; every other one ends
    return jsonify(sessions.profile(user))
