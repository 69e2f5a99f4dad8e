"""Request parsing for every blueprint: JSON bodies, schema validation, path ids, query parameters.

Every integer and every id read from a request goes through here (or through
:mod:`app.inputs`, which these use), so the rules live in one place: ASCII digits only,
ids in 1..2^31-1 (PostgreSQL ``INTEGER``), text without NUL. Bad query values are 422 problems;
path ids that cannot exist do not match the route (404).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson
from flask import g, request
from flask.blueprints import BlueprintSetupState
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError
from werkzeug.routing import IntegerConverter

from app.decisions.resolution import require_held
from app.errors import BadRequestError, NotFoundError, UnauthenticatedError, UnsupportedMediaTypeError, ValidationError
from app.extensions import authz, db
from app.inputs import MAX_ID, check_text, is_id, parse_int
from app.policy import tokens

M = TypeVar("M", bound=BaseModel)


def pydantic_errors(exc: PydanticValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors as JSON-safe problem entries (location, message, type)."""
    out = []
    for err in exc.errors(include_url=False, include_context=False, include_input=False):
        out.append({"loc": [str(p) for p in err["loc"]], "message": err["msg"], "type": err["type"]})
    return out


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


def parse_json(raw: bytes) -> Any:
    """The one JSON parser of every request body, which must be I-JSON (RFC 7493): BadRequestError
    (400) if malformed, not UTF-8, nested too deeply, holding a lone surrogate or NaN, or if any
    object repeats a key. Parsers disagree on duplicates (msgspec and orjson keep the last, others
    the first), so a PEP and this service could read two different requests: refuse them."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequestError(f"malformed JSON: {exc}") from None
    if not members_unique(raw, _members(doc)):
        try:
            json.loads(raw, object_pairs_hook=_unique_pairs)  # the exact test, to name the key
        except _DuplicateKey as exc:
            raise BadRequestError(
                f"duplicate key {exc.key!r} in a JSON object: send each key once",
                errors=[{"loc": [], "message": f"duplicate key {exc.key!r}", "type": "duplicate_key"}],
            ) from None
        except RecursionError:
            raise BadRequestError("malformed JSON: nested too deeply") from None
    return doc


def _members(doc: Any) -> int:
    """Members of every object in a parsed document (without recursion: documents may be deep)."""
    n = 0
    stack = [doc]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            n += len(x)
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)
    return n


def members_unique(raw: bytes, counted: int) -> bool:
    """True when ``raw`` certainly has no duplicate key, given ``counted``: how many members its decoded
    value provably holds (a lower bound: every member the decoder filled from a non-default value).

    For the decision fast path, where msgspec keeps the last of two equal keys: ``counted`` ≤ distinct
    keys ≤ members ≤ colons outside strings ≤ colons in ``raw``, so equal ends mean no duplicate. A
    body with colons inside strings (``user:42``) and no backslash has its outside colons counted
    exactly (every ``"`` then delimits a string). False means "not certain": parse_json decides."""
    if raw.count(b":") == counted:
        return True
    if b"\\" in raw:
        return False
    return b"".join(raw.split(b'"')[::2]).count(b":") == counted


def json_payload() -> Any:
    """The request body parsed as JSON (:func:`parse_json`); 415 if not JSON, 400 if malformed."""
    if not request.is_json:
        raise UnsupportedMediaTypeError("send the body as application/json")
    return parse_json(request.get_data(cache=True))


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
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    challenge = {"WWW-Authenticate": f'Bearer realm="{realm}"'}
    if scheme.lower() != "bearer" or not secret.strip():
        raise UnauthenticatedError("send a service token: Authorization: Bearer <token>", headers=challenge)
    token = tokens.authenticate(db.session(), secret.strip())
    if token is None:
        raise UnauthenticatedError("the service token is invalid or revoked", headers=challenge)
    request.environ["learnauthz.service_token"] = token.name
    g.service_token = token
    return token


def bound_to(workspaces: Sequence[str], eng: Any, where: Callable[[int], str] | None = None) -> None:
    """421 problem naming the workspaces this process does not hold (a partition), then 403 unless the
    request's service token (``g.service_token``) is bound to every workspace."""
    require_held(authz.selection, workspaces)
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
    """The JSON body: 415 if not JSON, 400 if malformed, nested too deeply or repeating a key."""
    return json_payload()


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
