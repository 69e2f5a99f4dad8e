"""``/openapi.json`` for every endpoint of the app, and ``/docs``, a self-contained page that renders it.

Views declared with :func:`app.api.api_doc` contribute their schemas (the same msgspec structs and
pydantic models that validate their input). Every other route (web-client API, pages) is described from the Flask url
map: path parameters, methods, and the first line of the view's docstring as the summary.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from flask import Blueprint, Flask, Response, current_app, jsonify
from pydantic import BaseModel

from app import idempotency
from app.api import ApiDoc, api_doc

# The page's script and style are files (no inline code: the CSP of every response forbids it).
bp = Blueprint("docs", __name__, static_folder="static", static_url_path="/static/docs")

_PARAM = re.compile(r"<(?:(?P<conv>[a-z]+)(?:\([^)]*\))?:)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)>")
_CONV_TYPES = {
    "int": {"type": "integer"},
    "id": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
    "float": {"type": "number"},
    "path": {"type": "string"},
}
_STATUS_TEXT = {
    400: "Malformed request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    409: "Conflict",
    413: "Too many items",
    415: "Body is not JSON",
    422: "Validation failed (also: a min_revision that does not exist yet)",
    429: "Rate limited (Retry-After says when to try again)",
    503: "Unavailable (policy not loaded, or an existing min_revision not reached in time)",
}


def _problem_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "RFC 9457 problem details",
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "errors": {"type": "array", "items": {"type": "object"}},
            "problems": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["type", "title", "status"],
    }


class _Components:
    """Collects model schemas under #/components/schemas."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {"Problem": _problem_schema()}

    def ref(self, model: type[BaseModel] | type[msgspec.Struct], mode: str) -> dict[str, Any]:
        if issubclass(model, msgspec.Struct):  # a request body (app.api.bodies)
            (top,), components = msgspec.json.schema_components([model], ref_template="#/components/schemas/{name}")
            for name, sub in components.items():
                self.schemas.setdefault(name, sub)
            return dict(top)
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode=mode)  # type: ignore[arg-type]
        for name, sub in schema.pop("$defs", {}).items():
            self.schemas.setdefault(name, sub)
        self.schemas.setdefault(model.__name__, schema)
        return {"$ref": f"#/components/schemas/{model.__name__}"}


def _query_params(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        prop.pop("title", None)
        out.append({"name": name, "in": "query", "required": name in required, "schema": prop})
    return out


def build_spec(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route of app."""
    comps = _Components()
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static" or rule.endpoint.startswith(("web.", "workbench.")):  # HTML pages are not API
            continue
        view = app.view_functions.get(rule.endpoint)
        if view is None:
            continue
        doc: ApiDoc | None = getattr(view, "__api_doc__", None)
        path = _PARAM.sub(lambda m: "{" + m.group("name") + "}", rule.rule)
        params = [
            {
                "name": m.group("name"),
                "in": "path",
                "required": True,
                "schema": _CONV_TYPES.get(m.group("conv") or "", {"type": "string"}),
            }
            for m in _PARAM.finditer(rule.rule)
        ]
        docstring = (view.__doc__ or "").strip()
        summary = doc.summary if doc else (docstring.splitlines()[0] if docstring else rule.endpoint)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            op: dict[str, Any] = {
                "operationId": f"{rule.endpoint}.{method.lower()}",
                "summary": summary,
                "tags": list(doc.tags) if doc and doc.tags else [rule.endpoint.split(".")[0]],
            }
            if docstring and docstring.splitlines()[0] != summary:
                op["description"] = docstring
            op_params = list(params)
            if doc and doc.query:
                op_params += _query_params(doc.query)
            if method in idempotency.WRITE_METHODS and idempotency.takes_key(view):
                op_params.append(idempotency.header_parameter())
            if op_params:
                op["parameters"] = op_params
            if doc and doc.body:
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": comps.ref(doc.body, "validation")}},
                }
            ok: dict[str, Any] = {"description": "Success"}
            if doc and doc.response:
                ok["content"] = {"application/json": {"schema": comps.ref(doc.response, "serialization")}}
            responses: dict[str, Any] = {str(doc.status if doc else 200): ok}
            for code in doc.errors if doc else ():
                responses[str(code)] = {
                    "description": _STATUS_TEXT.get(code, "Error"),
                    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
                }
            op["responses"] = responses
            if doc and doc.auth == "token":
                op["security"] = [{"serviceToken": []}]
            elif doc and doc.auth == "session":
                op["security"] = [{"session": []}]
            paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "learnauthz",
            "version": "1",
            "description": "Authorization service for multi-tenant learning platforms: decision API, policy API, "
            "web-client API.",
        },
        "paths": paths,
        "components": {
            "schemas": comps.schemas,
            "securitySchemes": {
                "serviceToken": {"type": "http", "scheme": "bearer", "description": "flask token create NAME"},
                "session": {"type": "apiKey", "in": "cookie", "name": "session"},
            },
        },
    }


@bp.get("/openapi.json")
@api_doc("This OpenAPI document.", tags=["docs"])
def openapi() -> Response:
    """The OpenAPI 3.1 document of every endpoint."""
    spec = current_app.extensions.get("openapi_spec")
    if spec is None:
        spec = current_app.extensions["openapi_spec"] = build_spec(current_app._get_current_object())  # type: ignore[attr-defined]
    return jsonify(spec)


@bp.get("/docs")
@api_doc("A page that renders /openapi.json (own script and style files, no CDN, no inline code).", tags=["docs"])
def docs_page() -> Response:
    """An HTML page rendering /openapi.json."""
    return Response(DOCS_HTML, mimetype="text/html")


DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>learnauthz API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/docs/docs.css">
<script src="/static/docs/docs.js" defer></script>
</head><body>
<header><h1>learnauthz API</h1><div id="desc"></div></header>
<main><p><input id="filter" placeholder="filter by path or summary"> <a href="/openapi.json">openapi.json</a></p>
<div id="out">Loading…</div></main>
</body></html>
"""
