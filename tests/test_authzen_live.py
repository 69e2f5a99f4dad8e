"""AuthZEN against a live server over HTTPS: every Todo interop vector, and the certification scenario's
Basic Core, Batch Core, Search Core and Discovery levels (authzen/certification-scenario-1_0.md), each
request, status and structure check as the scenario specifies them.

The server is what an operator runs: ``flask db-upgrade``, ``flask seed authzen-todo``, ``flask seed
authzen-cert``, ``flask token create NAME --workspace SLUG``, ``flask run`` (with a self-signed
certificate made by openssl; plain http if openssl is missing).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import urllib3

from tests.test_authzen import VECTORS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Pdp:
    """The live server, its base URL, and a session per token."""

    base: str
    todo: requests.Session
    cert: requests.Session
    https: bool
    search: requests.Session


def _session(token: str, verify: str | bool) -> requests.Session:
    s = requests.Session()
    s.trust_env = False  # REQUESTS_CA_BUNDLE would replace our certificate, a proxy would intercept
    s.headers["Authorization"] = f"Bearer {token}"
    s.verify = verify
    return s


@pytest.fixture(scope="module")
def pdp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pdp]:
    tmp = tmp_path_factory.mktemp("authzen-live")
    env = {
        **os.environ,
        "FLASK_SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp / 'app.db'}",
        "FLASK_SECRET_KEY": "authzen-live-0123456789abcdef0123456789abcdef",
        "FLASK_MAIL_BACKEND": "memory",
        "FLASK_POLICY_SYNC": "off",
    }
    flask = [sys.executable, "-m", "flask", "--app", "app:create_app"]

    def run(*args: str) -> str:
        proc = subprocess.run([*flask, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout.strip()

    run("db-upgrade")
    run("seed", "authzen-todo")
    run("seed", "authzen-cert")
    run("seed", "authzen-search")
    todo_token = run("token", "create", "todo-pep", "--workspace", "authzen-todo").splitlines()[-1]
    cert_token = run("token", "create", "cert-harness", "--workspace", "authzen-cert").splitlines()[-1]
    search_token = run("token", "create", "search-pep", "--workspace", "authzen-search").splitlines()[-1]
    port = _free_port()
    serve = [*flask, "run", "--host", "127.0.0.1", "--port", str(port)]
    verify: str | bool = True
    https = shutil.which("openssl") is not None
    if https:
        cert, key = tmp / "cert.pem", tmp / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        serve += ["--cert", str(cert), "--key", str(key)]
        verify = str(cert)
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen(serve, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"{'https' if https else 'http'}://127.0.0.1:{port}"
    try:
        for _ in range(400):
            try:
                requests.get(base + "/healthz", timeout=1, verify=verify)
                break
            except requests.RequestException:
                time.sleep(0.05)
        yield Pdp(
            base, _session(todo_token, verify), _session(cert_token, verify), https, _session(search_token, verify)
        )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
        text = (tmp / "server.log").read_text(errors="replace")
        assert '" 500 ' not in text and "Traceback" not in text, text[-4000:]


# -- the Todo interop vectors --------------------------------------------------------------------------
def test_todo_interop_vectors_live(pdp: Pdp) -> None:
    """Every request of todo-decisions-1_0.json, sent as the Todo PEP sends it; every decision expected."""
    data = json.loads(VECTORS.read_text(encoding="utf-8"))
    passed: list[str] = []
    failed: list[str] = []
    for n, case in enumerate(data["evaluation"]):
        resp = pdp.todo.post(pdp.base + "/access/v1/evaluation", json=case["request"], timeout=10)
        ok = resp.status_code == 200 and resp.json().get("decision") is case["expected"]
        (passed if ok else failed).append(f"evaluation[{n}]")
    for n, case in enumerate(data["evaluations"]):
        resp = pdp.todo.post(pdp.base + "/access/v1/evaluations", json=case["request"], timeout=10)
        # compared whole, as the working group's Todo runner does (a bare decision per item unless asked)
        ok = resp.status_code == 200 and resp.json().get("evaluations") == case["expected"]
        (passed if ok else failed).append(f"evaluations[{n}]")
    print(f"AuthZEN Todo interop: {len(passed)}/{len(passed) + len(failed)} passed")
    assert len(passed) == 43 and not failed, failed


def test_gateway_search_and_idp_scenarios_live(pdp: Pdp) -> None:
    """One request per scenario of docs/authzen.md over HTTP: the gateway's route check with the Todo token,
    the three searches and the IdP's claims with the search token."""
    jerry, morty = (
        "CiRmZDQ2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
        "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
    )
    for who, expected in ((jerry, False), (morty, True)):
        route = {"subject": {"type": "identity", "id": who}, "action": {"name": "DELETE"},
                 "resource": {"type": "route", "id": "/todos/{todoId}"}, "context": {}}  # fmt: skip
        resp = pdp.todo.post(pdp.base + "/access/v1/evaluation", json=route, timeout=10)
        assert resp.status_code == 200 and resp.json()["decision"] is expected, resp.text

    def found(kind: str, body: dict[str, Any], key: str = "id") -> list[str]:
        resp = pdp.search.post(pdp.base + f"/access/v1/search/{kind}", json=body, timeout=10)
        assert resp.status_code == 200, resp.text
        return sorted(r[key] for r in resp.json()["results"])

    record = {"type": "record"}
    who = {"subject": {"type": "user"}, "action": {"name": "view"}, "resource": {**record, "id": "105"}}
    assert found("subject", who) == ["alice", "bob", "carol", "dan", "erin"]
    erin = {"type": "user", "id": "erin"}
    assert found("resource", {"subject": erin, "action": {"name": "view"}, "resource": record}) == [
        "105",
        "111",
        "115",
        "117",
    ]
    assert found("action", {"subject": erin, "resource": {**record, "id": "117"}}, "name") == ["delete", "edit", "view"]
    idp = {"subject": {"type": "user", "id": "alice"}, "action": {"name": "delete"}, "resource": record}
    assert found("resource", idp) == ["101", "107", "113", "119"]


# -- the certification harness ---------------------------------------------------------------------------
@dataclass
class Harness:
    """Sends the scenario's requests and records every check that fails, by test id."""

    pdp: Pdp
    failures: list[str] = field(default_factory=list)
    checks: int = 0

    def post(self, path: str, body: Any = None, *, raw: bytes | None = None, ctype: str = "application/json",
             headers: dict[str, str] | None = None) -> requests.Response:  # fmt: skip
        data = raw if raw is not None else json.dumps(body).encode()
        hdrs = {"Content-Type": ctype, **(headers or {})}
        return self.pdp.cert.post(self.pdp.base + path, data=data, headers=hdrs, timeout=10)

    def check(self, test_id: str, ok: bool, what: str) -> None:
        self.checks += 1
        if not ok:
            self.failures.append(f"{test_id}: {what}")

    def json_200(self, test_id: str, resp: requests.Response) -> dict[str, Any]:
        """HTTP 200, Content-Type application/json, a JSON object body (c-5 transport requirements)."""
        self.check(test_id, resp.status_code == 200, f"status {resp.status_code}: {resp.text[:200]}")
        self.check(test_id, resp.headers.get("Content-Type", "").startswith("application/json"), "content type")
        try:
            body = resp.json()
        except ValueError:
            self.check(test_id, False, "body is not JSON")
            return {}
        self.check(test_id, isinstance(body, dict), "body is not an object")
        return body if isinstance(body, dict) else {}

    def decision(self, test_id: str, path: str, body: Any, expect: bool | None) -> dict[str, Any]:
        """c-2-3: a boolean ``decision``, an object ``context`` if any; the value when the fixture fixes it."""
        out = self.json_200(test_id, self.post(path, body))
        self.check(test_id, isinstance(out.get("decision"), bool), f"decision is not a boolean: {out}")
        self.check(test_id, "context" not in out or isinstance(out["context"], dict), "context is not an object")
        if expect is not None:
            self.check(test_id, out.get("decision") is expect, f"expected decision {expect}, got {out}")
        return out

    def batch(self, test_id: str, body: Any, expect: list[bool | None]) -> None:
        """c-3-3: same length and order as the request, each item a boolean decision (values if fixed)."""
        out = self.json_200(test_id, self.post(EVALS, body))
        items = out.get("evaluations")
        self.check(test_id, isinstance(items, list) and len(items) == len(expect), f"evaluations: {out}")
        for i, (item, want) in enumerate(zip(items or [], expect)):
            self.check(test_id, isinstance(item, dict) and isinstance(item.get("decision"), bool), f"item {i}")
            self.check(test_id, "context" not in item or isinstance(item["context"], dict), f"item {i} context")
            if want is not None:
                self.check(test_id, item.get("decision") is want, f"item {i}: expected {want}, got {item}")

    def status(self, test_id: str, resp: requests.Response, code: int) -> None:
        self.check(test_id, resp.status_code == code, f"expected {code}, got {resp.status_code}: {resp.text[:200]}")

    def search(self, test_id: str, path: str, body: Any, must: list[str], key: str, rtype: str | None) -> list[Any]:
        """c-4: 200, ``results`` an array of entities of the requested type, at least ``must`` present."""
        out = self.json_200(test_id, self.post(path, body))
        results = out.get("results")
        self.check(test_id, isinstance(results, list), f"results is not an array: {out}")
        results = results if isinstance(results, list) else []
        for r in results:
            self.check(test_id, isinstance(r, dict) and isinstance(r.get(key), str), f"result without {key}: {r}")
            if rtype is not None:
                self.check(test_id, isinstance(r, dict) and r.get("type") == rtype, f"result of another type: {r}")
        got = [r.get(key) for r in results if isinstance(r, dict)]
        for m in must:
            self.check(test_id, m in got, f"{m!r} missing from {got}")
        page = out.get("page")
        self.check(test_id, page is None or isinstance(page, dict), "page is not an object")
        if isinstance(page, dict) and "next_token" in page:
            self.check(test_id, isinstance(page["next_token"], str), "page.next_token is not a string")
        return got


EVAL = "/access/v1/evaluation"
EVALS = "/access/v1/evaluations"
SUBJECT = "/access/v1/search/subject"
RESOURCE = "/access/v1/search/resource"
ACTION = "/access/v1/search/action"
ALICE = {"type": "user", "id": "alice"}
BOB = {"type": "user", "id": "bob"}
R1 = {"type": "record", "id": "record-1"}
R2 = {"type": "record", "id": "record-2"}
READ = {"name": "read"}
WRITE = {"name": "write"}
CTX = {"time": "2025-06-27T18:03-07:00", "ip": "192.168.1.1"}


def basic_core(h: Harness) -> None:
    """Test ids c-2-2-1, -2, -3, -8, -9 and c-2-3, c-2-4, c-2-5, c-2-6."""
    h.decision("c-2-2-1", EVAL, {"subject": ALICE, "action": READ, "resource": R1}, True)
    h.decision("c-2-2-2", EVAL, {"subject": BOB, "action": WRITE, "resource": R1}, False)
    h.decision("c-2-2-3", EVAL, {"subject": ALICE, "action": READ, "resource": R1, "context": CTX}, True)
    extra = {
        "subject": {"type": "user", "id": "alice", "properties": {"department": "Sales", "role": "manager"}},
        "action": {"name": "read", "properties": {"method": "GET"}},
        "resource": {"type": "record", "id": "record-1", "properties": {"status": "active", "owner": "bob"}},
    }
    h.decision("c-2-2-8", EVAL, extra, True)
    unknown = {"subject": ALICE, "action": READ, "resource": R1, "foo": "bar", "futureField": {"nested": True}}
    h.decision("c-2-2-9", EVAL, unknown, True)
    # c-2-4-1 missing required fields; c-2-4-2 missing sub-fields; c-2-4-6 invalid field types
    for body in (
        {"action": READ, "resource": R1},
        {"subject": ALICE, "resource": R1},
        {"subject": ALICE, "action": READ},
        {"subject": {"id": "alice"}, "action": READ, "resource": R1},
        {"subject": {"type": "user"}, "action": READ, "resource": R1},
        {"subject": ALICE, "action": {}, "resource": R1},
        {"subject": ALICE, "action": READ, "resource": {"id": "record-1"}},
        {"subject": ALICE, "action": READ, "resource": {"type": "record"}},
        {"subject": "alice", "action": READ, "resource": R1},
        {"subject": ALICE, "action": {"name": 123}, "resource": R1},
    ):
        h.status("c-2-4", h.post(EVAL, body), 400)
    good = json.dumps({"subject": ALICE, "action": READ, "resource": R1}).encode()
    h.status("c-2-4-3", h.post(EVAL, raw=good, ctype="text/plain"), 400)
    h.status("c-2-4-4", h.post(EVAL, raw=b'{"subject": {"type": "user", "id": "alice"'), 400)
    h.status("c-2-4-5", h.post(EVAL, raw=b""), 400)
    # c-2-5 X-Request-ID echoed; absent is fine
    rid = "bfe9eb29-ab87-4ca3-be83-a1d5d8305716"
    resp = h.post(EVAL, {"subject": ALICE, "action": READ, "resource": R1}, headers={"X-Request-ID": rid})
    h.check("c-2-5-1", resp.status_code == 200 and resp.headers.get("X-Request-ID") == rid, "X-Request-ID not echoed")
    h.status("c-2-5-2", h.post(EVAL, {"subject": ALICE, "action": READ, "resource": R1}), 200)
    # c-2-6 idempotency
    seen = {h.decision("c-2-6", EVAL, {"subject": BOB, "action": READ, "resource": R1}, True).get("decision")}
    for _ in range(4):
        seen.add(h.decision("c-2-6", EVAL, {"subject": BOB, "action": READ, "resource": R1}, None).get("decision"))
    h.check("c-2-6", seen == {True}, f"decisions differ between identical requests: {seen}")


def batch_core(h: Harness) -> None:
    """Test ids c-3-2-1, -2, -5, -6 and c-3-3, c-3-4."""
    h.batch("c-3-2-1", {"subject": ALICE, "action": READ, "evaluations": [{"resource": R1}, {"resource": R2}]},
            [None, None])  # fmt: skip
    h.batch("c-3-2-2", {"subject": BOB, "resource": R1, "evaluations": [{"action": READ}, {"action": WRITE}]},
            [True, False])  # fmt: skip
    full = [{"subject": ALICE, "action": READ, "resource": R1}, {"subject": BOB, "action": WRITE, "resource": R1}]
    h.batch("c-3-2-5", {"evaluations": full}, [True, False])
    inherit = {
        "subject": ALICE,
        "action": READ,
        "context": {"time": "2025-06-27T18:03-07:00"},
        "evaluations": [
            {"resource": R1},
            {"resource": R2, "context": {"time": "2025-06-27T19:00-07:00", "source": "batch-override"}},
        ],
    }
    h.batch("c-3-2-6", inherit, [None, None])
    failing = {
        "subject": ALICE,
        "action": READ,
        "options": {"evaluations_semantic": "execute_all"},
        "evaluations": [{"resource": R1}, {}],
    }
    h.batch("c-3-4-1", failing, [True, False])
    h.decision("c-3-4-2", EVALS, {"subject": ALICE, "action": READ, "resource": R1}, True)
    h.decision("c-3-4-3", EVALS, {"subject": ALICE, "action": READ, "resource": R1, "evaluations": []}, True)


def search_core(h: Harness) -> None:
    """Test ids c-4-2-1..3, c-4-3-1..3, c-4-4-1..2, c-4-5, c-4-6, c-4-7."""
    users = {"subject": {"type": "user"}, "action": READ, "resource": R1}
    who = h.search("c-4-2-1", SUBJECT, users, ["alice", "bob"], "id", "user")
    h.check("c-4-2-2", h.search("c-4-2-2", SUBJECT, {**users, "context": CTX}, ["alice", "bob"], "id", "user")
            == who, "context changed the result set")  # fmt: skip
    h.check("c-4-2-3", h.search("c-4-2-3", SUBJECT, {**users, "subject": ALICE}, ["alice", "bob"], "id", "user")
            == who, "subject.id changed the result set")  # fmt: skip
    records = {"subject": ALICE, "action": READ, "resource": {"type": "record"}}
    base = h.search("c-4-3-1", RESOURCE, records, ["record-1"], "id", "record")
    h.check("c-4-3-2", h.search("c-4-3-2", RESOURCE, {**records, "context": CTX}, ["record-1"], "id", "record")
            == base, "context changed the result set")  # fmt: skip
    h.check("c-4-3-3", h.search("c-4-3-3", RESOURCE, {**records, "resource": R1}, ["record-1"], "id", "record")
            == base, "resource.id changed the result set")  # fmt: skip
    acts = {"subject": ALICE, "resource": R1}
    base = h.search("c-4-4-1", ACTION, acts, ["read", "write"], "name", None)
    h.check("c-4-4-2", h.search("c-4-4-2", ACTION, {**acts, "context": CTX}, ["read", "write"], "name", None)
            == base, "context changed the result set")  # fmt: skip
    # c-4-5 pagination: limit, then follow every next_token to the end
    out = h.json_200("c-4-5-1", h.post(SUBJECT, {**users, "page": {"limit": 1}}))
    h.check("c-4-5-1", isinstance(out.get("results"), list), "results is not an array")
    page = out.get("page")
    h.check("c-4-5-1", page is None or isinstance(page, dict), "page is not an object")
    seen = [r.get("id") for r in out.get("results", [])]
    token = page.get("next_token") if isinstance(page, dict) else ""
    h.check("c-4-5-1", isinstance(token, str), "next_token is not a string")
    for _ in range(20):
        if not token:
            break
        out = h.json_200("c-4-5-2", h.post(SUBJECT, {**users, "page": {"token": token}}))
        page = out.get("page")
        h.check("c-4-5-2", isinstance(out.get("results"), list), "results is not an array")
        h.check("c-4-5-2", isinstance(page, dict) and isinstance(page.get("next_token"), str), f"page: {page}")
        seen += [r.get("id") for r in out.get("results", [])]
        token = page.get("next_token") if isinstance(page, dict) else ""
    h.check("c-4-5-3", sorted(seen) == sorted(who), f"pages {seen} differ from the unpaginated {who}")
    # c-4-6 empty results, on every endpoint, for an unknown identifier and an unknown type
    for tid, path, body in (
        ("c-4-6-1", ACTION, {"subject": {"type": "user", "id": "nonexistent-user"}, "resource": R1}),
        ("c-4-6-1", RESOURCE, {"subject": {"type": "user", "id": "nonexistent-user"}, "action": READ,
                               "resource": {"type": "record"}}),
        ("c-4-6-1", SUBJECT, {"subject": {"type": "user"}, "action": READ,
                              "resource": {"type": "record", "id": "nonexistent-record"}}),
        ("c-4-6-2", SUBJECT, {"subject": {"type": "spaceship"}, "action": READ, "resource": R1}),
        ("c-4-6-2", RESOURCE, {"subject": ALICE, "action": READ, "resource": {"type": "spaceship"}}),
        ("c-4-6-2", ACTION, {"subject": ALICE, "resource": {"type": "spaceship", "id": "s1"}}),
    ):  # fmt: skip
        out = h.json_200(tid, h.post(path, body))
        h.check(tid, out.get("results") == [], f"{path}: expected no results, got {out}")
    # c-4-7 missing fields and sub-fields
    for path, body in (
        (SUBJECT, {"subject": {"type": "user"}, "resource": R1}),
        (RESOURCE, {"action": READ, "resource": {"type": "record"}}),
        (ACTION, {"subject": ALICE}),
        (SUBJECT, {"subject": {"type": "user"}, "action": READ, "resource": {"type": "record"}}),
        (RESOURCE, {"subject": {"type": "user"}, "action": READ, "resource": {"type": "record"}}),
        (ACTION, {"subject": {"type": "user"}, "resource": R1}),
    ):
        h.status("c-4-7", h.post(path, body), 400)


def discovery(h: Harness) -> None:
    """Test id c-6: the metadata endpoint, its fields, its URLs."""
    anonymous = _session("", h.pdp.cert.verify)
    del anonymous.headers["Authorization"]  # metadata needs no token
    meta = h.json_200("c-6-2", anonymous.get(h.pdp.base + "/.well-known/authzen-configuration", timeout=10))
    h.check("c-6-5", meta.get("policy_decision_point") == h.pdp.base, f"policy_decision_point {meta}")
    scheme = "https://" if h.pdp.https else "http://"
    for key in ("access_evaluation_endpoint", "access_evaluations_endpoint", "search_subject_endpoint",
                "search_resource_endpoint", "search_action_endpoint"):  # fmt: skip
        url = meta.get(key)
        h.check("c-6-5", isinstance(url, str) and url.startswith(scheme + "127.0.0.1:"), f"{key}: {url}")
    h.check("c-6-5", "capabilities" not in meta or isinstance(meta["capabilities"], list), "capabilities")
    # the advertised endpoints answer
    first = {"subject": ALICE, "action": READ, "resource": R1}
    out = h.json_200("c-6-5", h.pdp.cert.post(str(meta.get("access_evaluation_endpoint")), json=first, timeout=10))
    h.check("c-6-5", out.get("decision") is True, "the advertised evaluation endpoint")


ARCHIVED = {"type": "record", "id": "record-2", "properties": {"status": "archived"}}
ACTIVE = {"type": "record", "id": "record-1", "properties": {"status": "active"}}
BOB_ADMIN = {"type": "user", "id": "bob", "properties": {"role": "admin"}}


def basic_properties(h: Harness) -> None:
    """Test ids c-2-2-4..7: §C.1.4 rules 5-8, decided on the request's properties (pack conditions)."""
    h.decision("c-2-2-4", EVAL, {"subject": ALICE, "action": WRITE, "resource": ARCHIVED}, False)
    h.decision("c-2-2-5", EVAL, {"subject": BOB_ADMIN, "action": WRITE, "resource": ARCHIVED}, True)
    soft = {"subject": ALICE, "action": {"name": "delete", "properties": {"soft": True}}, "resource": R1}
    h.decision("c-2-2-6", EVAL, soft, True)
    hard = {"subject": ALICE, "action": {"name": "delete", "properties": {"soft": False}}, "resource": R1}
    h.decision("c-2-2-7", EVAL, hard, False)


def batch_properties(h: Harness) -> None:
    """Test ids c-3-2-3, -4, -7: properties per item, and whole-entity default inheritance."""
    per_item = [{"resource": ACTIVE}, {"resource": ARCHIVED}]
    h.batch("c-3-2-3", {"subject": ALICE, "action": WRITE, "evaluations": per_item}, [True, False])
    subjects = [{"subject": ALICE}, {"subject": BOB_ADMIN}]
    h.batch("c-3-2-4", {"action": WRITE, "resource": ARCHIVED, "evaluations": subjects}, [False, True])
    inherit = {"subject": ALICE, "action": WRITE, "resource": ACTIVE, "evaluations": [{}, {"resource": ARCHIVED}]}
    h.batch("c-3-2-7", inherit, [True, False])


def search_properties(h: Harness) -> None:
    """Test ids c-4-2-4, c-4-3-4, c-4-4-3: searches S4-S6 (rule 6)."""
    who = {"subject": {"type": "user"}, "action": WRITE, "resource": ARCHIVED}
    h.search("c-4-2-4", SUBJECT, who, ["bob"], "id", "user")
    body = {"subject": BOB_ADMIN, "action": WRITE, "resource": {"type": "record"}}
    h.search("c-4-3-4", RESOURCE, body, ["record-2"], "id", "record")
    h.search("c-4-4-3", ACTION, {"subject": BOB_ADMIN, "resource": ARCHIVED}, ["write"], "name", None)


LEVELS: dict[str, Callable[[Harness], None]] = {
    "Basic Core": basic_core,
    "Basic Properties": basic_properties,
    "Batch Core": batch_core,
    "Batch Properties": batch_properties,
    "Search Core": search_core,
    "Search Properties": search_properties,
    "Discovery": discovery,
}


@pytest.mark.parametrize("level", list(LEVELS))
def test_certification_level(pdp: Pdp, level: str) -> None:
    """One certification level: every request, status and structure check of the scenario."""
    if not pdp.https:
        urllib3.disable_warnings()
    h = Harness(pdp)
    LEVELS[level](h)
    print(f"AuthZEN certification {level}: {h.checks - len(h.failures)}/{h.checks} checks passed")
    assert not h.failures, h.failures


def test_https_is_served(pdp: Pdp) -> None:
    """c-5-1: the PDP accepts HTTPS (skipped where openssl is not installed)."""
    if not pdp.https:
        pytest.skip("openssl not installed: served over http")
    assert pdp.base.startswith("https://")
