"""Decision latency while a pack edit is rebuilt in every gunicorn worker, before and after the change.

A pack-rule edit cannot be applied incrementally (``PolicyRuntime._needs_rebuild``): every process
rebuilds its engine from the database. Under steady load on ``POST /v1/check`` (client processes,
one connection per request as sync workers close them, every request's start, latency, status and
decided revision recorded) a separate process commits a harmless pack edit (one allow rule added,
``policy_edits.apply``, as ``flask policy`` or the editor API would). Decisions are then split in
windows: *before* (the seconds before the commit), *during* (from the commit until the last decision
at the old revision: every worker has swapped), *after* (the seconds after that), each with
p50/p99/max and errors. The edit is undone (and rebuilt) before the next variant.

Variants, one after the other on a copy of the data set (``h15b_<name>_packedit``, dropped at the end):

* ``before``: the code before the change (``git archive`` of :data:`BEFORE_COMMIT`, the commit before
  "Production sync and readiness"): each worker's listener thread rebuilds at once, under the
  runtime's lock, every worker at the same moment.
* ``poll``: today's code with ``POLICY_SYNC=poll`` (no LISTEN: the edit is seen within
  ``POLICY_POLL_SECONDS``).
* ``listen``: today's code with ``POLICY_SYNC=listen``: the old engine keeps serving while a
  background thread rebuilds after a random 0..``POLICY_REBUILD_JITTER_SECONDS`` delay.

Both of today's variants run preloaded (``gunicorn.conf.py`` default). Run alone:
``python -m bench.packedit [W] [out.json]`` (default W = 1,000).
"""

from __future__ import annotations

import http.client
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench import parts
from bench.http import _items, workers_default
from bench.probe import percentiles
from bench.server import ROOT, children, copy_database, drop_database, each_worker, serve, source_tree

BEFORE_COMMIT = "d3dc786^"
RULE = "p, 80, role:simulations:reviewer, view_ai_spend, any, -, allow"
CLIENTS = 2
WINDOW_S = 5.0  # the before and after windows
EDIT = """
import sys, time
from pathlib import Path
from app import create_app
from app.extensions import db
from app.policy import edits as policy_edits
app = create_app()
with app.app_context():
    model = Path(app.config["MODEL_PATH"]).read_text(encoding="utf-8")
    d = policy_edits.apply(db.session(), [policy_edits.Edit(sys.argv[1], sys.argv[2])], model, None,
                           message="bench.packedit")
    db.session.commit()
    print(d.revision, time.time())
"""


def _client(args: tuple[int, str, list[bytes], Any, Any]) -> None:
    port, token, bodies, stop, out = args
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    rows: list[tuple[float, int, int, int]] = []  # (start wall time, latency ns, status, revision)
    i = os.getpid()
    while not stop.is_set():
        body = bodies[i % len(bodies)]
        i += 1
        start = time.time()
        t = time.perf_counter_ns()
        status, revision = 0, -1
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("POST", "/v1/check", body=body, headers=headers)
            r = c.getresponse()
            data = r.read()
            c.close()
            status = r.status
            if status == 200:
                revision = int(json.loads(data).get("revision", -1))
        except (OSError, ValueError, http.client.HTTPException):
            status = 0
        rows.append((start, time.perf_counter_ns() - t, status, revision))
    out.put(rows)


def _edit(url: str, op: str) -> tuple[int, float]:
    env = {**os.environ, "FLASK_SQLALCHEMY_DATABASE_URI": url, "FLASK_SECRET_KEY": "bench-" + "x" * 32,
           "FLASK_POLICY_SYNC": "off", "FLASK_MAIL_BACKEND": "memory", "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", EDIT, op, RULE], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True, timeout=300)
    revision, committed = out.stdout.strip().splitlines()[-1].split()
    return int(revision), float(committed)


def _window(rows: list[tuple[float, int, int, int]]) -> dict[str, Any]:
    lat = [r[1] for r in rows]
    stats = percentiles(lat)
    return {
        "requests": len(rows),
        "errors": sum(1 for r in rows if r[2] != 200),
        "p50_ms": stats.get("p50_us", 0) / 1000,
        "p99_ms": stats.get("p99_us", 0) / 1000,
        "max_ms": stats.get("max_us", 0) / 1000,
    }


def windows(rows: list[tuple[float, int, int, int]], committed: float, old: int) -> dict[str, Any]:
    """Split (start, latency ns, status, revision) rows at the commit and at the last decision at the
    old revision (or below) after it: before / during / after, each WINDOW_S long at most."""
    olds = [r[0] + r[1] / 1e9 for r in rows if r[0] >= committed and r[2] == 200 and 0 <= r[3] <= old]
    news = [r[0] + r[1] / 1e9 for r in rows if r[2] == 200 and r[3] > old]
    swapped = max(olds) if olds else committed
    return {
        "first_new_s": (min(news) - committed) if news else None,
        "all_new_s": swapped - committed,  # until the last decision at the old revision ended
        "before": _window([r for r in rows if committed - WINDOW_S <= r[0] < committed]),
        "during": _window([r for r in rows if committed <= r[0] <= swapped]),
        "after": _window([r for r in rows if swapped < r[0] <= swapped + WINDOW_S]),
    }


def _variant(name: str, url: str, token: str, workspaces: int, root: str, env: dict[str, str],
             log_dir: str) -> dict[str, Any]:
    workers = workers_default()
    bodies = [json.dumps(it).encode() for it in _items(workspaces, 2000, 11)]
    log = os.path.join(log_dir, f"gunicorn-packedit-{name}.log")
    with serve(url, workers, log, env, root=root) as (proc, port, ready_s):
        pids = children(proc.pid)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

        def revisions() -> list[int]:
            """The revision every worker decides at (one /v1/check each)."""
            got = each_worker(port, pids, "POST", "/v1/check", bodies[0], headers, timeout=60)
            return [int(d.get("revision", -1)) if s == 200 else -1 for _, s, d in got]

        old = max(revisions())
        ctx = mp.get_context("fork")
        stop, out = ctx.Event(), ctx.Queue()
        clients = [ctx.Process(target=_client, args=((port, token, bodies, stop, out),)) for _ in range(CLIENTS)]
        for p in clients:
            p.start()
        time.sleep(WINDOW_S + 1.0)
        revision, committed = _edit(url, "add")
        deadline = time.time() + 120
        while time.time() < deadline:  # until every worker decides at the new revision, then the after window
            if min(revisions()) >= revision:
                break
            time.sleep(1.0)
        time.sleep(WINDOW_S + 0.5)
        stop.set()
        rows = [r for _ in clients for r in out.get(timeout=60)]
        for p in clients:
            p.join(10)
        at_new = revisions()
        undo, _ = _edit(url, "remove")
        t0 = time.monotonic()
        while min(revisions()) < undo:
            if time.monotonic() - t0 > 120:
                raise TimeoutError("the undo never reached every worker")
            time.sleep(0.3)
    rows.sort()
    res = windows(rows, committed, old)
    res.update({"variant": name, "workers": len(pids), "clients": CLIENTS, "ready_s": ready_s,
                "old_revision": old, "new_revision": revision, "workers_at_end": at_new,
                "requests": len(rows)})
    return res


def run(url: str, token: str, workspaces: int, log_dir: str) -> dict[str, Any]:
    """The three variants (``BENCH_PACKEDIT_VARIANTS``: a comma list of before, poll, listen)."""
    names = [v.strip() for v in os.environ.get("BENCH_PACKEDIT_VARIANTS", "before,poll,listen").split(",") if v.strip()]
    db, copied = copy_database(url, "packedit")
    out: dict[str, Any] = {"workspaces": workspaces, "rule": RULE, "copied_database": copied,
                           "window_s": WINDOW_S, "variants": {}}
    old_tree = tempfile.mkdtemp(prefix="h15b-before-")
    try:
        for name in names:
            try:
                if name == "before":
                    root = source_tree(BEFORE_COMMIT, old_tree)
                    env = {"FLASK_POLICY_SYNC": "listen"}
                    out["before_commit"] = subprocess.run(
                        ["git", "-C", ROOT, "rev-parse", "--short", BEFORE_COMMIT], capture_output=True, text=True,
                        check=True).stdout.strip()
                else:
                    root, env = ROOT, {"FLASK_POLICY_SYNC": name, "GUNICORN_PRELOAD": "1"}
                out["variants"][name] = _variant(name, db, token, workspaces, root, env, log_dir)
            except Exception as exc:  # noqa: BLE001 - report what failed, keep the other variants
                out["variants"][name] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        shutil.rmtree(old_tree, ignore_errors=True)
        if copied:
            drop_database(db)
    return out


LABELS = {
    "before": "before: every worker rebuilds at once, listener thread under the lock",
    "poll": "after, `POLICY_SYNC=poll`",
    "listen": "after, `POLICY_SYNC=listen`: background rebuild + jitter",
}


def _f(v: Any, unit: str = " ms") -> str:
    return "—" if v is None else f"{v:,.1f}{unit}"


def lines(result: dict[str, Any]) -> list[str]:
    """The pack-edit table as Markdown lines."""
    head = ["## Decisions during a pack edit (every worker rebuilds its engine)", ""]
    if "error" in result or "skipped" in result:
        return [*head, f"Not measured: {result.get('error') or result.get('skipped')}"]
    head.append(
        f"W = {result['workspaces']:,} workspaces × 10 members; `POST /v1/check` from {CLIENTS} client processes "
        f"(a connection per request) while another process adds `{result['rule']}`. Windows: the "
        f"{result['window_s']:.0f} s before the commit, from the commit until the last decision at the old "
        f"revision (every worker swapped), the {result['window_s']:.0f} s after."
        + (f" Before = the code at {result['before_commit']}." if result.get("before_commit") else "")
    )
    head += parts.table(["variant", "window", "decisions", "p50", "p99", "max", "errors"])
    tail = parts.table(["variant", "commit → first decision at the new revision", "commit → every worker at it"])
    for name, v in result.get("variants", {}).items():
        label = LABELS.get(name, name)
        if "error" in v:
            head.append(f"| {label} | failed: {v['error']} | | | | | |")
            continue
        for w in ("before", "during", "after"):
            x = v[w]
            head.append(f"| {label} | {w} | {x['requests']:,} | {_f(x['p50_ms'])} | {_f(x['p99_ms'])} "
                        f"| {_f(x['max_ms'])} | {x['errors']} |")
        tail.append(f"| {label} | {_f(v['first_new_s'], ' s')} | {_f(v['all_new_s'], ' s')} |")
    return [*head, *tail]


if __name__ == "__main__":
    parts.main("packedit", run, lines)
