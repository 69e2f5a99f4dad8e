"""HTTP-level protections: the real client address behind trusted proxies, rate limits, security
headers on every response, Secure cookies and HSTS over https.

* ``TRUSTED_PROXIES`` (default 0): how many reverse proxies in front of the app append to
  ``X-Forwarded-For`` / ``-Proto`` / ``-Host``; werkzeug's ProxyFix takes the client address from
  exactly that many hops and ignores what a client wrote itself. With 0 the socket's peer is the client.
* Rate limits (Flask-Limiter, storage ``RATELIMIT_STORAGE_URI``: ``local://`` per process by
  default (see :class:`LocalStorage`), ``redis://host:6379`` to share counters between processes
  and hosts):
  failed sign-ins per (account, client) and per client, each as layered windows (the wait grows
  with the failures), one generous budget per client on the web-client API (``API_RATE_LIMIT``)
  and, when ``DECISION_RATE_LIMIT`` is set, one per token on the decision API (off by default:
  evaluating a limit costs about as much as a decision). A refusal is a 429 problem with
  ``Retry-After``.
* ``SECURE_COOKIES`` (``auto`` = when ``PUBLIC_URL`` is https, or ``true``/``false``): Secure
  cookies and ``Strict-Transport-Security``.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from typing import Any

from flask import Flask, Response, current_app, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded
from limits.storage import MemoryStorage
from werkzeug.middleware.proxy_fix import ProxyFix

from app.api.params import json_document
from app.errors import AppError, problem

# Only our own files: no inline script or style, no third-party origin.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Paths of the decision API (bearer tokens); the policy-editor API under /v1/policy is a web client.
DECISION_PREFIXES = ("/v1/", "/access/", "/.well-known/authzen")
WEB_API_PREFIXES = ("/api/", "/v1/policy/")


class LocalStorage(MemoryStorage):
    """``local://``: limits' in-process counters without its sweeper thread.

    ``memory://`` starts a 10 ms timer thread whenever the last one has finished, i.e. about once
    per request at a few hundred requests per second, which cost the decision API 3-7 ms at p99.
    Here expired counters are dropped when read (as ``memory://`` does too) and swept inline at
    most once per second, so the memory stays bounded without a thread.
    """

    STORAGE_SCHEME = ["local"]
    SWEEP_SECONDS = 1.0

    def __init__(self, uri: str | None = None, wrap_exceptions: bool = False, **options: str) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.timer.cancel()
        self._next_sweep = 0.0
        self._sweep_lock = threading.Lock()

    def _MemoryStorage__schedule_expiry(self) -> None:  # replaces the timer thread of MemoryStorage
        now = time.monotonic()
        if now >= self._next_sweep and self._sweep_lock.acquire(blocking=False):
            try:
                self._next_sweep = now + self.SWEEP_SECONDS
                self._MemoryStorage__expire_events()  # type: ignore[attr-defined]
            finally:
                self._sweep_lock.release()


def client_address() -> str:
    """The client's address (after ProxyFix has applied the trusted proxies' X-Forwarded-For)."""
    return (request.remote_addr or "unknown")[:64]


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def signin_account() -> str:
    """The account a sign-in names (the normalised email from the JSON body), hashed; '' if none."""
    try:
        data = json_document()
    except (AppError, RecursionError, ValueError):
        return ""
    email = data.get("email") if isinstance(data, dict) else None
    return _digest(email.strip().lower()[:254]) if isinstance(email, str) and email.strip() else ""


def account_client_key() -> str:
    """Rate-limit key of failed sign-ins: (account, client). Another client is never locked out."""
    return f"{signin_account() or 'none'}@{client_address()}"


def token_or_client_key() -> str:
    """Rate-limit key on the decision API: the bearer credential (hashed), else the client address."""
    auth = request.headers.get("Authorization", "")
    return "t:" + _digest(auth) if auth else "a:" + client_address()


def failed(response: Response) -> bool:
    """deduct_when: only failed sign-ins (401) count; a throttled one (429) does not."""
    return response.status_code == 401


def _is_decision_api() -> bool:
    return request.path.startswith(DECISION_PREFIXES) and not request.path.startswith("/v1/policy/")


def _limits(app: Flask) -> Limiter:
    """This app's limiter (one per app: Flask-Limiter keeps its storage and key prefix on itself)."""
    limits = [
        ApplicationLimit(
            lambda: str(current_app.config["API_RATE_LIMIT"]),
            scope="web-api",
            exempt_when=lambda: not request.path.startswith(WEB_API_PREFIXES),
        )
    ]
    decision_limit = str(app.config.get("DECISION_RATE_LIMIT") or "")
    if decision_limit:
        limits.append(
            ApplicationLimit(
                decision_limit,
                key_function=token_or_client_key,
                scope="decision-api",
                exempt_when=lambda: not _is_decision_api(),
            )
        )
    limiter = Limiter(client_address, application_limits=list(limits))

    # Evaluating limits costs ~0.15 ms a request (measured): requests no limit applies to skip it.
    @limiter.request_filter
    def _unlimited() -> bool:
        path = request.path
        return not (path.startswith(WEB_API_PREFIXES) or (decision_limit and _is_decision_api()))

    limiter.init_app(app)
    # Failed sign-ins (deduct_when: only 401s count), per (account, client) and per client.
    signin: Any = app.view_functions.get("auth.signin")
    if signin is not None:
        signin = limiter.limit(
            lambda: str(current_app.config["SIGNIN_LIMIT_ACCOUNT_CLIENT"]),
            key_func=account_client_key,
            deduct_when=failed,
            scope="signin-account-client",
        )(signin)
        signin = limiter.limit(
            lambda: str(current_app.config["SIGNIN_LIMIT_CLIENT"]),
            key_func=client_address,
            deduct_when=failed,
            scope="signin-client",
        )(signin)
        app.view_functions["auth.signin"] = signin
    return limiter


def https_only(app: Flask) -> bool:
    """True when cookies must be Secure and HSTS sent (SECURE_COOKIES, or auto: PUBLIC_URL is https)."""
    raw = str(app.config.get("SECURE_COOKIES", "auto")).strip().lower()
    if raw == "auto":
        return str(app.config.get("PUBLIC_URL", "")).lower().startswith("https://")
    return raw in ("1", "true", "yes", "on")


def _retry_after() -> int:
    current = current_app.extensions["security"]["limiter"].current_limit
    if current is None:
        return 1
    reset: float = current.window[0]  # when the current window ends (epoch seconds)
    return max(1, math.ceil(reset - time.time()))


def response_headers(app: Flask) -> list[tuple[str, str]]:
    """The security headers every response carries (HSTS when the app is https-only)."""
    out = list(HEADERS.items())
    if https_only(app):
        hsts = f"max-age={int(app.config.get('HSTS_SECONDS', 31536000))}; includeSubDomains"
        out.append(("Strict-Transport-Security", hsts))
    return out


def init_app(app: Flask) -> None:
    """Trusted proxies, Secure cookies, the limiter, its 429 problem, and the security headers.

    Called after the blueprints are registered (the sign-in limits wrap the registered view).
    """
    proxies = int(app.config.get("TRUSTED_PROXIES", 0))
    if proxies < 0:
        raise ValueError("TRUSTED_PROXIES must be 0 or more")
    if proxies:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies, x_port=proxies
        )
    secure = https_only(app)
    app.config["SESSION_COOKIE_SECURE"] = secure
    app.config["REMEMBER_COOKIE_SECURE"] = secure
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", False)
    app.extensions["security"] = {"https_only": secure, "limiter": _limits(app)}

    @app.errorhandler(RateLimitExceeded)
    def _throttled(exc: RateLimitExceeded) -> Response:
        retry = _retry_after()
        resp = problem(
            429,
            "Too many requests",
            f"Rate limit exceeded ({exc.description}); retry after {retry} s.",
            "too-many-requests",
            retry_after=retry,
        )
        resp.headers["Retry-After"] = str(retry)
        return resp

    headers = response_headers(app)
    app.extensions["security"]["headers"] = headers

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in headers:
            response.headers.setdefault(name, value)
        if response.mimetype == "text/html" or request.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")  # pages and profiles hold personal data
        return response
