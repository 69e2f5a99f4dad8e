"""Role changes and decisions on one server: ``/v1/check`` p99 without writes and under 20 role
changes/s, and each role change end to end (PATCH answered and visible), before and after the
decision listener of its own (issue 25).

On an existing benchmark database (``bench.datagen.ensure_database``) this adds a small workspace of
its own (``bench-rolechange``, simulations pack: an operator who owns it and signs in with a
password, and ten learners) and runs, for each variant (``BENCH_ROLECHANGE_VARIANTS``, a comma list
of the names below), the real app on 2 workers:

* ``before-granian`` / ``before-gunicorn``: the code at :data:`BEFORE_COMMIT` (``git archive``):
  decisions and writes on the same listener (granian ``app.serve``, 4 threads a worker; gunicorn
  ``gunicorn.conf.py``, gthread, 4 threads);
* ``granian``: ``app.serve`` with ``SERVE_DECISION_BIND`` (a decision listener of 2 workers);
* ``gunicorn``: two gunicorn servers, the second one ``FLASK_DECISION_ONLY=1``.

Each variant, :data:`ROUNDS` times: wrk paced at :data:`LOAD_RATE` decisions/s (realistic mix,
``bench.peer.mix_items``, :data:`CLIENTS` keep-alive connections) for :data:`WINDOW_S` seconds
without writes, then the same with :data:`CHANGE_RATE` role changes/s started on schedule (a pool of
threads, so a slow PATCH does not lower the rate) through the members API as the signed-in
operator (``PATCH /api/workspaces/<slug>/members/<id>``, each learner promoted to reviewer and back in
turn; the writes go to the main listener, the decisions to the decision listener when there is one).
Per change: the PATCH's latency, and end to end: from the PATCH sent until a plain ``/v1/check``
on a new connection gives the new decision, confirmed by the :data:`CONFIRM` answers that follow
(new connections, any worker). After the window, ``min_revision`` checks (the last change's
revision) must give the new decision. Afterwards everything it added is removed.

Run alone: ``python -m bench.rolechange [W] [out.json]`` (default W = 1,000).
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from typing import Any

import requests

from bench import parts

SLUG = "bench-rolechange"
PACK, LOW, HIGH, HIGH_ACTION = "simulations", "learner", "reviewer", "review_scores"  # reviewers only
OPERATOR = "operator@rolechange.bench"
PASSWORD = "rolechange-bench-password"
MEMBERS = 20  # each learner changes once a second at 20/s: a slow PATCH never overlaps its next one
BEFORE_COMMIT = "143b41d"  # main before the decision listener
VARIANTS = ("before-granian", "granian", "before-gunicorn", "gunicorn")
ROUNDS = 3  # alternating windows: without writes, then under writes, ROUNDS times
WINDOW_S = 8.0
LOAD_RATE = 400  # decisions/s offered by wrk in all (paced: p99 at one offered load, not at saturation)
CLIENTS = 4
CHANGE_RATE = 20  # role changes/s in the writes window
CONFIRM = 5  # answers after the first new one that must agree (new connections: any worker)


def _app(url: str) -> Any:
    from app import create_app

    return create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench-" + "x" * 32, "MAIL_BACKEND": "memory",
                       "POLICY_SYNC": "off"})


def cleanup(url: str) -> bool:
    """Remove the workspace, its rules (one revision) and the people this module added; True if any."""
    from sqlalchemy import text

    from app.authz import RuleChange
    from app.extensions import db
    from app.policy import store as policy_store

    app = _app(url)
    found = False
    with app.app_context():
        session = db.session()
        ws_id = session.execute(text("SELECT id FROM workspaces WHERE slug = :s"), {"s": SLUG}).scalar()
        uids = [r[0] for r in session.execute(text("SELECT id FROM users WHERE email LIKE '%@rolechange.bench'"))]
        rules = session.execute(
            text("SELECT ptype, v0, v1, v2 FROM casbin_rule "
                 "WHERE (ptype = 'g' AND v2 = :k) OR (ptype = 'g4' AND v0 = :k)"),
            {"k": f"ws:{SLUG}"},
        ).all()
        if rules:
            handle = policy_store.begin_write(session, "bench", None, "bench.rolechange: clean up")
            changes = [RuleChange("remove", (p, a, b, c) if p == "g" else (p, a, b)) for p, a, b, c in rules]
            policy_store.add_changes(session, handle, changes)
        params = {"w": ws_id or -1, "u": uids or [-1]}
        for sql in (
            "DELETE FROM memberships WHERE workspace_id = :w OR user_id = ANY(:u)",
            "DELETE FROM audit_events WHERE workspace_id = :w OR actor_id = ANY(:u) OR target_user_id = ANY(:u)",
            "DELETE FROM user_sessions WHERE user_id = ANY(:u)",
            "DELETE FROM outbox_emails WHERE \"to\" LIKE '%@rolechange.bench'",
            "DELETE FROM workspaces WHERE id = :w",
            "DELETE FROM users WHERE id = ANY(:u)",
        ):
            session.execute(text(sql), params)
        session.commit()
        found = bool(rules or ws_id or uids)
        db.session.remove()
        db.engine.dispose()
    return found


def setup(url: str) -> list[int]:
    """The workspace, its owner and MEMBERS learners, in one revision; the learners' user ids."""
    from app.authz import RuleChange
    from app.extensions import db
    from app.identity import users
    from app.models import Membership, User, Workspace
    from app.policy import store as policy_store

    cleanup(url)  # a run that died half-way
    app = _app(url)
    with app.app_context():
        session = db.session()
        operator = User(email=OPERATOR, display_name="Operator", password_hash=users.hash_password(PASSWORD))
        crew = [User(email=f"rc{i}@rolechange.bench", display_name=f"RC{i}", password_hash="!") for i in range(MEMBERS)]
        ws = Workspace(slug=SLUG, name="Role change bench", pack=PACK)
        session.add_all([operator, *crew, ws])
        session.flush()
        handle = policy_store.begin_write(session, "bench", None, "bench.rolechange: set up")
        changes = [RuleChange("add", ("g4", ws.key, f"pack:{PACK}"))]
        for user, role in [(operator, "owner")] + [(u, LOW) for u in crew]:
            session.add(Membership(workspace_id=ws.id, user_id=user.id, role=role, status="accepted"))
            changes.append(RuleChange("add", ("g", user.key, f"role:{PACK}:{role}", ws.key)))
        policy_store.add_changes(session, handle, changes)
        session.commit()
        ids = [u.id for u in crew]
        db.session.remove()
        db.engine.dispose()
    return ids


def _check(port: int, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One /v1/check on a new connection (any worker)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/v1/check", body=json.dumps(body),
                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                          "Connection": "close"})
    r = conn.getresponse()
    out = json.loads(r.read() or b"{}")
    conn.close()
    return r.status, out


class Writer:
    """Role changes at ``rate``/s as the signed-in operator (main listener); each one followed to its
    visibility on the decision listener by a thread of its own."""

    def __init__(self, base: str, decide: int, token: str, ids: list[int]) -> None:
        self.web = requests.Session()
        self.web.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=16))  # one per writer thread
        csrf = self.web.get(base + "/api/auth/csrf", timeout=10).json()["csrf_token"]
        r = self.web.post(base + "/api/auth/signin", json={"email": OPERATOR, "password": PASSWORD},
                          headers={"X-CSRFToken": csrf}, timeout=30)
        r.raise_for_status()
        self.csrf = r.json()["csrf_token"]
        self.base, self.decide, self.token, self.ids = base, decide, token, ids
        self.role = {uid: LOW for uid in ids}
        self.patch_ns: list[int] = []
        self.e2e_ns: list[int] = []
        self.seen_ns: list[int] = []  # PATCH answered → visible: the part the decision side adds
        self.failed = self.invisible = 0
        self.last: tuple[int, int, bool] | None = None  # (uid, revision, allowed now)
        self.locks = {uid: threading.Lock() for uid in ids}
        self.n = 0

    def _patch(self, uid: int, role: str) -> requests.Response:
        return self.web.patch(f"{self.base}/api/workspaces/{SLUG}/members/{uid}", json={"role": role},
                              headers={"X-CSRFToken": self.csrf}, timeout=30)

    def _follow(self, uid: int, want: bool, sent: int, answered: int) -> None:
        """Until a plain check gives the new decision and CONFIRM more agree: PATCH sent → first of them."""
        question = {"subject": uid, "workspace": SLUG, "action": HIGH_ACTION}
        first = None
        agreed = 0
        while agreed <= CONFIRM:
            status, got = _check(self.decide, self.token, question)
            now = time.perf_counter_ns()
            if status == 200 and got.get("allowed") is want:
                first = now if first is None else first
                agreed += 1
            else:
                first, agreed = None, 0
            if now - sent > 10e9:
                self.invisible += 1
                return
        assert first is not None
        self.e2e_ns.append(first - sent)  # (list.append: atomic under the GIL)
        self.seen_ns.append(first - answered)

    def alone(self, n: int) -> dict[str, Any]:
        """n changes one after another, nothing else running: what one PATCH costs on this machine."""
        marks = len(self.patch_ns), len(self.e2e_ns), len(self.seen_ns)
        for i in range(n):
            self._change(self.ids[(self.n + i) % len(self.ids)])
        self.n += n
        alone = self.patch_ns[marks[0] :]
        del self.patch_ns[marks[0] :], self.e2e_ns[marks[1] :], self.seen_ns[marks[2] :]
        return parts.stats_ms(alone)

    def _change(self, uid: int) -> None:
        with self.locks[uid]:  # the previous change of this learner first
            new = HIGH if self.role[uid] == LOW else LOW
            sent = time.perf_counter_ns()
            resp = self._patch(uid, new)
            if resp.status_code != 200:
                self.failed += 1
                return
            self.patch_ns.append(time.perf_counter_ns() - sent)
            self.role[uid] = new
            self.last = (uid, int(resp.json()["revision"]), new == HIGH)
            answered = time.perf_counter_ns()
        self._follow(uid, new == HIGH, sent, answered)

    def run(self, seconds: float, rate: float) -> None:
        """A change every 1/rate s for ``seconds`` (each in a thread of a pool: a slow one does not
        delay the next), then wait for them all."""
        step = 1e9 / rate
        start = time.perf_counter_ns()
        with ThreadPoolExecutor(16) as pool:
            n = 0
            while time.perf_counter_ns() - start < seconds * 1e9:
                wait = start + n * step - time.perf_counter_ns()
                if wait > 0:
                    time.sleep(wait / 1e9)
                pool.submit(self._change, self.ids[self.n % len(self.ids)])
                self.n += 1
                n += 1

    def min_revision_wrong(self, n: int = 10) -> int:
        """``min_revision`` = the last change's revision, n times on new connections: answers without it."""
        if self.last is None:
            return n
        uid, revision, want = self.last
        question = {"subject": uid, "workspace": SLUG, "action": HIGH_ACTION, "min_revision": revision}
        return sum(1 for _ in range(n) if _check(self.decide, self.token, question)[1].get("allowed") is not want)

    def reset(self) -> None:
        """Everyone back to learner (the workspace is removed afterwards anyway)."""
        for uid in [u for u, r in self.role.items() if r != LOW]:
            self._patch(uid, LOW)
            self.role[uid] = LOW


@contextmanager
def _servers(variant: str, url: str, root: str, log_dir: str, workers: int) -> Iterator[tuple[int, int]]:
    """(main port, decision port) of the variant's server(s), each ready; the same port twice before."""
    from bench import http as hb

    server = "granian" if variant.endswith("granian") else "gunicorn"
    split = not variant.startswith("before")
    port = hb.free_port()
    cmd, env = hb.server_command(server, "app:create_app()", port, workers, root)
    env.update(FLASK_POLICY_SYNC="listen")
    if split and server == "gunicorn":
        cmd = ["nice", "-n", "5", *cmd]  # as docs/deploy.md runs the main server (granian: SERVE_WRITE_NICE)
    if server == "gunicorn":
        env.update(GUNICORN_WORKER_CLASS="gthread", GUNICORN_THREADS="4")  # main's default (sync + 4 threads)
    decide = hb.free_port() if split else port
    if split and server == "granian":
        env.update(SERVE_DECISION_BIND=f"127.0.0.1:{decide}", SERVE_DECISION_WORKERS=str(workers))
    with ExitStack() as stack:
        log = os.path.join(log_dir, f"rolechange-{variant}.log")
        proc = stack.enter_context(hb.process(cmd, hb.app_env(url, root, **env), log, cwd=root))
        hb._wait_listening(port, proc, workers)
        if split and server == "gunicorn":
            dcmd, denv = hb.server_command(server, "app:create_app()", decide, workers, root)
            denv.update(FLASK_POLICY_SYNC="listen", FLASK_DECISION_ONLY="1", GUNICORN_WORKER_CLASS="gthread",
                        GUNICORN_THREADS="4")
            dlog = os.path.join(log_dir, f"rolechange-{variant}-decide.log")
            dproc = stack.enter_context(hb.process(dcmd, hb.app_env(url, root, **denv), dlog, cwd=root))
            hb._wait_listening(decide, dproc, workers)
        elif split:
            hb._wait_listening(decide, proc, workers)
        time.sleep(2.0)  # every worker loaded (the first ready answer is one worker's)
        yield port, decide


def _variant(variant: str, url: str, token: str, root: str, ids: list[int], bodies: list[bytes],
             log_dir: str) -> dict[str, Any]:
    from bench import http as hb

    wrk = hb.wrk_path()
    if wrk is None:
        raise RuntimeError("wrk is not installed")
    workers = hb.workers_default()
    quiet: list[dict[str, Any]] = []
    busy: list[dict[str, Any]] = []
    with _servers(variant, url, root, log_dir, workers) as (port, decide):
        writer = Writer(f"http://127.0.0.1:{port}", decide, token, ids)
        alone = writer.alone(20)
        for _ in range(ROUNDS):
            quiet.append(hb.load_wrk(wrk, decide, token, "/v1/check", bodies, CLIENTS, WINDOW_S, rate=LOAD_RATE))
            thread = threading.Thread(target=writer.run, args=(WINDOW_S + 1.0, CHANGE_RATE), daemon=True)
            thread.start()
            time.sleep(0.5)
            busy.append(hb.load_wrk(wrk, decide, token, "/v1/check", bodies, CLIENTS, WINDOW_S, rate=LOAD_RATE))
            thread.join(60)
        wrong = writer.min_revision_wrong()
        writer.reset()
    p99_quiet = sorted(r["p99_ms"] for r in quiet)[len(quiet) // 2]
    p99_busy = sorted(r["p99_ms"] for r in busy)[len(busy) // 2]
    return {
        "workers": workers,
        "quiet": quiet,
        "writes": busy,
        "p50_quiet_ms": sorted(r["p50_ms"] for r in quiet)[len(quiet) // 2],
        "p50_writes_ms": sorted(r["p50_ms"] for r in busy)[len(busy) // 2],
        "p99_quiet_ms": p99_quiet,  # median of the rounds
        "p99_writes_ms": p99_busy,
        "p99_ratio": p99_busy / p99_quiet if p99_quiet else None,
        "patch_alone": alone,
        "patch": parts.stats_ms(writer.patch_ns),
        "end_to_end": parts.stats_ms(writer.e2e_ns),
        "visible_after_answer": parts.stats_ms(writer.seen_ns),
        "changes_per_s": len(writer.patch_ns) / (ROUNDS * (WINDOW_S + 1.0)),
        "failed": writer.failed,
        "invisible": writer.invisible,
        "min_revision_wrong": wrong,
    }


def run(url: str, token: str, workspaces: int, log_dir: str) -> dict[str, Any]:
    """Every variant of ``BENCH_ROLECHANGE_VARIANTS`` (default: all) on one data set, in one run."""
    from bench.peer import mix_items
    from bench.server import ROOT, source_tree

    names = [v.strip() for v in os.environ.get("BENCH_ROLECHANGE_VARIANTS", ",".join(VARIANTS)).split(",")
             if v.strip()]
    os.makedirs(log_dir, exist_ok=True)
    ids = setup(url)
    bodies = [json.dumps(it).encode() for it in mix_items(workspaces, 5000, 31)]
    out: dict[str, Any] = {"workspaces": workspaces, "rounds": ROUNDS, "window_s": WINDOW_S, "load_rate": LOAD_RATE,
                           "clients": CLIENTS, "change_rate": CHANGE_RATE, "confirm": CONFIRM, "variants": {}}
    old_tree = tempfile.mkdtemp(prefix="i25-before-")
    try:
        if any(n.startswith("before") for n in names):
            source_tree(BEFORE_COMMIT, old_tree)
            out["before_commit"] = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", BEFORE_COMMIT],
                                                  capture_output=True, text=True, check=True).stdout.strip()
        for name in names:
            root = old_tree if name.startswith("before") else ROOT
            try:
                out["variants"][name] = _variant(name, url, token, root, ids, bodies, log_dir)
            except Exception as exc:  # noqa: BLE001 - report what failed, keep the other variants
                out["variants"][name] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        shutil.rmtree(old_tree, ignore_errors=True)
        cleanup(url)
    return out


def lines(result: dict[str, Any]) -> list[str]:
    """Markdown lines for the report."""
    out = ["## Role changes and decisions on one server", ""]
    if "error" in result:
        return [*out, f"Not measured: {result['error']}", ""]
    out.append(
        f"W = {result['workspaces']:,}; 2 workers (and 2 decision-listener workers after); wrk paced at "
        f"{result['load_rate']} `/v1/check`/s ({result['clients']} keep-alive connections, realistic mix), "
        f"{result['rounds']} rounds of {result['window_s']:.0f} s without writes, then {result['window_s']:.0f} s with "
        f"{result['change_rate']} role changes/s (`PATCH /api/workspaces/<slug>/members/<id>`, signed-in owner). "
        f"End to end: PATCH sent → a plain `/v1/check` on a new connection gives the new decision (and the "
        f"{result['confirm']} after it agree). p50 / p99: medians of the rounds (each round's p99 in brackets, "
        f"without → with writes). Before = the code at {result.get('before_commit', BEFORE_COMMIT)}."
    )
    rows = []
    for name, v in result["variants"].items():
        if "error" in v:
            rows.append(f"| {name} | not measured: {v['error']} | | | | | | |")
            continue
        ratio = f"{v['p99_ratio']:.2f}×" if v.get("p99_ratio") else "—"
        rounds = ", ".join(f"{q['p99_ms']:.1f}→{w['p99_ms']:.1f}" for q, w in zip(v["quiet"], v["writes"]))
        rows.append(
            f"| {name} | {v['p50_quiet_ms']:.2f} / {v['p99_quiet_ms']:.2f} ms "
            f"| {v['p50_writes_ms']:.2f} / {v['p99_writes_ms']:.2f} ms | {ratio} ({rounds} ms) "
            f"| {parts.p50_p99(v['patch_alone'])} | {parts.p50_p99(v['patch'])} "
            f"| {parts.p50_p99(v['end_to_end'], count=True)} | {parts.p50_p99(v['visible_after_answer'])} |"
        )
    out += parts.table(["variant", "`/v1/check` p50 / p99, no writes", "under writes", "p99 ratio (≤ 2×)",
                        "PATCH alone (20, one at a time, no load)", "PATCH answered, 20/s",
                        "role change end to end (p99 ≤ 50 ms)", "of which: answered → visible"], rows)
    out += ["", "Failed PATCHes, changes not visible in 10 s, `min_revision` answers without the change (of 10): "
            + "; ".join(f"{n}: {v.get('failed', '?')}, {v.get('invisible', '?')}, {v.get('min_revision_wrong', '?')}"
                        for n, v in result["variants"].items()), ""]
    return out


if __name__ == "__main__":
    parts.main("rolechange", run, lines)
