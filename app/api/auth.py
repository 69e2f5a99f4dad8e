"""Web-client identity: CSRF token, sign-in/out, sign-up from an invitation, own profile,
own sessions, email-change confirmation.

Also the helpers every cookie-authenticated blueprint uses: ``actor()`` (the signed-in user or
401), ``json_body()`` (a JSON object or 400/415), ``protect()`` (CSRF on unsafe methods) and
``after_change()`` (sends the outbox once the change has committed).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request, session
from flask.blueprints import BlueprintSetupState
from flask_login import current_user, login_user, logout_user
from flask_wtf.csrf import CSRFError, generate_csrf

from app import notifications
from app.api import bodies, body_doc
from app.api.params import json_object
from app.api.web_bodies import SignIn, SignUp, VerifyEmail
from app.errors import CSRFFailedError, UnauthenticatedError
from app.extensions import csrf, db, login_manager
from app.identity import email_changes, profile, sessions
from app.inputs import check_text
from app.membership import invitations
from app.models import Membership, User
from app.security import client_address

log = logging.getLogger("app.api")
bp = Blueprint("auth", __name__, url_prefix="/api/auth")
SAFE = {"GET", "HEAD", "OPTIONS"}


# -- helpers shared by the web-client blueprints ----------------------------------------------
def actor() -> User:
    """The signed-in user; UnauthenticatedError otherwise."""
    if not current_user.is_authenticated:
        raise UnauthenticatedError("Sign in first (POST /api/auth/signin).")
    user: User = current_user._get_current_object()
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


def _load_user(session_id: str) -> User | None:
    cfg = current_app.config
    found = sessions.load_session_user(
        db.session(), session_id, int(cfg["SESSION_ABSOLUTE_SECONDS"]), int(cfg["SESSION_IDLE_SECONDS"])
    )
    if found is None:
        return None
    g.session_row_id, g.session_seen = found[1], found[2]
    return found[0]


def _touch_session(response: Response) -> Response:
    """after_request (app-wide): note the session's use, for the idle lifetime (throttled writes)."""
    row_id, seen = g.pop("session_row_id", None), g.pop("session_seen", None)
    if row_id is not None:
        try:
            sessions.touch(db.session(), row_id, int(current_app.config["SESSION_TOUCH_SECONDS"]), seen)
        except Exception:  # noqa: BLE001 - a missed touch only shortens the idle lifetime; never fail a request
            log.exception("session touch failed")
            db.session.rollback()
    return response


@bp.record_once
def _setup(state: BlueprintSetupState) -> None:
    login_manager.user_loader(_load_user)
    login_manager.session_protection = "basic"
    state.app.after_request(_touch_session)


def _signed_in(user: User) -> dict[str, Any]:
    """login_user with a fresh CSRF token (the old one dies with the anonymous session); the body."""
    login_user(user)
    session.pop("csrf_token", None)
    g.pop("csrf_token", None)
    body = profile.profile(user)
    body["csrf_token"] = generate_csrf()
    return body


# -- routes --------------------------------------------------------------------------------------
@bp.get("/csrf")
def csrf_token() -> Response:
    """A CSRF token for this session; send it back as header X-CSRFToken on every change."""
    return jsonify(csrf_token=generate_csrf())


@bp.post("/signin")
@body_doc(SignIn)
def signin() -> Response:
    """Sign in with email + password; returns the profile and the new CSRF token.

    Failed attempts are limited per (account, client) and per client (429 with Retry-After;
    the limits wrap this view in ``app.security``); pending memberships become accepted.
    """
    body = bodies.parse(SignIn)
    user = sessions.sign_in(
        db.session(),
        body.email,
        body.password,
        client_address(),
        request.headers.get("User-Agent", ""),
    )
    return jsonify(_signed_in(user))


@bp.post("/signout")
def signout() -> tuple[str, int]:
    """End this session: its cookie no longer signs anyone in, wherever it is replayed."""
    if current_user.is_authenticated:
        sessions.end(db.session(), actor())
    logout_user()
    return "", 204


@bp.get("/sessions")
def list_sessions() -> Response:
    """Own sessions that are still valid (``current`` marks this one)."""
    user = actor()
    cfg = current_app.config
    items = sessions.list_sessions(
        db.session(), user, int(cfg["SESSION_ABSOLUTE_SECONDS"]), int(cfg["SESSION_IDLE_SECONDS"])
    )
    return jsonify(items=items)


@bp.post("/sessions/signout-others")
def sign_out_others() -> Response:
    """End every other session of the signed-in user (this one stays)."""
    user = actor()
    return jsonify(ended=sessions.sign_out_others(db.session(), user))


@bp.post("/verify-email")
@body_doc(VerifyEmail)
def verify_email() -> Response:
    """Confirm an email change with the token from the link mailed to the new address.

    Every other session of the account ends; the old address is told.
    """
    body = bodies.parse(VerifyEmail)
    check_text(body.token, "token", "name")
    keep = None
    if current_user.is_authenticated:
        keep = actor().session_token
    user = email_changes.confirm(db.session(), body.token, keep)
    return jsonify(email=user.email, signed_in=keep is not None and user.session_token == keep)


@bp.post("/signup")
@body_doc(SignUp)
def signup() -> tuple[Response, int]:
    """Create an account from a sign-up link's token and join its workspace; signs in."""
    new = bodies.parse(SignUp)
    # invitations.signup hashes the token and stores the names: refuse what text cannot hold first
    for name, kind in (("token", "name"), ("display_name", "name"), ("username", "name"), ("password", "secret")):
        check_text(getattr(new, name), name, kind)
    user, m = invitations.signup(
        db.session(),
        new.token,
        new.password,
        new.display_name,
        new.username,
        client_address(),
        request.headers.get("User-Agent", ""),
    )
    body = _signed_in(user)
    body["workspace"] = {"slug": m.workspace.slug, "role": m.role, "status": m.status}
    return jsonify(body), 201


@bp.get("/me")
def me() -> Response:
    """Own profile and memberships."""
    user = actor()
    rows = db.session.scalars(db.select(Membership).where(Membership.user_id == user.id)).unique()
    body = profile.profile(user)
    body["pending_email"] = email_changes.pending(db.session(), user)
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
@body_doc(profile.ProfileChanges)
def update_me() -> Response:
    """Change own display name, username or password, or ask for an email change (the last two
    need current_password). A new email takes effect once confirmed from the link mailed to it
    (``pending_email`` until then); a password change signs out every other session."""
    user = actor()
    cfg = current_app.config
    user, _ = profile.update_profile(
        db.session(),
        user,
        bodies.parse(profile.ProfileChanges),
        email_ttl_hours=int(cfg["EMAIL_CHANGE_TTL_HOURS"]),
        public_url=str(cfg["PUBLIC_URL"]).rstrip("/"),
    )
    body = profile.profile(user)
    body["pending_email"] = email_changes.pending(db.session(), user)
    return jsonify(body)
