"""JSON APIs. Shared helpers: request parsing through pydantic schemas and OpenAPI metadata.

A view declares its schemas once with :func:`api_doc`; the same models validate its input
(:func:`parse_body`, :func:`parse_query`) and describe it in ``/openapi.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import json, request
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from app.errors import BadRequestError, UnsupportedMediaTypeError, ValidationError

M = TypeVar("M", bound=BaseModel)
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ApiDoc:
    """What /openapi.json says about one view."""

    summary: str
    tags: tuple[str, ...] = ()
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: str = ""  # "" | "token" | "session"
    errors: tuple[int, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


def api_doc(
    summary: str,
    *,
    tags: Sequence[str] = (),
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    auth: str = "",
    errors: Sequence[int] = (),
) -> Callable[[F], F]:
    """Attach OpenAPI metadata to a view function."""

    def deco(fn: F) -> F:
        fn.__api_doc__ = ApiDoc(summary, tuple(tags), body, query, response, status, auth, tuple(errors))  # type: ignore[attr-defined]
        return fn

    return deco


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
    """The JSON body validated by model."""
    data = json_payload()
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object", errors=[{"loc": [], "message": "expected an object"}])
    return validate(model, data)


def parse_query(model: type[M]) -> M:
    """The query string validated by model (single values; unknown parameters refused)."""
    return validate(model, {k: v for k, v in request.args.items()})
