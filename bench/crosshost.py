"""Cross-host propagation: a role change committed on host A until host B decides it.

Two "hosts" are network namespaces (``lzb-a`` .11, ``lzb-b`` .12 on bridge ``lzbr1``,
10.231.16.0/24; ``bench.netns``), each running gunicorn (``gunicorn.conf.py`` as shipped: preload,
one worker like the same-host figure) with the test endpoints of ``tests/mp_app.py``. PostgreSQL is the
benchmark server, reached only through PgBouncer on the bridge address (10.231.16.1, the root
namespace as the database host): application queries through its transaction pool, each worker's
LISTEN through its session pool (``FLASK_POLICY_LISTEN_URL``). A role link is added or removed
through A (``POST /_mp/link``: one revision, NOTIFY at commit) and B is asked (``GET /_mp/check``)
until its decision flips; N flips (after two untimed ones), p50/p90/p99/max and how many took > 50 ms
(with N = 100 the p99 is the slowest flip, as in `bench.probe.percentiles`).

The figure before the change is the same-host cross-process propagation (the servers of
``bench.http.propagation``: two gunicorn servers on loopback, straight to PostgreSQL; timed by the
same code as the cross-host pair), measured in the same run on the same copy of the data set
(``h15b_<name>_crosshost``, dropped at the end). Without root or PgBouncer: ``{"skipped": reason}``.
Run alone: ``python -m bench.crosshost [W] [out.json]`` (default W = 1,000).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import http as http_bench
from bench import parts
from bench.netns import Topology, app_env, missing, start_pgbouncer, stop_pgbouncer
from bench.probe import percentiles
from bench.server import copy_database, drop_database

TOPO = Topology(prefix="lzb", subnet="10.231.16", bridge="lzbr1", hosts={"a": 11, "b": 12})
PGBOUNCER_PORT = int(os.environ.get("BENCH_PGBOUNCER_PORT", "21990"))
CHANGES = int(os.environ.get("BENCH_CROSSHOST_CHANGES", "100"))
WARMUP = 2  # changes before the timed ones (first connections, first applies)
WORKERS = 1  # per host, as bench.http.propagation
TIMEOUT_ENV = "FLASK_DATABASE_STATEMENT_TIMEOUT_SECONDS"


def _request(host: str, method: str, path: str, payload: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """One request to "address" (port 8000) or "address:port"."""
    addr, _, port = host.partition(":")
    c = http.client.HTTPConnection(addr, int(port or 8000), timeout=10)
    body = json.dumps(payload) if payload is not None else None
    c.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
    r = c.getresponse()
    raw = r.read()
    c.close()
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        data = {}
    return r.status, data if isinstance(data, dict) else {}


def _wait_up(host: str, proc: Any, log: Path, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"host {host} exited: {log.read_text()[-1500:]}")
        try:
            status, data = _request(host, "GET", "/_mp/status")
            if status == 200 and data.get("loaded") and (data.get("listener") or {}).get("mode") == "listen":
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"host {host} not listening: {log.read_text()[-1500:]}")


def flips(a: str, b: str, changes: int) -> dict[str, Any]:
    """Role changes through A, each until B decides it (same user, rule and check as bench.http)."""
    from app.authz.packs import load_packs

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pack = list(load_packs(os.path.join(root, "policy"), os.path.join(root, "model.conf")).packs.values())[0]
    top = pack.workspace_roles[-1]
    action = next(
        x.id for x in pack.actions
        if any(r[0] == "p" and r[2] == pack.role_key(top.id) and r[4] == x.id and r[5] == "any" for r in pack.rules)
    )
    user, ws = "user:990000998", "ws:w0"
    rule = ["g", user, pack.role_key(top.id), ws]
    check = f"/_mp/check?sub={user}&dom={ws}&act={action}"
    lat: list[int] = []
    for i in range(changes + WARMUP):
        op, want = ("add", True) if i % 2 == 0 else ("remove", False)
        status, body = _request(a, "POST", "/_mp/link", {"op": op, "rule": rule})
        if status != 200:
            raise RuntimeError(f"link on A: {status} {body}")
        t = time.perf_counter_ns()
        while _request(b, "GET", check)[1].get("allowed") is not want:
            if time.perf_counter_ns() - t > 10e9:
                raise TimeoutError("change not seen on B in 10 s")
        if i >= WARMUP:
            lat.append(time.perf_counter_ns() - t)
    if (changes + WARMUP) % 2:
        _request(a, "POST", "/_mp/link", {"op": "remove", "rule": rule})
    stats = percentiles(lat)
    s = sorted(lat)
    return {"changes": changes, "warmup": WARMUP, "p50_ms": stats["p50_us"] / 1000,
            "p90_ms": s[int(len(s) * 0.9)] / 1e6, "p99_ms": stats["p99_us"] / 1000, "max_ms": stats["max_us"] / 1000,
            "over_50ms": sum(1 for x in s if x > 50e6)}


def _same_host(url: str, log_dir: str, changes: int) -> dict[str, Any]:
    """The servers of ``bench.http.propagation`` (two single-worker gunicorns of tests/mp_app.py on
    loopback, straight to PostgreSQL), timed by :func:`flips` like the cross-host pair."""
    with (
        http_bench.app_server(url, "tests.mp_app:create()", WORKERS, os.path.join(log_dir, "gunicorn-samehost-a.log"))
        as a,
        http_bench.app_server(url, "tests.mp_app:create()", WORKERS, os.path.join(log_dir, "gunicorn-samehost-b.log"))
        as b,
    ):
        for port in (a, b):
            _wait_up(f"127.0.0.1:{port}", None, Path(log_dir) / "gunicorn-samehost-a.log")
        out = flips(f"127.0.0.1:{a}", f"127.0.0.1:{b}", changes)
    out["topology"] = "two gunicorn servers on 127.0.0.1, PostgreSQL direct (LISTEN on the same URL)"
    return out


def _cross(url: str, log_dir: str, changes: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="h15b-crosshost-"))
    procs: list[Any] = []
    logs: list[Any] = []
    TOPO.cleanup()
    try:
        TOPO.build()
        dbname = url.rsplit("/", 1)[1]
        start_pgbouncer(tmp, TOPO.gateway, "127.0.0.1", 5432, dbname, port=PGBOUNCER_PORT)
        env = app_env(TOPO.gateway, "bench-crosshost-" + "x" * 32, workers=WORKERS, port=PGBOUNCER_PORT)
        env.update({"FLASK_POLICY_SYNC": "listen", "FLASK_MAIL_BACKEND": "memory",
                    "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        for host in ("a", "b"):
            log = open(os.path.join(log_dir, f"gunicorn-crosshost-{host}.log"), "w")  # noqa: SIM115
            logs.append(log)
            procs.append(TOPO.start_host(host, env, log, app="tests.mp_app:create()"))
        for host, proc, log in zip(("a", "b"), procs, logs, strict=True):
            _wait_up(TOPO.ip(host), proc, Path(log.name))
        out = flips(TOPO.ip("a"), TOPO.ip("b"), changes)
        out["topology"] = (f"hosts {TOPO.ns('a')} {TOPO.ip('a')}, {TOPO.ns('b')} {TOPO.ip('b')}; PgBouncer "
                           f"{TOPO.gateway}:{PGBOUNCER_PORT} (transaction pool; LISTEN via session pool)")
        return out
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
        for f in logs:
            f.close()
        TOPO.cleanup()
        stop_pgbouncer(tmp)
        shutil.rmtree(tmp, ignore_errors=True)


def run(url: str, token: str, workspaces: int, log_dir: str) -> dict[str, Any]:
    """Same-host (before) and cross-host (after) propagation of CHANGES role changes; token unused
    (the test endpoints need none), kept for the common signature."""
    why = missing(private_pg=False)
    if why:
        return {"skipped": why}
    db, copied = copy_database(url, "crosshost")
    out: dict[str, Any] = {"workspaces": workspaces, "changes": CHANGES, "workers_per_host": WORKERS,
                           "copied_database": copied}
    try:
        saved = os.environ.get(TIMEOUT_ENV)
        os.environ[TIMEOUT_ENV] = "600"  # bench.http's servers: the 1M-membership load is one long COPY
        try:
            out["same_host"] = _same_host(db, log_dir, CHANGES)
        except Exception as exc:  # noqa: BLE001 - report what failed, keep the other figure
            out["same_host"] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            if saved is None:
                os.environ.pop(TIMEOUT_ENV, None)
            else:
                os.environ[TIMEOUT_ENV] = saved
        try:
            out["cross_host"] = _cross(db, log_dir, CHANGES)
        except Exception as exc:  # noqa: BLE001
            out["cross_host"] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        if copied:
            drop_database(db)
    return out


def lines(result: dict[str, Any]) -> list[str]:
    """The propagation table as Markdown lines."""
    head = ["## Propagation of a role change: same host vs across hosts through PgBouncer", ""]
    if "error" in result or "skipped" in result:
        return [*head, f"Not measured: {result.get('error') or result.get('skipped')}"]
    cross = result.get("cross_host", {})
    head.append(
        f"W = {result['workspaces']:,} workspaces × 10 members; {result['changes']} role changes committed through "
        f"server A, each timed until server B decides it; {result['workers_per_host']} gunicorn worker per server. "
        "Before: two servers on one host, straight to PostgreSQL (the servers of `bench.http.propagation`). "
        "After: two hosts "
        f"(network namespaces), PostgreSQL through PgBouncer — {cross.get('topology', 'see bench.crosshost')}."
    )
    head += parts.table(["", "p50", "p90", "p99", "max", "> 50 ms"])
    for key, label in (("same_host", "before: same host, two processes"),
                       ("cross_host", "after: two hosts, PgBouncer, LISTEN via session pool")):
        v = result.get(key, {})
        if "error" in v:
            head.append(f"| {label} | failed: {v['error']} | | | | |")
        else:
            p90 = f"{v['p90_ms']:.1f} ms" if "p90_ms" in v else "—"
            head.append(f"| {label} | {v.get('p50_ms', 0):.1f} ms | {p90} | {v.get('p99_ms', 0):.1f} ms "
                        f"| {v.get('max_ms', 0):.1f} ms | {v.get('over_50ms', '—')} |")
    return head


if __name__ == "__main__":
    parts.main("crosshost", run, lines)
