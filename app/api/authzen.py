"""The OpenID AuthZEN Authorization API 1.0 (``/access/v1/...``, ``/.well-known/authzen-configuration``).

Same service tokens as the decision API (``Authorization: Bearer``), same decision core. This module
reads the wire format — strictly where the spec requires a field, ignoring unknown fields as it
demands — and serializes; :mod:`app.decisions.authzen` places requests in workspaces and decides.
A body that is not a JSON object, a missing or mistyped required field, is a 400 problem (the spec's
"Bad Request"); one unreadable evaluation inside an otherwise valid batch is answered
``decision: false`` with the error in its ``context``. ``X-Request-ID`` is echoed (app-wide).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, g, request
from pydantic import BaseModel, ConfigDict, Field

from app import observability
from app.api import api_doc
from app.api.decision import engine_at
from app.api.params import bound_to, parse_json, service_token
from app.decisions import authzen
from app.decisions.authzen import Action, Entity, Evaluation, Invalid, Page
from app.errors import BadRequestError

bp = Blueprint("authzen", __name__)

WELL_KNOWN = "/.well-known/authzen-configuration"
ENDPOINTS = {
    "access_evaluation_endpoint": "/access/v1/evaluation",
    "access_evaluations_endpoint": "/access/v1/evaluations",
    "search_subject_endpoint": "/access/v1/search/subject",
    "search_resource_endpoint": "/access/v1/search/resource",
    "search_action_endpoint": "/access/v1/search/action",
}
# Request options we read besides the spec's (``options.<name>``), with their default per endpoint.
OPTIONS = {"reasons": {"access_evaluation_endpoint": True, "access_evaluations_endpoint": False}}


# -- OpenAPI description (validation is by hand below: 400s, unknown fields ignored) --------------
class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class AzSubject(_Open):
    """AuthZEN Subject: ``type`` "user" (or "identity", as API gateways send it) and ``id`` a user id, an email
    or an external id."""

    type: str = Field(min_length=1, examples=["user", "identity"])
    id: str = Field(min_length=1, description="user id, email or external id (in searches for subjects: omitted)")
    properties: dict[str, Any] | None = None


class AzAction(_Open):
    """AuthZEN Action: ``name`` is an action of the workspace's pack."""

    name: str = Field(min_length=1)
    properties: dict[str, Any] | None = None


class AzResource(_Open):
    """AuthZEN Resource; ``properties`` reach the policy by the names the pack declares (``authzen:``).
    Type "route": ``id`` is an HTTP path (or its template) and the action an HTTP method, mapped by the
    pack's ``authzen.routes``."""

    type: str = Field(min_length=1, examples=["todo", "route"])
    id: str = Field(min_length=1, description="omitted in searches for resources")
    properties: dict[str, Any] | None = Field(None, description="may carry 'workspace' (a slug)")


class AzContext(_Open):
    """AuthZEN Context; ``workspace`` places the request (else resource.properties.workspace, else the token's)."""

    workspace: str | None = None


class AzEvaluationOptions(_Open):
    """Our extension of the spec's general-purpose ``options``."""

    reasons: bool | None = Field(
        None, description="decisions carry context.reason and context.revision (default true here, false in a batch)"
    )


class AzEvaluationRequest(_Open):
    """``POST /access/v1/evaluation``."""

    subject: AzSubject
    action: AzAction
    resource: AzResource
    context: AzContext | None = None
    options: AzEvaluationOptions | None = None


class AzDecision(BaseModel):
    """An AuthZEN decision; ``context`` holds our reason code and the policy revision when asked
    (``options.reasons``), and an unreadable item's ``error``."""

    decision: bool
    context: dict[str, Any] | None = None


class AzEvaluationItem(_Open):
    """One item of ``evaluations``: each entity omitted here comes from the top-level default."""

    subject: AzSubject | None = None
    action: AzAction | None = None
    resource: AzResource | None = None
    context: AzContext | None = None


class AzOptions(_Open):
    """Evaluation options (``reasons``: our extension, default false in a batch)."""

    evaluations_semantic: str | None = Field(None, examples=list(authzen.SEMANTICS))
    reasons: bool | None = Field(None, description="each decision carries context.reason and context.revision")


class AzEvaluationsRequest(_Open):
    """``POST /access/v1/evaluations``: top-level subject/action/resource/context are defaults."""

    subject: AzSubject | None = None
    action: AzAction | None = None
    resource: AzResource | None = None
    context: AzContext | None = None
    evaluations: list[AzEvaluationItem] | None = None
    options: AzOptions | None = None


class AzEvaluationsResponse(BaseModel):
    """Decisions in request order (``decision`` alone when no evaluations were sent)."""

    evaluations: list[AzDecision] | None = None
    decision: bool | None = None
    context: dict[str, Any] | None = None


class AzPage(_Open):
    """Search page request."""

    token: str | None = None
    limit: int | None = Field(None, ge=0)


class AzSearchRequest(_Open):
    """A search: the searched-for entity carries only its ``type`` (Action Search sends no ``action``)."""

    subject: dict[str, Any]
    action: AzAction | None = None
    resource: dict[str, Any]
    context: AzContext | None = None
    page: AzPage | None = None


class AzPageOut(BaseModel):
    """Search page response: ``next_token`` is "" on the last page."""

    next_token: str
    count: int


class AzSearchResponse(BaseModel):
    """Search results: subjects/resources (type, id) or actions (name)."""

    page: AzPageOut
    results: list[dict[str, Any]]


class AzMetadata(BaseModel):
    """PDP metadata (``/.well-known/authzen-configuration``)."""

    policy_decision_point: str
    access_evaluation_endpoint: str
    access_evaluations_endpoint: str
    search_subject_endpoint: str
    search_resource_endpoint: str
    search_action_endpoint: str
    learnauthz_options: dict[str, dict[str, bool]] = Field(
        description="our request options (an extension PEPs may ignore): option -> its default per endpoint",
        examples=[{"reasons": {"access_evaluation_endpoint": True, "access_evaluations_endpoint": False}}],
    )


# -- authentication --------------------------------------------------------------------------------
@bp.before_request
def _authenticate() -> None:
    if request.path.startswith(WELL_KNOWN):
        return
    g.authzen_workspace = service_token("authzen").workspace


# -- reading the wire format -------------------------------------------------------------------------
def _body() -> dict[str, Any]:
    """The JSON object body; 400 for another content type, an empty or malformed body, a repeated key, a non-object."""
    if not request.is_json:
        raise BadRequestError("send the body as application/json")
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise BadRequestError("the body is empty: send a JSON object")
    data = parse_json(raw)  # 400 for malformed JSON, too deep a nesting, a repeated key
    if not isinstance(data, dict):
        raise BadRequestError("the body must be a JSON object")
    return data


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequestError(f"{where} must be an object")
    return value


def _opt_obj(value: Any, where: str) -> dict[str, Any]:
    return {} if value is None else _obj(value, where)


def _str(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if value is None:
        raise BadRequestError(f"{where}.{key} is required")
    if not isinstance(value, str) or not value:
        raise BadRequestError(f"{where}.{key} must be a non-empty string")
    return value


def _entity(value: Any, where: str, with_id: bool = True) -> Entity:
    """A subject or resource; ``with_id=False`` for the searched-for entity (its id is ignored)."""
    if value is None:
        raise BadRequestError(f"{where} is required")
    raw = _obj(value, where)
    return Entity(
        _str(raw, "type", where),
        _str(raw, "id", where) if with_id else None,
        _opt_obj(raw.get("properties"), f"{where}.properties"),
    )


def _action(value: Any, where: str = "action") -> Action:
    if value is None:
        raise BadRequestError(f"{where} is required")
    raw = _obj(value, where)
    return Action(_str(raw, "name", where), _opt_obj(raw.get("properties"), f"{where}.properties"))


def _evaluation(raw: Mapping[str, Any]) -> Evaluation:
    return Evaluation(
        _entity(raw.get("subject"), "subject"),
        _action(raw.get("action")),
        _entity(raw.get("resource"), "resource"),
        _opt_obj(raw.get("context"), "context"),
    )


def _page(data: Mapping[str, Any]) -> Page:
    raw = _opt_obj(data.get("page"), "page")
    limit = raw.get("limit")
    token = raw.get("token")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise BadRequestError("page.limit must be a non-negative integer")
    if token is not None and not isinstance(token, str):
        raise BadRequestError("page.token must be a string")
    return Page(limit, token or None)


def _reasons(data: Mapping[str, Any], default: bool) -> bool:
    """``options.reasons``: whether each decision carries ``context.reason`` and ``context.revision``."""
    value = _opt_obj(data.get("options"), "options").get("reasons")
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequestError("options.reasons must be a boolean")
    return value


def _json(payload: Any) -> Response:
    return Response(orjson.dumps(payload), mimetype="application/json")


def _engine() -> Any:
    return engine_at(None)


def _default_workspace() -> str | None:
    return getattr(g, "authzen_workspace", None)


def _record(results: list[dict[str, Any]], endpoint: str, started: float) -> None:
    observability.record_decisions([(r["decision"], str(r["context"]["reason"])) for r in results])
    observability.observe_decision_time(endpoint, time.perf_counter() - started, len(results))


# -- endpoints ----------------------------------------------------------------------------------------
@bp.post("/access/v1/evaluation")
@api_doc(
    "AuthZEN Access Evaluation: may the subject perform the action on the resource?",
    tags=["authzen"],
    body=AzEvaluationRequest,
    response=AzDecision,
    auth="token",
    errors=(400, 401, 403, 503),
)
def evaluation() -> Response:
    """One decision; ``context.reason`` says why unless ``options.reasons`` is false."""
    data = _body()
    ev = _evaluation(data)
    reasons = _reasons(data, default=OPTIONS["reasons"]["access_evaluation_endpoint"])
    started = time.perf_counter()
    workspace = authzen.workspace_of(ev, ev.context, _default_workspace())  # 400 before deciding
    eng = _engine()
    bound_to([workspace], eng)
    result = authzen.evaluate([ev], eng, workspace)[0]
    _record([result], "authzen_evaluation", started)
    return _json(result if reasons else authzen.minimal(result))


def _merged(item: Any, defaults: Mapping[str, Any]) -> Evaluation | Invalid:
    """One item with the top-level defaults (whole-entity replacement); Invalid when unreadable."""
    if not isinstance(item, dict):
        return Invalid("each evaluation must be an object")
    merged = {k: item[k] if k in item else defaults.get(k) for k in ("subject", "action", "resource", "context")}
    try:
        return _evaluation(merged)
    except BadRequestError as exc:
        return Invalid(exc.detail)


def _bound_items(parsed: list[Evaluation | Invalid], eng: Any) -> None:
    """403 problem if any readable item is placed outside the token's binding (the whole request: no
    item is decided, whatever the semantic), naming its index; unplaceable items stay per-item errors."""
    at: list[int] = []
    workspaces: list[str] = []
    for i, it in enumerate(parsed):
        if isinstance(it, Evaluation):
            try:
                workspaces.append(authzen.workspace_of(it, it.context, _default_workspace()))
            except BadRequestError:
                continue
            at.append(i)
    bound_to(workspaces, eng, lambda j: f"evaluations[{at[j]}]")


@bp.post("/access/v1/evaluations")
@api_doc(
    "AuthZEN Access Evaluations: many decisions, defaults merged into each item, with evaluation semantics.",
    tags=["authzen"],
    body=AzEvaluationsRequest,
    response=AzEvaluationsResponse,
    auth="token",
    errors=(400, 401, 403, 503),
)
def evaluations() -> Response:
    """Decisions in request order; ``options.evaluations_semantic`` may stop at the first deny or permit."""
    data = _body()
    items = data.get("evaluations")
    if items is not None and not isinstance(items, list):
        raise BadRequestError("evaluations must be an array")
    options = _opt_obj(data.get("options"), "options")
    semantic = options.get("evaluations_semantic", "execute_all")
    if semantic not in authzen.SEMANTICS:
        raise BadRequestError(f"options.evaluations_semantic must be one of {', '.join(authzen.SEMANTICS)}")
    if not items:  # absent or empty: the single Access Evaluation API (and its default for reasons)
        return evaluation()
    reasons = _reasons(data, default=OPTIONS["reasons"]["access_evaluations_endpoint"])
    limit = int(current_app.config["BATCH_MAX_CHECKS"])
    if len(items) > limit:
        raise BadRequestError(f"at most {limit} evaluations per request; got {len(items)}")
    # Defaults that are present must be well-formed even if every item overrides them.
    defaults: dict[str, Any] = {}
    for key, read in (("subject", _entity), ("resource", _entity), ("action", _action), ("context", _opt_obj)):
        if data.get(key) is not None:
            read(data[key], key)
            defaults[key] = data[key]
    started = time.perf_counter()
    parsed = [_merged(it, defaults) for it in items]
    eng = _engine()
    _bound_items(parsed, eng)
    results = authzen.evaluate(parsed, eng, _default_workspace(), semantic)
    _record(results, "authzen_evaluations", started)
    return _json({"evaluations": results if reasons else [authzen.minimal(r) for r in results]})


_SEARCH_ERRORS = (400, 401, 403, 503)


@bp.post("/access/v1/search/subject")
@api_doc(
    "AuthZEN Subject Search: users who may perform the action on the resource (paginated).",
    tags=["authzen"],
    body=AzSearchRequest,
    response=AzSearchResponse,
    auth="token",
    errors=_SEARCH_ERRORS,
)
def search_subject() -> Response:
    """Subjects of ``subject.type`` ("user"; any other type finds nobody); ``subject.id`` is ignored."""
    data = _body()
    ev = Evaluation(
        _entity(data.get("subject"), "subject", with_id=False),
        _action(data.get("action")),
        _entity(data.get("resource"), "resource"),
        _opt_obj(data.get("context"), "context"),
    )
    page = _page(data)
    eng = _engine()
    bound_to([authzen.workspace_of(ev, ev.context, _default_workspace())], eng)
    out = authzen.search_subjects(data, ev, eng, _default_workspace(), page)
    return _json(out.as_json())


@bp.post("/access/v1/search/resource")
@api_doc(
    "AuthZEN Resource Search: resources of the workspace's catalog the subject may act on (paginated).",
    tags=["authzen"],
    body=AzSearchRequest,
    response=AzSearchResponse,
    auth="token",
    errors=_SEARCH_ERRORS,
)
def search_resource() -> Response:
    """Resources of ``resource.type`` in the workspace's ``settings.authzen_resources``; ``resource.id`` is ignored."""
    data = _body()
    ev = Evaluation(
        _entity(data.get("subject"), "subject"),
        _action(data.get("action")),
        _entity(data.get("resource"), "resource", with_id=False),
        _opt_obj(data.get("context"), "context"),
    )
    page = _page(data)
    eng = _engine()
    bound_to([authzen.workspace_of(ev, ev.context, _default_workspace())], eng)
    out = authzen.search_resources(data, ev, eng, _default_workspace(), page)
    return _json(out.as_json())


@bp.post("/access/v1/search/action")
@api_doc(
    "AuthZEN Action Search: actions of the workspace's pack the subject may perform on the resource.",
    tags=["authzen"],
    body=AzSearchRequest,
    response=AzSearchResponse,
    auth="token",
    errors=_SEARCH_ERRORS,
)
def search_action() -> Response:
    """Action names; the request carries no ``action``."""
    data = _body()
    subject = _entity(data.get("subject"), "subject")
    resource = _entity(data.get("resource"), "resource")
    context = _opt_obj(data.get("context"), "context")
    page = _page(data)
    eng = _engine()
    bound_to([authzen.workspace_of(resource, context, _default_workspace())], eng)
    out = authzen.search_actions(data, subject, resource, context, eng, _default_workspace(), page)
    return _json(out.as_json())


@bp.get(WELL_KNOWN)
@api_doc("AuthZEN PDP metadata: the base URL and every endpoint.", tags=["authzen"], response=AzMetadata)
def configuration() -> Response:
    """PDP metadata; ``AUTHZEN_PDP_URL`` overrides the base URL (else the URL this request reached)."""
    base = str(current_app.config.get("AUTHZEN_PDP_URL") or request.host_url).rstrip("/")
    body = {
        "policy_decision_point": base,
        **{k: base + path for k, path in ENDPOINTS.items()},
        "learnauthz_options": OPTIONS,
    }
    resp = _json(body)
    resp.headers["Cache-Control"] = "public, max-age=300"
    return resp
