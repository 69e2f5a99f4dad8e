"""Request parsing for every blueprint: JSON bodies, schema validation, path ids, query parameters.

Every integer and every id read from a request goes through here (or through
:mod:`app.services.inputs`, which these use), so the rules live in one place: ASCII digits only,
ids in 1..2^31-1 (PostgreSQL ``INTEGER``), text without NUL. Bad query values are 422 problems;
path ids that cannot exist do not match the route (404).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from flask import g, json, request
from flask.blueprints import BlueprintSetupState
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from werkzeug.routing import IntegerConverter

from app.errors import BadRequestError, NotFoundError, UnauthenticatedError, UnsupportedMediaTypeError, ValidationError
from app.services.inputs import MAX_ID, check_text, is_id, parse_int

M = TypeVar("M", bound=BaseModel)


def pydantic_errors(exc: PydanticValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors as JSON-safe problem entries (location, message, type)."""
    out = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        out.append({"loc": [str(p) for p in err["loc"]], "message": err["msg"], "type": err["type"]})
    return out


def json_payload() -> Any:
    """The request body parsed as JSON; 415 if not JSON, 400 if malformed."""
    if not request.is_json:
        raise UnsupportedMediaTypeError("send the body as application/json")
    raw = request.get_data(cache=True)
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise BadRequestError(f"malformed JSON: {exc}") from exc


def validate(model: type[M], data: Any) -> M:
    """data validated by model; ValidationError (422) listing every problem."""
    try:
        return model.model_validate(data)
    except PydanticValidationError as exc:
        raise ValidationError("the request does not match its schema", errors=pydantic_errors(exc)) from exc


def parse_body(model: type[M]) -> M:
    """The JSON object body validated by model (415/400 as json_document, 422 listing every problem)."""
    data = json_document()
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object", errors=[{"loc": [], "message": "expected an object"}])
    return validate(model, data)


def parse_query(model: type[M]) -> M:
    """The query string validated by model (single values; unknown parameters refused)."""
    return validate(model, {k: v for k, v in request.args.items()})


def service_token(realm: str) -> Any:
    """The service token of ``Authorization: Bearer <token>`` (a ``tokens.TokenIdentity``); 401 with a
    ``WWW-Authenticate`` challenge for ``realm`` when it is missing, unknown or revoked. Its name is
    left in the WSGI environ for the decision log, the identity (with its binding) in ``g.service_token``."""
    from app.extensions import db
    from app.services import tokens

    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    challenge = {"WWW-Authenticate": f'Bearer realm="{realm}"'}
    if scheme.lower() != "bearer" or not secret.strip():
        raise UnauthenticatedError("send a service token: Authorization: Bearer <token>", headers=challenge)
    token = tokens.authenticate(db.session, secret.strip())  # type: ignore[arg-type]
    if token is None:
        raise UnauthenticatedError("the service token is invalid or revoked", headers=challenge)
    request.environ["learnauthz.service_token"] = token.name
    g.service_token = token
    return token


def bound_to(workspaces: Sequence[str], eng: Any, where: Callable[[int], str] | None = None) -> None:
    """403 problem unless the request's service token (``g.service_token``) is bound to every workspace."""
    from app.services import tokens

    tokens.require_bound(g.service_token, workspaces, eng, where)


class IdConverter(IntegerConverter):
    """``<id:user_id>``: 1-18 ASCII digits in the path (other text does not match: 404).

    No range check here: werkzeug answers a converter's refusal with 405 when another rule takes
    the path with another method. The view passes the value through :func:`path_id`.
    """

    regex = r"[0-9]{1,18}"


def path_id(value: int) -> int:
    """A row id from the path; NotFoundError if no row can have it (0, or past MAX_ID)."""
    if not is_id(value):
        raise NotFoundError("not found")
    return value


def register_converters(state: BlueprintSetupState) -> None:
    """record_once hook: make ``<id:...>`` known before the blueprint's rules are added."""
    state.app.url_map.converters.setdefault("id", IdConverter)


def json_document() -> Any:
    """The JSON body: 415 if not JSON, 400 if malformed or nested too deeply for the parser."""
    try:
        return json_payload()
    except RecursionError:
        raise BadRequestError("malformed JSON: nested too deeply") from None


def json_object() -> dict[str, Any]:
    """The JSON body, which must be an object (400 otherwise)."""
    data = json_document()
    if not isinstance(data, dict):
        raise BadRequestError("the body must be a JSON object")
    return data


def query_int(name: str, default: int, lo: int, hi: int) -> int:
    """Query parameter name as an integer in lo..hi (ASCII digits); default if absent, 422 if invalid."""
    raw = request.args.get(name)
    if raw is None:
        return default
    value = parse_int(raw, lo, hi)
    if value is None:
        raise ValidationError(
            f"invalid query parameter {name}", errors=[{"field": name, "message": f"an integer {lo}-{hi}"}]
        )
    return value


def query_id(name: str) -> int | None:
    """Query parameter name as a row id (1..MAX_ID); None if absent, 422 if invalid."""
    if request.args.get(name) is None:
        return None
    return query_int(name, 0, 1, MAX_ID)


def query_text(name: str, max_len: int, default: str = "") -> str:
    """Query parameter name as text of at most max_len characters without control characters (422)."""
    raw = request.args.get(name, default)
    if len(raw) > max_len:
        raise ValidationError(
            f"{name} is too long", errors=[{"field": name, "message": f"at most {max_len} characters"}]
        )
    check_text(raw, name)
    return raw
