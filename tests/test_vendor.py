"""The pages' library (Alpine.js, CSP build) is served from the project at a pinned version, and the
pages stay within the strict CSP: module scripts from 'self' only, no inline code, no eval."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from flask import Flask

from app.security import CSP
from tests.test_security import _Inline

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "app/web/static"
TEMPLATES = ROOT / "app/web/templates"
ALPINE = "vendor/alpine-csp-3.17.4.esm.min.js"
# dist/module.esm.min.js of https://registry.npmjs.org/@alpinejs/csp/-/csp-3.17.4.tgz
ALPINE_SHA256 = "8f73b4b31013b6ae48a556c5143fcfd73e19e63f407f3d45100860e333f38a99"


def test_served_alpine_matches_the_recorded_sha256(app: Flask) -> None:
    with app.test_client().get(f"/static/web/{ALPINE}") as resp:
        assert resp.status_code == 200
        assert hashlib.sha256(resp.get_data()).hexdigest() == ALPINE_SHA256
        assert "javascript" in resp.headers["Content-Type"]
    readme = (STATIC / "vendor/README.md").read_text(encoding="utf-8")
    assert ALPINE_SHA256 in readme and "3.17.4" in readme
    assert (STATIC / "vendor/LICENSE-alpinejs.md").read_text(encoding="utf-8").startswith("# MIT License")


def test_the_pages_import_the_vendored_file_and_it_ships() -> None:
    lib = (STATIC / "lib.js").read_text(encoding="utf-8")
    assert re.findall(r'from "\./(vendor/[^"]+)"', lib) == [ALPINE]
    for module in ("app.js", "policy.js"):
        imports = re.findall(r'from "([^"]+)"', (STATIC / module).read_text(encoding="utf-8"))
        assert imports == ["./lib.js"], (module, imports)  # no other page script, no CDN
    assert '"web/static/vendor/*"' in (ROOT / "pyproject.toml").read_text(encoding="utf-8")


def test_the_csp_still_forbids_eval_and_the_library_needs_none() -> None:
    assert "script-src 'self';" in CSP and "unsafe-eval" not in CSP and "unsafe-inline" not in CSP
    code = (STATIC / ALPINE).read_text(encoding="utf-8")
    assert "new Function" not in code and "eval(" not in code


def test_templates_hold_no_inline_code() -> None:
    """Alpine attributes (x-*, @event, :attr) name component state; no on*= handler, style or inline
    script, and no x-html (the CSP build refuses it)."""
    for path in sorted(TEMPLATES.glob("*.html")):
        parser = _Inline()
        text = path.read_text(encoding="utf-8")
        parser.feed(text)
        assert parser.problems == [], (path.name, parser.problems)
        assert "x-html" not in text and "javascript:" not in text, path.name


def test_login_page_loads_only_its_module(app: Flask) -> None:
    resp = app.test_client().get("/login")
    assert resp.status_code == 200
    parser = _Inline()
    parser.feed(resp.get_data(as_text=True))
    assert parser.problems == [] and parser.scripts == ["/static/web/app.js"]
    assert '<script type="module"' in resp.get_data(as_text=True)
