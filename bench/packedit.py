"""Decisions while a pack edit reaches every gunicorn worker, before and after the change.

A pack edit is applied in place in every process (``PolicyEngine.apply_packs``: the pack links,
p-rules, ranks and the memo plan change, the million memberships stay) — issue 25. Under steady
load on ``POST /v1/check`` (client processes, one connection per request as sync workers close them,
every request's start, latency, status and decided revision recorded) a separate process commits a
harmless pack edit (one allow rule added, ``policy_edits.apply``, as ``flask policy`` or the editor
API would). Decisions are then split in windows: *before* (the seconds before the commit), *during*
(from the commit until the last decision at the old revision — every worker is at the new one —
and at least :data:`DURING_MIN_S`), *after* (the seconds after that), each with p50/p99/max and
errors. The edit is undone before the next variant. Each worker's full-load count (``/readyz`` →
``sync.loads``) is read before the edit and after the undo: the in-place path adds none.

Variants, one after the other on a copy of the data set (``<prefix>_<name>_packedit``, dropped at the end):

* ``rebuild``: the code before the in-place path (``git archive`` of :data:`REBUILD_COMMIT`) with
  ``POLICY_SYNC=listen``: every worker rebuilds its engine from PostgreSQL in a background thread
  after a random 0..``POLICY_REBUILD_JITTER_SECONDS`` delay, the old engine answering meanwhile —
  the full-rebuild path (today's code still takes it for a ``model.conf`` change or a gap).
* ``listen``: today's code with ``POLICY_SYNC=listen``: applied in place at the listener's hint.
* ``poll``: today's code with ``POLICY_SYNC=poll`` (seen within ``POLICY_POLL_SECONDS``).
* ``before``: the code at :data:`BEFORE_COMMIT` (each worker's listener rebuilt at once, under the
  runtime's lock, every worker at the same moment).

Default ``rebuild,listen`` (``BENCH_PACKEDIT_VARIANTS``); today's variants run preloaded
(``gunicorn.conf.py`` default). Targets (issue 25, at W = 100,000: 1M memberships): every worker
at the new revision ≤ 200 ms after the commit, p99 of decisions during the edit ≤ 5 ms. Run alone:
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
REBUILD_COMMIT = "143b41d"  # main before pack edits were applied in place
TARGET_ALL_NEW_S = 0.200
TARGET_P99_MS = 5.0
RULE = "p, 80, role:simulations:reviewer, view_ai_spend, any, -, allow"
CLIENTS = 2
WINDOW_S = 5.0  # the before and after windows
DURING_MIN_S = 2.0  # the during window lasts at least this long (an edit applied in place takes ms)
EDIT = """
import os, sys, time
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
    print(d.revision, time.time(), flush=True)
os._exit(0)  # at once: the interpreter's teardown (0.4-0.6 s of CPU at W = 100,000) is not the servers'
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


def _status(port: int, body: bytes, headers: dict[str, str]) -> int:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("POST", "/v1/check", body=body, headers=headers)
        r = c.getresponse()
        r.read()
        return int(r.status)
    finally:
        c.close()


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
    during = max(swapped, committed + DURING_MIN_S)
    return {
        "first_new_s": (min(news) - committed) if news else None,
        "all_new_s": swapped - committed,  # until the last decision at the old revision ended
        "before": _window([r for r in rows if committed - WINDOW_S <= r[0] < committed]),
        "during": _window([r for r in rows if committed <= r[0] <= during]),
        "after": _window([r for r in rows if during < r[0] <= during + WINDOW_S]),
    }


def _variant(name: str, url: str, token: str, workspaces: int, root: str, env: dict[str, str],
             log_dir: str) -> dict[str, Any]:
    workers = workers_default()
    bodies = [json.dumps(it).encode() for it in _items(workspaces, 400, 11)]
    log = os.path.join(log_dir, f"gunicorn-packedit-{name}.log")
    with serve(url, workers, log, env, root=root) as (proc, port, ready_s):
        pids = children(proc.pid)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        bodies = [b for b in bodies if _status(port, b, headers) == 200]  # not the token's 403s: errors stay errors

        def revisions() -> list[int]:
            """The revision every worker decides at (one /v1/check each)."""
            got = each_worker(port, pids, "POST", "/v1/check", bodies[0], headers, timeout=60)
            return [int(d.get("revision", -1)) if s == 200 else -1 for _, s, d in got]

        def loads() -> list[int | None]:
            """Each worker's full policy loads so far (None: the code does not count them)."""
            got = each_worker(port, pids, "GET", "/readyz", None, {}, timeout=60)
            return [(d.get("sync") or {}).get("loads") for _, _, d in got]

        old = max(revisions())
        loads_before = loads()
        ctx = mp.get_context("fork")
        stop, out = ctx.Event(), ctx.Queue()
        clients = [ctx.Process(target=_client, args=((port, token, bodies, stop, out),)) for _ in range(CLIENTS)]
        for p in clients:
            p.start()
        time.sleep(WINDOW_S + 1.0)
        revision, committed = _edit(url, "add")
        # No probe of the workers while the clients measure: a probe holds a connection to each sync
        # worker until every worker holds one (bench.server.each_worker), and a worker holding an idle
        # connection answers nobody else (it put 50-150 ms into the during window's p99). When each
        # worker decided at the new revision is read from the clients' own answers (``windows``).
        time.sleep(DURING_MIN_S + WINDOW_S + 0.5)
        stop.set()
        rows = [r for _ in clients for r in out.get(timeout=60)]
        for p in clients:
            p.join(10)
        at_new = revisions()
        if min(at_new) < revision:
            raise RuntimeError(f"a worker still decides below revision {revision} after the windows: {at_new}")
        undo, _ = _edit(url, "remove")
        t0 = time.monotonic()
        while min(revisions()) < undo:
            if time.monotonic() - t0 > 120:
                raise TimeoutError("the undo never reached every worker")
            time.sleep(0.3)
        loads_after = loads()
    rows.sort()
    res = windows(rows, committed, old)
    res.update({"variant": name, "workers": len(pids), "clients": CLIENTS, "ready_s": ready_s,
                "old_revision": old, "new_revision": revision, "workers_at_end": at_new,
                "requests": len(rows), "loads_before": loads_before, "loads_after": loads_after})
    return res


def run(url: str, token: str, workspaces: int, log_dir: str) -> dict[str, Any]:
    """The three variants (``BENCH_PACKEDIT_VARIANTS``: a comma list of before, poll, listen)."""
    names = [v.strip() for v in os.environ.get("BENCH_PACKEDIT_VARIANTS", "rebuild,listen").split(",") if v.strip()]
    db, copied = copy_database(url, "packedit")
    out: dict[str, Any] = {"workspaces": workspaces, "rule": RULE, "copied_database": copied,
                           "window_s": WINDOW_S, "variants": {}}
    old_tree = tempfile.mkdtemp(prefix="h15b-before-")
    try:
        for name in names:
            try:
                if name in ("before", "rebuild"):
                    commit = BEFORE_COMMIT if name == "before" else REBUILD_COMMIT
                    root = source_tree(commit, tempfile.mkdtemp(dir=old_tree))
                    env = {"FLASK_POLICY_SYNC": "listen"}
                    if name == "rebuild":
                        env["GUNICORN_PRELOAD"] = "1"
                    out[f"{name}_commit"] = subprocess.run(
                        ["git", "-C", ROOT, "rev-parse", "--short", commit], capture_output=True, text=True,
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
    "before": "old: every worker rebuilds at once, listener thread under the lock",
    "rebuild": "full rebuild: background rebuild + jitter (`POLICY_SYNC=listen`)",
    "poll": "in place, `POLICY_SYNC=poll`",
    "listen": "in place, `POLICY_SYNC=listen`",
}


def _f(v: Any, unit: str = " ms") -> str:
    return "—" if v is None else f"{v:,.1f}{unit}"


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds * 1000:,.0f} ms"


def _loads(before: list[int | None] | None, after: list[int | None] | None) -> str:
    """Full loads each worker did between the two readings (edit and undo), or why unknown."""
    if not before or not after or None in before or None in after:
        return "not counted (older code)"
    return ", ".join(str(int(a or 0) - int(b or 0)) for b, a in zip(before, after, strict=False))


def lines(result: dict[str, Any]) -> list[str]:
    """The pack-edit table as Markdown lines."""
    head = ["## Decisions during a pack edit (applied in place in every worker, and the full rebuild)", ""]
    if "error" in result or "skipped" in result:
        return [*head, f"Not measured: {result.get('error') or result.get('skipped')}"]
    head.append(
        f"W = {result['workspaces']:,} workspaces × 10 members; `POST /v1/check` from {CLIENTS} client processes "
        f"(a connection per request) while another process adds `{result['rule']}`. Windows: the "
        f"{result['window_s']:.0f} s before the commit, from the commit until the last decision at the old "
        f"revision (every worker swapped; at least {DURING_MIN_S:.0f} s), the {result['window_s']:.0f} s after."
        " Requests the bench token may not ask (403) are left out of the request set."
        + (f" Full rebuild = the code at {result['rebuild_commit']}." if result.get("rebuild_commit") else "")
        + (f" Old = the code at {result['before_commit']}." if result.get("before_commit") else "")
        + f" Targets: every worker at the new revision ≤ {TARGET_ALL_NEW_S * 1000:.0f} ms after the commit,"
        f" p99 during the edit ≤ {TARGET_P99_MS:.0f} ms. A shared 2-core machine: absolute figures are noisy,"
        " compare the rows of one run."
    )
    head += parts.table(["variant", "window", "decisions", "p50", "p99", "max", "errors"])
    tail = parts.table(
        [
            "variant",
            "commit → first decision at the new revision",
            f"commit → every worker at it (target ≤ {TARGET_ALL_NEW_S * 1000:.0f} ms)",
            f"p99 during (target ≤ {TARGET_P99_MS:.0f} ms)",
            "full loads per worker (edit and undo)",
        ]
    )
    for name, v in result.get("variants", {}).items():
        label = LABELS.get(name, name)
        if "error" in v:
            head.append(f"| {label} | failed: {v['error']} | | | | | |")
            continue
        for w in ("before", "during", "after"):
            x = v[w]
            head.append(f"| {label} | {w} | {x['requests']:,} | {_f(x['p50_ms'])} | {_f(x['p99_ms'])} "
                        f"| {_f(x['max_ms'])} | {x['errors']} |")
        tail.append(
            f"| {label} | {_ms(v['first_new_s'])} | {_ms(v['all_new_s'])} | {_f(v['during']['p99_ms'])} "
            f"| {_loads(v.get('loads_before'), v.get('loads_after'))} |"
        )
    return [*head, *tail]


if __name__ == "__main__":
    parts.main("packedit", run, lines)
