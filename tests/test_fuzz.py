"""Property-based robustness tests over real HTTP requests, both backends.

Rule of the house: bad input gets a clear RFC 9457 problem with the right 4xx, never a 500, never
a partial write; authorization fails closed. Hypothesis (and schemathesis, from the app's own
/openapi.json) throws random and malformed requests at every JSON endpoint of ``app.url_map``:

* decision API (``/v1/*``, service token), policy-editor API (``/v1/policy/*``, signed in as the
  demo policy admin), web-client API (``/api/*``, signed in as demo users, with ``X-CSRFToken``);
* wrong JSON types, nulls, huge strings and lists, deep nesting, unicode, ``*``/commas/newlines/NUL in
  identifiers, random query strings and path parameters, wrong methods, wrong content types.

Properties checked on every response: the status is never 5xx; every 4xx is
``application/problem+json`` with ``type``, ``title``, ``status`` (= the HTTP status) and ``detail``;
a refused write leaves every table (and the engine's revision) exactly as it was; the decision API
never answers ``allowed: true`` for a malformed subject, workspace or group.

Each test builds its app once (per backend) and runs its examples inside, like a real server would:
the database session is discarded after each request. ``derandomize=True`` keeps CI deterministic.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from flask import Flask, g
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from werkzeug.exceptions import MethodNotAllowed, NotFound

from app.extensions import authz, db
from app.models.base import Base
from app.policy import tokens
from tests.factories import fast_password_hashing, seed_demo, uid

PROBLEM = "application/problem+json"
ADMIN = "policy_admin@service.example"  # the demo policy admin (policy-editor API)
OWNER = "owner@classroom.example"
PLATFORM_ADMIN = "admin@platform.example"
SKILLS_OWNER = "owner@skills.example"
SAFE = {"GET", "HEAD", "OPTIONS"}
# Rows a refused request may legitimately write: authenticating a service token touches its
# last_used_at, a signed-in request its session's last_seen_at (failed sign-ins are counted by the
# rate limiter, outside the database).
VOLATILE_TABLES: set[str] = set()
VOLATILE_COLUMNS = {("service_tokens", "last_used_at"), ("user_sessions", "last_seen_at")}
DEEP = 50_000  # nesting depth of the deep-JSON bodies (≈100 KB, under MAX_CONTENT_LENGTH)


def fuzz_settings(n: int) -> settings:
    """Bounded, deterministic hypothesis settings (no example database: state lives in our app)."""
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )


def run_examples(strategy: st.SearchStrategy[Any], n: int, fn: Callable[[Any], None]) -> None:
    """Run fn over n examples of strategy (the app is built once by the calling test)."""

    @fuzz_settings(n)
    @given(strategy)
    def inner(value: Any) -> None:
        fn(value)

    inner()


# -- strategies ---------------------------------------------------------------------------------
NASTY = [
    "",
    " ",
    "*",
    "a,b",
    "a\nb",
    "\r\n",
    "\x00",
    "nul\x00byte",
    "\u2028",
    "²",  # str.isdigit() but not int()
    "٣",  # an Arabic-Indic digit: int() reads it as 3
    "１",  # fullwidth digit
    "0",
    "-1",
    "1.5",
    "1e309",
    "99999999999999999999999",
    "9223372036854775808",
    "user:*",
    "user:1,user:2",
    "ws:*",
    "role:classroom:owner",
    "group:*",
    "platform:*",
    "classroom-demo\n",
    "owner@classroom.example\n",
    " owner@classroom.example",
    "../../etc/passwd",
    "%00",
    "'; DROP TABLE users; --",
    "null",
    "true",
    "{}",
    "[]",
    "é",
    "\U0001d518\U0001f600",
    "\ud7ff\ufeff\ufffd",
    "x" * 255,
    "y" * 5000,
]
nasty_text = st.one_of(st.sampled_from(NASTY), st.text(max_size=30), st.text(st.characters(codec="utf-8"), max_size=8))
big_ints = st.sampled_from([0, -1, 2**31, 2**63 - 1, 2**63, 10**30, -(10**30)])
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    big_ints,
    st.floats(allow_nan=False, allow_infinity=False),
    nasty_text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(nasty_text, st.sampled_from(["id", "name", "role", "user_ids", "op"])), inner, max_size=4
        ),
    ),
    max_leaves=12,
)
huge_lists = st.sampled_from([list(range(5000)), ["a"] * 2000, [{}] * 600, [None] * 1001])


def shaped(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with the endpoint's own keys (and some others), holding values of any JSON type."""
    key = st.one_of(st.sampled_from(keys), nasty_text)
    return st.dictionaries(key, st.one_of(json_values, huge_lists), max_size=len(keys) + 1)


def bodies(keys: list[str]) -> st.SearchStrategy[Any]:
    """Any JSON body, mostly objects shaped like the endpoint's."""
    return st.one_of(shaped(keys), shaped(keys), json_values)


query_strings = st.dictionaries(
    st.one_of(
        st.sampled_from(
            ["min_revision", "explain", "limit", "before", "page", "per_page", "q", "role", "status", "member"]
        ),
        nasty_text,
    ),
    nasty_text,
    max_size=3,
)


def seg(value: str) -> str:
    """A path segment, percent-encoded."""
    return quote(value, safe="") or "%20"


# -- the app, clients and properties ------------------------------------------------------------
@dataclass
class Fuzz:
    """The app with demo data, a service token, signed-in web clients, and the response checks."""

    app: Flask
    token: str
    clients: dict[str, FlaskClient] = field(default_factory=dict)
    csrf: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    requests: int = 0
    last: dict[str, Any] | None = None  # the snapshot after the last refused write (state known unchanged since)

    # ---- transport
    def _open(self, client: FlaskClient, method: str, url: str, **kw: Any) -> Any:
        g.pop("_login_user", None)  # a fresh g per request, as a real server has
        g.pop("csrf_token", None)
        self.errors.clear()
        if method not in SAFE:
            self.last = None  # any change may have written something
        try:
            resp = client.open(url, method=method, **kw)
        finally:
            db.session.remove()  # what the request teardown of a real server does
        self.requests += 1
        return resp

    def sign_in(self, email: str) -> None:
        """A web client signed in as email, with its CSRF token."""
        client = self.app.test_client()
        self.clients[email] = client
        resp = self._open(client, "GET", "/api/auth/csrf")
        self.csrf[email] = resp.get_json()["csrf_token"]
        resp = self.web(email, "POST", "/api/auth/signin", body={"email": email, "password": "demo-password-1"})
        assert resp.status_code == 200, resp.get_data(as_text=True)
        self.csrf[email] = resp.get_json()["csrf_token"]  # rotated at sign-in

    def web(
        self,
        who: str,
        method: str,
        url: str,
        *,
        body: Any = None,
        raw: bytes | None = None,
        content_type: str | None = "application/json",
        headers: dict[str, str] | None = None,
    ) -> Any:
        """A request of a signed-in web client (CSRF header on changes)."""
        hdrs = {"X-CSRFToken": self.csrf[who], **(headers or {})}
        return self._open(self.clients[who], method, url, **_payload(method, body, raw, content_type), headers=hdrs)

    def service(
        self,
        method: str,
        url: str,
        *,
        body: Any = None,
        raw: bytes | None = None,
        content_type: str | None = "application/json",
        token: str | None = None,
    ) -> Any:
        """A request of a service with the bearer token."""
        hdrs = {"Authorization": f"Bearer {self.token if token is None else token}"}
        client = self.clients.setdefault("<service>", self.app.test_client())
        return self._open(client, method, url, **_payload(method, body, raw, content_type), headers=hdrs)

    # ---- properties
    def check(self, resp: Any, what: str) -> None:
        """Never 5xx; every 4xx a complete RFC 9457 problem."""
        status = resp.status_code
        detail = resp.get_data(as_text=True)[:300]
        if status == 503 and resp.headers.get("Retry-After") and "/problems/unavailable" in detail:
            return  # documented: min_revision not reached within MIN_REVISION_WAIT_SECONDS
        assert status < 500, f"{what} -> {status} {detail}\n{''.join(self.errors)}"
        if status >= 400:
            assert resp.mimetype == PROBLEM, f"{what} -> {status} {resp.mimetype} {detail}"
            problem = json.loads(resp.get_data(as_text=True))
            for key in ("type", "title", "status", "detail"):
                assert key in problem, f"{what} -> {status}: problem without {key}: {problem}"
            assert problem["status"] == status, f"{what}: problem status {problem['status']} != {status}"
        elif status != 204 and resp.mimetype == "application/json":
            resp.get_json()  # a 2xx JSON answer parses

    def write(self, send: Callable[[], Any], what: str) -> Any:
        """Send a change; if it is refused, nothing may have changed."""
        before = self.last if self.last is not None else snapshot()
        self.last = None
        resp = send()
        self.check(resp, what)
        if resp.status_code >= 400:
            after = snapshot()
            changed = sorted(t for t in before.keys() | after.keys() if before.get(t) != after.get(t))
            assert not changed, f"{what} -> {resp.status_code} but changed {changed}: {resp.get_data(as_text=True)}"
            self.last = after
        return resp


class _Collect(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.sink.append(text)


def _payload(method: str, body: Any, raw: bytes | None, content_type: str | None) -> dict[str, Any]:
    if method in SAFE and body is None and raw is None:
        return {}
    data = raw if raw is not None else json.dumps(body).encode()
    kw: dict[str, Any] = {"data": data}
    if content_type is not None:
        kw["content_type"] = content_type
    return kw


def snapshot() -> dict[str, Any]:
    """Every committed row (bar the volatile ones) and the engine's revision."""
    out: dict[str, Any] = {"<engine revision>": authz.engine.revision}
    for table in Base.metadata.sorted_tables:
        if table.name in VOLATILE_TABLES:
            continue
        cols = [c for c in table.columns if (table.name, c.name) not in VOLATILE_COLUMNS]
        out[table.name] = sorted(repr(tuple(r)) for r in db.session.execute(select(*cols)))
    db.session.remove()
    return out


@pytest.fixture
def fz(app: Flask) -> Iterator[Fuzz]:
    """Demo data, a service token, and 5xx answered (not raised) so the checks see them."""
    fast_password_hashing()
    seed_demo()
    _, secret = tokens.create_token(db.session(), "fuzz-decision-service-7f3a", all_workspaces=True)
    db.session.commit()
    app.config["PROPAGATE_UNEXPECTED"] = False
    app.config["MIN_REVISION_WAIT_SECONDS"] = 0.01  # future min_revision values: a quick documented 503
    f = Fuzz(app, secret)
    handler = _Collect(f.errors)
    logging.getLogger("app.errors").addHandler(handler)
    try:
        yield f
    finally:
        logging.getLogger("app.errors").removeHandler(handler)


# -- decision API -------------------------------------------------------------------------------
CHECK_KEYS = ["subject", "workspace", "action", "resource", "min_revision"]
RESOURCE_KEYS = ["type", "id", "attributes"]
ATTR_KEYS = ["assignee", "owner", "member", "group", "team", "new_role", "role"]

check_items = st.fixed_dictionaries(
    {
        "subject": st.one_of(st.integers(-5, 60), big_ints, nasty_text, st.sampled_from(["owner@classroom.example"])),
        "workspace": st.one_of(st.sampled_from(["classroom-demo", "ws:skills-demo", "service"]), nasty_text),
        "action": st.one_of(st.sampled_from(["change_user_roles", "manage_group_learners"]), nasty_text),
    },
    optional={
        "resource": st.one_of(
            json_values,
            st.fixed_dictionaries(
                {},
                optional={
                    "type": scalars,
                    "id": scalars,
                    "attributes": st.one_of(shaped(ATTR_KEYS), st.dictionaries(st.sampled_from(ATTR_KEYS), scalars)),
                },
            ),
        ),
        "min_revision": st.one_of(scalars, st.just(1)),
    },
)
check_bodies = st.one_of(check_items, check_items, bodies(CHECK_KEYS))


def test_decision_check_and_batch_bodies(fz: Fuzz) -> None:
    """POST /v1/check and /v1/check/batch with random bodies and query strings: no 5xx, problems on 4xx."""

    def one(args: tuple[Any, dict[str, str], bool]) -> None:
        body, query, batch = args
        if batch:
            body = {"checks": body if isinstance(body, list) else [body, body]}
        url = ("/v1/check/batch" if batch else "/v1/check") + ("?" + urlencode(query) if query else "")
        resp = fz.service("POST", url, body=body)
        fz.check(resp, f"POST {url} {body!r:.300}")
        if resp.status_code == 200:
            results = resp.get_json()["results"] if batch else [resp.get_json()]
            assert all(isinstance(r["allowed"], bool) for r in results)

    run_examples(
        st.tuples(st.one_of(check_bodies, st.lists(check_items, max_size=4)), query_strings, st.booleans()), 120, one
    )


def test_decision_queries(fz: Fuzz) -> None:
    """GET permissions, assignable-roles, who-can with random query strings."""
    params = {
        "/v1/permissions": ["subject", "workspace", "min_revision"],
        "/v1/assignable-roles": ["actor", "workspace", "target", "min_revision"],
        "/v1/who-can": ["workspace", "action", "limit", "cursor", "min_revision"],
    }
    good = {
        "subject": "owner@classroom.example",
        "actor": "owner@classroom.example",
        "target": "learner@classroom.example",
        "workspace": "classroom-demo",
        "action": "change_user_roles",
        "limit": "2",
        "cursor": "djE6Mw",
        "min_revision": "1",
    }
    names = sorted({n for ns in params.values() for n in ns})
    query = st.dictionaries(
        st.one_of(st.sampled_from(names), nasty_text),
        st.one_of(nasty_text, st.sampled_from(sorted(set(good.values())))),
        max_size=5,
    )

    def one(args: tuple[str, dict[str, str], bool]) -> None:
        path, q, complete = args
        if complete:  # mostly-valid queries with one or two bad values reach deeper
            q = {**{n: good[n] for n in params[path]}, **q}
        url = f"{path}?{urlencode(q)}"
        fz.check(fz.service("GET", url), f"GET {url}")

    run_examples(st.tuples(st.sampled_from(sorted(params)), query, st.booleans()), 90, one)


def _mutations(base: str) -> list[str]:
    return [
        base + "\n",
        "\n" + base,
        base + "\r",
        base + "\t",
        " " + base,
        base + " ",
        base + "\u00a0",
        base + "\u2028",
        base + "\x00",
        base + ",",
        base + ",user:1",
        base + "*",
        "*",
        base + "\n*",
        "user:" + base + "*",
    ]


def test_decision_fails_closed_on_malformed_identifiers(fz: Fuzz) -> None:
    """A subject, workspace or group that is not well-formed is never allowed, even one that
    looks like a privileged real one (the owner, its workspace, the teacher's group)."""
    owner = uid("owner@classroom.example")
    subjects = ["owner@classroom.example", str(owner), f"user:{owner}"]
    owner_check = {  # an action on a member names its target (issue 21: else target_required)
        "workspace": "classroom-demo",
        "action": "change_user_roles",
        "resource": {"type": "member", "attributes": {"member": "learner@classroom.example", "new_role": "teacher"}},
    }
    teacher_check = {
        "subject": "teacher@classroom.example",
        "workspace": "classroom-demo",
        "action": "manage_group_learners",
        "resource": {"type": "group", "attributes": {"group": "morning", "member": "learner@classroom.example"}},
    }
    for s in subjects:  # the unmutated requests are allowed: the mutations below matter
        assert fz.service("POST", "/v1/check", body={"subject": s, **owner_check}).get_json()["allowed"] is True, s
    assert fz.service("POST", "/v1/check", body=teacher_check).get_json()["allowed"] is True
    digits = str(owner)
    bad_subjects = [m for s in subjects for m in _mutations(s)] + [
        "user:" + digits.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),
        digits.translate(str.maketrans("0123456789", "０１２３４５６７８９")),
        "role:classroom:owner",
        "user:*",
        "ws:classroom-demo",
        "user: " + digits,
        "user:+" + digits,
        digits + ".0",
    ]
    bad_workspaces = (
        _mutations("classroom-demo") + _mutations("ws:classroom-demo") + ["ws:*", "ws:", "ws:ws:classroom-demo"]
    )
    bad_groups = _mutations("morning") + _mutations("group:morning") + ["group:*", "morning,evening"]

    def one(args: tuple[tuple[str, str], int]) -> None:
        (kind, value), where = args
        if kind == "subject":
            body: dict[str, Any] = {"subject": value, **owner_check}
        elif kind == "workspace":
            body = {"subject": subjects[where % 3], **owner_check, "workspace": value}
        else:
            body = json.loads(json.dumps(teacher_check))
            body["resource"]["attributes"]["group"] = value
        for url, payload in (
            ("/v1/check", body),
            ("/v1/check?explain=true", body),
            ("/v1/check/batch", {"checks": [body]}),
        ):
            resp = fz.service("POST", url, body=payload)
            fz.check(resp, f"{url} {payload!r}")
            if resp.status_code == 200:
                got = resp.get_json()
                results = got.get("results", [got])
                assert all(r["allowed"] is False for r in results), f"{url} {payload!r} -> {got}"
        if kind in ("subject", "workspace"):
            q = {"subject": body["subject"], "workspace": body["workspace"]}
            resp = fz.service("GET", "/v1/permissions?" + urlencode(q))
            fz.check(resp, f"permissions {q!r}")
            if resp.status_code == 200:
                assert resp.get_json()["allowed"] == [], f"permissions {q!r} -> {resp.get_json()}"
            q = {"actor": body["subject"], "workspace": body["workspace"]}
            resp = fz.service("GET", "/v1/assignable-roles?" + urlencode(q))
            fz.check(resp, f"assignable-roles {q!r}")
            if resp.status_code == 200:
                assert resp.get_json()["roles"] == [], f"assignable-roles {q!r} -> {resp.get_json()}"

    mutated = st.one_of(
        st.tuples(st.just("subject"), st.sampled_from(bad_subjects)),
        st.tuples(st.just("workspace"), st.sampled_from(bad_workspaces)),
        st.tuples(st.just("group"), st.sampled_from(bad_groups)),
    )
    run_examples(st.tuples(mutated, st.integers(0, 2)), 60, one)


def test_decision_authentication_and_transport(fz: Fuzz) -> None:
    """Missing/garbled tokens are 401 problems with WWW-Authenticate; wrong content types, malformed
    and deeply nested JSON, wrong methods: 4xx problems on every decision endpoint."""

    def one(args: tuple[str, str]) -> None:
        header, path = args
        client = fz.clients.setdefault("<anon>", fz.app.test_client())
        resp = fz._open(client, "POST" if "check" in path else "GET", path, headers={"Authorization": header})
        fz.check(resp, f"{path} Authorization={header!r}")
        assert resp.status_code == 401 and "Bearer" in resp.headers.get("WWW-Authenticate", ""), header

    header = st.one_of(
        st.sampled_from(["", "Bearer", "Bearer ", "bearer lat_x", "Basic Zm9vOmJhcg==", "Bearer lat_" + "a" * 300]),
        st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=40).map(lambda s: "Bearer " + s),
    )
    run_examples(st.tuples(header, st.sampled_from(["/v1/check", "/v1/check/batch", "/v1/who-can"])), 30, one)

    for path in ("/v1/check", "/v1/check/batch"):
        for raw, ct in TRANSPORT_BODIES:
            fz.check(fz.service("POST", path, raw=raw, content_type=ct), f"POST {path} {ct} {raw[:40]!r}")
        for method in ("GET", "PUT", "PATCH", "DELETE"):
            resp = fz.service(method, path, body={})
            fz.check(resp, f"{method} {path}")
            assert resp.status_code == 405
    for path in ("/v1/permissions", "/v1/assignable-roles", "/v1/who-can"):
        for method in ("POST", "PUT", "DELETE"):
            resp = fz.service(method, path, body={})
            fz.check(resp, f"{method} {path}")
            assert resp.status_code == 405


TRANSPORT_BODIES: list[tuple[bytes, str | None]] = [
    (b'{"subject": 1}', "text/plain"),
    (b"subject=1&workspace=x", "application/x-www-form-urlencoded"),
    (b"", "application/json"),
    (b"{", "application/json"),
    (b"\xff\xfe\x00", "application/json"),
    (b'{"a": 1} trailing', "application/json"),
    (b"NaN", "application/json"),
    (b'{"subject": 1}', None),
    (b'{"subject": 1}', "application/json; charset=utf-16"),
    (b'{"subject": 1}', "application/vnd.api+json"),
    (b'{"a":"\\ud800"}', "application/json"),
]
DEEP_BODIES: list[bytes] = [b"[" * DEEP + b"]" * DEEP, b'{"a":' * DEEP + b"1" + b"}" * DEEP]


def test_decision_and_policy_deeply_nested_json(fz: Fuzz) -> None:
    """JSON nested 50,000 deep is a 400 problem, not a RecursionError (decision and policy APIs)."""
    fz.sign_in(ADMIN)
    for raw in DEEP_BODIES:
        for path in ("/v1/check", "/v1/check/batch"):
            fz.check(fz.service("POST", path, raw=raw), f"POST {path} deep")
        for path in (
            "/v1/policy/validate",
            "/v1/policy/preview",
            "/v1/policy/apply",
            "/v1/policy/rollback",
            "/v1/policy/tokens",
        ):
            fz.write(lambda p=path, r=raw: fz.web(ADMIN, "POST", p, raw=r), f"POST {path} deep")
    # nesting the parser still takes, inside a valid shape, reaches pydantic instead
    nested = b"[" * 900 + b'"p"' + b"]" * 900
    apply = b'{"changes": [{"op": "add", "rule": ' + nested + b"}]}"
    fz.write(lambda: fz.web(ADMIN, "POST", "/v1/policy/apply", raw=apply), "apply nested rule")
    check = b'{"workspace": "x", "action": "y", "subject": ' + nested + b"}"
    fz.check(fz.service("POST", "/v1/check", raw=check), "nested subject")


def test_web_api_deeply_nested_json(fz: Fuzz) -> None:
    """JSON nested 50,000 deep sent to the web-client API is a 400 problem (regression: it was a 500)."""
    fz.sign_in(OWNER)
    for raw in DEEP_BODIES:
        for path in ("/api/auth/signin", "/api/workspaces/classroom-demo/invitations", "/api/auth/me"):
            method = "PATCH" if path == "/api/auth/me" else "POST"
            resp = fz.write(lambda p=path, r=raw, m=method: fz.web(OWNER, m, p, raw=r), f"{method} {path} deep")
            assert resp.status_code == 400, f"{method} {path} deep -> {resp.status_code}"


# -- policy-editor API --------------------------------------------------------------------------
RULE_PARTS = {
    "ptype": ["p", "g", "g2", "P", ""],
    "priority": ["80", "0", "-1", "999999999999", "x", "80.5"],
    "subject": ["role:classroom:teacher", "role:simulations:reviewer", "role:classroom:*", "user:1", "role:nope:x"],
    "pack": ["pack:classroom", "pack:simulations", "pack:*", "pack:", "classroom"],
    "action": ["change_user_roles", "view_ai_spend", "create_groups", "Drop Table", "*"],
    "scope": ["any", "group", "rank", "owner", "nope", ""],
    "feature": ["-", "leaderboard", "*", ""],
    "eft": ["allow", "deny", "maybe", ""],
}


@st.composite
def rules(draw: st.DrawFn) -> Any:
    """A rule: CSV line or field list, built from plausible parts and nasty ones."""
    parts = [
        draw(st.one_of(st.sampled_from(v), nasty_text)) if draw(st.integers(0, 9)) == 0 else draw(st.sampled_from(v))
        for v in RULE_PARTS.values()
    ]
    parts = parts[: draw(st.integers(0, 9))] if draw(st.integers(0, 5)) == 0 else parts
    if draw(st.booleans()):
        return parts
    return ", ".join(parts)


changes = st.one_of(
    st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "remove", "replace"])}, optional={"rule": rules(), "with": rules()}
    ),
    st.fixed_dictionaries(
        {
            "op": st.just("add_role"),
            "pack": st.one_of(st.sampled_from(["classroom", "skills", "service"]), nasty_text),
            "role": st.fixed_dictionaries(
                {
                    "id": st.one_of(st.sampled_from(["fuzzer", "owner"]), nasty_text),
                    "rank": st.one_of(st.integers(-3, 9), big_ints),
                },
                optional={"label": nasty_text, "platform": st.booleans(), "description": nasty_text},
            ),
        }
    ),
    st.fixed_dictionaries(
        {
            "op": st.just("add_action"),
            "pack": st.one_of(st.sampled_from(["classroom", "academy"]), nasty_text),
            "action": st.fixed_dictionaries(
                {"id": st.one_of(st.sampled_from(["fuzz_action", "create_groups"]), nasty_text)},
                optional={"label": nasty_text, "section": nasty_text, "source": nasty_text, "feature": nasty_text},
            ),
        }
    ),
    shaped(["op", "rule", "with", "pack", "role", "action"]),
)
proposals = st.one_of(
    st.fixed_dictionaries(
        {"changes": st.lists(changes, min_size=0, max_size=3)},
        optional={"message": nasty_text, "expected_revision": st.one_of(scalars, st.integers(0, 5))},
    ),
    bodies(["changes", "message", "expected_revision"]),
)


def test_policy_api_bodies(fz: Fuzz) -> None:
    """validate/preview/apply/rollback/tokens with random bodies: no 5xx, problems, refused writes change nothing."""
    fz.sign_in(ADMIN)

    def one(args: tuple[str, Any]) -> None:
        path, body = args
        fz.write(lambda: fz.web(ADMIN, "POST", path, body=body), f"POST {path} {body!r:.400}")

    rollback = st.one_of(
        st.fixed_dictionaries({"to_revision": st.one_of(scalars, st.integers(0, 3))}, optional={"message": nasty_text}),
        bodies(["to_revision", "message"]),
    )
    token = st.one_of(st.fixed_dictionaries({"name": nasty_text}), bodies(["name"]))
    run_examples(
        st.one_of(
            st.tuples(st.sampled_from(["/v1/policy/validate", "/v1/policy/apply"]), proposals),
            st.tuples(st.just("/v1/policy/preview"), proposals),
            st.tuples(st.just("/v1/policy/rollback"), rollback),
            st.tuples(st.just("/v1/policy/tokens"), token),
        ),
        70,
        one,
    )


def test_policy_api_queries_paths_and_transport(fz: Fuzz) -> None:
    """GET endpoints with random query strings and path parameters; token revocation by odd names;
    wrong content types and methods on every policy endpoint."""
    fz.sign_in(ADMIN)

    def one(args: tuple[str, Any]) -> None:
        kind, value = args
        if kind == "query":
            path, q = value
            url = f"{path}?{urlencode(q)}"
            fz.check(fz.web(ADMIN, "GET", url), f"GET {url}")
        elif kind == "revision":
            fz.check(fz.web(ADMIN, "GET", f"/v1/policy/revisions/{value}"), f"GET revision {value!r}")
        else:
            url = f"/v1/policy/tokens/{seg(value)}"
            fz.write(lambda: fz.web(ADMIN, "DELETE", url), f"DELETE {url}")

    query = st.dictionaries(
        st.one_of(st.sampled_from(["pack", "type", "role", "min_revision", "before", "limit"]), nasty_text),
        st.one_of(nasty_text, st.sampled_from(["classroom", "p", "g", "teacher", "1", "500", "501"])),
        max_size=3,
    )
    run_examples(
        st.one_of(
            st.tuples(
                st.just("query"),
                st.tuples(
                    st.sampled_from(
                        [
                            "/v1/policy/rules",
                            "/v1/policy/revisions",
                            "/v1/policy/model",
                            "/v1/policy/session",
                            "/v1/policy/tokens",
                        ]
                    ),
                    query,
                ),
            ),
            st.tuples(
                st.just("revision"),
                st.one_of(
                    st.integers(0, 10),
                    big_ints.filter(lambda n: n >= 0),
                    st.sampled_from(["٣", "1.0", "-1", "x"]).map(seg),
                ),
            ),
            st.tuples(st.just("token"), nasty_text),
        ),
        60,
        one,
    )
    for path in (
        "/v1/policy/validate",
        "/v1/policy/preview",
        "/v1/policy/apply",
        "/v1/policy/rollback",
        "/v1/policy/tokens",
    ):
        for raw, ct in TRANSPORT_BODIES:
            fz.write(
                lambda p=path, r=raw, c=ct: fz.web(ADMIN, "POST", p, raw=r, content_type=c),
                f"POST {path} {ct} {raw[:30]!r}",
            )
        fz.write(
            lambda p=path: fz.web(ADMIN, "POST", p, body={}, headers={"X-CSRFToken": "forged"}), f"{path} bad CSRF"
        )
    assert_wrong_methods(fz, "/v1/policy/", lambda method, url: fz.web(ADMIN, method, url, body={}))


def assert_wrong_methods(fz: Fuzz, prefix: str, send: Callable[[str, str], Any]) -> None:
    """Every route under prefix answers 405 problems (with Allow) to the methods it does not have."""
    adapter = fz.app.url_map.bind("localhost")
    for rule in fz.app.url_map.iter_rules():
        if not rule.rule.startswith(prefix):
            continue
        url = "/" + "/".join("1" if part.startswith("<") else part for part in rule.rule.strip("/").split("/"))
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            try:
                adapter.match(url, method=method)
                continue  # some route (maybe another one) takes this method here
            except MethodNotAllowed:
                pass
            except NotFound:
                continue
            resp = fz.write(lambda m=method, u=url: send(m, u), f"{method} {url}")
            assert resp.status_code == 405 and resp.headers.get("Allow"), f"{method} {url} -> {resp.status_code}"


# -- web-client API -----------------------------------------------------------------------------
slugs = st.one_of(st.sampled_from(["classroom-demo", "skills-demo", "simulations-demo", "service", "nope"]), nasty_text)
user_ids = st.one_of(st.integers(0, 40), big_ints.filter(lambda n: n >= 0))
unit_names = st.one_of(st.sampled_from(["morning", "evening", "sales", "fuzz-group"]), nasty_text)


@st.composite
def web_requests(draw: st.DrawFn) -> tuple[str, str, Any, dict[str, str]]:
    """(method, url, body, query) for one web-client JSON endpoint, with random path parameters."""
    slug = seg(draw(slugs))
    kinds = seg(draw(st.one_of(st.sampled_from(["groups", "teams"]), nasty_text)))
    name = seg(draw(unit_names))
    rel = seg(draw(st.one_of(st.sampled_from(["teachers", "learners", "managers", "members"]), nasty_text)))
    user_id = draw(user_ids)
    pack = seg(draw(st.one_of(st.sampled_from(["simulations", "academy", "skills", "classroom"]), nasty_text)))
    role = seg(draw(st.one_of(st.sampled_from(["admin", "operator", "learner"]), nasty_text)))
    ws = f"/api/workspaces/{slug}"
    unit = f"{ws}/{kinds}/{name}"
    people = {"user_ids": st.one_of(st.lists(user_ids, max_size=4), json_values, huge_lists)}
    routes: list[tuple[str, str, st.SearchStrategy[Any]]] = [
        ("PATCH", "/api/auth/me", bodies(["display_name", "username", "email", "password", "current_password"])),
        ("POST", "/api/auth/signup", bodies(["token", "password", "display_name", "username"])),
        ("GET", "/api/auth/me", st.none()),
        ("GET", "/api/workspaces", st.none()),
        ("POST", "/api/workspaces", bodies(["slug", "name", "pack", "owner_id"])),
        ("GET", ws, st.none()),
        ("PATCH", ws, st.one_of(bodies(["name", "settings"]), st.fixed_dictionaries({"settings": json_values}))),
        ("PUT", f"{ws}/features/{seg(draw(nasty_text | st.just('leaderboard')))}", bodies(["enabled"])),
        ("GET", f"{ws}/members", st.none()),
        (
            "POST",
            f"{ws}/invitations",
            st.one_of(
                bodies(["emails", "role"]),
                st.fixed_dictionaries(
                    {"emails": st.one_of(nasty_text, st.lists(nasty_text, max_size=5), huge_lists), "role": json_values}
                ),
            ),
        ),
        ("GET", f"{ws}/invitations", st.none()),
        ("PATCH", f"{ws}/members/{user_id}", bodies(["role"])),
        ("DELETE", f"{ws}/members/{user_id}", st.none()),
        ("POST", f"{ws}/members/remove", st.one_of(bodies(["user_ids"]), st.fixed_dictionaries(people))),
        ("POST", f"{ws}/ownership", bodies(["user_id"])),
        ("GET", f"{ws}/assignable-roles", st.none()),
        ("GET", f"{ws}/audit", st.none()),
        ("GET", f"{ws}/{kinds}", st.none()),
        ("POST", f"{ws}/{kinds}", bodies(["name", "description", "capacity"])),
        ("GET", unit, st.none()),
        ("PATCH", unit, bodies(["description", "capacity", "archived"])),
        ("DELETE", unit, st.none()),
        ("POST", f"{unit}/{rel}", st.one_of(bodies(["user_ids"]), st.fixed_dictionaries(people))),
        ("DELETE", f"{unit}/{rel}/{user_id}", st.none()),
        ("POST", f"{unit}/{rel}/{user_id}/move", bodies(["to"])),
        ("GET", f"/api/platform/{pack}/roles", st.none()),
        ("POST", f"/api/platform/{pack}/roles", bodies(["user_id", "role"])),
        ("DELETE", f"/api/platform/{pack}/roles/{role}/{user_id}", st.none()),
    ]
    method, url, body = draw(st.sampled_from(routes))
    return method, url, draw(body), draw(query_strings)


WEB_USERS = [OWNER, PLATFORM_ADMIN, "teacher@classroom.example", SKILLS_OWNER]


def test_web_api_requests(fz: Fuzz) -> None:
    """Every member/group/workspace/platform/auth endpoint with random path parameters, bodies and
    query strings, as four demo users: no 5xx, problems on 4xx, refused writes change nothing."""
    for email in WEB_USERS:
        fz.sign_in(email)
    members_before = fz.web(OWNER, "GET", "/api/workspaces/classroom-demo/members?per_page=200").get_json()

    def one(args: tuple[str, tuple[str, str, Any, dict[str, str]]]) -> None:
        who, (method, url, body, query) = args
        full = url + ("?" + urlencode(query) if query else "")
        if method in SAFE:
            fz.check(fz.web(who, method, full), f"{who}: {method} {full}")
        else:
            fz.write(lambda: fz.web(who, method, full, body=body), f"{who}: {method} {full} {body!r:.300}")

    run_examples(st.tuples(st.sampled_from(WEB_USERS), web_requests()), 200, one)
    # the signed-in sessions survived the fuzzing (nothing above signed anyone out)
    assert fz.web(OWNER, "GET", "/api/auth/me").status_code == 200
    assert members_before["total"] >= 1


def test_web_api_queries(fz: Fuzz) -> None:
    """List endpoints with random query strings (page, per_page, q, role, status, member, limit, before)."""
    fz.sign_in(OWNER)
    paths = ["members", "assignable-roles", "audit", "invitations", "groups"]
    base = {
        "page": "1",
        "per_page": "5",
        "q": "learner",
        "role": "teacher",
        "status": "accepted",
        "member": "3",
        "limit": "5",
        "before": "9",
    }
    query = st.dictionaries(
        st.one_of(st.sampled_from(sorted(base)), nasty_text),
        st.one_of(nasty_text, st.sampled_from(sorted(set(base.values())))),
        max_size=4,
    )

    def one(args: tuple[str, dict[str, str]]) -> None:
        path, q = args
        url = f"/api/workspaces/classroom-demo/{path}?{urlencode(q)}"
        fz.check(fz.web(OWNER, "GET", url), f"GET {url}")

    run_examples(st.tuples(st.sampled_from(paths), query), 60, one)


def test_sign_in_and_csrf(fz: Fuzz) -> None:
    """Sign-in with random bodies; changes without or with a forged CSRF token; wrong content types
    and methods on every web-client route. All 4xx problems, nothing written."""
    fz.sign_in(OWNER)
    anon = fz.clients.setdefault("<anon>", fz.app.test_client())
    token = fz._open(anon, "GET", "/api/auth/csrf").get_json()["csrf_token"]
    fz.csrf["<anon>"] = token

    def one(body: Any) -> None:
        fz.write(lambda: fz.web("<anon>", "POST", "/api/auth/signin", body=body), f"signin {body!r:.300}")

    run_examples(bodies(["email", "password"]), 40, one)
    for rule in fz.app.url_map.iter_rules():
        if not rule.rule.startswith("/api/") or not (rule.methods or set()) - SAFE:
            continue
        url = "/" + "/".join("1" if p.startswith("<") else p for p in rule.rule.strip("/").split("/"))
        url = url.replace("/1/1/", "/morning/learners/", 1) if "<kinds>" in rule.rule else url
        for method in sorted((rule.methods or set()) - SAFE - {"OPTIONS"}):
            if url == "/api/auth/signout":
                continue
            for csrf in ("", "forged"):
                fz.write(
                    lambda m=method, u=url, c=csrf: fz.web(OWNER, m, u, body={}, headers={"X-CSRFToken": c}),
                    f"{method} {url} csrf={csrf!r}",
                )
            if method == "DELETE":
                continue
            for raw, ct in TRANSPORT_BODIES:
                fz.write(
                    lambda m=method, u=url, r=raw, c=ct: fz.web(OWNER, m, u, raw=r, content_type=c),
                    f"{method} {url} {ct} {raw[:30]!r}",
                )
    assert_wrong_methods(fz, "/api/", lambda method, url: fz.web(OWNER, method, url, body={}))
    assert fz.web(OWNER, "GET", "/api/auth/me").status_code == 200


# -- regressions of the web-client API (app/api/{auth,members,groups}.py, app/services/*) ----------
# Inputs that were answered with a 500 (on the backends listed) before ids, integers and text were
# checked in one place (app/inputs.py, app/api/params.py). Each must now be a 4xx problem,
# of the status given, that changes nothing; the fuzz tests above draw such inputs too.
BIG = 2**63  # past SQLite's INTEGER and PostgreSQL's int4/int8
INT4 = 2**31  # past PostgreSQL's int4 (every id column)
WS = "/api/workspaces/classroom-demo"
WEB_REGRESSIONS: list[tuple[str, str, str, Any, str, set[str], int]] = [
    # (id, method, url, body, signed in as, backends that answered 500, status now), cause in the id
    (
        "members._int_arg: '²'.isdigit() then int() -> ValueError",
        "GET",
        f"{WS}/members?page=²",
        None,
        OWNER,
        {"sqlite", "postgres"},
        422,
    ),
    (
        "members.assignable: '²'.isdigit() then int() -> ValueError",
        "GET",
        f"{WS}/assignable-roles?member=²",
        None,
        OWNER,
        {"sqlite", "postgres"},
        422,
    ),
    (
        "membership.members.membership: path user_id past INTEGER",
        "PATCH",
        f"{WS}/members/{BIG}",
        {"role": "teacher"},
        OWNER,
        {"sqlite", "postgres"},
        404,
    ),
    (
        "membership.members.membership: path user_id past int4",
        "PATCH",
        f"{WS}/members/{INT4}",
        {"role": "teacher"},
        OWNER,
        {"postgres"},
        404,
    ),
    (
        "membership.members.remove_members: path user_id past int4",
        "DELETE",
        f"{WS}/members/{INT4}",
        None,
        OWNER,
        {"postgres"},
        404,
    ),
    (
        "membership.groups.remove_person: path user_id past INTEGER",
        "DELETE",
        f"{WS}/groups/morning/learners/{BIG}",
        None,
        OWNER,
        {"sqlite", "postgres"},
        404,
    ),
    (
        "membership.groups.move: path user_id past int4",
        "POST",
        f"{WS}/groups/morning/learners/{INT4}/move",
        {"to": "evening"},
        OWNER,
        {"postgres"},
        404,
    ),
    (
        "membership.platform_roles._change: path user_id past INTEGER",
        "DELETE",
        f"/api/platform/simulations/roles/admin/{BIG}",
        None,
        PLATFORM_ADMIN,
        {"sqlite", "postgres"},
        404,
    ),
    (
        "members.parse_user_id admits ids past int4 (platform grant)",
        "POST",
        "/api/platform/simulations/roles",
        {"user_id": INT4, "role": "admin"},
        PLATFORM_ADMIN,
        {"postgres"},
        422,
    ),
    (
        "members.parse_user_id admits ids past int4 (ownership)",
        "POST",
        f"{WS}/ownership",
        {"user_id": INT4},
        OWNER,
        {"postgres"},
        422,
    ),
    (
        "members.parse_user_id admits ids past int4 (group learners)",
        "POST",
        f"{WS}/groups/morning/learners",
        {"user_ids": [INT4]},
        OWNER,
        {"postgres"},
        422,
    ),
    ("audit.events: before past int4", "GET", f"{WS}/audit?before={INT4}", None, OWNER, {"postgres"}, 422),
    ("membership.members.list_members: NUL in q", "GET", f"{WS}/members?q=%00", None, OWNER, {"postgres"}, 422),
    (
        "identity.sessions._recent_failures: NUL in sign-in email",
        "POST",
        "/api/auth/signin",
        {"email": "a\x00@example.org", "password": "x"},
        OWNER,
        {"postgres"},
        422,
    ),
    (
        "identity.profile.update_profile: NUL in display_name",
        "PATCH",
        "/api/auth/me",
        {"display_name": "a\x00b"},
        OWNER,
        {"postgres"},
        422,
    ),
    (
        "membership.groups.create: NUL in description",
        "POST",
        f"{WS}/groups",
        {"name": "fuzz-nul", "description": "a\x00"},
        OWNER,
        {"postgres"},
        422,
    ),
    ("membership.workspaces.update_settings: NUL in name", "PATCH", WS, {"name": "a\x00b"}, OWNER, {"postgres"}, 422),
    # same causes, other inputs (found while fixing the above)
    ("path ids: ASCII digits only", "PATCH", f"{WS}/members/%D9%A3", {"role": "teacher"}, OWNER, set(), 404),
    ("path ids: zero", "DELETE", f"{WS}/groups/morning/learners/0", None, OWNER, set(), 404),
    (
        "queries: more digits than int() reads",
        "GET",
        f"{WS}/members?page={'1' * 5000}",
        None,
        OWNER,
        {"sqlite", "postgres"},
        422,
    ),
    ("queries: before=0", "GET", f"{WS}/audit?before=0", None, OWNER, set(), 422),
    ("update_profile: control character", "PATCH", "/api/auth/me", {"display_name": "a\x01"}, OWNER, set(), 422),
    (
        "update_profile: lone surrogate",
        "PATCH",
        "/api/auth/me",
        {"display_name": "\ud800"},
        OWNER,
        {"sqlite", "postgres"},
        400,  # not I-JSON (RFC 7493): app.api.params.parse_json refuses it before any schema
    ),
    (
        "sign-in: lone surrogate password",
        "POST",
        "/api/auth/signin",
        {"email": "a@b.org", "password": "\udfff"},
        OWNER,
        {"sqlite", "postgres"},
        400,  # not I-JSON (RFC 7493): app.api.params.parse_json refuses it before any schema
    ),
    (
        "sign-up: lone surrogate token",
        "POST",
        "/api/auth/signup",
        {"token": "\ud800", "password": "x"},
        OWNER,
        {"sqlite", "postgres"},
        400,  # not I-JSON (RFC 7493): app.api.params.parse_json refuses it before any schema
    ),
    (
        "groups.update: NUL in description",
        "PATCH",
        f"{WS}/groups/morning",
        {"description": "\x00"},
        OWNER,
        {"postgres"},
        422,
    ),
    (
        "features.create: NUL in name",
        "POST",
        "/api/workspaces",
        {"slug": "fuzz-ws", "name": "a\x00", "pack": "simulations"},
        PLATFORM_ADMIN,
        {"postgres"},
        422,
    ),
    (
        "features.create: owner_id past int4",
        "POST",
        "/api/workspaces",
        {"slug": "fuzz-ws", "name": "Fuzz", "pack": "simulations", "owner_id": INT4},
        PLATFORM_ADMIN,
        {"postgres"},
        422,
    ),
]


@pytest.mark.parametrize("case", WEB_REGRESSIONS, ids=[c[0] for c in WEB_REGRESSIONS])
def test_web_api_regressions(fz: Fuzz, case: tuple[str, str, str, Any, str, set[str], int]) -> None:
    """Inputs the web-client API once answered with a 500: now a 4xx problem that writes nothing."""
    reason, method, url, body, who, _, status = case
    fz.sign_in(who)
    resp = fz.write(lambda: fz.web(who, method, url, body=body), f"{method} {url} {body!r}")
    assert resp.status_code == status, f"{reason}: {resp.status_code} {resp.get_data(as_text=True)[:300]}"


# -- schemathesis: cases generated from the app's own /openapi.json ----------------------------------
def test_openapi_operations(fz: Fuzz) -> None:
    """Schemathesis cases (valid and invalid per the schema) for every operation of /openapi.json, sent with
    the right credentials: no 5xx, problems on 4xx, refused writes change nothing."""
    import schemathesis
    from schemathesis import GenerationMode

    fz.sign_in(ADMIN)
    fz.sign_in(OWNER)
    spec = fz._open(fz.app.test_client(), "GET", "/openapi.json").get_json()
    schema = schemathesis.openapi.from_dict(spec)
    operations = [op.ok() for op in schema.get_all_operations()]
    skip = {("POST", "/api/auth/signout"), ("GET", "/static/{filename}")}
    operations = [op for op in operations if (op.method.upper(), op.path) not in skip]
    assert len(operations) >= 45, [op.path for op in operations]
    cases = st.one_of(
        *[
            op.as_strategy(generation_mode=mode)
            for op in operations
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        ]
    )

    def one(case: Any) -> None:
        method = case.method.upper()
        kw = case.as_transport_kwargs(base_url="http://localhost")
        url = kw["url"].removeprefix("http://localhost")
        query = {str(k): str(v) for k, v in (kw.get("params") or {}).items()}
        body = kw.get("json")
        if query:
            url += "?" + urlencode(query, doseq=True)
        raw = json.dumps(body).encode() if "json" in kw else None
        if url.startswith("/v1/policy/"):
            send = lambda: fz.web(ADMIN, method, url, raw=raw)  # noqa: E731
        elif url.startswith("/v1/"):
            send = lambda: fz.service(method, url, raw=raw)  # noqa: E731
        else:
            send = lambda: fz.web(OWNER, method, url, raw=raw)  # noqa: E731
        if method in SAFE:
            fz.check(send(), f"{method} {url}")
        else:
            fz.write(send, f"{method} {url} {body!r:.300}")

    run_examples(cases, 150, one)
