"""JSON APIs. This module holds the OpenAPI metadata a view declares once with :func:`api_doc`;
the same schemas validate its input and describe it in ``/openapi.json``: msgspec structs for
request bodies (:mod:`app.api.bodies`), pydantic models for the policy API's bodies, query strings
and responses (:mod:`app.api.params`: ``parse_body``, ``parse_query``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from msgspec import Struct
from pydantic import BaseModel

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class ApiDoc:
    """What /openapi.json says about one view."""

    summary: str
    tags: tuple[str, ...] = ()
    body: type[BaseModel] | type[Struct] | None = None
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
    body: type[BaseModel] | type[Struct] | None = None,
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


def body_doc(body: type[Struct]) -> Callable[[F], F]:
    """OpenAPI metadata of a web-client view taking a typed body: its docstring's first line as the
    summary, the body's schema, the session cookie, the body's problems."""

    def deco(fn: F) -> F:
        summary = (fn.__doc__ or fn.__name__).strip().splitlines()[0]
        fn.__api_doc__ = ApiDoc(summary, body=body, auth="session", errors=(400, 415, 422))  # type: ignore[attr-defined]
        return fn

    return deco
