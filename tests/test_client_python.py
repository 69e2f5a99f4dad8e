"""The client package (clients/python, ``learnauthz_client``) against a live server over real HTTP: sync and
async checks, batch, permissions, who-can, AuthZEN evaluation(s), read-your-writes with a revision a web
client's write returned, fail-closed on every kind of error, retries of 503 honouring Retry-After and
timeouts (against a small stub server that answers what the live one cannot be made to), writes of the
admin API with an Idempotency-Key that every retry repeats, and the Flask extension's ``require``
decorator in another app (plain and ``async def`` views, retries from the config).

The server is what ``make run`` starts: ``flask db-upgrade``, ``flask seed``, ``flask token create``,
``flask run`` on a fresh SQLite file.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from flask import Flask, g, request
from learnauthz_client import CLIENT_ERROR, AsyncClient, Client, LearnAuthzError, Retry, WriteResult
from learnauthz_client.flask import LearnAuthz

from tests.live_server import flask_cli, flask_env, flask_server
from tests.live_server import free_port as _free_port

PASSWORD = "demo-password-1"


@dataclass
class Live:
    base: str
    token: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    secret = "client-live-" + "k" * 32
    env = flask_env(tmp_path_factory.mktemp("client-live") / "app.db", POLICY_SYNC="off", SECRET_KEY=secret)
    flask_cli(env, "db-upgrade")
    flask_cli(env, "seed")
    bound = ("--workspace", "classroom-demo", "--workspace", "simulations-demo", "--workspace", "academy-demo")
    token = flask_cli(env, "token", "create", "client-tests", *bound).strip().splitlines()[-1]
    with flask_server(env) as (base, log):
        # The first decision loads the policy (POLICY_SYNC=off: nothing loads it before): done here, with
        # time to spare on a busy machine, so no test's 2 s client budget pays for it.
        warm = httpx.post(
            base + "/v1/check",
            json={"subject": "owner@classroom.example", "workspace": "classroom-demo", "action": "create_groups"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
            trust_env=False,
        )
        assert warm.status_code == 200, warm.text
        yield Live(base, token)
    text = "\n".join(log)
    assert '" 500 ' not in text and "Traceback" not in text, text[-4000:]


@pytest.fixture()
def client(live: Live) -> Iterator[Client]:
    with Client(live.base, live.token, workspace="classroom-demo") as c:
        yield c


def _web_session(live: Live, email: str) -> httpx.Client:
    """A signed-in web client (cookie session + CSRF header), as a browser would be."""
    web = httpx.Client(base_url=live.base, trust_env=False, timeout=10)
    csrf = web.get("/api/auth/csrf").json()["csrf_token"]
    resp = web.post("/api/auth/signin", json={"email": email, "password": PASSWORD}, headers={"X-CSRFToken": csrf})
    assert resp.status_code == 200, resp.text
    web.headers["X-CSRFToken"] = resp.json()["csrf_token"]
    return web


# -- the decision API ---------------------------------------------------------------------------------
def test_check_batch_permissions_who_can(client: Client) -> None:
    allowed = client.check("owner@classroom.example", "create_groups")
    assert allowed and allowed.reason == "granted" and isinstance(allowed.revision, int)
    denied = client.check("learner@classroom.example", "create_groups")
    assert not denied and denied.reason == "not_permitted" and denied.error is None
    group = {"type": "group", "attributes": {"group": "morning", "member": "learner@classroom.example"}}
    assert client.check("teacher@classroom.example", "manage_group_learners", group).allowed
    sim = {"type": "simulation", "id": 1, "attributes": {"assignee": "owner@simulations.example"}}
    other = client.check("learner@simulations.example", "launch_own_simulations", sim, workspace="simulations-demo")
    assert other.reason == "not_assignee"

    results = client.batch(
        [
            {"subject": "owner@classroom.example", "action": "create_groups"},
            {"subject": "learner@classroom.example", "action": "create_groups"},
            {"subject": "company_admin@academy.example", "workspace": "academy-demo", "action": "allocate_licenses"},
        ]
    )
    assert [d.allowed for d in results] == [True, False, True]

    perms = client.permissions("owner@classroom.example")
    assert "create_groups" in perms and perms.decisions["create_groups"].allowed and perms.error is None
    assert "create_groups" not in client.permissions("learner@classroom.example")
    assert client.permissions("nobody@example.org").reason == "unknown_subject"
    # issue 21: actions on members need a target; "anyone at all?" is asked explicitly
    assert perms.decisions["change_user_roles"].reason == "target_required" and "change_user_roles" not in perms
    assert "change_user_roles" in client.permissions("owner@classroom.example", any_target=True)
    forgot = client.check("owner@classroom.example", "change_user_roles")
    assert not forgot and forgot.reason == "target_required"
    named = {"type": "member", "attributes": {"member": "learner@classroom.example", "new_role": "teacher"}}
    assert client.check("owner@classroom.example", "change_user_roles", named).allowed

    page = client.who_can("create_groups", limit=1)
    assert len(page.items) == 1 and page.next_cursor and not page.complete
    everyone = list(client.who_can_all("create_groups", limit=1))
    emails = {p["email"] for p in everyone}
    assert {"owner@classroom.example", "owner2@classroom.example", "multi@example.com"} <= emails
    assert "learner@classroom.example" not in emails
    assert len(everyone) == len({p["user_id"] for p in everyone})


def test_authzen_evaluation_and_evaluations(client: Client) -> None:
    ws = {"type": "workspace", "id": "classroom-demo"}
    assert client.evaluation("owner@classroom.example", "create_groups", ws).decision is True
    no = client.evaluation({"type": "user", "id": "learner@classroom.example"}, {"name": "create_groups"}, ws)
    assert no.decision is False and no.error is None and no.context
    items = [{"action": {"name": "create_groups"}}, {"action": {"name": "personal_dashboard"}}]
    both = client.evaluations(items, defaults={"subject": {"type": "user", "id": "learner@classroom.example"},
                                               "resource": ws})  # fmt: skip
    assert [e.decision for e in both] == [False, True]
    assert [e.context.get("reason") for e in both] == ["not_permitted", "granted"]  # the client asks for reasons
    first = client.evaluations(items, defaults={"subject": {"type": "user", "id": "learner@classroom.example"},
                                                "resource": ws}, semantic="deny_on_first_deny")  # fmt: skip
    assert [e.decision for e in first] == [False]


def test_async_client(live: Live) -> None:
    async def main() -> None:
        async with AsyncClient(live.base, live.token, workspace="classroom-demo") as c:
            yes, no = await asyncio.gather(
                c.check("owner@classroom.example", "create_groups"),
                c.check("learner@classroom.example", "create_groups"),
            )
            assert yes.allowed and not no.allowed
            assert [
                d.allowed for d in await c.batch([{"subject": "owner@classroom.example", "action": "create_groups"}])
            ] == [True]
            assert "create_groups" in await c.permissions("owner2@classroom.example")
            assert "change_user_roles" in await c.permissions("owner2@classroom.example", any_target=True)
            assert (await c.who_can("create_groups")).complete
            paged = [p["user_id"] async for p in c.who_can_all("create_groups", limit=1)]
            assert paged == [p["user_id"] for p in (await c.who_can("create_groups")).items]
            assert (
                await c.evaluation("owner@classroom.example", "create_groups", {"type": "workspace", "id": "x"})
            ).decision
            assert [e.decision for e in await c.evaluations([{"action": {"name": "create_groups"}}],
                    defaults={"subject": {"type": "user", "id": "owner@classroom.example"},
                              "resource": {"type": "workspace", "id": "x"}})] == [True]  # fmt: skip
        async with AsyncClient("http://127.0.0.1:9", live.token, workspace="classroom-demo",
                               retry=Retry(attempts=1)) as down:  # fmt: skip
            assert (await down.check("owner@classroom.example", "create_groups")).reason == CLIENT_ERROR

    asyncio.run(main())


# -- read-your-writes ----------------------------------------------------------------------------------
def test_read_your_writes_carries_the_write_revision(live: Live, client: Client) -> None:
    web = _web_session(live, "owner@classroom.example")
    try:
        found = web.get("/api/workspaces/classroom-demo/members", params={"q": "learner2"}).json()["items"]
        uid = found[0]["user_id"]
        before = client.check("learner2@classroom.example", "create_groups")
        wrote = web.patch(f"/api/workspaces/classroom-demo/members/{uid}", json={"role": "admin"})
        assert wrote.status_code == 200, wrote.text
        revision = wrote.json()["revision"]
        assert before.revision is not None and revision > before.revision
        client.observe(wrote.json())  # the write's body (or its revision as an int)
        assert client.revisions.seen == revision
        after = client.check("learner2@classroom.example", "create_groups")
        assert after.allowed and after.revision is not None and after.revision >= revision
        client.observe(revision - 5)  # never goes back
        assert client.revisions.seen == revision
        perms = client.permissions("learner2@classroom.example")
        assert perms.revision is not None and perms.revision >= revision and "create_groups" in perms
    finally:
        web.close()

    # A revision the service has not reached (nor will: past its head) is refused, so the client denies.
    ahead = client.check("owner@classroom.example", "create_groups", min_revision=revision + 1000)
    assert not ahead and ahead.reason == CLIENT_ERROR and "422" in (ahead.error or "")


# -- fail closed ---------------------------------------------------------------------------------------
def test_fail_closed_by_default_and_raise_when_asked(live: Live) -> None:
    with Client(live.base, "lat_not-a-token", workspace="classroom-demo") as bad:
        d = bad.check("owner@classroom.example", "create_groups")
        assert not d and d.reason == CLIENT_ERROR and d.error and "401" in d.error
        assert [
            x.allowed for x in bad.batch([{"subject": "owner@classroom.example", "action": "create_groups"}] * 2)
        ] == [False, False]
        assert bad.permissions("owner@classroom.example").allowed == frozenset()
        page = bad.who_can("create_groups")
        assert page.items == [] and not page.complete and page.error
        assert not bad.evaluation("owner@classroom.example", "create_groups", {"type": "workspace", "id": "x"})
        with pytest.raises(LearnAuthzError):
            list(bad.who_can_all("create_groups"))
    with Client(live.base, "lat_not-a-token", workspace="classroom-demo", raise_errors=True) as strict:
        with pytest.raises(LearnAuthzError) as info:
            strict.check("owner@classroom.example", "create_groups")
        assert info.value.status == 401 and info.value.problem.get("status") == 401
    with Client(live.base, live.token) as no_default:
        assert no_default.check("owner@classroom.example", "create_groups").reason == CLIENT_ERROR  # no workspace
    # The token is bound to three workspaces: asking about a fourth is a 403 the client denies on.
    with Client(live.base, live.token, workspace="skills-demo") as foreign:
        d = foreign.check("owner@skills.example", "create_edit_deactivate_users_assign_roles")
        assert not d and d.reason == CLIENT_ERROR and "403" in (d.error or "")
        assert not foreign.evaluation("owner@skills.example", "personal_dashboard", {"type": "workspace", "id": "x"})
        assert foreign.permissions("owner@skills.example").allowed == frozenset()
    with Client(live.base, live.token, workspace="service", raise_errors=True) as meta:
        with pytest.raises(LearnAuthzError) as info:
            meta.check("policy_admin@service.example", "apply_policy_change")
        assert info.value.status == 403 and str(info.value.problem["type"]).endswith("/token-not-bound")
    started = time.monotonic()
    with Client(f"http://127.0.0.1:{_free_port()}", live.token, workspace="classroom-demo",
                retry=Retry(attempts=2, backoff=0.05)) as down:  # fmt: skip
        d = down.check("owner@classroom.example", "create_groups")
        assert not d and "ConnectError" in (d.error or "")
    assert time.monotonic() - started < 2


# -- retries and timeouts (a stub server: the live one cannot be made to answer 503 on demand) -------------
class _Stub:
    """Answers each POST with the next scripted (status, headers, body, delay); counts the hits."""

    def __init__(self, script: list[tuple[int, dict[str, str], dict[str, Any], float]]) -> None:
        self.script = list(script)
        self.hits: list[float] = []
        self.keys: list[str | None] = []  # the Idempotency-Key of each hit
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                stub.hits.append(time.monotonic())
                stub.keys.append(self.headers.get("Idempotency-Key"))
                status, hdrs, body, delay = stub.script.pop(0) if stub.script else (500, {}, {}, 0.0)
                time.sleep(delay)
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for k, v in hdrs.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


GRANTED = {"allowed": True, "reason": "granted", "revision": 3}
BUSY = {"type": "about:blank", "title": "Service Unavailable", "status": 503}


def test_retries_503_honouring_retry_after_then_answers() -> None:
    stub = _Stub([(503, {"Retry-After": "1"}, BUSY, 0.0), (503, {}, BUSY, 0.0), (200, {}, GRANTED, 0.0)])
    try:
        with Client(stub.base, "t", workspace="w", retry=Retry(attempts=3, backoff=0.05)) as c:
            d = c.check("u", "a")
        assert d.allowed and d.revision == 3
        assert len(stub.hits) == 3
        assert stub.hits[1] - stub.hits[0] >= 0.95  # Retry-After: 1 was waited for
        assert stub.hits[2] - stub.hits[1] < 0.5  # then the exponential backoff (0.05 s ± 25 %)
    finally:
        stub.close()


def test_retries_give_up_and_deny() -> None:
    stub = _Stub([(503, {}, BUSY, 0.0)] * 3 + [(503, {"Retry-After": "120"}, BUSY, 0.0)])
    try:
        with Client(stub.base, "t", workspace="w", retry=Retry(attempts=3, backoff=0.01)) as c:
            d = c.check("u", "a")
            assert not d and "503" in (d.error or "") and len(stub.hits) == 3
            started = time.monotonic()
            d = c.check("u", "a")  # Retry-After longer than max_retry_after: no waiting, no retry
            assert not d and time.monotonic() - started < 1 and len(stub.hits) == 4
    finally:
        stub.close()


def test_timeout_denies_within_the_budget() -> None:
    stub = _Stub([(200, {}, GRANTED, 1.5), (200, {}, GRANTED, 1.5)])
    try:
        started = time.monotonic()
        with Client(stub.base, "t", workspace="w", timeout=0.3, retry=Retry(attempts=2, backoff=0.01)) as c:
            d = c.check("u", "a")
        elapsed = time.monotonic() - started
        assert not d and d.reason == CLIENT_ERROR and "Timeout" in (d.error or "")
        assert elapsed < 1.4 and len(stub.hits) == 2  # two attempts of 0.3 s, not 1.5 s each
    finally:
        stub.close()


def test_malformed_answer_fails_closed() -> None:
    stub = _Stub([(200, {}, {"unexpected": True}, 0.0), (200, {}, {"unexpected": True}, 0.0)])
    try:
        with Client(stub.base, "t", workspace="w") as c:
            assert c.check("u", "a").allowed is False  # no "allowed": True in the answer
            assert [d.reason for d in c.batch([{"subject": "u", "action": "a"}])] == [CLIENT_ERROR]
    finally:
        stub.close()


# -- the Flask extension -------------------------------------------------------------------------------
def test_flask_extension_require(live: Live) -> None:
    app = Flask("other-service")
    app.config.update(LEARNAUTHZ_URL=live.base, LEARNAUTHZ_TOKEN=live.token, LEARNAUTHZ_WORKSPACE="classroom-demo")
    authz = LearnAuthz(app)

    @authz.subject_loader
    def current_subject() -> str | None:
        return request.headers.get("X-User")

    @app.post("/groups")
    @authz.require("create_groups")
    def create_group() -> dict[str, Any]:
        return {"created": True, "reason": g.learnauthz_decision.reason}

    @app.post("/groups/<name>/learners")
    @authz.require("manage_group_learners", resource=lambda name: {"type": "group", "attributes": {"group": name}})
    def add_learner(name: str) -> dict[str, Any]:
        return {"group": name}

    def own_simulation(sim: int) -> dict[str, Any]:
        return {"type": "simulation", "id": sim, "attributes": {"assignee": request.headers.get("X-User")}}

    @app.get("/sims/<int:sim>")
    @authz.require("launch_own_simulations", workspace="simulations-demo", resource=own_simulation)
    def launch(sim: int) -> dict[str, Any]:
        return {"sim": sim}

    web = app.test_client()
    owner = {"X-User": "owner@classroom.example"}
    assert web.post("/groups", headers=owner).get_json() == {"created": True, "reason": "granted"}
    assert web.post("/groups", headers={"X-User": "learner@classroom.example"}).status_code == 403
    assert web.post("/groups").status_code == 403  # nobody signed in
    assert web.post("/groups/morning/learners", headers={"X-User": "teacher@classroom.example"}).status_code == 200
    assert web.post("/groups/evening/learners", headers={"X-User": "teacher@classroom.example"}).status_code == 403
    assert web.get("/sims/4", headers={"X-User": "learner@simulations.example"}).status_code == 200
    assert web.get("/sims/4", headers={"X-User": "reviewer@simulations.example"}).status_code == 403

    down = Flask("down")
    down.config.update(LEARNAUTHZ_URL=f"http://127.0.0.1:{_free_port()}", LEARNAUTHZ_TOKEN="t",
                       LEARNAUTHZ_WORKSPACE="classroom-demo", LEARNAUTHZ_TIMEOUT=0.5)  # fmt: skip
    ext = LearnAuthz(down)
    ext.subject_loader(lambda: "owner@classroom.example")
    down.add_url_rule("/x", "x", ext.require("create_groups")(lambda: "ok"))
    assert down.test_client().get("/x").status_code == 403  # unreachable service: fail closed

    with pytest.raises(RuntimeError, match="LEARNAUTHZ_URL"):
        LearnAuthz(Flask("unconfigured"))


def test_flask_extension_async_views_and_retry_config(live: Live) -> None:
    """``require`` on an ``async def`` view (Flask[async]) decides like on a plain one; the retries
    come from LEARNAUTHZ_RETRY_* settings."""
    app = Flask("async-service")
    app.config.update(LEARNAUTHZ_URL=live.base, LEARNAUTHZ_TOKEN=live.token, LEARNAUTHZ_WORKSPACE="classroom-demo",
                      LEARNAUTHZ_RETRY_ATTEMPTS=5, LEARNAUTHZ_RETRY_BACKOFF=0.01)  # fmt: skip
    authz = LearnAuthz(app)
    authz.subject_loader(lambda: request.headers.get("X-User"))

    @app.post("/groups")
    @authz.require("create_groups")
    async def create_group() -> dict[str, Any]:
        await asyncio.sleep(0)
        return {"created": True, "reason": g.learnauthz_decision.reason}

    web = app.test_client()
    resp = web.post("/groups", headers={"X-User": "owner@classroom.example"})
    assert resp.status_code == 200 and resp.get_json() == {"created": True, "reason": "granted"}
    assert web.post("/groups", headers={"X-User": "learner@classroom.example"}).status_code == 403
    with app.app_context():
        assert authz.client.retry == Retry(attempts=5, backoff=0.01, max_backoff=2.0, max_retry_after=5.0)

    for attempts, status in ((1, 403), (2, 200)):  # one 503 first: retried only with 2 attempts
        stub = _Stub([(503, {}, BUSY, 0.0), (200, {}, GRANTED, 0.0)])
        try:
            other = Flask(f"retry-{attempts}")
            other.config.update(LEARNAUTHZ_URL=stub.base, LEARNAUTHZ_TOKEN="t", LEARNAUTHZ_WORKSPACE="w",
                                LEARNAUTHZ_RETRY_ATTEMPTS=attempts, LEARNAUTHZ_RETRY_BACKOFF=0.01)  # fmt: skip
            ext = LearnAuthz(other)
            ext.subject_loader(lambda: "u")

            async def view() -> str:
                return "ok"

            other.add_url_rule("/x", "x", ext.require("a")(view))
            assert other.test_client().get("/x").status_code == status, attempts
            assert len(stub.hits) == attempts
        finally:
            stub.close()


# -- writes with an Idempotency-Key -------------------------------------------------------------------
def test_write_sends_a_key_and_a_repeat_replays(live: Live) -> None:
    """A signed-in client's write carries an Idempotency-Key; the same key again is the first answer
    (replayed), the group exists once; without sign-in a write is refused."""
    with Client(live.base, raise_errors=True) as admin:
        admin.sign_in("admin@classroom.example", PASSWORD)
        first = admin.write("POST", "/api/workspaces/classroom-demo/groups", {"name": "client-made"})
        assert isinstance(first, WriteResult) and first.status == 201 and not first.replayed and first.key
        again = admin.write(
            "POST", "/api/workspaces/classroom-demo/groups", {"name": "client-made"}, idempotency_key=first.key
        )
        assert again.status == 201 and again.replayed and again.body == first.body
        with pytest.raises(LearnAuthzError) as info:  # a new key is a new request: the group exists
            admin.write("POST", "/api/workspaces/classroom-demo/groups", {"name": "client-made"})
        assert info.value.status == 409
    web = _web_session(live, "admin@classroom.example")
    names = [u["name"] for u in web.get("/api/workspaces/classroom-demo/groups").json()["items"]]
    assert names.count("client-made") == 1
    with Client(live.base) as anonymous, pytest.raises(LearnAuthzError) as info:
        anonymous.write("POST", "/api/workspaces/classroom-demo/groups", {"name": "nobody"})
    assert info.value.status in (400, 401)  # no CSRF token / no session


APPLIED = {"type": "https://learnauthz.dev/problems/idempotency-applied", "status": 409, "applied": True}
IN_FLIGHT = {"type": "https://learnauthz.dev/problems/idempotency-in-flight", "status": 409}


def test_write_retries_with_the_same_key() -> None:
    """503 (Retry-After honoured), a timeout and a 409 "in flight" are retried, each with the first key."""
    created = {"name": "g"}
    replayed = {"Idempotent-Replayed": "true"}
    stub = _Stub([(503, {"Retry-After": "1"}, BUSY, 0.0), (200, {}, created, 0.8),
                  (409, {"Retry-After": "0"}, IN_FLIGHT, 0.0), (201, replayed, created, 0.0)])  # fmt: skip
    try:
        with Client(stub.base, timeout=0.4, retry=Retry(attempts=4, backoff=0.01)) as c:
            result = c.write("POST", "/api/workspaces/w/groups", {"name": "g"})
        assert result.status == 201 and result.replayed and result.body == created and result.attempts == 4
        assert len(stub.keys) == 4 and len(set(stub.keys)) == 1 and stub.keys[0] == result.key
        assert stub.hits[1] - stub.hits[0] >= 0.95
    finally:
        stub.close()
    stub = _Stub([(409, {}, APPLIED, 0.0), (409, {}, {"type": "https://learnauthz.dev/problems/conflict"}, 0.0)])
    try:
        with Client(stub.base, retry=Retry(attempts=3, backoff=0.01)) as c:
            lost = c.write("POST", "/x", {"a": 1}, idempotency_key="mine")
            assert lost.outcome_lost and lost.status == 409 and lost.key == "mine" and len(stub.hits) == 1
            with pytest.raises(LearnAuthzError) as info:  # any other conflict is a refusal, not retried
                c.write("POST", "/x", {"a": 1})
            assert info.value.status == 409 and len(stub.hits) == 2
    finally:
        stub.close()


def test_async_write_retries_with_the_same_key() -> None:
    stub = _Stub([(503, {}, BUSY, 0.0), (201, {}, {"ok": True}, 0.0)])

    async def run() -> WriteResult:
        async with AsyncClient(stub.base, retry=Retry(attempts=2, backoff=0.01)) as c:
            return await c.write("POST", "/x", {"a": 1})

    try:
        result = asyncio.run(run())
        assert result.status == 201 and result.attempts == 2 and stub.keys == [result.key, result.key]
    finally:
        stub.close()
