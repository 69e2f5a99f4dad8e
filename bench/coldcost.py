"""Cold cost: the first decision requests after a policy load and after a pack edit, against warm.

On an existing benchmark database (``bench.datagen.ensure_database``), gunicorn serves the real app
(``gunicorn.conf.py``, its workers). One client sends single ``POST /v1/check`` requests of the
realistic mix (``bench.peer.mix_items``: members, non-members, emails, unknown people), one after
another, each a question not asked before, and times each answer:

- ``after_start``: the first N requests once ``/readyz`` answers 200 (the workers have just loaded
  the policy, or caught up from the preloading master's copy);
- ``warm``: N×10 requests after a further N×10 of warm-up, the same way;
- ``after_edit``: a pack edit (one p-rule of the simulations pack removed, written to the database
  by this process as another process would: the workers see it through their listeners and rebuild,
  ``PolicyRuntime._needs_rebuild``). Requests keep going from the commit; the answers carry the
  revision they were decided at, and the first N decided at the new revision are the cold ones.
  The time from the commit to the first and to the last (both workers) answer at the new revision
  is reported, with the latency of the answers the old engines gave meanwhile;
- ``after_restore``: the same for the edit that puts the rule back (the data set is left as found).

Run alone: ``python -m bench.coldcost [W] [out.json]`` (default W = 1,000).
"""

from __future__ import annotations

import http.client
import json
import os
import time
from typing import Any

from bench import parts

EDITED = ("p", "90", "role:simulations:learner", "view_debrief_and_scores", "any", "-", "allow")


class Client:
    """Sequential single checks, each on a new connection (``Connection: close``): a keep-alive
    connection stays with the worker that accepted it, a new one goes to whichever worker accepts
    first, so the questions reach every worker. Latency (ns, connect included) and revision."""

    def __init__(self, port: int, token: str, bodies: list[bytes]) -> None:
        self.port = port
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                        "Connection": "close"}
        self.bodies = bodies
        self.i = 0
        self.errors = 0

    def ask(self) -> tuple[int, int]:
        """(latency ns, revision; -1 for a non-200 answer) of the next question."""
        body = self.bodies[self.i % len(self.bodies)]
        self.i += 1
        t = time.perf_counter_ns()
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        conn.request("POST", "/v1/check", body=body, headers=self.headers)
        r = conn.getresponse()
        payload = r.read()
        took = time.perf_counter_ns() - t
        conn.close()
        if r.status != 200:
            self.errors += 1
            return took, -1
        return took, int(json.loads(payload).get("revision") or 0)

    def series(self, n: int) -> list[int]:
        """Latencies of the next n questions."""
        return [self.ask()[0] for _ in range(n)]


def _edit(url: str, op: str) -> int:
    """Commit one pack-rule change (as another process would); its revision."""
    from app import create_app
    from app.authz import RuleChange
    from app.extensions import db
    from app.policy import store as policy_store

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench-" + "x" * 32, "POLICY_SYNC": "off"})
    with app.app_context():
        session = db.session()
        handle = policy_store.begin_write(session, "bench", None, f"bench.coldcost: {op} one simulations rule")
        policy_store.add_changes(session, handle, [RuleChange(op, EDITED)])
        session.commit()
        number = handle.number
        db.session.remove()
        db.engine.dispose()
    return number


def _after_edit(client: Client, revision: int, op: str, n: int, timeout: float = 120.0) -> dict[str, Any]:
    """After the edit's commit: ask until n answers came at its revision and the last 50 were all at it
    (every worker is there)."""
    committed = time.perf_counter_ns()
    old: list[int] = []
    new: list[int] = []
    first_new = last_old = None
    streak = 0
    while len(new) < n or streak < 50:
        took, rev = client.ask()
        now = time.perf_counter_ns()
        if rev >= revision:
            if first_new is None:
                first_new = now
            if len(new) < n:
                new.append(took)
            streak += 1
        else:
            old.append(took)
            last_old = now
            streak = 0
        if (now - committed) / 1e9 > timeout:
            raise TimeoutError(f"revision {revision} not served by every worker within {timeout:.0f} s")
    return {
        "revision": revision,
        "edit": op,
        "first_new_s": None if first_new is None else (first_new - committed) / 1e9,
        "all_new_s": 0.0 if last_old is None else (last_old - committed) / 1e9,
        "cold": parts.stats_ms(new),
        "meanwhile": parts.stats_ms(old),
    }


def run(url: str, token: str, workspaces: int, log_dir: str, n: int = 200) -> dict[str, Any]:
    """Cold (after start, after a pack edit and its undo) vs warm p50/p99 of single /v1/check."""
    from bench import http as hb
    from bench.peer import mix_items

    bodies = [json.dumps(it).encode() for it in mix_items(workspaces, n * 40 + 2000, 21)]
    out: dict[str, Any] = {"workspaces": workspaces, "n": n, "workers": hb.workers_default(),
                           "edited_rule": ", ".join(EDITED)}
    os.makedirs(log_dir, exist_ok=True)
    t = time.monotonic()
    log = os.path.join(log_dir, "gunicorn-cold.log")
    with hb.app_server(url, "app:create_app()", hb.workers_default(), log) as port:
        out["ready_s"] = time.monotonic() - t
        client = Client(port, token, bodies)
        out["after_start"] = parts.stats_ms(client.series(n))
        client.series(n * 10)
        out["warm"] = parts.stats_ms(client.series(n * 10))
        removed = _edit(url, "remove")
        try:
            out["after_edit"] = _after_edit(client, removed, "remove", n)
        finally:
            out["after_restore"] = _after_edit(client, _edit(url, "add"), "add", n)
        out["errors"] = client.errors
    return out


def _pp(s: dict[str, Any] | None) -> str:
    return parts.p50_p99(s, digits=2, count=True)


def lines(result: dict[str, Any]) -> list[str]:
    """Markdown lines for the report."""
    out = [f"## Cold cost: first {result.get('n', 200)} decisions after a load and after a pack edit", ""]
    if "error" in result:
        return [*out, f"Not measured: {result['error']}", ""]
    out.append(
        f"W = {result['workspaces']:,}; gunicorn -w {result['workers']} (gunicorn.conf.py); one client, single "
        "`POST /v1/check` of the realistic mix one after another, each on a new connection (so "
        "they reach every worker), every question new. Server ready "
        f"(/readyz 200) {result.get('ready_s', 0):.1f} s after start. Pack edit: `{result['edited_rule']}` "
        "removed, then restored, committed by another process (the workers rebuild in the background)."
    )
    out += parts.table(["requests", "p50 / p99"], [
        f"| first {result['n']} after start (policy just loaded) | {_pp(result.get('after_start'))} |",
        f"| warm ({result.get('warm', {}).get('n', 0):,} after warm-up) | {_pp(result.get('warm'))} |",
    ])
    for key, label in (("after_edit", "pack edit (rule removed)"), ("after_restore", "pack edit (rule restored)")):
        e = result.get(key) or {}
        out.append(f"| first {result['n']} at the new revision after a {label} | {_pp(e.get('cold'))} |")
        out.append(f"| answers from the old engines while they rebuild | {_pp(e.get('meanwhile'))} |")
    out.append("")
    for key, label in (("after_edit", "removal"), ("after_restore", "restore")):
        e = result.get(key) or {}
        if e.get("first_new_s") is not None:
            out.append(f"- {label}: first answer at revision {e['revision']} {e['first_new_s']:.2f} s after the "
                       f"commit, every worker there after {e['all_new_s']:.2f} s.")
    out += [f"- non-200 answers: {result.get('errors', 0)}", ""]
    return out


if __name__ == "__main__":
    parts.main("coldcost", run, lines)
