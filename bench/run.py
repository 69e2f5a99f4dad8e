"""``make bench``: data sets, decision latency vs stock pycasbin, load, role changes, HTTP, propagation.

Sizes: W = 1,000, 10,000, 100,000 workspaces × 10 members (``BENCH_QUICK=1``: 1,000 and 10,000,
fewer samples, shorter HTTP runs; ``BENCH_SIZES=1000,10000`` to choose). ``BENCH_HTTP_ONLY=1``
reruns only the HTTP part (gunicorn throughput, in-process breakdown, propagation) on the largest
size of the previous ``results.json`` and keeps its other figures. ``BENCH_PARTS`` (a comma list of
``compare``, ``memory``, ``packedit``, ``coldcost``, ``rolechange``, ``crosshost``, ``outage``,
``conditions``, ``partitions``, ``applayer``, ``feed``, ``footprint``) runs only those parts on the largest of
``BENCH_SIZES`` and
merges them into the previous ``results.json``; ``compare`` is the peer comparison (``bench.peer``: ours
vs a no-op app and the answer-equivalent regorus and dict peers behind granian, realistic mix,
agreement counted first, unpinned and pinned with taskset, ``BENCH_ROUNDS`` rotated rounds;
``BENCH_SERVERS``, ``BENCH_PEERS`` and ``BENCH_COMPARE_USERS`` to choose), the others are described
in :data:`EXTRA_PARTS` (default: everything).
``BENCH_DB_PREFIX`` (default ``bench_``) names the databases, ``BENCH_PORT_BASE`` the first port the
servers use (default: any free port), ``BENCH_HTTP_SECONDS`` one wrk run's length (5 s quick, else
15 s), ``BENCH_HTTP_WORKERS`` the worker count (default
``GUNICORN_WORKERS`` or 2; the worker class is the one ``gunicorn.conf.py`` ships). Each measurement runs in a
fresh subprocess so that load time and RSS belong to one engine. Results go to
``bench/results/*.json``, ``bench/results/report.md`` and ``bench/results/latency.png``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

from bench import http as http_bench
from bench.datagen import MEMBERS, ensure_database
from bench.report import write_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "bench", "results")
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")
SIZES = [int(x) for x in os.environ.get("BENCH_SIZES", "1000,10000" if QUICK else "1000,10000,100000").split(",")]
# Stock pycasbin is milliseconds per decision (and tens of ms for a first decision at 100k).
REF_SAMPLES = {1000: 300, 10000: 200, 100000: 60} if not QUICK else {1000: 100, 10000: 50}
WARM_N = 50_000 if QUICK else 200_000
HTTP_SECONDS = float(os.environ.get("BENCH_HTTP_SECONDS") or (5.0 if QUICK else 15.0))  # one wrk run
REF_TIMEOUT = 600
HTTP_ONLY = os.environ.get("BENCH_HTTP_ONLY", "") not in ("", "0")
PARTS = {p.strip() for p in os.environ.get("BENCH_PARTS", "").split(",") if p.strip()}
# This run's start: every part it measures carries it (``run``), so the report says which figures
# come from one run.
RUN = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
# Parts measured on the largest size, each a module with run() and lines() (their own docstrings
# say how): memory per gunicorn worker (preload vs not), decisions during a pack edit (before the
# background rebuild vs poll vs listen), cold cost after a load and after a pack edit, role changes
# end to end under load, cross-host propagation (network namespaces), the outage drill, a partitioned
# tier of 4 replicas behind HAProxy beside one unpartitioned process, the app layer against a no-op,
# the change feed's snapshots, the footprint (bytes per membership and per user, load time, granian
# PSS with and without preload).
EXTRA_PARTS = (
    "memory", "packedit", "coldcost", "rolechange", "crosshost", "outage", "conditions", "partitions", "applayer",
    "feed", "footprint",
)


def run_extra(name: str, largest: int, url: str, dbmeta: dict[str, Any]) -> dict[str, Any]:
    """One extra part (bench.<name>); its result is also written to <name>.json."""
    import importlib

    print(f"== {name} (W = {largest:,})", flush=True)
    try:
        mod = importlib.import_module(f"bench.{name}")
        if name in ("outage", "feed"):  # their own private PostgreSQL and data sets
            out = mod.run(RESULTS)
        else:
            out = mod.run(url, dbmeta["token"], largest, RESULTS)
    except Exception as exc:  # noqa: BLE001 - report what failed, keep the rest
        out = {"error": f"{type(exc).__name__}: {exc}"}
    out["run"] = RUN
    with open(os.path.join(RESULTS, f"{name}.json"), "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=2)
    return out


def extra_lines(parts: dict[str, Any]) -> list[str]:
    """The extra parts' report sections, in EXTRA_PARTS order."""
    import importlib

    out: list[str] = []
    for name in EXTRA_PARTS:
        if name in parts:
            out += ["", *importlib.import_module(f"bench.{name}").lines(parts[name])]
    return out


def main_parts(names: list[str]) -> None:
    """Only the named parts (BENCH_PARTS), on the largest of BENCH_SIZES; merged into results.json."""
    largest = max(SIZES)
    url, dbmeta = ensure_database(largest)
    path = os.path.join(RESULTS, "results.json")
    results: dict[str, Any] | None = None
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            results = json.load(fh)
    text: list[str] = []
    if "compare" in names:
        cmp = run_compare(largest, url, dbmeta)
        if results is not None:
            results["http"]["compare"] = cmp
        from bench.report import compare_lines

        text += compare_lines(cmp)
    parts = {n: run_extra(n, largest, url, dbmeta) for n in EXTRA_PARTS if n in names}
    text += extra_lines(parts)
    if results is not None:
        results.setdefault("parts", {}).update(parts)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
        write_report(results, RESULTS, extra_lines(results["parts"]))
    print("\n".join(text))


def run_compare(largest: int, url: str, dbmeta: dict[str, Any]) -> dict[str, Any]:
    """Ours vs the answer-equivalent peers on the realistic mix (``bench.peer``), on each data set
    of ``BENCH_COMPARE_USERS`` (``default``: 20,000 users; ``all``: as many users as memberships);
    also written to compare.json."""
    from bench import peer

    out: dict[str, Any] = {}
    for kind in [k for k in os.environ.get("BENCH_COMPARE_USERS", "default,all").split(",") if k]:
        users = None if kind == "default" else largest * MEMBERS
        print(f"== ours vs peers, realistic mix (W = {largest:,}, users: {kind})", flush=True)
        try:
            if users is None:
                at_url, token = url, dbmeta["token"]
            else:
                at_url, meta = ensure_database(largest, users=users)
                token = meta["token"]
            out[kind] = peer.compare(at_url, token, largest, HTTP_SECONDS, RESULTS, users=users)
        except Exception as exc:  # noqa: BLE001 - report what failed, keep the rest
            out[kind] = {"error": f"{type(exc).__name__}: {exc}"}
        out[kind]["run"] = RUN
    with open(os.path.join(RESULTS, "compare.json"), "w", encoding="utf-8") as fh:
        json.dump(out, fh, indent=2)
    return out


def run_http(largest: int, url: str, dbmeta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The HTTP part: throughput under gunicorn, the in-process breakdown, propagation."""
    print(f"== HTTP under gunicorn -w 2 (W = {largest:,})", flush=True)
    try:
        http = http_bench.decision_api(url, dbmeta["token"], largest, HTTP_SECONDS, RESULTS)
    except Exception as exc:  # noqa: BLE001 - report what failed, keep the rest
        http = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        http["breakdown"] = http_bench.api_breakdown(url, dbmeta["token"], largest)
    except Exception as exc:  # noqa: BLE001
        http["breakdown"] = {"error": f"{type(exc).__name__}: {exc}"}
    print(f"== cross-process propagation (W = {largest:,})", flush=True)
    try:
        prop = http_bench.propagation(url, 40 if QUICK else 100, RESULTS)
    except Exception as exc:  # noqa: BLE001
        prop = {"error": f"{type(exc).__name__}: {exc}"}
    return http, prop


def main_http_only() -> None:
    """Rerun the HTTP part on the previous run's largest size; keep everything else."""
    path = os.path.join(RESULTS, "results.json")
    with open(path, encoding="utf-8") as fh:
        results = json.load(fh)
    largest = max(int(w) for w in results["sizes"])
    started = time.perf_counter()
    url, dbmeta = ensure_database(largest)
    http, prop = run_http(largest, url, dbmeta)
    results["http"], results["propagation"] = http, prop
    results["meta"]["http_rerun"] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": time.perf_counter() - started,
        "http_seconds": HTTP_SECONDS,
    }
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2)
    print(write_report(results, RESULTS, extra_lines(results.get("parts", {}))))


def main() -> None:
    """Run everything and write the results."""
    if HTTP_ONLY:
        main_http_only()
        return
    os.makedirs(RESULTS, exist_ok=True)
    if PARTS:
        unknown = PARTS - {"compare", *EXTRA_PARTS}
        if unknown:
            raise SystemExit(f"BENCH_PARTS: unknown {sorted(unknown)}; choose from compare, {', '.join(EXTRA_PARTS)}")
        main_parts(sorted(PARTS))
        return
    started = time.perf_counter()
    meta = {
        "quick": QUICK,
        "sizes": SIZES,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    sizes: dict[str, Any] = {}
    urls: dict[int, tuple[str, dict[str, Any]]] = {}
    for w in SIZES:
        print(f"== W = {w:,} workspaces", flush=True)
        t0 = time.perf_counter()
        urls[w] = ensure_database(w)
        gen_s = time.perf_counter() - t0
        print("   our engine: load from PostgreSQL, decisions, role changes", flush=True)
        ours_path = os.path.join(RESULTS, f"ours_w{w}.json")
        env = {**os.environ, "PYTHONPATH": ROOT}
        subprocess.run(
            [sys.executable, "-m", "bench.probe", urls[w][0], ours_path, str(WARM_N)],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=900,
            capture_output=True,
        )
        with open(ours_path, encoding="utf-8") as fh:
            ours = json.load(fh)
        print(f"   stock pycasbin Enforcer / FastEnforcer ({REF_SAMPLES.get(w, 50)} sampled requests)", flush=True)
        ref_path = os.path.join(RESULTS, f"reference_w{w}.json")
        try:
            subprocess.run(
                [sys.executable, "-m", "bench.reference", str(w), ref_path, str(REF_SAMPLES.get(w, 50))],
                cwd=ROOT,
                env=env,
                check=True,
                timeout=REF_TIMEOUT,
                capture_output=True,
            )
            with open(ref_path, encoding="utf-8") as fh:
                ref = json.load(fh)
        except (subprocess.TimeoutExpired, subprocess.CalledProcessError) as exc:
            ref = {"error": f"{type(exc).__name__}"}
        sizes[str(w)] = {"generate_s": gen_s, "ours": ours, "reference": ref}
    largest = max(SIZES)
    url, dbmeta = urls[largest]
    http, prop = run_http(largest, url, dbmeta)
    http["compare"] = run_compare(largest, url, dbmeta)
    parts = {name: run_extra(name, largest, url, dbmeta) for name in EXTRA_PARTS}
    meta["total_s"] = time.perf_counter() - started
    results = {"meta": meta, "sizes": sizes, "http": http, "propagation": prop, "parts": parts}
    with open(os.path.join(RESULTS, "results.json"), "w", encoding="utf-8") as fh:
        json.dump(results, fh, indent=2)
    report = write_report(results, RESULTS, extra_lines(parts))
    print(report)


if __name__ == "__main__":
    main()
