"""The outage drill: freeze and kill a private PostgreSQL under load, count every answer.

A private cluster (``bench.pgcluster``) holds a modest data set (``build``: a few hundred workspaces
of every pack with members, users with emails, one service token, an operator who owns the
simulations workspaces and signs in with a password). The real app runs under gunicorn
(``gunicorn.conf.py``, 2 workers, default settings) or granian (``python -m app.serve``:
``server``). Load threads keep asking ``POST /v1/check``, ``POST /v1/check/batch`` and AuthZEN
``POST /access/v1/evaluation`` about known people (by user id and by email) and about unknown ones
(emails and ids nobody has: ``unknown_subject``); the expected answer of each question is taken
before the drill while a writer signed in through ``/api/auth/signin`` promotes one learner after
another to reviewer (``PATCH /api/workspaces/<slug>/members/<id>``, each target once). A probe polls
``/readyz``.

Phases: ``before`` (normal), ``frozen`` (every PostgreSQL process SIGSTOPped), ``thawed`` (SIGCONT,
normal), ``killed`` (SIGKILL, down), ``restarted`` (``pg_ctl start``, normal). After the drill every
acknowledged write (2xx) must be in the database and decided by the service at the head revision
(``/v1/check/batch?min_revision=<head>``); writes while the database is frozen or dead must be 503
with ``Retry-After`` only.

Behind HAProxy (``run(..., behind_haproxy=True)``, ``tests/deploy/test_outage_haproxy.py`` in
``make test-deploy``): two servers (``server``: gunicorn with ``gunicorn.conf.py`` or granian with
``python -m app.serve``, each multi-worker) behind HAProxy running the *shipped*
``deploy/haproxy.cfg`` (its ``${AUTHZ_*}`` from the environment), so decisions are routed on
``/readyz`` and writes on ``/readyz/writes``; every request of the load and the writer goes
through HAProxy, the readiness probes ask each server directly. An HAProxy 503 (no ready server)
is told from the service's own by its problem type (``no-ready-server``).

Run alone: ``python -m bench.outage [out.json] [gunicorn|granian] [haproxy]`` (``BENCH_PORT_BASE``
chooses the ports, ``BENCH_DB_PREFIX`` the database name, ``BENCH_OUTAGE_SECONDS=normal,freeze,kill``
the phases).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import requests

from bench import parts
from bench.pgcluster import Cluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHASES = ("before", "frozen", "thawed", "killed", "restarted")
OUTAGE = ("frozen", "killed")
PASSWORD = "outage-drill-password"
OPERATOR = "operator@outage.example"
WRITE_PACK, LOW, HIGH, HIGH_ACTION = "simulations", "learner", "reviewer", "review_scores"  # reviewers only
HAPROXY_CFG = os.path.join(ROOT, "deploy", "haproxy.cfg")
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
NO_READY_SERVER = "/no-ready-server"  # the problem type of HAProxy's own 503 (deploy/haproxy.cfg)
DECISIONS = ("check", "batch", "authzen")


@dataclass
class World:
    """What the drill asks about: service token, known-people questions with their answers, targets."""

    token: str
    checks: list[dict[str, Any]] = field(default_factory=list)  # /v1/check bodies
    expected: list[tuple[bool, str]] = field(default_factory=list)  # (allowed, reason) per check
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # AuthZEN bodies
    decisions: list[bool] = field(default_factory=list)  # per evaluation
    targets: list[tuple[str, int]] = field(default_factory=list)  # (slug, user id) learners to promote
    operator: int = 0  # the operator's user id
    users: int = 0
    workspaces: int = 0
    memberships: int = 0


def build(
    url: str, workspaces: int = 300, members: int = 6, seed: int = 5, token_workspace: str | None = None
) -> World:
    """Migrate, then one revision with ``workspaces`` workspaces ``o0``, ``o1``... (the even ones
    simulations, owned by the operator, the rest round-robin over the other packs) of ``members``
    members each; the service token (placed in ``token_workspace``, a slug, if given)."""
    from app import create_app
    from app.authz import RuleChange
    from app.extensions import db
    from app.identity import users
    from app.models import Membership, User, Workspace
    from app.policy import store as policy_store
    from app.policy import tokens
    from app.policy.files import file_packs

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench-" + "x" * 32, "MAIL_BACKEND": "memory"})
    rnd = random.Random(seed)
    with app.app_context():
        from app.cli import upgrade_database

        upgrade_database()
        packs = file_packs()
        # Not the service meta-pack: an all-workspaces token may not ask about it (tokens.META_PACK).
        others = sorted(k for k in packs.packs if k not in (WRITE_PACK, tokens.META_PACK))
        session = db.session()
        operator = User(email=OPERATOR, display_name="Operator", password_hash=users.hash_password(PASSWORD))
        people = [
            User(email=f"p{i}@outage.example", display_name=f"P{i}", password_hash="!")
            for i in range(workspaces * members)
        ]
        session.add_all([operator, *people])
        session.flush()
        handle = policy_store.begin_write(session, "bench", None, "outage drill data set")
        changes: list[RuleChange] = []
        world = World("", users=len(people) + 1, workspaces=workspaces)
        plan: list[tuple[Workspace, list[tuple[User, str]]]] = []
        for w in range(workspaces):
            name = WRITE_PACK if w % 2 == 0 else others[(w // 2) % len(others)]
            pack = packs.packs[name]
            ws = Workspace(slug=f"o{w}", name=f"Outage {w}", pack=name)
            session.add(ws)
            crew = people[w * members : (w + 1) * members]
            roles = [r.id for r in pack.workspace_roles]
            if ws.pack == WRITE_PACK:
                assigned = [(operator, pack.owner_role)] + [(u, LOW) for u in crew]
            else:
                assigned = [(crew[0], pack.owner_role or roles[-1])] + [(u, rnd.choice(roles)) for u in crew[1:]]
            plan.append((ws, assigned))
        session.flush()
        for ws, assigned in plan:
            changes.append(RuleChange("add", ("g4", ws.key, f"pack:{ws.pack}")))
            for user, role in assigned:
                session.add(Membership(workspace_id=ws.id, user_id=user.id, role=role, status="accepted"))
                changes.append(RuleChange("add", ("g", user.key, f"role:{ws.pack}:{role}", ws.key)))
        policy_store.add_changes(session, handle, changes)
        world.memberships = sum(len(a) for _, a in plan)
        world.operator = operator.id
        _, world.token = tokens.create_token(
            session, "outage-drill", all_workspaces=True, default_workspace=token_workspace
        )
        session.commit()
        # Questions about people nobody changes (owners and members of the other packs, the operator)
        # and about nobody at all; targets: every simulations learner, promoted once each in a shuffled order.
        for ws, assigned in plan:
            pack = packs.packs[ws.pack]
            actions = [a.id for a in pack.actions]
            for user, _role in assigned:
                if ws.pack == WRITE_PACK and user is not operator:
                    world.targets.append((ws.slug, user.id))
                    continue
                for ref in (user.id, user.email):
                    world.checks.append({"subject": ref, "workspace": ws.slug, "action": rnd.choice(actions)})
                world.evaluations.append(
                    {
                        "subject": {"type": "user", "id": rnd.choice([str(user.id), user.email])},
                        "action": {"name": rnd.choice(actions)},
                        "resource": {"type": "workspace", "id": ws.slug},
                        "context": {"workspace": ws.slug},
                    }
                )
        for i in range(max(4, len(world.checks) // 20)):  # about 5% unknown people, as in the bench mix
            ws, _ = rnd.choice(plan)
            nobody: str | int = f"nobody{i}@outage.example" if i % 2 else 2_000_000_000 - i
            action = rnd.choice(packs.packs[ws.pack].actions).id
            world.checks.append({"subject": nobody, "workspace": ws.slug, "action": action})
        rnd.shuffle(world.targets)
        rnd.shuffle(world.checks)
        rnd.shuffle(world.evaluations)
        db.session.remove()
        db.engine.dispose()
    return world


@dataclass
class Answer:
    """One request of the drill."""

    phase: str
    kind: str  # check | batch | authzen | unknown_token | write | readyz
    status: int  # 0: no answer within the client's timeout (or a refused connection)
    seconds: float
    right: bool = True
    retry_after: str | None = None
    target: tuple[str, int] | None = None
    detail: str = ""  # what a failed or wrong answer said
    proxy: bool = False  # a 503 HAProxy gave itself (no ready server), not the service


class Drill:
    """The load, the writer and the readiness probe, recording into one list."""

    def __init__(self, base: str, world: World, servers: list[str] | None = None) -> None:
        self.base = base
        self.servers = servers or [base]  # what the readiness probes ask (each server, not the proxy)
        self.world = world
        self.phase = "before"
        self.answers: list[Answer] = []
        self.stop = threading.Event()
        self.auth = {"Authorization": f"Bearer {world.token}"}
        self._lock = threading.Lock()

    def _record(self, a: Answer) -> None:
        with self._lock:
            self.answers.append(a)

    def _ask(self, http: requests.Session, kind: str, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None, timeout: float = 5.0, base: str | None = None,
             ) -> tuple[int, Any, Answer]:
        at = self.phase
        t = time.perf_counter()
        try:
            r = http.request(method, (base or self.base) + path, json=body, headers=headers or self.auth,
                             timeout=timeout)
            status, retry = r.status_code, r.headers.get("Retry-After")
            try:
                payload = r.json() if r.content else {}
            except ValueError:
                payload = {}
        except requests.RequestException as exc:
            status, payload, retry = 0, {"error": repr(exc)[:200]}, None
        a = Answer(at, kind, status, time.perf_counter() - t, retry_after=retry)
        a.proxy = status == 503 and isinstance(payload, dict) and str(payload.get("type", "")).endswith(NO_READY_SERVER)
        if status != 200:
            a.detail = f"{path} {json.dumps(body)[:160]} -> {json.dumps(payload)[:240]}"
        return status, payload, a

    def baseline(self) -> None:
        """The answer to every question before anything happens."""
        with requests.Session() as http:
            self._baseline(http)

    def _baseline(self, http: requests.Session) -> None:
        w = self.world
        for i in range(0, len(w.checks), 200):
            chunk = w.checks[i : i + 200]
            status, out, _ = self._ask(http, "batch", "POST", "/v1/check/batch", {"checks": chunk})
            if status != 200:
                raise RuntimeError(f"baseline batch: {status} {out}")
            w.expected += [(r["allowed"], r["reason"]) for r in out["results"]]
        for ev in w.evaluations:
            status, out, _ = self._ask(http, "authzen", "POST", "/access/v1/evaluation", ev)
            if status != 200:
                raise RuntimeError(f"baseline evaluation: {status} {out}")
            w.decisions.append(bool(out["decision"]))

    def load(self, seed: int) -> None:
        """Single checks, batches of 20 and AuthZEN evaluations, round and round."""
        with requests.Session() as http:
            self._load(http, seed)

    def _load(self, http: requests.Session, seed: int) -> None:
        w = self.world
        rnd = random.Random(seed)
        n = len(w.checks)
        while not self.stop.is_set():
            i = rnd.randrange(n)
            status, out, a = self._ask(http, "check", "POST", "/v1/check", w.checks[i])
            if status == 200:
                a.right = (out.get("allowed"), out.get("reason")) == w.expected[i]
                if not a.right:
                    a.detail = f"{w.checks[i]}: {out} expected {w.expected[i]}"
            self._record(a)
            idx = [rnd.randrange(n) for _ in range(20)]
            status, out, a = self._ask(http, "batch", "POST", "/v1/check/batch", {"checks": [w.checks[j] for j in idx]})
            if status == 200:
                got = [(r.get("allowed"), r.get("reason")) for r in out.get("results", [])]
                want = [w.expected[j] for j in idx]
                a.right = got == want
                if not a.right:
                    a.detail = "; ".join(f"{w.checks[j]}: {g} expected {e}" for j, g, e in zip(idx, got, want,
                                         strict=False) if g != e)[:400]
            self._record(a)
            k = rnd.randrange(len(w.evaluations))
            status, out, a = self._ask(http, "authzen", "POST", "/access/v1/evaluation", w.evaluations[k])
            if status == 200:
                a.right = out.get("decision") is w.decisions[k]
                if not a.right:
                    a.detail = f"{w.evaluations[k]}: {out} expected {w.decisions[k]}"
            self._record(a)
            # A made-up token: 401 in every phase (refused from the token cache, never a 5xx)
            made_up = {"Authorization": f"Bearer lat_{rnd.getrandbits(192):048x}"}
            status, out, a = self._ask(http, "unknown_token", "POST", "/v1/check", w.checks[i], headers=made_up)
            a.right = status == 401
            self._record(a)

    def sign_in(self) -> tuple[requests.Session, str]:
        """The operator's web session and CSRF token."""
        http = requests.Session()
        token = http.get(self.base + "/api/auth/csrf", timeout=10).json()["csrf_token"]
        r = http.post(self.base + "/api/auth/signin", json={"email": OPERATOR, "password": PASSWORD},
                      headers={"X-CSRFToken": token}, timeout=10)
        r.raise_for_status()
        return http, str(r.json()["csrf_token"])

    def write(self, every: float, http: requests.Session, csrf: str) -> None:
        """Promote the next learner every ``every`` seconds (each target once), signed in as the operator."""
        targets = iter(self.world.targets)
        while not self.stop.is_set():
            target = next(targets, None)
            if target is None:
                return
            slug, uid = target
            _, _, a = self._ask(http, "write", "PATCH", f"/api/workspaces/{slug}/members/{uid}", {"role": HIGH},
                                headers={"X-CSRFToken": csrf})
            a.target = target
            self._record(a)
            self.stop.wait(max(0.0, every - a.seconds))

    def probe(self, every: float, paths: tuple[str, ...] = ("/readyz",), servers: list[str] | None = None) -> None:
        """GET each of paths (``/readyz`` -> kind ``readyz``, ``/readyz/writes`` -> ``readyz_writes``)
        on each of servers (default: every server) every ``every`` seconds."""
        with requests.Session() as http:
            while not self.stop.is_set():
                self._probe_once(http, every, paths, servers or self.servers)

    def _probe_once(self, http: requests.Session, every: float, paths: tuple[str, ...], servers: list[str]) -> None:
        t = time.perf_counter()
        for base in servers:
            for path in paths:
                kind = path.strip("/").replace("/", "_")
                _, _, a = self._ask(http, kind, "GET", path, headers={}, timeout=10, base=base)
                self._record(a)
        self.stop.wait(max(0.0, every - (time.perf_counter() - t)))


def _durations() -> tuple[float, float, float]:
    raw = os.environ.get("BENCH_OUTAGE_SECONDS", "")
    if raw:
        a, b, c = (float(x) for x in raw.split(","))
        return a, b, c
    return 6.0, 10.0, 10.0


def _ms(xs: list[float]) -> dict[str, float]:
    s = sorted(xs)
    if not s:
        return {}
    return {"p50_ms": s[len(s) // 2] * 1000, "p99_ms": s[min(len(s) - 1, int(len(s) * 0.99))] * 1000,
            "max_ms": s[-1] * 1000}


@contextlib.contextmanager
def haproxy(servers: list[str], log_path: str, decide: list[str] | None = None) -> Iterator[int]:
    """HAProxy running the shipped ``deploy/haproxy.cfg`` unchanged in front of two servers
    (``host:port`` each, its ``AUTHZ_HOST_A`` / ``AUTHZ_HOST_B``; their decision listeners, when
    given, its ``AUTHZ_DECIDE_A`` / ``_B``) on a free loopback port; yields the port once a
    decision and a readiness answer came through it."""
    from bench import http as hb

    if not os.path.exists(HAPROXY):
        raise RuntimeError("haproxy is not installed (apt-get install haproxy)")
    port = hb.free_port()
    env = {**os.environ, "AUTHZ_BIND": f"127.0.0.1:{port}", "AUTHZ_HOST_A": servers[0], "AUTHZ_HOST_B": servers[1]}
    if decide:
        env.update(AUTHZ_DECIDE_A=decide[0], AUTHZ_DECIDE_B=decide[1])
    with hb.process([HAPROXY, "-db", "-f", HAPROXY_CFG], env, log_path) as proc:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"haproxy exited ({proc.returncode}): see {log_path}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{port}/readyz/writes", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("no ready server through haproxy")
            time.sleep(0.2)
        yield port


def run(
    log_dir: str,
    normal_s: float | None = None,
    freeze_s: float | None = None,
    kill_s: float | None = None,
    workspaces: int = 300,
    load_threads: int = 3,
    write_every_s: float = 0.2,
    server: str = "gunicorn",
    behind_haproxy: bool = False,
    workers: int = 2,
    decision_listener: bool = False,
) -> dict[str, Any]:
    """The whole drill (private cluster, server(s), load, freeze, kill, verification); the figures.

    ``server``: ``gunicorn`` (gunicorn.conf.py as shipped) or ``granian`` (``python -m app.serve``);
    ``behind_haproxy``: two such servers behind the shipped HAProxy config, every request through it;
    ``decision_listener`` (granian behind HAProxy): each server with its decision listener
    (``SERVE_DECISION_BIND``) of one thread a worker, where HAProxy sends the decisions."""
    from bench import http as hb

    d_normal, d_freeze, d_kill = _durations()
    normal_s = d_normal if normal_s is None else normal_s
    freeze_s = d_freeze if freeze_s is None else freeze_s
    kill_s = d_kill if kill_s is None else kill_s
    started = time.monotonic()
    os.makedirs(log_dir, exist_ok=True)
    cluster = Cluster(os.environ.get("BENCH_DB_PREFIX", "bench_") + "outage")
    out: dict[str, Any] = {"phases_s": {"normal": normal_s, "freeze": freeze_s, "kill": kill_s}}
    try:
        url = cluster.create_database()
        t = time.monotonic()
        world = build(url, workspaces=workspaces)
        out["data"] = {"workspaces": world.workspaces, "users": world.users, "memberships": world.memberships,
                       "questions": len(world.checks), "evaluations": len(world.evaluations),
                       "targets": len(world.targets), "build_s": time.monotonic() - t}
        out["settings"] = {"server": server, "workers": workers, "servers": 2 if behind_haproxy else 1,
                           "haproxy": HAPROXY_CFG if behind_haproxy else None, "load_threads": load_threads,
                           "decision_listener": decision_listener}
        n = 2 if behind_haproxy else 1
        decide = [f"127.0.0.1:{hb.free_port()}" for _ in range(n)] if decision_listener else []
        # one thread a decision worker: a request waiting on the database would hold its worker's decisions
        listeners = [{"SERVE_DECISION_BIND": where, "SERVE_DECISION_THREADS": "1"} for where in decide] or [{}] * n
        with contextlib.ExitStack() as stack:
            ports = [stack.enter_context(hb.app_server(url, "app:create_app()", workers,
                                                       os.path.join(log_dir, f"{server}-outage-{i}.log"),
                                                       server=server, extra_env=listeners[i]))
                     for i in range(n)]
            for where in decide:  # each decision listener loaded (a child of its server: no process here)
                hb._wait_listening(int(where.rsplit(":", 1)[1]), None, workers, timeout=120)
            servers = [f"http://127.0.0.1:{p}" for p in ports]
            if behind_haproxy:
                port = stack.enter_context(haproxy([f"127.0.0.1:{p}" for p in ports],
                                                   os.path.join(log_dir, f"haproxy-outage-{server}.log"),
                                                   decide or None))
                drill = Drill(f"http://127.0.0.1:{port}", world, servers)
                probes: tuple[str, ...] = ("/readyz", "/readyz/writes")
            else:
                drill = Drill(servers[0], world)
                probes = ("/readyz",)
            drill.baseline()
            web, csrf = drill.sign_in()
            threads = [threading.Thread(target=drill.load, args=(i,), daemon=True) for i in range(load_threads)]
            threads.append(threading.Thread(target=drill.write, args=(write_every_s, web, csrf), daemon=True))
            # A prober per server: one server's slow answer (a probe that began as the database froze
            # answered after the thaw, 4 s later: CI, 7 Dec 2026) does not leave the other unprobed.
            threads += [threading.Thread(target=drill.probe, args=(0.25, probes, [base]), daemon=True)
                        for base in (servers if behind_haproxy else servers[:1])]
            for th in threads:
                th.start()
            marks: dict[str, float] = {}

            def enter(phase: str) -> None:
                drill.phase = phase
                marks[phase] = time.monotonic()

            enter("before")
            time.sleep(normal_s)
            enter("frozen")
            cluster.signal(signal.SIGSTOP)
            time.sleep(freeze_s)
            cluster.signal(signal.SIGCONT)
            enter("thawed")
            time.sleep(normal_s)
            enter("killed")
            cluster.signal(signal.SIGKILL)
            time.sleep(kill_s)
            enter("restarted")
            cluster.start()
            restarted = time.monotonic()
            recovered = None
            while time.monotonic() - restarted < 30:
                if any(a.phase == "restarted" and a.kind == "write" and 200 <= a.status < 300 for a in drill.answers):
                    recovered = time.monotonic() - restarted
                    break
                time.sleep(0.05)
            time.sleep(normal_s)
            drill.stop.set()
            for th in threads:
                th.join(15)
            web.close()
            marks["end"] = time.monotonic()
            out["recovered_s"] = recovered
            out["phase_s"] = {p: marks[n] - marks[p] for p, n in zip(PHASES, [*PHASES[1:], "end"], strict=True)}
            out.update(_summarise(drill.answers))
            out.update(_verify(cluster.url, drill, world))
    finally:
        cluster.stop()
    out["total_s"] = time.monotonic() - started
    return out


def _summarise(answers: list[Answer]) -> dict[str, Any]:
    by: Counter[tuple[str, str, int]] = Counter((a.phase, a.kind, a.status) for a in answers)
    table: dict[str, dict[str, dict[str, int]]] = {}
    for (p, k, s), n in sorted(by.items()):
        table.setdefault(p, {}).setdefault(k, {})[str(s)] = n
    decisions: dict[str, Any] = {}
    writes: dict[str, Any] = {}
    readyz: dict[str, Any] = {}
    unknown_tokens: dict[str, Any] = {}
    for p in PHASES:
        ds = [a for a in answers if a.phase == p and a.kind in DECISIONS]
        good = [a for a in ds if a.status == 200 and a.right]
        decisions[p] = {
            "requests": len(ds),
            "answered_2xx": len([a for a in ds if 200 <= a.status < 300]),
            "answered_right": len(good),
            "wrong": len([a for a in ds if a.status == 200 and not a.right]),
            "proxy_503": len([a for a in ds if a.proxy]),
            "answered_pct": 100.0 * len(good) / len(ds) if ds else None,
            **_ms([a.seconds for a in ds]),
        }
        ws = [a for a in answers if a.phase == p and a.kind == "write"]
        retry_503 = [a for a in ws if a.status == 503 and a.retry_after]
        writes[p] = {
            "statuses": dict(Counter(str(a.status) for a in ws)),
            "retry_after_on_503": len(retry_503),
            "2xx": len([a for a in ws if 200 <= a.status < 300]),
            "503_retry_after": len(retry_503),
            "503_retry_after_proxy": len([a for a in retry_503 if a.proxy]),
            "other": len([a for a in ws if not (200 <= a.status < 300) and a not in retry_503]),
            **_ms([a.seconds for a in ws]),
        }
        made_up = [a for a in answers if a.phase == p and a.kind == "unknown_token"]
        unknown_tokens[p] = {
            "requests": len(made_up),
            "statuses": dict(Counter(str(a.status) for a in made_up)),
            **_ms([a.seconds for a in made_up]),
        }
        rs = [a for a in answers if a.phase == p and a.kind == "readyz"]
        readyz[p] = {"statuses": dict(Counter(str(a.status) for a in rs)), **_ms([a.seconds for a in rs])}
        rw = [a for a in answers if a.phase == p and a.kind == "readyz_writes"]
        if rw:
            readyz[p]["writes_statuses"] = dict(Counter(str(a.status) for a in rw))
            readyz[p]["writes_max_ms"] = max(a.seconds for a in rw) * 1000
    failures: dict[str, list[str]] = {}
    for a in answers:
        expected = a.kind == "unknown_token" and a.right  # its 401
        if not a.kind.startswith("readyz") and a.detail and not expected and (a.status != 200 or not a.right):
            shown = failures.setdefault(f"{a.phase} {a.kind} {a.status}{'' if a.right else ' wrong'}", [])
            if len(shown) < 3:
                shown.append(a.detail)
    return {"answers": table, "decisions": decisions, "writes": writes, "readyz": readyz,
            "unknown_tokens": unknown_tokens, "failures": failures}


def _verify(url: str, drill: Drill, world: World) -> dict[str, Any]:
    """Every acknowledged write in the database and decided by the service at the head revision."""
    from sqlalchemy import create_engine, text

    writes = [a for a in drill.answers if a.kind == "write" and a.target is not None]
    acked: set[tuple[str, int]] = {a.target for a in writes if a.target and 200 <= a.status < 300}
    refused = {a.target for a in writes if a.target and (a.status >= 300 or a.status == 0)} - acked
    eng = create_engine(url)
    with eng.connect() as conn:
        rows = conn.execute(text(
            "SELECT w.slug, m.user_id FROM memberships m JOIN workspaces w ON w.id = m.workspace_id "
            "WHERE m.role = :role AND w.pack = :pack"), {"role": HIGH, "pack": WRITE_PACK})
        promoted = {(r[0], int(r[1])) for r in rows}
        rules = conn.execute(text("SELECT v0, v2 FROM casbin_rule WHERE ptype = 'g' AND v1 = :r AND v0 LIKE 'user:%'"),
                             {"r": f"role:{WRITE_PACK}:{HIGH}"})
        granted = {(r[1][3:], int(r[0][5:])) for r in rules}
        head = int(conn.execute(text("SELECT revision FROM policy_head")).scalar() or 0)
    eng.dispose()
    lost_db = sorted(t for t in acked if t not in promoted or t not in granted)
    with requests.Session() as http:
        return _decided(drill, head, acked, lost_db, refused, promoted, http)


def _decided(drill: Drill, head: int, acked: set[tuple[str, int]], lost_db: list[tuple[str, int]],
             refused: set[tuple[str, int] | None], promoted: set[tuple[str, int]],
             http: requests.Session) -> dict[str, Any]:
    """Of the acknowledged writes, those the service does not decide at the head (through drill.base)."""
    targets = sorted(acked)
    undecided: list[tuple[str, int]] = []
    status_ok = True
    for i in range(0, len(targets), 500):
        chunk = targets[i : i + 500]
        checks = [{"subject": uid, "workspace": slug, "action": HIGH_ACTION} for slug, uid in chunk]
        body: dict[str, Any] = {"checks": checks}
        r = http.post(f"{drill.base}/v1/check/batch?min_revision={head}", json=body, headers=drill.auth, timeout=30)
        if r.status_code != 200:
            status_ok = False
            undecided += chunk
            continue
        undecided += [t for t, res in zip(chunk, r.json()["results"], strict=True) if res["allowed"] is not True]
    return {
        "head": head,
        "acknowledged": len(acked),
        "acknowledged_lost": len(lost_db),
        "acknowledged_not_decided": len(undecided),
        "verify_status_ok": status_ok,
        "refused": len(refused),
        "refused_but_applied": len([t for t in refused if t in promoted]),
        "lost_examples": [list(t) for t in lost_db[:5]],
    }


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f}%"


def _statuses(d: dict[str, int]) -> str:
    return ", ".join(f"{s}: {n}" for s, n in sorted(d.items())) or "—"


def lines(result: dict[str, Any]) -> list[str]:
    """Markdown lines for the report."""
    st = result.get("settings", {})
    proxied = bool(st.get("haproxy"))
    title = "a private PostgreSQL frozen and killed under load"
    out = [f"## Outage drill{' behind HAProxy' if proxied else ''}: {title}", ""]
    if "error" in result:
        return [*out, f"Not measured: {result['error']}", ""]
    d, ph = result.get("data", {}), result.get("phases_s", {})
    server = st.get("server", "gunicorn")
    what = ("gunicorn (gunicorn.conf.py)" if server == "gunicorn" else "granian (python -m app.serve)")
    what += f", {st.get('workers', 2)} workers"
    if st.get("decision_listener"):
        what += " and a decision listener of its own (SERVE_DECISION_BIND: 2 workers, one thread each)"
    if proxied:
        what = (f"two servers, each {what}, behind HAProxy with the shipped deploy/haproxy.cfg (decisions "
                f"routed on /readyz, writes on /readyz/writes; every request through HAProxy)")
    out.append(
        f"{d.get('workspaces', 0):,} workspaces, {d.get('users', 0):,} users, {d.get('memberships', 0):,} "
        f"memberships; {what}; load: /v1/check, batches of 20, "
        f"AuthZEN evaluations about known people (by id and email) and unknown ones, /v1/check with a made-up "
        f"token (401 expected), and a writer promoting "
        f"one member at a time through the members API. Phases: normal {ph.get('normal', 0):.0f} s, frozen (SIGSTOP) "
        f"{ph.get('freeze', 0):.0f} s, normal, killed (SIGKILL) {ph.get('kill', 0):.0f} s, restarted. "
        f"Whole drill {result.get('total_s', 0):.0f} s."
    )
    if proxied:
        out += parts.table(["phase", "decisions asked", "answered 2xx", "right", "HAProxy 503", "decision p99 / max",
                            "made-up token: statuses, p99 / max",
                            "writes 2xx", "writes 503 + Retry-After (by HAProxy)", "writes other",
                            "/readyz (servers)", "/readyz/writes (servers)"])
        for p in PHASES:
            dec = result["decisions"].get(p, {})
            wr = result["writes"].get(p, {})
            rz = result["readyz"].get(p, {})
            un = result.get("unknown_tokens", {}).get(p, {})
            out.append(
                f"| {p} | {dec.get('requests', 0):,} | {dec.get('answered_2xx', 0):,} "
                f"| {dec.get('answered_right', 0):,} "
                f"| {dec.get('proxy_503', 0)} | {dec.get('p99_ms', 0):.1f} / {dec.get('max_ms', 0):.0f} ms "
                f"| {_statuses(un.get('statuses', {}))}, {un.get('p99_ms', 0):.1f} / {un.get('max_ms', 0):.0f} ms "
                f"| {wr.get('2xx', 0)} | {wr.get('503_retry_after', 0)} ({wr.get('503_retry_after_proxy', 0)}) "
                f"| {wr.get('other', 0)} | {_statuses(rz.get('statuses', {}))} "
                f"| {_statuses(rz.get('writes_statuses', {}))} |"
            )
    else:
        out += _direct_table(result)
    return out + _tail(result)


def _direct_table(result: dict[str, Any]) -> list[str]:
    out = parts.table(["phase", "decisions answered right (target 100%)", "wrong", "decision p99 / max",
                        "writes by status", "503 with Retry-After", "/readyz statuses", "/readyz p50 / max"])
    for p in PHASES:
        dec = result["decisions"].get(p, {})
        wr = result["writes"].get(p, {})
        rz = result["readyz"].get(p, {})
        n503 = wr.get("statuses", {}).get("503", 0)
        out.append(
            f"| {p} | {_pct(dec.get('answered_pct'))} of {dec.get('requests', 0):,} | {dec.get('wrong', 0)} "
            f"| {dec.get('p99_ms', 0):.1f} / {dec.get('max_ms', 0):.0f} ms | {_statuses(wr.get('statuses', {}))} "
            f"| {wr.get('retry_after_on_503', 0)} of {n503} | {_statuses(rz.get('statuses', {}))} "
            f"| {rz.get('p50_ms', 0):.1f} / {rz.get('max_ms', 0):.0f} ms |"
        )
    out += ["", "Answers by endpoint and status (200 includes wrong answers, counted above):",
            *parts.table(["phase", "/v1/check", "/v1/check/batch", "AuthZEN evaluation", "made-up token"])]
    for p in PHASES:
        kinds = result["answers"].get(p, {})
        shown = (_statuses(kinds.get(k, {})) for k in ("check", "batch", "authzen", "unknown_token"))
        out.append(f"| {p} | " + " | ".join(shown) + " |")
    return out


def _tail(result: dict[str, Any]) -> list[str]:
    rec = result.get("recovered_s")
    return [
        "",
        f"Acknowledged writes: {result.get('acknowledged', 0)}; lost (not in the database): "
        f"**{result.get('acknowledged_lost', '—')}** (target 0); not decided by the service at the head revision "
        f"{result.get('head')}: **{result.get('acknowledged_not_decided', '—')}** (target 0). Refused writes: "
        f"{result.get('refused', 0)}, of which applied anyway: {result.get('refused_but_applied', 0)}. First write "
        f"acknowledged {'—' if rec is None else f'{rec:.2f} s'} after the restart.",
        "",
    ]


def main() -> None:
    """Run the drill alone; print the report lines, write the JSON (argv[1], default
    bench/results/outage.json; argv[2] the server, gunicorn or granian; argv[3] ``haproxy``)."""
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "bench", "results", "outage.json")
    server = sys.argv[2] if len(sys.argv) > 2 else "gunicorn"
    result = run(os.path.dirname(os.path.abspath(path)), server=server,
                 behind_haproxy=len(sys.argv) > 3 and sys.argv[3] == "haproxy")
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
    print("\n".join(lines(result)))


if __name__ == "__main__":
    main()
