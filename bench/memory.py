"""Memory of a gunicorn server of the real app: per process and in total, preload vs no preload.

Two runs of the same app on the same database, one after the other: ``GUNICORN_PRELOAD=1`` (the
master loads the policy, ``gc.freeze()``s it, the workers share its pages copy-on-write) and
``GUNICORN_PRELOAD=0`` (each worker loads its own copy: the figure before the change). Each waits
until /readyz is 200 on every worker, sends warm-up decisions through every worker, then reads
``/proc/<pid>/smaps_rollup`` of the master and each worker: RSS, PSS (shared pages divided among the
processes sharing them), USS (``Private_Clean + Private_Dirty``: what the process alone holds). The
honest total is the sum of PSS; the sum of RSS counts shared pages once per process.

Run alone: ``python -m bench.memory [W] [out.json]`` (default W = 1,000).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from bench import parts
from bench.http import _items, workers_default
from bench.server import children, each_worker, serve

WARMUP = 200  # decisions per worker before reading memory


def smaps(pid: int) -> dict[str, float]:
    """RSS, PSS and USS of pid in MB (``/proc/<pid>/smaps_rollup``)."""
    kb: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as fh:
        for line in fh:
            cells = line.split()
            if len(cells) >= 3 and cells[0].endswith(":") and cells[2] == "kB":
                kb[cells[0][:-1]] = int(cells[1])
    return {
        "rss_mb": kb.get("Rss", 0) / 1024,
        "pss_mb": kb.get("Pss", 0) / 1024,
        "uss_mb": (kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)) / 1024,
    }


def _measure(url: str, token: str, workspaces: int, workers: int, preload: bool, log_dir: str) -> dict[str, Any]:
    mode = "preload" if preload else "no-preload"
    log = os.path.join(log_dir, f"gunicorn-memory-{mode}.log")
    t0 = time.monotonic()
    with serve(url, workers, log, {"GUNICORN_PRELOAD": "1" if preload else "0"}) as (proc, port, _):
        ready_s = time.monotonic() - t0
        pids = children(proc.pid)
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        bodies = [json.dumps(it).encode() for it in _items(workspaces, WARMUP, 5)]
        for body in bodies:
            for _, status, data in each_worker(port, pids, "POST", "/v1/check", body, headers):
                if status != 200:
                    raise RuntimeError(f"warm-up decision failed: {status} {data}")
        time.sleep(0.5)
        master = smaps(proc.pid)
        per_worker = [{"pid": pid, **smaps(pid)} for pid in pids]
    procs = [master, *per_worker]
    return {
        "mode": mode,
        "workers": len(pids),
        "ready_s": ready_s,
        "master": master,
        "per_worker": per_worker,
        "worker_mean": {k: sum(w[k] for w in per_worker) / len(per_worker) for k in ("rss_mb", "pss_mb", "uss_mb")},
        "total": {k: sum(p[k] for p in procs) for k in ("rss_mb", "pss_mb", "uss_mb")},
    }


def run(url: str, token: str, workspaces: int, log_dir: str) -> dict[str, Any]:
    """Both modes, no-preload first; ``ratio``: preload / no-preload of the total PSS and per worker."""
    workers = workers_default()
    out: dict[str, Any] = {"workspaces": workspaces, "workers": workers, "warmup_per_worker": WARMUP}
    out["before"] = _measure(url, token, workspaces, workers, False, log_dir)
    out["after"] = _measure(url, token, workspaces, workers, True, log_dir)
    b, a = out["before"], out["after"]
    out["ratio"] = {
        "total_pss": a["total"]["pss_mb"] / b["total"]["pss_mb"],
        "worker_pss": a["worker_mean"]["pss_mb"] / b["worker_mean"]["pss_mb"],
        "worker_uss": a["worker_mean"]["uss_mb"] / b["worker_mean"]["uss_mb"],
    }
    return out


def _mb(v: float) -> str:
    return f"{v:,.0f} MB"


def lines(result: dict[str, Any]) -> list[str]:
    """The memory table as Markdown lines."""
    head = ["## Memory of gunicorn: policy loaded once in the master (preload) vs in every worker", ""]
    if "error" in result or "skipped" in result:
        return [*head, f"Not measured: {result.get('error') or result.get('skipped')}"]
    w = result.get("workspaces")
    head.append(
        f"W = {w:,} workspaces × 10 members, {result['workers']} sync workers, {result['warmup_per_worker']} "
        "decisions per worker first; `/proc/<pid>/smaps_rollup`. PSS shares each page among the processes "
        "mapping it, so the total PSS is the server's real footprint; USS is what a process alone holds."
    )
    head += parts.table(["", "before: each worker loads (`GUNICORN_PRELOAD=0`)",
                         "after: master loads, workers share (`=1`)", "after/before"])
    b, a = result["before"], result["after"]

    def row(label: str, x: float, y: float) -> str:
        return f"| {label} | {_mb(x)} | {_mb(y)} | {y / x:.2f}× |" if x else f"| {label} | {_mb(x)} | {_mb(y)} | — |"

    rows = [
        row("total PSS (master + workers)", b["total"]["pss_mb"], a["total"]["pss_mb"]),
        row("total RSS (shared pages counted per process)", b["total"]["rss_mb"], a["total"]["rss_mb"]),
        row("per worker PSS (mean)", b["worker_mean"]["pss_mb"], a["worker_mean"]["pss_mb"]),
        row("per worker RSS (mean)", b["worker_mean"]["rss_mb"], a["worker_mean"]["rss_mb"]),
        row("per worker USS (mean)", b["worker_mean"]["uss_mb"], a["worker_mean"]["uss_mb"]),
        row("master PSS", b["master"]["pss_mb"], a["master"]["pss_mb"]),
        f"| start until every worker ready | {b['ready_s']:.1f} s | {a['ready_s']:.1f} s | — |",
    ]
    return [*head, *rows]


if __name__ == "__main__":
    parts.main("memory", run, lines)
