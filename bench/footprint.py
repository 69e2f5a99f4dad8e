"""Bytes per membership (engine) and per user (directory), and the load time, in one process.

The engine and the directory are built from the data set's database as ``PolicyRuntime`` builds them
(``read_policy`` streaming the facts into ``PolicyEngine``, then ``directory.load`` in the same
snapshot), each load in a fresh interpreter: one run timed (no tracing), one under ``tracemalloc``
(the Python heap each structure keeps after a ``gc.collect()``). The RSS figures are the process's
growth over the load (allocator slack included): what a worker really pays.

``python -m bench.footprint W [users] [code-dir]`` measures the data set of W workspaces with ``users``
users (``bench.datagen``, created if missing) with the ``app`` package of ``code-dir`` (default: this
tree), so a baseline tree (``git archive main``) is measured on the same database in the same run.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from app.authz.engine import PolicyEngine
from app.authz.packs import packset_from_documents
from app.policy import directory
from app.policy.store import read_policy
from bench.http import app_env, free_port, process

ROOT = Path(__file__).resolve().parent.parent


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _heap() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0


def one(url: str, trace: bool) -> dict[str, Any]:
    """Load engine and directory from url in this process: seconds, heap bytes (if trace), RSS MB."""
    model_text = (ROOT / "model.conf").read_text(encoding="utf-8")
    db = create_engine(url)
    with db.connect() as c:
        memberships = c.execute(text("SELECT count(*) FROM casbin_rule WHERE ptype = 'g' AND v2 LIKE 'ws:%'")).scalar()
        facts = c.execute(text("SELECT count(*) FROM casbin_rule")).scalar()
        users = c.execute(text("SELECT count(*) FROM users")).scalar()
    if trace:
        tracemalloc.start()
    heap0, rss0 = _heap(), _rss_mb()
    with Session(db) as session:
        t0 = time.perf_counter()
        revision, documents, pack_rules, rows = read_policy(session)
        eng = PolicyEngine(packset_from_documents(documents, pack_rules, model_text), rows, revision)
        t1 = time.perf_counter()
        heap1, rss1 = _heap(), _rss_mb()
        d = directory.load(session)
        t2 = time.perf_counter()
    heap2, rss2 = _heap(), _rss_mb()
    assert eng.revision == revision and len(d) == users
    return {
        "code": str(Path(sys.modules[PolicyEngine.__module__].__file__ or "").parents[2]),
        "memberships": memberships,
        "facts": facts,
        "users": users,
        "engine_s": t1 - t0,
        "directory_s": t2 - t1,
        "engine_heap": heap1 - heap0,
        "directory_heap": heap2 - heap1,
        "engine_rss_mb": rss1 - rss0,
        "directory_rss_mb": rss2 - rss1,
    }


def measure(url: str, code: str | None = None) -> dict[str, Any]:
    """A timed load and a traced load of url, each in a fresh interpreter importing ``app`` from code."""
    env = dict(os.environ, PYTHONPATH=code or str(ROOT))
    out: dict[str, Any] = {}
    for trace in (False, True):
        # run_path, not the script: its directory first on sys.path would shadow ``http`` with bench/http.py
        argv = [__file__, "--one", url, "1" if trace else "0"]
        boot = f"import runpy, sys; sys.argv = {argv!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
        proc = subprocess.run(
            [sys.executable, "-c", boot],
            cwd=code or str(ROOT),
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        out.update({k: v for k, v in got.items() if trace == k.endswith("_heap")} if out else got)
    out["engine_b_per_membership"] = out["engine_heap"] / out["memberships"]
    out["directory_b_per_user"] = out["directory_heap"] / out["users"]
    return out


def _smaps(pid: int) -> dict[str, float]:
    kb: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
        for line in fh:
            cells = line.split()
            if len(cells) >= 3 and cells[0].endswith(":") and cells[2] == "kB":
                kb[cells[0][:-1]] = int(cells[1])
    return {"rss_mb": kb.get("Rss", 0) / 1024, "pss_mb": kb.get("Pss", 0) / 1024}


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def granian_pss(url: str, preload: bool, code: str | None = None, workers: int = 2) -> dict[str, Any]:
    """PSS of ``python -m app.serve`` (granian, ``workers`` workers) on url once every worker serves
    and the memory has settled: granian's main process and each worker, and the total."""
    port = free_port()
    env = app_env(url, code or str(ROOT), SERVE_BIND=f"127.0.0.1:{port}", SERVE_WORKERS=str(workers))
    env["SERVE_PRELOAD"] = "1" if preload else "0"
    log_path = f"/tmp/footprint-granian-{port}.log"
    t0 = time.monotonic()
    with process([sys.executable, "-m", "app.serve"], env, log_path, cwd=code or str(ROOT)) as proc:
        last, steady = -1.0, 0
        while steady < 5:  # every worker ready and the memory still for 5 s
            time.sleep(1)
            if proc.poll() is not None or time.monotonic() - t0 > 900:
                raise RuntimeError(f"granian did not settle; see {log_path}")
            pids = _children(proc.pid)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                    ready = r.status == 200
            except OSError:
                ready = False
            total = sum(_smaps(p)["pss_mb"] for p in [proc.pid, *pids]) if len(pids) == workers else 0.0
            steady = steady + 1 if ready and total and abs(total - last) < 2 else 0
            last = total
        main = _smaps(proc.pid)
        per_worker = [_smaps(p) for p in _children(proc.pid)]
        ready_s = time.monotonic() - t0 - 5
    return {
        "preload": preload,
        "main": main,
        "workers": per_worker,
        "total_pss_mb": main["pss_mb"] + sum(w["pss_mb"] for w in per_worker),
        "ready_s": ready_s,
    }


def table_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    """A Markdown table of :func:`measure` results, one column per label."""
    labels = list(results)
    rows = [
        ("memberships / users", lambda r: f"{r['memberships']:,} / {r['users']:,}"),
        ("engine heap per membership", lambda r: f"{r['engine_b_per_membership']:.0f} B"),
        ("directory heap per user", lambda r: f"{r['directory_b_per_user']:.0f} B"),
        ("engine + directory RSS growth", lambda r: f"{r['engine_rss_mb'] + r['directory_rss_mb']:,.0f} MB"),
        ("engine load (facts streamed)", lambda r: f"{r['engine_s']:.1f} s"),
        ("directory load", lambda r: f"{r['directory_s']:.1f} s"),
    ]
    out = ["|  | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for name, fmt in rows:
        out.append(f"| {name} | " + " | ".join(fmt(results[label]) for label in labels) + " |")
    return out


def main(argv: list[str]) -> None:
    """The command line (see the module docstring)."""
    if argv[:1] == ["--one"]:
        print(json.dumps(one(argv[1], argv[2] == "1")))
        return
    from bench.datagen import ensure_database  # noqa: PLC0415 - bench, not app: the child needs no data set

    w = int(argv[0]) if argv else 1000
    users = int(argv[1]) if len(argv) > 1 else None
    url, _ = ensure_database(w, users=users)
    results = {"this tree": measure(url)}
    if len(argv) > 2:
        results = {f"baseline ({argv[2]})": measure(url, argv[2]), **results}
    print(json.dumps(results, indent=2))
    print("\n".join(table_lines(results)))


def run(url: str, token: str, workspaces: int, log_dir: str) -> dict[str, Any]:
    """The ``make bench`` part: bytes and load times of this tree, and granian's PSS with and without
    preload (2 workers), on the largest data set."""
    return {
        "workspaces": workspaces,
        "loads": {"this tree": measure(url)},
        "granian": {"preload": granian_pss(url, True), "no-preload": granian_pss(url, False)},
    }


def lines(result: dict[str, Any]) -> list[str]:
    """The part's report section."""
    head = ["## Footprint: bytes per membership and per user, load time, granian PSS (2 workers)", ""]
    if "error" in result:
        return [*head, f"Not measured: {result['error']}"]
    g = result["granian"]
    return [
        *head,
        *table_lines(result["loads"]),
        "",
        f"granian total PSS (main process + 2 workers): {g['preload']['total_pss_mb']:,.0f} MB with "
        f"`SERVE_PRELOAD=1`, {g['no-preload']['total_pss_mb']:,.0f} MB with `SERVE_PRELOAD=0`.",
    ]


if __name__ == "__main__":
    main(sys.argv[1:])
