"""/openapi.json covers every route of the app, from the same schemas that validate requests; /docs renders it."""

from __future__ import annotations

import re

import msgspec
from flask import Flask
from flask.testing import FlaskClient

from app.api.decision import BatchRequest, CheckRequest


def test_openapi_covers_every_route(client: FlaskClient, app: Flask) -> None:
    resp = client.get("/openapi.json")
    assert resp.status_code == 200
    spec = resp.get_json()
    assert spec["openapi"].startswith("3.1")
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.startswith(("web.", "workbench.")):
            continue
        path = re.sub(r"<(?:[a-z]+(?:\([^)]*\))?:)?([A-Za-z_]\w*)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, (path, method)
    for ops in spec["paths"].values():
        for op in ops.values():
            assert op["summary"] and op["responses"]


def test_request_schemas_are_the_validating_models(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    check = spec["paths"]["/v1/check"]["post"]
    assert check["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CheckRequest"
    }
    assert check["security"] == [{"serviceToken": []}]
    assert "422" in check["responses"] and "401" in check["responses"]
    schemas = spec["components"]["schemas"]
    assert schemas["CheckRequest"]["required"] == msgspec.json.schema(CheckRequest)["$defs"]["CheckRequest"]["required"]
    assert schemas["CheckRequest"]["required"] == ["subject", "workspace", "action"]
    assert schemas["CheckRequest"]["additionalProperties"] is False
    assert set(schemas["BatchRequest"]["properties"]) == set(BatchRequest.__struct_fields__)
    params = {p["name"] for p in spec["paths"]["/v1/who-can"]["get"]["parameters"]}
    assert {"workspace", "action", "limit", "cursor", "min_revision"} <= params
    proposal = spec["paths"]["/v1/policy/preview"]["post"]
    assert proposal["security"] == [{"session": []}]
    assert "ChangeIn" in schemas and "CheckAttributes" in schemas


def test_routes_without_schemas_use_docstrings(client: FlaskClient, app: Flask) -> None:
    spec = client.get("/openapi.json").get_json()
    undocumented = [
        (rule, app.view_functions[rule.endpoint])
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        and not rule.endpoint.startswith(("web.", "workbench."))
        and not hasattr(app.view_functions[rule.endpoint], "__api_doc__")
    ]
    for rule, view in undocumented:
        path = re.sub(r"<(?:[a-z]+(?:\([^)]*\))?:)?([A-Za-z_]\w*)>", r"{\1}", rule.rule)
        method = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})[0].lower()
        if view.__doc__:
            assert spec["paths"][path][method]["summary"] == view.__doc__.strip().splitlines()[0]


def test_docs_page_is_self_contained(client: FlaskClient) -> None:
    resp = client.get("/docs")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    html = resp.get_data(as_text=True)
    assert "/openapi.json" in html
    assert not re.search(r"""(src|href)=["']https?://""", html)  # no CDN: the machine has no internet
