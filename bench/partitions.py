"""A partitioned decision tier at scale: 4 partitions behind HAProxy beside one unpartitioned process.

On the W data set (``bench.datagen``: W workspaces × 10 members), in one run and one after the other
(so each load has the machine to itself as far as a shared machine allows):

1. a server holding no workspace (``POLICY_WORKSPACES=none-such``): the fixed overhead of a process;
2. one unpartitioned server (every workspace), behind HAProxy with the shipped partitioned
   configuration whose every backend points at it (the same proxy work as the tier);
3. four replicas, ``POLICY_PARTITION=k/4`` (one each), started one after the other and kept running,
   behind the same HAProxy configuration with backend k pointing at replica k.

Each server is gunicorn with one sync worker and ``GUNICORN_PRELOAD=0`` (the worker loads). Figures:
load time (start until ``/readyz`` is 200), PSS of the server (master + worker,
``/proc/<pid>/smaps_rollup``), decision latency p50/p99 through HAProxy (keep-alive clients,
``POST /v1/check`` routed by HAProxy from the JSON body), and the engine's bytes per membership
((PSS of the unpartitioned server − the empty one's) / memberships).

Run alone: ``python -m bench.partitions [W] [out.json]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.authz.packs import load_packs
from app.policy.tokens import META_PACK
from bench import parts
from bench.http import _items, free_port, load
from bench.memory import smaps
from bench.server import children, serve

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "deploy" / "haproxy-partitions.cfg"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
PARTITIONS = 4
CLIENTS = 2
SECONDS = float(os.environ.get("BENCH_PARTITION_SECONDS", "8"))
MEMBERS = 10
PACKS = list(load_packs(str(ROOT / "policy"), str(ROOT / "model.conf")).packs)  # as bench.http._items orders them


def haproxy_config(count: int) -> str:
    """The shipped configuration with ``backend p0`` repeated for partitions 0..count-1."""
    text = CONFIG.read_text()
    start = text.index("\nbackend p0")
    end = text.index("\n# Everything else")
    block = text[start : text.index("\n\n", start + 1)]
    blocks = "".join(block.replace("p0", f"p{k}").replace("P0", f"P{k}") + "\n" for k in range(count))
    return text[:start] + blocks + text[end:]


def _pss(pid: int) -> float:
    return sum(smaps(p)["pss_mb"] for p in [pid, *children(pid)])


@contextlib.contextmanager
def _haproxy(tmp: Path, backends: list[int]) -> Iterator[int]:
    """HAProxy with the shipped configuration, backend k → 127.0.0.1:backends[k] (both of its servers)."""
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(haproxy_config(len(backends)))
    slots = tmp / "slots.map"
    from app.authz.selection import slot_map

    slots.write_text(slot_map(len(backends)))
    port = free_port()
    env = dict(os.environ, AUTHZ_BIND=f"127.0.0.1:{port}", AUTHZ_SLOTS_MAP=str(slots),
               AUTHZ_WRITER=f"127.0.0.1:{backends[0]}")
    for k, b in enumerate(backends):
        env[f"AUTHZ_P{k}_A"] = env[f"AUTHZ_P{k}_B"] = f"127.0.0.1:{b}"
    proc = subprocess.Popen([HAPROXY, "-f", str(cfg), "-db"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(2.0)  # health checks: rise 2 × 500 ms
        yield port
    finally:
        proc.kill()
        proc.wait()


def _latency(port: int, token: str, workspaces: int) -> dict[str, Any]:
    # (not the policy's own meta-pack's workspaces: a wide token may not ask about them, 403)
    meta = {f"w{w}" for w in range(min(workspaces, 2000)) if PACKS[w % len(PACKS)] == META_PACK}
    bodies = [json.dumps(it).encode() for it in _items(workspaces, 2000, 11) if it["workspace"] not in meta]
    load(port, token, "/v1/check", bodies[:200], CLIENTS, 1.0)  # warm-up (memo, connections)
    return load(port, token, "/v1/check", bodies, CLIENTS, SECONDS)


def _server(url: str, log: str, **env: str) -> Any:
    return serve(url, 1, log, {"GUNICORN_PRELOAD": "0", "FLASK_ACCESS_LOG": "false", **env})


def run(url: str, token: str, workspaces: int, log_dir: str) -> dict[str, Any]:
    """The three phases above; ``ratio``: partitioned / unpartitioned of load time, PSS and latency."""
    if not os.path.exists(HAPROXY):
        return {"skipped": "haproxy is not installed"}
    tmp = Path(tempfile.mkdtemp(prefix="i27p-bench-"))
    memberships = workspaces * MEMBERS
    out: dict[str, Any] = {"workspaces": workspaces, "memberships": memberships, "partitions": PARTITIONS,
                           "clients": CLIENTS, "seconds": SECONDS}
    try:
        with _server(url, os.path.join(log_dir, "partitions-empty.log"), FLASK_POLICY_WORKSPACES="none-such") as (
            proc, _, ready,
        ):
            out["empty"] = {"load_s": ready, "pss_mb": _pss(proc.pid)}
        with _server(url, os.path.join(log_dir, "partitions-full.log")) as (proc, port, ready):
            out["full"] = {"load_s": ready, "pss_mb": _pss(proc.pid)}
            with _haproxy(tmp, [port] * PARTITIONS) as proxy:
                out["full"]["through_haproxy"] = _latency(proxy, token, workspaces)
        with contextlib.ExitStack() as stack:
            replicas = []
            for k in range(PARTITIONS):
                log = os.path.join(log_dir, f"partitions-p{k}.log")
                proc, port, ready = stack.enter_context(_server(url, log, FLASK_POLICY_PARTITION=f"{k}/{PARTITIONS}"))
                replicas.append({"partition": f"{k}/{PARTITIONS}", "port": port, "pid": proc.pid, "load_s": ready})
            for r in replicas:
                r["pss_mb"] = _pss(r.pop("pid"))
            with _haproxy(tmp, [r.pop("port") for r in replicas]) as proxy:
                out["tier"] = {"replicas": replicas, "through_haproxy": _latency(proxy, token, workspaces)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    full, empty, reps = out["full"], out["empty"], out["tier"]["replicas"]
    data = full["pss_mb"] - empty["pss_mb"]
    out["engine_bytes_per_membership"] = data * 1024 * 1024 / memberships
    mean = {k: sum(r[k] for r in reps) / len(reps) for k in ("load_s", "pss_mb")}
    out["ratio"] = {
        "load_s": mean["load_s"] / full["load_s"],
        "pss_mb": mean["pss_mb"] / full["pss_mb"],
        "data_share": (mean["pss_mb"] - empty["pss_mb"]) / data if data > 0 else None,
        "p50_ms": out["tier"]["through_haproxy"]["p50_ms"] / full["through_haproxy"]["p50_ms"],
        "p99_ms": out["tier"]["through_haproxy"]["p99_ms"] / full["through_haproxy"]["p99_ms"],
    }
    return out


def lines(result: dict[str, Any]) -> list[str]:
    """The partitions table as Markdown lines."""
    head = ["## Partitioned decision tier: 4 partitions behind HAProxy beside one unpartitioned process", ""]
    if "error" in result or "skipped" in result:
        return [*head, f"Not measured: {result.get('error') or result.get('skipped')}"]
    head.append(
        f"W = {result['workspaces']:,} workspaces × 10 members ({result['memberships']:,} memberships), one "
        f"gunicorn sync worker per server, loaded one after the other; latency: {result['clients']} keep-alive "
        f"clients for {result['seconds']:.0f} s through HAProxy (deploy/haproxy-partitions.cfg, routed from the "
        "JSON body). PSS from `/proc/<pid>/smaps_rollup`. Shared machine: ratios of the same run count."
    )
    head += parts.table(["server", "load", "PSS", "decision p50 / p99 through HAProxy"])
    full, empty = result["full"], result["empty"]
    fh = full["through_haproxy"]
    rows = [
        f"| no workspace (fixed overhead) | {empty['load_s']:.1f} s | {empty['pss_mb']:,.0f} MB | — |",
        f"| unpartitioned | {full['load_s']:.1f} s | {full['pss_mb']:,.0f} MB | "
        f"{fh['p50_ms']:.2f} / {fh['p99_ms']:.2f} ms |",
    ]
    th = result["tier"]["through_haproxy"]
    for r in result["tier"]["replicas"]:
        rows.append(f"| partition {r['partition']} | {r['load_s']:.1f} s | {r['pss_mb']:,.0f} MB | "
                    f"{th['p50_ms']:.2f} / {th['p99_ms']:.2f} ms (tier) |")
    ratio = result["ratio"]
    share = ratio.get("data_share")
    tail = [
        "",
        f"Replica / unpartitioned (means): load {ratio['load_s']:.2f}×, PSS {ratio['pss_mb']:.2f}× "
        f"(of the data above the fixed overhead: {share:.2f}×)" if share is not None else "",
        f"Decision p50 {ratio['p50_ms']:.2f}×, p99 {ratio['p99_ms']:.2f}× through the same HAProxy configuration. "
        f"Engine and directory: {result['engine_bytes_per_membership']:.0f} B per membership.",
    ]
    return [*head, *rows, *tail]


if __name__ == "__main__":
    parts.main("partitions", run, lines)
