"""End-to-end role change latency under load: ``PATCH /api/workspaces/<slug>/members/<id>`` while
``/v1/check`` is kept busy, and the time until a decision reflects each change.

On an existing benchmark database (``bench.datagen.ensure_database``) this adds a small workspace of
its own (``bench-rolechange``, simulations pack: an operator who owns it and signs in with a
password, and ten learners), serves the real app with gunicorn (``gunicorn.conf.py``), keeps
``/v1/check`` busy with the realistic mix (``bench.peer.mix_items``; wrk with keep-alive in 5 s
rounds when installed, else Python threads), and makes N role changes one after another through the
members API as the signed-in operator (each learner promoted to reviewer and back in turn). For each
change it records:

- the latency of the PATCH (commit, revision, the writing worker's engine updated, answer);
- ``min_revision``: a ``POST /v1/check`` with ``min_revision`` = the revision the PATCH answered,
  on a new connection (any worker): its latency, and whether it gave the new decision;
- ``visible``: from the PATCH's answer until a plain ``/v1/check`` (new connection each, so any
  worker) gives the new decision.

Afterwards everything it added is removed (rules through a revision, rows deleted). Beside it, the
in-memory ``engine.apply`` figure is in ``bench/probe.py``.

Run alone: ``python -m bench.rolechange [W] [out.json]`` (default W = 1,000).
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time
from typing import Any

import requests

from bench import parts

SLUG = "bench-rolechange"
PACK, LOW, HIGH, HIGH_ACTION = "simulations", "learner", "reviewer", "review_scores"  # reviewers only
OPERATOR = "operator@rolechange.bench"
PASSWORD = "rolechange-bench-password"
MEMBERS = 10


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


class Load:
    """/v1/check kept busy until stopped: wrk rounds of 5 s (keep-alive), else Python threads."""

    def __init__(self, port: int, token: str, bodies: list[bytes], clients: int) -> None:
        from bench import http as hb

        self.port, self.token, self.bodies, self.clients = port, token, bodies, clients
        self.wrk = hb.wrk_path()
        self.stop = threading.Event()
        self.rounds: list[dict[str, Any]] = []
        self.requests = self.errors = 0
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        """Begin the load."""
        if self.wrk:
            self.threads = [threading.Thread(target=self._wrk, daemon=True)]
        else:
            self.threads = [threading.Thread(target=self._python, args=(i,), daemon=True) for i in range(2)]
        for t in self.threads:
            t.start()

    def _wrk(self) -> None:
        from bench import http as hb

        assert self.wrk is not None
        while not self.stop.is_set():
            self.rounds.append(hb.load_wrk(self.wrk, self.port, self.token, "/v1/check", self.bodies, self.clients, 5))

    def _python(self, seed: int) -> None:
        http = requests.Session()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        i = seed
        while not self.stop.is_set():
            r = http.post(f"http://127.0.0.1:{self.port}/v1/check", data=self.bodies[i % len(self.bodies)],
                          headers=headers, timeout=30)
            i += 7
            self.requests += 1
            self.errors += r.status_code != 200

    def finish(self) -> dict[str, Any]:
        """Stop (a wrk round runs to its end) and summarise."""
        self.stop.set()
        for t in self.threads:
            t.join(30)
        if self.wrk:
            secs = sum(r["seconds"] for r in self.rounds)
            reqs = sum(r["requests"] for r in self.rounds)
            return {"generator": "wrk", "clients": self.clients, "rounds": len(self.rounds), "requests": reqs,
                    "errors": sum(r["errors"] for r in self.rounds), "requests_per_s": reqs / secs if secs else 0,
                    "p99_ms_max_round": max((r["p99_ms"] for r in self.rounds), default=0)}
        return {"generator": "python", "clients": 2, "requests": self.requests, "errors": self.errors}


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


class Changer:
    """Role changes through the members API as the signed-in operator, each learner up and down in turn."""

    def __init__(self, web: requests.Session, base: str, csrf: str, port: int, token: str, ids: list[int]) -> None:
        self.web, self.base, self.csrf, self.port, self.token = web, base, csrf, port, token
        self.ids = ids
        self.role = {uid: LOW for uid in ids}
        self.i = 0

    def _patch(self, uid: int, role: str) -> requests.Response:
        return self.web.patch(f"{self.base}/api/workspaces/{SLUG}/members/{uid}", json={"role": role},
                              headers={"X-CSRFToken": self.csrf}, timeout=30)

    def series(self, n: int) -> dict[str, Any]:
        """n changes; PATCH, visibility and min_revision latencies."""
        patch_ns: list[int] = []
        minrev_ns: list[int] = []
        visible_ns: list[int] = []
        minrev_wrong = failed = 0
        for _ in range(n):
            uid = self.ids[self.i % len(self.ids)]
            self.i += 1
            new = HIGH if self.role[uid] == LOW else LOW
            t = time.perf_counter_ns()
            resp = self._patch(uid, new)
            done = time.perf_counter_ns()
            if resp.status_code != 200:
                failed += 1
                continue
            patch_ns.append(done - t)
            self.role[uid] = new
            want = new == HIGH
            question = {"subject": uid, "workspace": SLUG, "action": HIGH_ACTION}
            while True:
                status, got = _check(self.port, self.token, question)
                if status == 200 and got.get("allowed") is want:
                    visible_ns.append(time.perf_counter_ns() - done)
                    break
                if time.perf_counter_ns() - done > 10e9:
                    raise TimeoutError(f"role change of user {uid} not visible in 10 s")
            t = time.perf_counter_ns()
            status, got = _check(self.port, self.token, {**question, "min_revision": int(resp.json()["revision"])})
            minrev_ns.append(time.perf_counter_ns() - t)
            minrev_wrong += not (status == 200 and got.get("allowed") is want)
        return {"patch": parts.stats_ms(patch_ns), "visible": parts.stats_ms(visible_ns),
                "min_revision": parts.stats_ms(minrev_ns), "min_revision_wrong": minrev_wrong, "failed": failed}

    def reset(self) -> None:
        """Everyone back to learner (the workspace is removed afterwards anyway)."""
        for uid in [u for u, r in self.role.items() if r != LOW]:
            self._patch(uid, LOW)
            self.role[uid] = LOW


def run(
    url: str, token: str, workspaces: int, log_dir: str, changes: int = 100, clients: int = 4, idle_changes: int = 20
) -> dict[str, Any]:
    """N role changes through the members API under /v1/check load (after ``idle_changes`` without
    load, for comparison); PATCH and visibility latencies."""
    from bench import http as hb
    from bench.peer import mix_items

    os.makedirs(log_dir, exist_ok=True)
    ids = setup(url)
    out: dict[str, Any] = {"workspaces": workspaces, "changes": changes, "workers": hb.workers_default()}
    bodies = [json.dumps(it).encode() for it in mix_items(workspaces, 5000, 31)]
    try:
        with hb.app_server(url, "app:create_app()", hb.workers_default(),
                         os.path.join(log_dir, "gunicorn-rolechange.log")) as port:
            base = f"http://127.0.0.1:{port}"
            web = requests.Session()
            csrf = web.get(base + "/api/auth/csrf", timeout=10).json()["csrf_token"]
            r = web.post(base + "/api/auth/signin", json={"email": OPERATOR, "password": PASSWORD},
                         headers={"X-CSRFToken": csrf}, timeout=30)
            r.raise_for_status()
            csrf = r.json()["csrf_token"]
            changer = Changer(web, base, csrf, port, token, ids)
            out["idle"] = changer.series(idle_changes)  # the same steps with nothing else running
            load = Load(port, token, bodies, clients)
            load.start()
            time.sleep(1.0)  # the load is on
            try:
                out.update(changer.series(changes))
            finally:
                out["load"] = load.finish()
                changer.reset()
    finally:
        cleanup(url)
    return out


def lines(result: dict[str, Any]) -> list[str]:
    """Markdown lines for the report."""
    out = ["## Role change end to end, under load", ""]
    if "error" in result:
        return [*out, f"Not measured: {result['error']}", ""]
    ld = result.get("load", {})
    rate = f"{ld['requests_per_s']:,.0f}/s" if ld.get("requests_per_s") else f"{ld.get('requests', 0):,} requests"
    out.append(
        f"W = {result['workspaces']:,}; gunicorn -w {result['workers']}; {result['changes']} role changes one after "
        f"another through `PATCH /api/workspaces/<slug>/members/<id>` (signed-in owner, CSRF) while "
        f"{ld.get('generator', '?')} keeps `/v1/check` busy ({ld.get('clients', '?')} connections, {rate}, "
        f"{ld.get('errors', 0)} errors)."
    )
    idle = result.get("idle") or {}
    out += parts.table(["step", "p50 / p99"], [
        f"| PATCH answered (committed, writing worker updated) | {parts.p50_p99(result.get('patch'))} |",
        f"| PATCH answered → a plain `/v1/check` (any worker) decides anew | {parts.p50_p99(result.get('visible'))} |",
        f"| `/v1/check` with `min_revision` = the PATCH's revision | {parts.p50_p99(result.get('min_revision'))} |",
        f"| without load ({idle.get('patch', {}).get('n', 0)} changes): PATCH answered "
        f"| {parts.p50_p99(idle.get('patch'))} |",
    ])
    out += ["",
            f"Failed PATCHes: {result.get('failed', 0)}; `min_revision` answers without the new decision: "
            f"{result.get('min_revision_wrong', 0)} (target 0). In memory, `engine.apply` alone: see the role "
            "change row of the decision table.", ""]
    return out


if __name__ == "__main__":
    parts.main("rolechange", run, lines)
