"""Typed request bodies: msgspec structs, decoded once, refused as the same problems everywhere.

A body is a msgspec ``Struct`` (``forbid_unknown_fields``, exact JSON types: ``true`` is not an
int, ``1.0`` is not an int, ``"1"`` is not an int). The struct validates the request and, through
``msgspec.json.schema_components`` (:mod:`app.api.docs`), describes it in ``/openapi.json``.

Refusals: not JSON → 415; not I-JSON (malformed, a repeated key, NaN, a lone surrogate, too deep)
→ 400 from :func:`app.api.params.parse_json`, the one JSON parser of the app; anything the struct
refuses → 422 ``the request does not match its schema`` with ``errors: [{loc, message, type}]``
(``loc`` the path of the field, e.g. ``["checks", "0", "action"]``; msgspec reports the first
problem it meets).
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from flask import request

from app.api.params import parse_json
from app.errors import BadRequestError, UnsupportedMediaTypeError, ValidationError

T = TypeVar("T")

SCHEMA_MISMATCH = "the request does not match its schema"
_AT = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_STEP = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_FIELD = re.compile(r"^Object (?:contains unknown|missing required) field `(?P<field>[^`]*)`")


def errors_of(exc: msgspec.ValidationError) -> list[dict[str, Any]]:
    """msgspec's refusal as problem entries: ``[{"loc": [...], "message": ..., "type": ...}]``."""
    m = _AT.match(str(exc))
    message = m.group("message") if m else str(exc)
    loc = [a or b for a, b in _STEP.findall(m.group("path") or "")] if m else []
    kind = "invalid"
    field = _FIELD.match(message)
    if field:
        loc.append(field.group("field"))
        kind = "missing" if "missing" in message else "unknown_field"
    return [{"loc": loc, "message": message, "type": kind}]


def not_an_object() -> ValidationError:
    """The 422 of a body that is JSON but not an object."""
    return ValidationError("the body must be a JSON object", errors=[{"loc": [], "message": "expected an object"}])


def convert(doc: Any, type_: type[T]) -> T:
    """An already parsed JSON document as ``type_`` (exact JSON types); 422 problems as above."""
    if not isinstance(doc, dict):
        raise not_an_object()
    try:
        return msgspec.convert(doc, type_, strict=True)
    except msgspec.ValidationError as exc:
        raise ValidationError(SCHEMA_MISMATCH, errors=errors_of(exc)) from None


def raw_json() -> bytes:
    """The request body's bytes; 415 unless it is JSON."""
    if not request.is_json:
        raise UnsupportedMediaTypeError("send the body as application/json")
    return request.get_data(cache=True)


def parse(type_: type[T]) -> T:
    """The request's JSON object body as ``type_``: 415 unless JSON, 400 if not I-JSON (repeated keys)
    or not an object (as every web-client API answered it), 422 what the struct refuses."""
    doc = parse_json(raw_json())
    if not isinstance(doc, dict):
        raise BadRequestError("the body must be a JSON object")
    return convert(doc, type_)
