"""Groups (classroom, simulations) and teams (skills) for web clients.

``/api/workspaces/<slug>/groups/...`` with teachers and learners, ``/teams/...`` with managers
and members. Thin: parse → service (Casbin + transaction) → JSON.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.errors import NotFoundError
from app.extensions import db
from app.inputs import present
from app.membership import groups, workspaces

from . import bodies, body_doc
from .auth import actor, after_change, protect
from .params import path_id, query_text, register_converters
from .web_bodies import Move, UnitCreate, UnitUpdate, UserIds

bp = Blueprint("groups", __name__, url_prefix="/api/workspaces/<slug>")
bp.record_once(register_converters)  # before the routes: they use <id:...>
bp.before_request(protect)
bp.after_request(after_change)

KIND = {"groups": "group", "teams": "team"}
RELATION = {
    ("group", "teachers"): "manager",
    ("group", "learners"): "member",
    ("team", "managers"): "manager",
    ("team", "members"): "member",
}


def _kind(kinds: str) -> str:
    if kinds not in KIND:
        raise NotFoundError("not found")
    return KIND[kinds]


def _relation(kind: str, rel: str) -> str:
    if (kind, rel) not in RELATION:
        raise NotFoundError("not found")
    return RELATION[(kind, rel)]


@bp.get("/<kinds>")
def list_units(slug: str, kinds: str) -> Response:
    """Groups (or teams) the caller may see."""
    ws = workspaces.get_by_slug(db.session(), slug)
    return jsonify(items=groups.list_units(db.session(), actor(), ws, _kind(kinds)))


@bp.post("/<kinds>")
@body_doc(UnitCreate)
def create(slug: str, kinds: str) -> tuple[Response, int]:
    """Create a group/team ({"name", "description"?, "capacity"?})."""
    ws = workspaces.get_by_slug(db.session(), slug)
    kind = _kind(kinds)
    body = bodies.parse(UnitCreate)
    g = groups.create(db.session(), actor(), ws, kind, body.name, body.description, body.capacity)
    return jsonify(groups.serialize(db.session(), g, actor(), ws)), 201


@bp.get("/<kinds>/<name>")
def show(slug: str, kinds: str, name: str) -> Response:
    """One group/team with its people."""
    ws = workspaces.get_by_slug(db.session(), slug)
    kind = _kind(kinds)
    groups.check_kind(ws, kind)
    if not groups.NAME.fullmatch(name):
        raise NotFoundError(f"no such {kind}")
    groups.require_view(actor(), ws, kind, name)
    return jsonify(groups.serialize(db.session(), groups.get(db.session(), ws, kind, name), actor(), ws))


@bp.get("/<kinds>/<name>/<rel>/candidates")
def candidates(slug: str, kinds: str, name: str, rel: str) -> Response:
    """Members the caller may add to the group/team as ``rel`` (?q= searches email, name, username):
    the people picker. Casbin decides per person, so a teacher is offered learners only."""
    ws = workspaces.get_by_slug(db.session(), slug)
    kind = _kind(kinds)
    relation = _relation(kind, rel)
    items = groups.candidates(db.session(), actor(), ws, kind, name, relation, query_text("q", 100))
    return jsonify(items=items)


@bp.patch("/<kinds>/<name>")
@body_doc(UnitUpdate)
def update(slug: str, kinds: str, name: str) -> Response:
    """Edit description, capacity, archived."""
    ws = workspaces.get_by_slug(db.session(), slug)
    kind = _kind(kinds)
    g = groups.update(db.session(), actor(), ws, kind, name, present(bodies.parse(UnitUpdate)))
    return jsonify(groups.serialize(db.session(), g, actor(), ws))


@bp.delete("/<kinds>/<name>")
def delete(slug: str, kinds: str, name: str) -> tuple[str, int]:
    """Delete a group/team nobody is in (409 otherwise: archive it instead)."""
    ws = workspaces.get_by_slug(db.session(), slug)
    groups.delete(db.session(), actor(), ws, _kind(kinds), name)
    return "", 204


@bp.post("/<kinds>/<name>/<rel>")
@body_doc(UserIds)
def add_people(slug: str, kinds: str, name: str, rel: str) -> Response:
    """Add members of the workspace as teachers/learners (groups) or managers/members (teams)."""
    ws = workspaces.get_by_slug(db.session(), slug)
    kind = _kind(kinds)
    relation = _relation(kind, rel)
    g = groups.add_people(db.session(), actor(), ws, kind, name, relation, bodies.parse(UserIds).user_ids)
    return jsonify(groups.serialize(db.session(), g, actor(), ws))


@bp.delete("/<kinds>/<name>/<rel>/<id:user_id>")
def remove_person(slug: str, kinds: str, name: str, rel: str, user_id: int) -> tuple[str, int]:
    """Take someone out of a group/team."""
    user_id = path_id(user_id)
    ws = workspaces.get_by_slug(db.session(), slug)
    kind = _kind(kinds)
    groups.remove_person(db.session(), actor(), ws, kind, name, _relation(kind, rel), user_id)
    return "", 204


@bp.post("/<kinds>/<name>/<rel>/<id:user_id>/move")
@body_doc(Move)
def move(slug: str, kinds: str, name: str, rel: str, user_id: int) -> Response:
    """Move a learner/member to another group/team ({"to": "evening"})."""
    user_id = path_id(user_id)
    ws = workspaces.get_by_slug(db.session(), slug)
    kind = _kind(kinds)
    if _relation(kind, rel) != "member":
        raise NotFoundError("only learners/members move between groups")
    g = groups.move(db.session(), actor(), ws, kind, name, user_id, bodies.parse(Move).to)
    return jsonify(groups.serialize(db.session(), g, actor(), ws))
