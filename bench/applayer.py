"""What the app layer costs a decision request: ours vs a no-op app, in process and behind granian (issue 25).

The **no-op** is ``bench.peer``'s (``peer_app`` with ``BENCH_PEER=noop``, as in the peer comparison):
the SHA-256 of the bearer secret looked up in a set, the body parsed by orjson, a fixed answer per
check encoded by orjson, the same headers (security headers, ``Vary``, ``X-Request-ID``): what any
Python WSGI app doing that work but the decision pays at least. **Ours** is the app as granian
serves it (``app.serve.worker_app``: the access-log entry, the decision fast path, metrics, request
ids), ``after`` this tree (the tree before the app-layer work, 143b41d, is no longer measured: it
refuses the data sets' newer schema with 503s; its figures are in earlier reports).

- ``inprocess``: µs of CPU (``time.thread_time``, so other processes on the busy machine count
  less) per request through each WSGI callable with the environ granian builds (its
  ``os.environ`` copy merged with the request's keys), single checks and batches of 100 (per item),
  median of rounds alternating the apps, and the median wall time of a single check with the
  caches flushed before it (``_cache_flusher``: behind a server the core runs granian, the kernel
  and the other worker between two requests); W = the data set's size, the realistic mix of
  ``bench.peer.mix_items`` without the service meta-pack's workspaces (which a token for all
  workspaces may not ask about: a 403 on our side).
- ``http``: granian with 2 workers and wrk keep-alive (8 connections for single checks, 4 for
  batches), unpinned and pinned (taskset: server on core 0, wrk on core 1), in the order of
  :data:`VARIANTS` for each pinning; requests/s and the server's CPU (utime + stime of its
  processes during the run) per request. The no-op runs with one blocking thread (as
  ``bench.peer`` runs its peers); ours as ``app.serve`` runs its decision listener (decisions only,
  its default threads: ``auto``, chosen by the pinned or unpinned server itself), and the same with
  one thread and with 4 (what ``auto`` chose against, per pinning).

Targets (issue 25): single ≥ 0.85× and batch ≥ 0.6× the no-op's requests/s behind granian.
Run alone: ``python -m bench.applayer [W] [out.json]`` (W = 100,000 by default; needs the data set
of ``bench.datagen``, and wrk for the HTTP part).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what a server of the tree needs (its root also holds a symlink to a machine's virtualenv)
# (no bench/: the harness and its no-op are this tree's, so both trees are measured against the same no-op)
TREE = ("app", "model.conf", "policy", "pyproject.toml", "gunicorn.conf.py")
TARGETS = {"/v1/check": 0.85, "/v1/check/batch": 0.6}
ROUNDS = 5
SINGLES = 4000  # single checks timed per round (in process)
COLD = 1500  # single checks timed one at a time per round with the caches flushed before each (in process)
BATCHES = 60  # batches of 100 timed per round (in process)
WORKERS = 2
# The no-op, then ours as app.serve runs its decision listener (SERVE_DECISION_BIND: decisions only,
# its default threads, auto), the same with one thread a worker (as the no-op) and with 4
VARIANTS = ("noop", "decision", "decision-1-thread", "decision-4-threads")
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


# -- the no-op app -----------------------------------------------------------------------------------
def noop_app() -> WSGIApp:
    """``bench.peer``'s no-op (``BENCH_PEER=noop``): the token's SHA-256 looked up, the body parsed, a
    fixed answer per check, the same headers — as the peer comparison's (``BENCH_PEER_DATA``: a JSON
    object whose ``token_hashes`` lists the SHA-256 hex digests of the tokens it accepts)."""
    from bench.peer import peer_app

    os.environ["BENCH_PEER"] = "noop"
    app: WSGIApp = peer_app()
    return app


def _noop_data(token: str) -> str:
    """A file for ``noop_app`` accepting token: its path (the caller removes it)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump({"token_hashes": [hashlib.sha256(token.encode()).hexdigest()]}, fh)
    return fh.name


# -- request bodies ----------------------------------------------------------------------------------
def bodies(workspaces: int) -> tuple[list[bytes], list[bytes]]:
    """Single-check bodies and batches of 100 of the realistic mix, without the meta-pack's workspaces."""
    from app.authz.packs import load_packs
    from bench.peer import mix_items

    packs = list(load_packs(os.path.join(ROOT, "policy"), os.path.join(ROOT, "model.conf")).packs.values())

    def askable(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [it for it in items if packs[int(it["workspace"][1:]) % len(packs)].id != "service"]

    singles = [json.dumps(it).encode() for it in askable(mix_items(workspaces, 5000, 11))]
    batches = [json.dumps({"checks": askable(mix_items(workspaces, 130, 100 + s))[:100]}).encode() for s in range(20)]
    return singles, batches


# -- in process ----------------------------------------------------------------------------------------
def _environ_maker(token: str) -> Callable[[str, bytes], dict[str, Any]]:
    """A granian-like environ for a POST of body to path (granian: ``dict(os.environ) | scope``)."""
    basic: dict[str, Any] = dict(os.environ)
    basic.update(
        {
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SCRIPT_NAME": "",
            "SERVER_SOFTWARE": "Granian",
            "wsgi.errors": sys.stderr,
            "wsgi.input_terminated": True,
            "wsgi.multiprocess": False,
            "wsgi.multithread": True,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }
    )
    auth = f"Bearer {token}"

    def make(path: str, body: bytes) -> dict[str, Any]:
        return basic | {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_HOST": "127.0.0.1:8000",
            "HTTP_AUTHORIZATION": auth,
            "HTTP_USER_AGENT": "wrk",
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(body),
        }

    return make


def _cpu_us(app: WSGIApp, make: Callable[[str, bytes], dict[str, Any]], path: str, items: list[bytes], n: int) -> float:
    status: list[str] = []

    def start_response(code: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        status.append(code)

    t = time.thread_time()
    for i in range(n):
        b"".join(app(make(path, items[i % len(items)]), start_response))
    spent = (time.thread_time() - t) / n * 1e6
    bad = [s for s in status if not s.startswith("200")]
    if bad:
        raise RuntimeError(f"{len(bad)} answers were not 200 (first {bad[0]})")
    return spent


def _cache_flusher() -> Callable[[], None]:
    """What passes through a core between two requests behind a server, roughly: other data (a
    6 MB scan, more than the L2 of this machine's cores) and other code (a JSON encoding)."""
    buf = bytearray(6 << 20)
    junk = {f"k{i}": [i, str(i), {"x": i}] for i in range(3000)}

    def flush() -> None:
        buf[::64].count(0)
        json.dumps(junk)

    return flush


def _cold_us(
    app: WSGIApp, make: Callable[[str, bytes], dict[str, Any]], items: list[bytes], flush: Callable[[], None]
) -> float:
    """Median µs (wall, one request at a time) of a single check through app, the caches flushed before each."""
    times: list[int] = []
    status: list[str] = []

    def start_response(code: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        status.append(code)

    for i in range(COLD):
        environ = make("/v1/check", items[i % len(items)])
        flush()
        t = time.perf_counter_ns()
        b"".join(app(environ, start_response))
        times.append(time.perf_counter_ns() - t)
    if any(not s.startswith("200") for s in status):
        raise RuntimeError("an answer was not 200")
    return statistics.median(times) / 1000


def _inprocess_main(url: str, token: str, workspaces: int, out_path: str) -> None:
    """In a subprocess whose ``app`` is the tree measured: both apps, alternating rounds."""
    import logging.config

    import app as app_package
    from app import logs, observability
    from app.serve import worker_app

    singles, batches = bodies(workspaces)
    os.environ["BENCH_PEER_DATA"] = _noop_data(token)
    noop = noop_app()
    os.unlink(os.environ.pop("BENCH_PEER_DATA"))
    os.environ.update(_server_env(url))
    logging.config.dictConfig(logs.dict_config(server="granian"))
    observability.prepare_multiprocess_dir()  # as app.serve.main: metrics flushed to files
    ours = worker_app()
    make = _environ_maker(token)
    for app in (ours, noop):  # warm: every body once
        _cpu_us(app, make, "/v1/check", singles, len(singles))
        _cpu_us(app, make, "/v1/check/batch", batches, len(batches))
    rows: dict[str, list[float]] = {"ours_single": [], "noop_single": [], "ours_batch": [], "noop_batch": []}
    for _ in range(ROUNDS):
        for name, app in (("ours", ours), ("noop", noop)):
            rows[f"{name}_single"].append(_cpu_us(app, make, "/v1/check", singles, SINGLES))
            rows[f"{name}_batch"].append(_cpu_us(app, make, "/v1/check/batch", batches, BATCHES) / 100)
    # Behind a server the caches are cold at each request (granian, the kernel and the other
    # worker run in between): the cost of each app's footprint, not of its instructions
    flush = _cache_flusher()
    rows.update(ours_single_cold=[], noop_single_cold=[])
    for _ in range(ROUNDS):
        for name, app in (("ours", ours), ("noop", noop)):
            rows[f"{name}_single_cold"].append(_cold_us(app, make, singles, flush))
    out = {key: statistics.median(v) for key, v in rows.items()}
    out["app_file"] = app_package.__file__
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(out, fh)
    os._exit(0)  # the worker's listener and flusher threads: no orderly shutdown needed


def _server_env(url: str) -> dict[str, str]:
    return {
        "FLASK_SQLALCHEMY_DATABASE_URI": url,
        "FLASK_SECRET_KEY": "bench-" + "x" * 32,
        "FLASK_MAIL_BACKEND": "memory",
        "FLASK_BATCH_MAX_CHECKS": "1000",
        "FLASK_DATABASE_STATEMENT_TIMEOUT_SECONDS": "600",
        "SERVER_SOFTWARE": "granian",
    }


def inprocess(url: str, token: str, workspaces: int, root: str) -> dict[str, Any]:
    """µs of CPU per request (single) and per item (batch of 100), ours (the tree at root) and no-op."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out_path = fh.name
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys((root, ROOT)))}  # its app, this bench
    # run_path, not the file as a script: its directory first on sys.path would shadow the
    # standard library's http with bench/http.py; the tree measured is root (cwd and PYTHONPATH)
    script = os.path.abspath(__file__)
    runner = f"import runpy, sys; sys.argv[1:2] = []; runpy.run_path({script!r}, run_name='__main__')"
    subprocess.run(
        [sys.executable, "-c", runner, "-", "inprocess", url, token, str(workspaces), out_path],
        cwd=root,
        env=env,
        check=True,
        timeout=1800,
        capture_output=True,
    )
    with open(out_path, encoding="utf-8") as fh:
        result: dict[str, Any] = json.load(fh)
    os.unlink(out_path)
    return result


# -- behind granian ------------------------------------------------------------------------------------
@contextmanager
def _granian(url: str, kind: str, root: str, cpu: str | None, log_path: str, extra: dict[str, str]) -> Iterator[Any]:
    """granian with WORKERS workers serving ours (``app.serve`` of root) or the no-op; yields (proc, port)."""
    import shutil

    from bench import http as hb

    port = hb.free_port()
    if kind == "noop":
        cmd = [sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", str(WORKERS),
               "--blocking-threads", "1", "--host", "127.0.0.1", "--port", str(port), "--no-log",
               "--factory", "bench.applayer:noop_app"]  # fmt: skip
        env = hb.app_env(url, ROOT, **extra)
    else:
        cmd = [sys.executable, "-m", "app.serve"]
        env = hb.app_env(url, root, SERVE_BIND=f"127.0.0.1:{port}", SERVE_WORKERS=str(WORKERS), **extra)
    pin = ["taskset", "-c", cpu] if cpu is not None and shutil.which("taskset") else []
    with hb.process([*pin, *cmd], env, log_path, cwd=ROOT if kind == "noop" else root) as proc:
        hb._wait_listening(port, proc, WORKERS, timeout=900, any_answer=kind == "noop")
        yield proc, port


def http(url: str, token: str, workspaces: int, seconds: float, log_dir: str) -> dict[str, Any]:
    """requests/s and server CPU µs per request of the no-op and ours, behind granian, per pinning."""
    from bench import http as hb
    from bench.server import cpu_ticks, settle

    wrk = hb.wrk_path()
    if wrk is None:
        return {"error": "wrk not installed (apt-get install -y wrk)"}
    singles, batches = bodies(workspaces)
    data_path = _noop_data(token)
    extra = {"BENCH_PEER_DATA": data_path}
    runs: list[dict[str, Any]] = []
    decide = hb.decision_listener_env()
    variants = {
        "noop": {},
        "decision": decide,
        "decision-1-thread": {**decide, "SERVE_THREADS": "1"},
        "decision-4-threads": {**decide, "SERVE_THREADS": "4"},
    }
    pinnings = ["unpinned"] + (["pinned"] if (os.cpu_count() or 1) >= 2 else [])
    try:
        for pin in pinnings:
            server_cpu, wrk_cpu = ("0", "1") if pin == "pinned" else (None, None)
            for app in VARIANTS:
                log = os.path.join(log_dir, f"applayer-{app}-{pin}.log")
                env = {**extra, **variants[app]}
                with _granian(url, "noop" if app == "noop" else "ours", ROOT, server_cpu, log, env) as (
                    proc,
                    port,
                ):
                    for path, items in (("/v1/check", singles), ("/v1/check/batch", batches)):  # warm every worker
                        hb.load_wrk(wrk, port, token, path, items, 4, 3.0, cpu=wrk_cpu)
                    for path, items, clients in (("/v1/check", singles, 8), ("/v1/check/batch", batches, 4)):
                        settle([proc.pid])
                        ticks = cpu_ticks(proc.pid)
                        r = hb.load_wrk(wrk, port, token, path, items, clients, seconds, cpu=wrk_cpu)
                        spent = (cpu_ticks(proc.pid) - ticks) / os.sysconf("SC_CLK_TCK")
                        r.update(
                            app=app, pinning=pin, path=path, cpu_us_per_request=spent / max(r["requests"], 1) * 1e6
                        )
                        runs.append(r)
                        print(
                            f"   {pin:8} {app:6} {path:16} {r['requests_per_s']:8.0f}/s "
                            f"{r['cpu_us_per_request']:7.1f} µs CPU/request errors {r['errors']}",
                            flush=True,
                        )
    finally:
        os.unlink(data_path)
    return {"runs": runs, "ratios": ratios(runs)}


def ratios(runs: list[dict[str, Any]]) -> dict[str, float]:
    """ours / no-op requests/s, per pinning and path."""
    rate = {(r["app"], r["pinning"], r["path"]): r["requests_per_s"] for r in runs}
    out: dict[str, float] = {}
    for (app, pin, path), value in rate.items():
        noop = rate.get(("noop", pin, path))
        if app != "noop" and noop:
            out[f"{pin} {path} {app}/noop"] = value / noop
    return out


def run(url: str, token: str, workspaces: int, log_dir: str) -> dict[str, Any]:
    """Both parts, in the same run."""
    seconds = float(os.environ.get("BENCH_HTTP_SECONDS") or 10.0)
    out: dict[str, Any] = {"workspaces": workspaces, "targets": TARGETS, "seconds": seconds}
    print("   in process", flush=True)
    out["inprocess"] = {"after": inprocess(url, token, workspaces, ROOT)}
    print("   behind granian", flush=True)
    out["http"] = http(url, token, workspaces, seconds, log_dir)
    return out


def lines(result: dict[str, Any]) -> list[str]:
    """The app-layer section of the report."""
    head = ["## The app layer: ours vs a no-op app (issue 25)", ""]
    if "error" in result:
        return [*head, f"Not measured: {result['error']}"]
    w = result["workspaces"]
    out = [
        *head,
        f"W = {w:,}; no-op = bench.peer's, behind the same token lookup and headers. Targets behind granian: "
        f"single ≥ {TARGETS['/v1/check']}×, batch ≥ {TARGETS['/v1/check/batch']}× the no-op's requests/s "
        "(compare within a run).",
        "",
        "In process (µs of CPU, median of rounds; batch: per item of a batch of 100; cold: median µs of a "
        "single check with the caches flushed before it, a 6 MB scan and a JSON encoding):",
        "",
        "| tree | ours single | no-op single | ours batch/item | no-op batch/item | ours single, cold "
        "| no-op single, cold |",
        "|---|---|---|---|---|---|---|",
    ]
    for tree, r in result["inprocess"].items():
        cold = [f"{r[k]:.1f}" if k in r else "—" for k in ("ours_single_cold", "noop_single_cold")]
        out.append(
            f"| {tree} | {r['ours_single']:.1f} | {r['noop_single']:.1f} "
            f"| {r['ours_batch']:.2f} | {r['noop_batch']:.2f} | {cold[0]} | {cold[1]} |"
        )
    http_part = result.get("http", {})
    if "error" in http_part:
        return [*out, "", f"HTTP not measured: {http_part['error']}"]
    out += [
        "",
        f"granian, {WORKERS} workers, wrk keep-alive ({result['seconds']:.0f} s a run):",
        "",
        "| pinning | path | app | requests/s | server CPU µs/request | / no-op | target |",
        "|---|---|---|---|---|---|---|",
    ]
    ratio = http_part["ratios"]
    for r in http_part["runs"]:
        rel = ratio.get(f"{r['pinning']} {r['path']} {r['app']}/noop")
        shown = f"{rel:.2f}×" if rel else "—"
        target = "" if r["app"] == "noop" else f"≥ {TARGETS[r['path']]}×"
        out.append(
            f"| {r['pinning']} | {r['path']} | {r['app']} | {r['requests_per_s']:,.0f} | "
            f"{r['cpu_us_per_request']:.1f} | {shown} | {target} |"
        )
    return out


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "inprocess":
        _inprocess_main(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        sys.path.insert(0, ROOT)
        from bench.datagen import ensure_database

        size = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
        db, meta = ensure_database(size)
        logs_dir = tempfile.mkdtemp(prefix="applayer-logs-")
        result = run(db, meta["token"], size, logs_dir)
        if len(sys.argv) > 2:
            with open(sys.argv[2], "w", encoding="utf-8") as fh:
                json.dump(result, fh, indent=2)
        print("\n".join(lines(result)))
