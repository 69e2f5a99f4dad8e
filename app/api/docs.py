"""``/openapi.json`` for every endpoint of the app, and ``/docs``, a self-contained page that renders it.

Views declared with :func:`app.api.api_doc` contribute their pydantic schemas (the same models that
validate their input). Every other route (web-client API, pages) is described from the Flask url
map: path parameters, methods, and the first line of the view's docstring as the summary.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify
from pydantic import BaseModel

from app.api import ApiDoc, api_doc

bp = Blueprint("docs", __name__)

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
    422: "Validation failed",
    503: "Unavailable (policy not loaded, or min_revision not reached in time)",
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

    def ref(self, model: type[BaseModel], mode: str) -> dict[str, Any]:
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
        if rule.endpoint == "static" or rule.endpoint.startswith("web."):  # HTML pages are not API
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
@api_doc("A page that renders /openapi.json (self-contained, no CDN).", tags=["docs"])
def docs_page() -> Response:
    """An HTML page rendering /openapi.json."""
    return Response(DOCS_HTML, mimetype="text/html")


DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>learnauthz API</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d232a;background:#fafbfc}
header{padding:16px 24px;background:#1d3557;color:#fff}header h1{margin:0;font-size:20px}
main{max-width:1100px;margin:0 auto;padding:16px 24px}
h2{margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px;text-transform:capitalize}
details{background:#fff;border:1px solid #e1e4e8;border-radius:6px;margin:8px 0}
summary{cursor:pointer;padding:8px 12px;display:flex;gap:12px;align-items:baseline}
.m{font:600 12px monospace;padding:2px 8px;border-radius:4px;color:#fff;min-width:52px;text-align:center}
.get{background:#2a9d8f}.post{background:#457b9d}.delete{background:#e63946}.put,.patch{background:#f4a261}
code,pre{font-family:ui-monospace,monospace;font-size:13px}.body{padding:0 16px 12px}
pre{background:#f3f4f6;padding:8px;border-radius:4px;overflow:auto;max-height:360px}
table{border-collapse:collapse}td,th{border:1px solid #e1e4e8;padding:4px 8px;text-align:left;vertical-align:top}
#filter{padding:6px 10px;width:320px;border:1px solid #ccc;border-radius:4px}
</style></head><body>
<header><h1>learnauthz API</h1><div id="desc"></div></header>
<main><p><input id="filter" placeholder="filter by path or summary"> <a href="/openapi.json">openapi.json</a></p>
<div id="out">Loading…</div></main>
<script>
"use strict";
function el(tag, attrs, ...kids){const e=document.createElement(tag);
  for(const [k,v] of Object.entries(attrs||{})){e.setAttribute(k,v);}
  for(const k of kids){e.append(k instanceof Node?k:document.createTextNode(String(k)));}return e;}
function resolve(spec, s){return s&&s.$ref?spec.components.schemas[s.$ref.split("/").pop()]:s;}
function render(spec){
  document.getElementById("desc").textContent=spec.info.description||"";
  const groups={};
  for(const [path,ops] of Object.entries(spec.paths)){for(const [method,op] of Object.entries(ops)){
    const tag=(op.tags||["other"])[0];(groups[tag]=groups[tag]||[]).push([path,method,op]);}}
  const out=document.getElementById("out");out.textContent="";
  for(const tag of Object.keys(groups).sort()){
    out.append(el("h2",{},tag));
    for(const [path,method,op] of groups[tag]){
      const d=el("details",{"data-q":(path+" "+op.summary).toLowerCase()});
      d.append(el("summary",{},el("span",{class:"m "+method},method.toUpperCase()),
        el("code",{},path),el("span",{},op.summary||"")));
      const body=el("div",{class:"body"});
      if(op.description){body.append(el("p",{},op.description));}
      if(op.security){body.append(el("p",{},"Auth: "+op.security.map(s=>Object.keys(s)[0]).join(", ")));}
      if(op.parameters){
        const t=el("table",{},el("tr",{},el("th",{},"parameter"),el("th",{},"in"),
          el("th",{},"required"),el("th",{},"schema")));
        for(const p of op.parameters){
          t.append(el("tr",{},el("td",{},el("code",{},p.name)),el("td",{},p.in),
            el("td",{},p.required?"yes":""),el("td",{},el("code",{},JSON.stringify(p.schema)))));}
        body.append(t);}
      if(op.requestBody){const s=op.requestBody.content["application/json"].schema;
        body.append(el("p",{},"Request body"),el("pre",{},JSON.stringify(resolve(spec,s),null,2)));}
      for(const [code,r] of Object.entries(op.responses||{})){
        const c=r.content&&Object.values(r.content)[0];
        body.append(el("p",{},"Response "+code+": "+(r.description||"")));
        if(c&&c.schema&&code<"400"){body.append(el("pre",{},JSON.stringify(resolve(spec,c.schema),null,2)));}}
      d.append(body);out.append(d);}}
}
document.getElementById("filter").addEventListener("input",e=>{const q=e.target.value.toLowerCase();
  for(const d of document.querySelectorAll("details")){d.style.display=d.dataset.q.includes(q)?"":"none";}});
fetch("/openapi.json").then(r=>r.json()).then(render)
  .catch(e=>{document.getElementById("out").textContent="Cannot load /openapi.json: "+e;});
</script></body></html>
"""
