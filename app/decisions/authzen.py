"""The OpenID AuthZEN Authorization API 1.0 on the decision core: evaluations, searches, pages.

AuthZEN has no tenant, so each request is placed in a workspace: ``context.workspace``, else
``resource.properties.workspace``, else the service token's default workspace, else a 400. The
subject is a user reference (id, email or external id, resolved by :mod:`app.decisions.resolution`
like every other surface). ``resource.properties`` reach the policy only through the names the
workspace's pack declares under ``authzen.resource_properties`` (e.g. ``ownerID: owner``): data,
no per-pack Python. Casbin decides; a bad value is a denial (``invalid_request``), never a 500.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError, TimeoutError
from sqlalchemy.orm import Session, object_session

from app import database
from app.authz import Decision, Pack, PolicyEngine, Reason
from app.decisions.resolution import (
    Check,
    CheckAttributes,
    CheckProperties,
    CheckResource,
    candidates,
    decide,
    domain_of,
    resolve_users,
    user_handles,
    user_ref,
)
from app.errors import BadRequestError, UnavailableError
from app.extensions import authz, db
from app.models import Workspace
from app.policy.directory import CATALOG_KEY as CATALOG_KEY
from app.policy.directory import Catalog, Directory, parse_catalog
from app.ttlcache import TTLCache, app_cache

SEMANTICS = ("execute_all", "deny_on_first_deny", "permit_on_first_permit")
# Attributes a pack may map resource properties onto: people and scopes (never roles).
MAPPABLE = ("assignee", "owner", "member", "group", "team")
# The core's own vocabulary, read for every pack (docs/authzen.md, "Members and grants"): the member
# acted upon, the role granted, who receives the grant, and the explicit "anyone at all?".
CORE_PROPERTIES = ("member", "new_role", "grantee", "target")
# A resource of this type is a member of the workspace: ``resource.id`` names them (a user
# reference) unless ``properties.member`` does.
MEMBER_TYPE = "member"
USER_TYPE = "user"
# Subject types that name a user (API gateways send "identity": the token's ``sub``).
SUBJECT_TYPES = (USER_TYPE, "identity")
# A resource of this type is an HTTP route (``id`` a path or path template) and the action an HTTP
# method: the pack's ``authzen.routes`` maps them onto one of its actions (the API-gateway scenario).
ROUTE_TYPE = "route"
UNKNOWN_ROUTE = "unknown_route"
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ROUTE_SUBJECT = "subject"  # a route fact naming the subject itself
DEFAULT_PAGE = 100
MAX_PAGE = 1000
SCAN_BUDGET = 5000  # candidates examined per search page at most (a page may hold fewer than limit)
UNKNOWN_RESOURCE = "unknown_resource"
_CATALOG_CACHE = "authzen_catalog_cache"
_PENDING_SETTINGS = "authzen_settings_changed"


@dataclass(frozen=True)
class Entity:
    """A subject or resource: type, id (None when searched for), properties."""

    type: str
    id: str | None = None
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Action:
    """An action: its name and properties."""

    name: str
    properties: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluation:
    """One access evaluation request, defaults already merged."""

    subject: Entity
    action: Action
    resource: Entity
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Invalid:
    """An evaluation of a batch that could not be read (answered false with the error)."""

    message: str


@dataclass(frozen=True)
class Page:
    """A search page request: limit and the opaque token of the previous response."""

    limit: int | None = None  # None: DEFAULT_PAGE, or the limit the token carries
    token: str | None = None


def workspace_of(ev: Evaluation | Entity, context: Mapping[str, Any], default: str | None) -> str:
    """The workspace slug of a request; BadRequestError when none is named or it is not a string."""
    props = ev.properties if isinstance(ev, Entity) else ev.resource.properties
    named = (("context.workspace", context.get("workspace")), ("resource.properties.workspace", props.get("workspace")))
    for where, value in named:
        if value is not None:
            if not isinstance(value, str) or not value:
                raise BadRequestError(f"{where} must be a non-empty string (a workspace slug)")
            return value
    if default:
        return default
    raise BadRequestError(
        "no workspace: send context.workspace or resource.properties.workspace, or use a token created with --workspace"
    )


def property_map(pack: Pack | None) -> dict[str, str]:
    """The pack's ``authzen.resource_properties`` (property name → attribute); invalid entries ignored."""
    if pack is None:
        return {}
    section = pack.meta.get("authzen")
    raw = section.get("resource_properties") if isinstance(section, Mapping) else None
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): str(v) for k, v in raw.items() if isinstance(k, str) and v in MAPPABLE}


# -- routes: HTTP methods on path templates -> pack actions (data: the pack's ``authzen.routes``) -------
@dataclass(frozen=True)
class Route:
    """One entry of ``authzen.routes``: ``method`` on ``path`` is the pack's ``action``, asked with ``facts``
    (resource attribute -> ``"subject"`` or a path variable ``"{name}"``)."""

    method: str
    path: str
    action: str
    facts: Mapping[str, str] = field(default_factory=dict)

    def bind(self, path: str) -> dict[str, str] | None:
        """The path variables if ``path`` (a concrete path or the template itself) matches, else None."""
        want, got = _segments(self.path), _segments(path)
        if len(got) != len(want):
            return None
        bound: dict[str, str] = {}
        for pattern, seg in zip(want, got):
            if _is_variable(pattern):
                if not seg:
                    return None
                bound[pattern] = seg
            elif pattern != seg:
                return None
        return bound


def _segments(path: str) -> tuple[str, ...]:
    path = path.split("?", 1)[0].split("#", 1)[0].strip("/")
    return tuple(path.split("/")) if path else ()


def _is_variable(segment: str) -> bool:
    return len(segment) > 2 and segment[0] == "{" and segment[-1] == "}"


def route_problems(pack: Pack) -> list[str]:
    """What is wrong with the pack's ``authzen.routes`` (empty: every entry is well-formed)."""
    section = pack.meta.get("authzen")
    raw = section.get("routes") if isinstance(section, Mapping) else None
    if raw is None:
        return []
    if not isinstance(raw, list):
        return ["authzen.routes must be a list"]
    problems: list[str] = []
    actions = {a.id for a in pack.actions}
    for i, entry in enumerate(raw):
        where = f"authzen.routes[{i}]"
        if not isinstance(entry, Mapping):
            problems.append(f"{where} must be a mapping")
            continue
        method, path, action = entry.get("method"), entry.get("path"), entry.get("action")
        if method not in HTTP_METHODS:
            problems.append(f"{where}.method must be one of {', '.join(HTTP_METHODS)}")
        if not isinstance(path, str) or not path.startswith("/"):
            problems.append(f"{where}.path must be a path starting with /")
        if action not in actions:
            problems.append(f"{where}.action {action!r} is not an action of the pack")
        facts = entry.get("facts", {})
        if not isinstance(facts, Mapping):
            problems.append(f"{where}.facts must be a mapping")
            continue
        variables = set(_segments(path)) if isinstance(path, str) else set()
        for attr, value in facts.items():
            if attr not in MAPPABLE:
                problems.append(f"{where}.facts.{attr} is not one of {', '.join(MAPPABLE)}")
            if value != ROUTE_SUBJECT and not (isinstance(value, str) and _is_variable(value) and value in variables):
                problems.append(f"{where}.facts.{attr} must be 'subject' or a variable of the path")
    return problems


_ROUTES: dict[int, tuple[Pack, tuple[Route, ...]]] = {}


def routes(pack: Pack | None) -> tuple[Route, ...]:
    """The pack's routes, read once per pack object; a pack whose routes have any problem maps none
    (fail closed: every route request is then ``unknown_route``)."""
    if pack is None:
        return ()
    held = _ROUTES.get(id(pack))
    if held is not None and held[0] is pack:
        return held[1]
    out: tuple[Route, ...] = ()
    section = pack.meta.get("authzen")
    if isinstance(section, Mapping) and section.get("routes") and not route_problems(pack):
        out = tuple(
            Route(str(e["method"]), str(e["path"]), str(e["action"]), dict(e.get("facts") or {}))
            for e in section["routes"]
        )
    if len(_ROUTES) > 256:
        _ROUTES.clear()
    _ROUTES[id(pack)] = (pack, out)
    return out


def has_routes(pack: Pack | None) -> bool:
    """True if the pack declares ``authzen.routes`` (well-formed or not: route requests are then its own)."""
    section = pack.meta.get("authzen") if pack is not None else None
    return isinstance(section, Mapping) and section.get("routes") is not None


def route_check(subject: Entity, method: str, resource: Entity, workspace: str, pack: Pack | None) -> Check | None:
    """The core's question for an HTTP method on a route resource, or None: no route of the pack matches."""
    path = resource.id or ""
    for route in routes(pack):
        if route.method != method.upper():
            continue
        bound = route.bind(path)
        if bound is None:
            continue
        facts = {
            attr: _attribute(attr, subject.id if value == ROUTE_SUBJECT else bound.get(value))
            for attr, value in route.facts.items()
        }
        return to_check(subject, route.action, Entity(ROUTE_TYPE), workspace, {}, facts)
    return None


def _attribute(name: str, value: Any) -> int | str:
    if name in ("group", "team"):
        return value if isinstance(value, str) else "*"  # "*" is never a valid scope: invalid_request
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return ""  # names nobody
    return value


def _core_attribute(name: str, value: Any) -> int | str:
    if name in ("new_role", "target"):
        return value if isinstance(value, str) else "*"  # never a role id, never "any": invalid_request
    return _attribute(name, value)


def to_check(
    subject: Entity,
    action: str,
    resource: Entity,
    workspace: str,
    mapping: Mapping[str, str],
    facts: Mapping[str, int | str] | None = None,
    action_properties: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> Check:
    """The decision core's question for one AuthZEN (subject, action, resource) in a workspace.

    A ``member`` resource names its member by ``id`` (or ``properties.member``): a rank-scoped action
    then has its target, and one that names nobody is denied (``unknown_member``), never allowed.
    ``facts`` are resource attributes already known (a route's).
    """
    attrs: dict[str, int | str] = dict(facts or {})
    for prop, attr in mapping.items():
        if prop in resource.properties and resource.properties[prop] is not None:
            attrs[attr] = _attribute(attr, resource.properties[prop])
    for name in CORE_PROPERTIES:
        if resource.properties.get(name) is not None:
            attrs[name] = _core_attribute(name, resource.properties[name])
    if resource.type == MEMBER_TYPE and "member" not in attrs and resource.id is not None:
        attrs["member"] = resource.id
    # Only user (and identity) subjects are users; any other type names nobody (unknown_subject).
    sub = subject.id if subject.type in SUBJECT_TYPES and subject.id is not None else ""
    # Every property reaches the pack's conditions (CEL), whatever the pack maps to attributes.
    props = CheckProperties(
        subject=dict(subject.properties),
        resource=dict(resource.properties),
        action=dict(action_properties or {}),
        context=dict(context or {}),
    )
    return Check(
        subject=sub,
        workspace=workspace,
        action=action,
        resource=CheckResource(type=resource.type, id=resource.id or "", attributes=CheckAttributes(**attrs)),  # type: ignore[arg-type]
        properties=props,
    )


def decision_json(d: Decision) -> dict[str, Any]:
    """An AuthZEN decision with our reason and policy revision in its context."""
    return {"decision": d.allowed, "context": {"reason": d.reason, "revision": d.revision}}


def minimal(result: Mapping[str, Any]) -> dict[str, Any]:
    """The decision without our reason and revision (``options.reasons: false``); an item's error stays,
    as the spec reports per-item errors in ``context.error``."""
    context = result.get("context")
    error = context.get("error") if isinstance(context, Mapping) else None
    out: dict[str, Any] = {"decision": result["decision"]}
    if error is not None:
        out["context"] = {"error": error}
    return out


def _invalid_json(message: str, revision: int) -> dict[str, Any]:
    return {
        "decision": False,
        "context": {
            "reason": Reason.INVALID_REQUEST.value,
            "revision": revision,
            "error": {"status": 400, "message": message},
        },
    }


# -- the resource catalog: the resources a workspace's PDP recognises, with their properties -----------
# ``settings.authzen_resources`` of a workspace: [{"type", "id", "properties"}]. A workspace that keeps
# a catalog recognises only the resources it lists (any other type or id is ``unknown_resource``,
# denied), and their properties are facts the PEP need not send (the request's properties win). A
# workspace without one constrains no resource. Read from the directory loaded with the policy
# (``app.policy.directory``: every workspace's catalog, refetched by every process when it applies
# a settings revision; this process's own change at its commit), so no evaluation queries the
# database. Only a workspace the directory does not hold is read from the table (once per
# USER_CACHE_SECONDS), or the last one read while the database is unreachable.


def _catalog_cache() -> TTLCache[str, Catalog] | None:
    return app_cache(_CATALOG_CACHE, "USER_CACHE_SECONDS", 5.0, 10_000)


def settings_set(target: Workspace, value: object, oldvalue: object, initiator: Any) -> None:
    cache = _catalog_cache()
    if cache is not None and isinstance(target.slug, str):
        cache.discard(target.slug)
    session = object_session(target)
    if session is not None and isinstance(target.slug, str):
        session.info.setdefault(_PENDING_SETTINGS, {})[target.slug] = value


def apply_settings(session: Session, directory: Directory | None) -> None:
    """After a commit: this process's directory holds the committed catalogs too (what an outage
    falls back to)."""
    pending = session.info.pop(_PENDING_SETTINGS, None)
    if pending and directory is not None:
        for slug, settings in pending.items():
            directory.catalogs[slug] = parse_catalog(settings)


def drop_settings(session: Session) -> None:
    """After a rollback: no catalog changed."""
    session.info.pop(_PENDING_SETTINGS, None)


def catalog(slug: str) -> Catalog:
    """The workspace's catalog, type → id → properties (malformed entries skipped; {} if none).

    From the directory loaded with the policy; a workspace it does not hold from the table, or
    without the database the last one read; UnavailableError only before any load.
    """
    directory = authz.directory
    held = directory.catalogs.get(slug) if directory is not None else None
    if held is not None:
        return held  # type: ignore[no-any-return]
    cache = _catalog_cache()
    hit = cache.get(slug) if cache is not None else None
    if hit is not None:
        return hit
    if len(slug) > 64:
        return {}  # no such workspace (slugs are at most 64 characters)
    generation = cache.generation if cache is not None else 0
    if database.reachable():
        try:
            settings = db.session.scalar(select(Workspace.settings).where(Workspace.slug == slug))
        except (OperationalError, InterfaceError, TimeoutError):
            with contextlib.suppress(SQLAlchemyError):  # the connection may be gone with the database
                db.session.rollback()
        else:
            out = parse_catalog(settings)
            if cache is not None:
                cache.put(slug, out, generation)
            if directory is not None and settings is not None:
                directory.catalogs[slug] = out  # the newest this process knows, for an outage
            return out
    stale = cache.get_stale(slug) if cache is not None else None
    if stale is not None:
        return stale
    if directory is not None and authz.engine.pack_of(domain_of(slug)) is None:
        return {}  # no such workspace in the policy: every decision there is a denial anyway
    raise UnavailableError(
        "the database is unavailable and this workspace's catalog was never read", headers={"Retry-After": "1"}
    )


def stored_subject(subject: Entity, cat: Catalog) -> Entity:
    """The subject with the catalog's properties for it (``user`` entries by id, as for resources):
    what the pack's conditions read (certification S4-S6). What the service stores about a subject wins
    over what the request says (a caller cannot make anyone an admin); other request properties stay."""
    props = cat.get(USER_TYPE, {}).get(subject.id) if subject.id is not None else None
    return Entity(subject.type, subject.id, {**subject.properties, **props}) if props else subject


def stored_users(cat: Catalog, eng: PolicyEngine, domain: str) -> dict[int, Mapping[str, Any]]:
    """user id → the catalog's properties of that user (catalog ``user`` entries by any user reference)."""
    listed = cat.get(USER_TYPE, {})
    if not listed:
        return {}
    keys = resolve_users(listed, eng, domain)
    out: dict[int, Mapping[str, Any]] = {}
    for ref, props in listed.items():
        found = user_ref(ref)
        key = keys.get(found) if found is not None else None
        if key is not None:
            out[int(key[5:])] = props
    return out


def known(resource: Entity, cat: Catalog) -> Entity | None:
    """The resource with the catalog's properties under the request's; None if the catalog does not list it."""
    if not cat or resource.id is None:
        return resource
    props = cat.get(resource.type, {}).get(resource.id)
    if props is None:
        return None
    return Entity(resource.type, resource.id, {**props, **resource.properties})


@dataclass(frozen=True)
class _Denied:
    """A denial decided before the core: the workspace knows no such resource, or no such route."""

    reason: str


def _check_of(it: Evaluation, ws: str, eng: PolicyEngine, mappings: dict[str, dict[str, str]]) -> Check | _Denied:
    """The core's question for one evaluation placed in ``ws``, or the denial already known."""
    pack = eng.pack_of(domain_of(ws))
    if it.resource.type == ROUTE_TYPE and has_routes(pack):
        check = route_check(it.subject, it.action.name, it.resource, ws, pack)
        return _Denied(UNKNOWN_ROUTE) if check is None else check
    if ws not in mappings:
        mappings[ws] = property_map(pack)
    cat = catalog(ws)
    resource = known(it.resource, cat)
    if resource is None:
        return _Denied(UNKNOWN_RESOURCE)
    subject = stored_subject(it.subject, cat)
    return to_check(subject, it.action.name, resource, ws, mappings[ws], None, it.action.properties, it.context)


def evaluate(
    items: Sequence[Evaluation | Invalid],
    eng: PolicyEngine,
    default_workspace: str | None,
    semantic: str = "execute_all",
) -> list[dict[str, Any]]:
    """Decisions in request order (one user query for all), cut after the first deny or permit per semantic."""
    checks: list[Check] = []
    # index into checks, the error message, or a denial decided here (unknown resource or route)
    slots: list[int | str | _Denied] = []
    mappings: dict[str, dict[str, str]] = {}
    for it in items:
        if isinstance(it, Invalid):
            slots.append(it.message)
            continue
        try:
            ws = workspace_of(it, it.context, default_workspace)
        except BadRequestError as exc:
            slots.append(exc.detail)
            continue
        check = _check_of(it, ws, eng, mappings)
        if isinstance(check, _Denied):
            slots.append(check)
            continue
        slots.append(len(checks))
        checks.append(check)
    decisions = decide(checks, eng) if checks else []
    out: list[dict[str, Any]] = []
    for slot in slots:
        if isinstance(slot, _Denied):
            result = {"decision": False, "context": {"reason": slot.reason, "revision": eng.revision}}
            allowed = False
        elif isinstance(slot, str):
            result, allowed = _invalid_json(slot, eng.revision), False
        else:
            result, allowed = decision_json(decisions[slot]), decisions[slot].allowed
        out.append(result)
        if (semantic == "deny_on_first_deny" and not allowed) or (semantic == "permit_on_first_permit" and allowed):
            break
    return out


# -- search ------------------------------------------------------------------------------------------
def _fingerprint(kind: str, request: Mapping[str, Any]) -> str:
    """What a follow-up request must repeat: every entity (the page parameters travel in the token)."""
    same = {k: v for k, v in request.items() if k != "page"}
    blob = orjson.dumps([kind, same], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(blob).hexdigest()[:16]


def _encode_token(position: int, limit: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(f"v1:{position}:{limit}:{fingerprint}".encode()).decode().rstrip("=")


def _decode_token(token: str, fingerprint: str) -> tuple[int, int]:
    """(position, limit) of a token this PDP issued for this request; BadRequestError otherwise."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadRequestError("page.token is not a token this PDP issued") from None
    parts = raw.split(":")
    numbers = parts[1:3]
    if len(parts) != 4 or parts[0] != "v1" or not all(n.isascii() and n.isdigit() and len(n) < 10 for n in numbers):
        raise BadRequestError("page.token is not a token this PDP issued")
    if parts[3] != fingerprint:
        raise BadRequestError("the request changed during pagination: repeat it exactly, with page.token")
    return int(parts[1]), int(parts[2])


@dataclass
class SearchResult:
    """One page of a search."""

    results: list[dict[str, Any]]
    next_token: str = ""

    def as_json(self) -> dict[str, Any]:
        """The response body (``page`` first, as the spec recommends)."""
        return {"page": {"next_token": self.next_token, "count": len(self.results)}, "results": self.results}


def _page_of(
    kind: str,
    raw_request: Mapping[str, Any],
    page: Page,
    positions: Sequence[int],
    allowed: Any,
) -> tuple[list[int], str]:
    """Positions on this page that ``allowed`` accepts (called with a chunk), and the next token."""
    fp = _fingerprint(kind, raw_request)
    after, limit = -1, min(DEFAULT_PAGE if page.limit is None else page.limit, MAX_PAGE)
    if page.token:
        after, first_limit = _decode_token(page.token, fp)
        if page.limit is not None and min(page.limit, MAX_PAGE) != first_limit:
            raise BadRequestError("page.limit changed during pagination: send the first request's limit, or none")
        limit = first_limit
    pool = [p for p in positions if p > after]
    found: list[int] = []
    examined = 0
    last = after
    while pool and len(found) < limit and examined < SCAN_BUDGET:
        chunk = pool[: min(len(pool), max(limit - len(found), 1) * 4, SCAN_BUDGET - examined)]
        for pos, ok in zip(chunk, allowed(chunk)):
            examined += 1
            last = pos
            if ok:
                found.append(pos)
                if len(found) >= limit:
                    break
        pool = [p for p in pool if p > last]
    return found, (_encode_token(last, limit, fp) if pool else "")


def search_subjects(
    raw: Mapping[str, Any], ev: Evaluation, eng: PolicyEngine, default_ws: str | None, page: Page
) -> SearchResult:
    """Users of the subject type who may do the action on the resource (id = external id, else email)."""
    ws = workspace_of(ev, ev.context, default_ws)
    stype = ev.subject.type
    if stype not in SUBJECT_TYPES:
        return SearchResult([])
    domain = domain_of(ws)
    pack = eng.pack_of(domain)
    mapping = property_map(pack)
    on_route = ev.resource.type == ROUTE_TYPE and has_routes(pack)
    cat = catalog(ws)
    found_resource = ev.resource if on_route else known(ev.resource, cat)
    users = [uid for uid, _ in candidates(eng, domain)] if found_resource is not None else []
    resource = found_resource or ev.resource
    stored = stored_users(cat, eng, domain) if users and not on_route else {}

    def question(uid: int) -> Check | None:
        who = Entity(USER_TYPE, f"user:{uid}", {**ev.subject.properties, **stored.get(uid, {})})
        if on_route:
            return route_check(who, ev.action.name, resource, ws, pack)
        return to_check(who, ev.action.name, resource, ws, mapping, None, ev.action.properties, ev.context)

    def allowed(chunk: Sequence[int]) -> list[bool]:
        return _allowed([question(uid) for uid in chunk], eng)

    found, token = _page_of("subject", raw, page, users, allowed)
    handles = user_handles(found)
    results = [{"type": stype, "id": handles[uid][1] or handles[uid][0]} for uid in found if uid in handles]
    return SearchResult(results, token)


def _allowed(checks: Sequence[Check | None], eng: PolicyEngine) -> list[bool]:
    """Whether each check is allowed (None: no question to ask, denied), one decide() for all."""
    asked = [c for c in checks if c is not None]
    answers = iter(decide(asked, eng)) if asked else iter(())
    return [c is not None and next(answers).allowed for c in checks]


def search_resources(
    raw: Mapping[str, Any], ev: Evaluation, eng: PolicyEngine, default_ws: str | None, page: Page
) -> SearchResult:
    """Resources of the workspace's catalog, of the requested type, the subject may act on."""
    ws = workspace_of(ev, ev.context, default_ws)
    domain = domain_of(ws)
    pack = eng.pack_of(domain)
    mapping = property_map(pack)
    rtype = ev.resource.type
    if rtype == ROUTE_TYPE and has_routes(pack):  # the pack's route templates, in declared order
        paths = dict.fromkeys(r.path for r in routes(pack))
        resources = [Entity(rtype, path) for path in paths]

        def question(i: int) -> Check | None:
            return route_check(ev.subject, ev.action.name, resources[i], ws, pack)
    else:
        cat = catalog(ws)
        listed = cat.get(rtype, {}) if pack is not None else {}
        # The request's resource properties (the PEP's facts) apply to every candidate, over the catalog's.
        resources = [Entity(rtype, rid, {**props, **ev.resource.properties}) for rid, props in listed.items()]
        subject = stored_subject(ev.subject, cat)

        def question(i: int) -> Check | None:
            return to_check(subject, ev.action.name, resources[i], ws, mapping, None, ev.action.properties, ev.context)

    def allowed(chunk: Sequence[int]) -> list[bool]:
        return _allowed([question(i) for i in chunk], eng)

    found, token = _page_of("resource", raw, page, range(len(resources)), allowed)
    return SearchResult([{"type": resources[i].type, "id": resources[i].id} for i in found], token)


def search_actions(
    raw: Mapping[str, Any],
    subject: Entity,
    resource: Entity,
    context: Mapping[str, Any],
    eng: PolicyEngine,
    default_ws: str | None,
    page: Page,
) -> SearchResult:
    """Actions of the workspace's pack the subject may perform on the resource."""
    ws = workspace_of(resource, context, default_ws)
    domain = domain_of(ws)
    pack = eng.pack_of(domain)
    mapping = property_map(pack)
    if resource.type == ROUTE_TYPE and has_routes(pack):  # the HTTP methods of the routes matching the path
        on_route = resource
        actions = list(dict.fromkeys(r.method for r in routes(pack) if r.bind(resource.id or "") is not None))
    else:
        on_route = None
        cat = catalog(ws)
        found_resource = known(resource, cat)
        actions = [a.id for a in pack.actions] if pack is not None and found_resource is not None else []
        resource = found_resource or resource
        subject = stored_subject(subject, cat)

    def question(i: int) -> Check | None:
        if on_route is not None:
            return route_check(subject, actions[i], on_route, ws, pack)
        return to_check(subject, actions[i], resource, ws, mapping, None, None, context)

    def allowed(chunk: Sequence[int]) -> list[bool]:
        return _allowed([question(i) for i in chunk], eng)

    found, token = _page_of("action", raw, page, range(len(actions)), allowed)
    return SearchResult([{"name": actions[i]} for i in found], token)
