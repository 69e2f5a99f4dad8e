"""HTTP-level protections (issue 9): security headers on every response, Secure cookies and HSTS
over https, /docs without inline code, safe ``next`` redirects, rate limits on the JSON APIs
(memory and Redis storage), and ``min_revision`` past the head answered at once without starving
health checks."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app.extensions import authz, db
from app.policy import tokens
from app.security import HEADERS
from app.web.pages import safe_next
from tests.conftest import make_app
from tests.factories import PASSWORD, WebClient, create_user, fast_password_hashing

REDIS_URL = "redis://127.0.0.1:6379"


def service_token(name: str = "svc") -> str:
    """A committed service token's secret."""
    _, secret = tokens.create_token(db.session(), name, all_workspaces=True)
    db.session.commit()
    return secret


# -- headers and cookies ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", ["/openapi.json", "/docs", "/static/docs/docs.js", "/healthz", "/api/auth/me", "/login", "/nowhere"]
)
def test_security_headers_on_every_response(app: Flask, path: str) -> None:
    """Issue 9 (7): pages, /docs, /openapi.json, the JSON APIs and errors all carry the same headers."""
    with app.test_client().get(path) as resp:
        for name, value in HEADERS.items():
            assert resp.headers.get(name) == value, (path, name)
        assert "Strict-Transport-Security" not in resp.headers  # plain http (PUBLIC_URL is http)


def test_decision_api_has_the_headers(app: Flask) -> None:
    """The decision API too (also on its 401)."""
    client = app.test_client()
    body = {"subject": 1, "workspace": "x", "action": "y"}
    resp = client.post("/v1/check", json=body)
    assert resp.status_code == 401
    assert all(resp.headers.get(k) == v for k, v in HEADERS.items())
    token = {"Authorization": f"Bearer {service_token()}"}
    for _ in range(2):  # the view (a token this process has not seen yet), then the WSGI fast path
        resp = client.post("/v1/check", json=body, headers=token)
        assert resp.status_code == 200 and resp.get_json()["allowed"] is False, resp.get_json()
        assert all(resp.headers.get(k) == v for k, v in HEADERS.items()), dict(resp.headers)


@pytest.mark.parametrize(
    ("extra", "secure"),
    [
        ({"PUBLIC_URL": "https://authz.example.org"}, True),
        ({"PUBLIC_URL": "http://127.0.0.1:5000"}, False),
        ({"PUBLIC_URL": "http://127.0.0.1:5000", "SECURE_COOKIES": "true"}, True),
        ({"PUBLIC_URL": "https://authz.example.org", "SECURE_COOKIES": "false"}, False),
    ],
)
def test_secure_cookies_and_hsts_over_https(database_url: str, extra: dict[str, str], secure: bool) -> None:
    """Issue 9 (7): cookies are Secure and HSTS is sent when PUBLIC_URL is https (or by SECURE_COOKIES)."""
    https = make_app(database_url, **extra)
    with https.app_context():
        fast_password_hashing()
        create_user("sec@example.org")
        base = "https://localhost" if secure else "http://localhost"
        client = https.test_client()
        WebClient._fresh_g()
        token = client.get("/api/auth/csrf", base_url=base).get_json()["csrf_token"]
        WebClient._fresh_g()
        resp = client.post(
            "/api/auth/signin",
            json={"email": "sec@example.org", "password": PASSWORD},
            base_url=base,
            # over https flask-wtf also checks that the Referer is this origin
            headers={"X-CSRFToken": token, "Referer": base + "/login"},
        )
        assert resp.status_code == 200, resp.get_json()
        cookie = resp.headers["Set-Cookie"]
        assert ("; Secure" in cookie) is secure and "HttpOnly" in cookie and "SameSite=Lax" in cookie
        assert ("Strict-Transport-Security" in resp.headers) is secure
        if secure:
            assert resp.headers["Strict-Transport-Security"].startswith("max-age=31536000")
        db.session.remove()
        db.engine.dispose()


class _Inline(HTMLParser):
    """Collects what a strict CSP would block: inline scripts, style elements/attributes, handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.scripts: list[str] = []
        self._in_script = False
        self._data_block = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and names.get("type") == "application/json":
            # a data block (the reason words a page shows): never executed, CSP does not apply;
            # it must parse as JSON (handle_data), and it may not carry a src
            self._data_block = True
            if names.get("src"):
                self.problems.append("data block with src")
            return
        if tag == "script":
            self._in_script = True
            if not names.get("src"):
                self.problems.append("script without src")
            else:
                self.scripts.append(str(names["src"]))
        if tag == "style":
            self.problems.append("style element")
        self.problems += [f"{tag} {n}=" for n in names if n == "style" or n.startswith("on")]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"
        self._data_block = self._data_block and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._data_block:
            text = data.strip()
            if text.startswith("{{") and text.endswith("|tojson }}"):
                return  # a template's source: Jinja's tojson writes the JSON
            try:
                json.loads(text)
            except ValueError:
                self.problems.append("data block that is not JSON")
            return
        if self._in_script and data.strip():
            self.problems.append("inline script code")


def test_docs_has_no_inline_code(app: Flask) -> None:
    """Issue 9 (7): /docs loads its script and style as files, allowed by the pages' CSP."""
    client = app.test_client()
    resp = client.get("/docs")
    assert resp.status_code == 200 and "script-src 'self'" in resp.headers["Content-Security-Policy"]
    parser = _Inline()
    parser.feed(resp.get_data(as_text=True))
    assert parser.problems == [] and parser.scripts == ["/static/docs/docs.js"]
    for asset in ("/static/docs/docs.js", "/static/docs/docs.css"):
        with client.get(asset) as static:
            assert static.status_code == 200


# -- next redirects ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw",
    [
        "/\t/evil.example/pwned",  # issue 9 (3): browsers drop the TAB: //evil.example
        "/\n/evil.example",
        "/\r/evil.example",
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/\\/evil.example",
        "http://evil.example/",
        "https:evil.example",
        "javascript:alert(1)",
        "evil.example",
        " /w/x",
        "/ /evil",
        "/\x00",
        "/\x7f",
        "/\u2028//evil.example",
        "/\u00a0",
        "/" + "a" * 600,
        "",
        None,
    ],
)
def test_unsafe_next_becomes_root(raw: str | None) -> None:
    """Only a same-origin relative path passes."""
    assert safe_next(raw) == "/"


@pytest.mark.parametrize("raw", ["/", "/w/classroom-demo/members", "/w/x/members?q=a&page=2", "/me#top", "/%09/x"])
def test_safe_next_keeps_local_paths(raw: str) -> None:
    """Local paths (percent-encoded text stays a path on this origin) are kept."""
    assert safe_next(raw) == raw


def test_login_page_drops_an_unsafe_next(app: Flask) -> None:
    """The sign-in form never carries an off-site target (the browser test follows it for real)."""
    resp = app.test_client().get("/login?next=/%09/evil.example/pwned")
    assert resp.status_code == 200 and 'data-next="/"' in resp.get_data(as_text=True)


# -- rate limits on the JSON APIs -------------------------------------------------------------------
def test_web_api_rate_limit_per_client(app: Flask) -> None:
    """API_RATE_LIMIT per client on /api/... (429 + Retry-After); another client and /healthz are not counted."""
    app.config["API_RATE_LIMIT"] = "3 per minute"
    client = app.test_client()
    assert [client.get("/api/auth/csrf").status_code for _ in range(3)] == [200, 200, 200]
    resp = client.get("/api/auth/me")
    assert resp.status_code == 429 and resp.mimetype == "application/problem+json"
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    other = app.test_client().get("/api/auth/csrf", environ_base={"REMOTE_ADDR": "192.0.2.1"})
    assert other.status_code == 200
    assert all(client.get("/healthz").status_code == 200 for _ in range(5))


def test_decision_api_rate_limit_per_token(database_url: str) -> None:
    """DECISION_RATE_LIMIT (when set) per token on /v1/...: one token's burst does not throttle another."""
    limited = make_app(database_url, DECISION_RATE_LIMIT="2 per minute")
    with limited.app_context():
        a, b = service_token("a"), service_token("b")
        client = limited.test_client()
        body = {"subject": 1, "workspace": "x", "action": "y"}

        def check(token: str) -> int:
            return int(client.post("/v1/check", json=body, headers={"Authorization": f"Bearer {token}"}).status_code)

        assert [check(a), check(a), check(a)] == [200, 200, 429]
        assert check(b) == 200
        db.session.remove()
        db.engine.dispose()


def test_default_limits_do_not_throttle_normal_use(app: Flask) -> None:
    """The defaults: 500 decisions in a row from one token all answer (no decision-API limit unless
    DECISION_RATE_LIMIT is set), and the limiter is not even consulted for them."""
    assert app.config["DECISION_RATE_LIMIT"] == ""
    token = service_token()
    client = app.test_client()
    body = {"subject": 1, "workspace": "x", "action": "y"}
    codes = {
        client.post("/v1/check", json=body, headers={"Authorization": f"Bearer {token}"}).status_code
        for _ in range(500)
    }
    assert codes == {200}


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The Redis server at 127.0.0.1:6379 (skipped without it; CI's .ci/run starts one)."""
    import redis

    conn = redis.Redis.from_url(REDIS_URL)
    try:
        conn.ping()
    except redis.RedisError as exc:
        from tests.conftest import IN_CI

        if IN_CI:
            pytest.fail(f"CI=true requires Redis at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    yield REDIS_URL
    conn.close()


def test_rate_limits_shared_through_redis(database_url: str, redis_url: str) -> None:
    """RATELIMIT_STORAGE_URI=redis://...: the counters live in Redis, so every process and host
    behind the same Redis shares one budget per client."""
    import redis

    prefix = f"test-{uuid.uuid4().hex[:8]}"
    cfg = {"RATELIMIT_STORAGE_URI": redis_url, "RATELIMIT_KEY_PREFIX": prefix, "API_RATE_LIMIT": "4 per minute"}
    one, two = make_app(database_url, **cfg), make_app(database_url, **cfg)
    try:
        codes = [one.test_client().get("/api/auth/csrf").status_code for _ in range(2)]
        codes += [two.test_client().get("/api/auth/csrf").status_code for _ in range(3)]
        assert codes == [200, 200, 200, 200, 429]
        conn = redis.Redis.from_url(redis_url)
        keys = list(conn.scan_iter(match=f"*{prefix}*"))
        assert keys, "no rate-limit counter in Redis"
        conn.delete(*keys)
        conn.close()
    finally:
        for a in (one, two):
            with a.app_context():
                db.engine.dispose()


# -- min_revision past the head -------------------------------------------------------------------
@pytest.fixture
def single_worker(app: Flask) -> Iterator[tuple[str, str]]:
    """The app served by ONE non-threaded werkzeug worker (like one gunicorn sync worker), and a token."""
    from werkzeug.serving import make_server

    token = service_token()
    authz.engine  # noqa: B018 - load before serving
    server = make_server("127.0.0.1", 0, app, threaded=False)
    thread = threading.Thread(target=server.serve_forever, name="single-worker", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", token
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_far_future_min_revision_cannot_starve_health_checks(single_worker: tuple[str, str]) -> None:
    """Issue 9 (6): 16 requests for a revision that does not exist used to hold the worker 2 s
    each (/healthz took 12 s); now each is a 422 at once and /healthz answers right away."""
    import requests

    base, token = single_worker
    future = authz.engine.revision + 10_000
    body: dict[str, Any] = {"subject": 1, "workspace": "x", "action": "y", "min_revision": future}

    def far() -> int:
        r = requests.post(f"{base}/v1/check", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        return int(r.status_code)

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=17) as pool:
        futures = [pool.submit(far) for _ in range(16)]
        time.sleep(0.05)
        health_start = time.monotonic()
        health = requests.get(f"{base}/healthz", timeout=30)
        health_seconds = time.monotonic() - health_start
        codes = [f.result() for f in futures]
    assert health.status_code == 200 and health_seconds < 1.5, health_seconds
    assert codes == [422] * 16
    assert time.monotonic() - start < 3.0


def test_docs_static_is_packaged() -> None:
    """The docs assets ship with the package (pyproject package-data)."""
    root = Path(__file__).resolve().parent.parent
    assert (root / "app/api/static/docs.js").is_file() and "api/static/*" in (root / "pyproject.toml").read_text()


def test_local_storage_counts_expires_and_starts_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """local:// (the default) counts like memory:// but without a sweeper thread per burst (which
    cost the API 3-7 ms at p99); expired counters are dropped when read and swept inline."""
    from limits import parse
    from limits.storage import storage_from_string
    from limits.strategies import FixedWindowRateLimiter

    from app.security import LocalStorage

    storage = storage_from_string("local://")
    assert isinstance(storage, LocalStorage)
    limiter = FixedWindowRateLimiter(storage)
    item = parse("2 per second")
    assert [limiter.hit(item, "k") for _ in range(3)] == [True, True, False]
    time.sleep(0.05)  # memory://'s 10 ms timer has finished: its next hit would start another thread
    before = threading.active_count()
    for n in range(50):
        limiter.hit(parse("5 per second"), f"other-{n}")
    assert threading.active_count() <= before  # no timer thread started
    time.sleep(1.1)
    assert limiter.hit(item, "k")  # the window expired
    monkeypatch.setattr(LocalStorage, "SWEEP_SECONDS", 0.0)
    storage._next_sweep = 0.0  # type: ignore[attr-defined]
    limiter.hit(item, "k")
    assert len(storage.storage) == 1  # the 50 expired counters were swept
