"""The policy editor's workbench: pages over the policy-editor API (``/v1/policy/...``).

Packs (roles, inheritance, actions, features, grant exceptions, decisions), the live matrix with a
draft that never touches the live policy, the draft panel (rule diff, problems as found, impact;
kept on the server for its user), change requests and their review, history with rollback
(previewed and verified first), and a playground that explains a decision
at the live revision or on the draft. Like every page, the shells decide nothing: which controls
they offer comes from the ``service`` meta-pack, asked of Casbin; the API checks again.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template
from flask_wtf.csrf import generate_csrf
from werkzeug.wrappers import Response as BaseResponse

from app.api.policy import META_ACTIONS, policy_domain
from app.errors import AppError, ForbiddenError, NotFoundError
from app.extensions import authz

from .pages import _error_page, _signed_in, _to_login

bp = Blueprint("workbench", __name__, url_prefix="/policy", template_folder="templates")
bp.register_error_handler(AppError, _error_page)


def permissions(user_key: str) -> list[str]:
    """The meta-policy actions Casbin allows this user (what the workbench offers)."""
    return [a for a in META_ACTIONS if authz.check(user_key, policy_domain(), a).allowed]


@bp.app_context_processor
def _nav() -> dict[str, Any]:
    def can_read_policy() -> bool:
        user = _signed_in()
        return user is not None and authz.check(user.key, policy_domain(), "read_policy").allowed

    return {"can_read_policy": can_read_policy}


def _shell(template: str, page: str, **ctx: Any) -> str | BaseResponse:
    user = _signed_in()
    if user is None:
        return _to_login()
    perms = permissions(user.key)
    if "read_policy" not in perms:
        raise ForbiddenError("Policy pages are for the service's policy viewers, editors and admins.")
    return render_template(template, page=page, user=user, csrf=generate_csrf(), perms=perms, **ctx)


@bp.get("")
def packs() -> str | BaseResponse:
    """Every pack with its roles and counts."""
    return _shell("policy_packs.html", "policy-packs")


@bp.get("/packs/<pack>")
def pack(pack: str) -> str | BaseResponse:
    """One pack: roles and inheritance, the live matrix (editable into the draft), the draft panel."""
    if _signed_in() is not None and pack not in authz.engine.packset.packs:
        raise NotFoundError("No such pack.")
    return _shell("policy_pack.html", "policy-pack", pack_id=pack)


@bp.get("/changes")
def changes() -> str | BaseResponse:
    """Change requests: open ones to review, applied and rejected ones."""
    return _shell("policy_changes.html", "policy-changes")


@bp.get("/changes/<int:cr_id>")
def change(cr_id: int) -> str | BaseResponse:
    """One change request: rules, checks, impact and replay, the review, and what this user may do."""
    return _shell("policy_change.html", "policy-change", cr_id=cr_id)


@bp.get("/history")
def history() -> str | BaseResponse:
    """Revisions with their rule diff; rollback previewed first."""
    return _shell("policy_history.html", "policy-history")


@bp.get("/playground")
def playground() -> str | BaseResponse:
    """Explain one decision, live or on the draft; the form is kept in the URL (shareable)."""
    return _shell("policy_playground.html", "policy-playground")
