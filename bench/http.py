"""HTTP throughput under gunicorn, and cross-process propagation, on loopback.

``decision_api``: gunicorn (``gunicorn.conf.py``, 2 sync workers) serving the real app on a
benchmark database; a load generator with keep-alive connections sends ``POST /v1/check``
(single) and ``POST /v1/check/batch`` (500 checks each) for a fixed time. The generator is
``wrk`` (C, one thread) when installed (``apt-get install -y wrk``; ``BENCH_WRK=0`` to disable),
else Python processes. Either way it runs on the same 2 cores as the server, so the numbers are a
lower bound for the server alone (the Python generator eats about as much CPU as the server).

``propagation``: two single-worker gunicorn servers of ``tests/mp_app.py``; a role change is
committed through one, and the other is polled until its decision flips.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from app.authz.packs import load_packs
from bench.probe import percentiles

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BATCH = 500


_next_port = [int(os.environ.get("BENCH_PORT_BASE", "0") or 0)]


def workers_default() -> int:
    """Worker count: BENCH_HTTP_WORKERS, else GUNICORN_WORKERS, else 2 (as gunicorn.conf.py)."""
    return int(os.environ.get("BENCH_HTTP_WORKERS") or os.environ.get("GUNICORN_WORKERS") or "2")


def free_port() -> int:
    """A free loopback port: the next free one from BENCH_PORT_BASE when set, else any."""
    while _next_port[0]:
        port = _next_port[0]
        _next_port[0] += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def app_env(url: str, root: str = ROOT, **extra: str) -> dict[str, str]:
    """The environment of a benchmark server of the real app (of the tree at root) on url."""
    return {
        **os.environ,
        "FLASK_SQLALCHEMY_DATABASE_URI": url,
        "FLASK_SECRET_KEY": "bench-" + "x" * 32,
        "FLASK_MAIL_BACKEND": "memory",
        "FLASK_BATCH_MAX_CHECKS": "1000",
        # The policy load is one COPY statement that lasts as long as the engine build consuming it:
        # at 1M memberships with two workers loading at once on a busy machine it passed the default
        # 30 s statement_timeout (QueryCanceled, "Worker failed to boot").
        "FLASK_DATABASE_STATEMENT_TIMEOUT_SECONDS": "600",
        "PYTHONPATH": root,
        **extra,
    }


@contextmanager
def process(cmd: list[str], env: dict[str, str], log_path: str, cwd: str = ROOT) -> Iterator[subprocess.Popen[bytes]]:
    """cmd running with its output in log_path; SIGTERM on exit (SIGKILL after 30 s).

    The server runs in its own process group: whatever of it is left once it has exited or been
    killed (a worker whose master was killed) is killed with the group, so no server outlives a
    test or a benchmark (a granian worker did, holding its port, when only the master was killed).
    """
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone already
                os.killpg(proc.pid, signal.SIGKILL)


# The servers a benchmark can put the app behind: gunicorn (gunicorn.conf.py) with its worker class
# from the environment, or forced to sync / gthread, and granian (``app.serve`` for the real app,
# granian's own command for another WSGI app).
SERVERS = ("gunicorn", "gunicorn-sync", "gunicorn-gthread", "granian")


def decision_listener_env() -> dict[str, str]:
    """What ``app.serve`` sets for its decision listener (``SERVE_DECISION_BIND``), bar the bind and
    the workers: decisions only, its default threads (``auto``: chosen by the served process from
    its CPU affinity, so a pinned server picks for its pinning; where docs/deploy.md routes decisions)."""
    from app.serve import DECISION_THREADS

    return {"SERVE_THREADS": DECISION_THREADS, "FLASK_DECISION_ONLY": "1"}


def server_command(
    server: str, app: str, port: int, workers: int, root: str = ROOT
) -> tuple[list[str], dict[str, str]]:
    """(argv, extra environment) of ``server`` serving the WSGI ``app`` (``module:factory()``) on port."""
    if server == "granian":
        if app == "app:create_app()":
            serve_env = {"SERVE_BIND": f"127.0.0.1:{port}", "SERVE_WORKERS": str(workers)}
            return [sys.executable, "-m", "app.serve"], serve_env
        target = app[:-2] if app.endswith("()") else app
        cmd = [sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", str(workers),
               "--blocking-threads", "1", "--host", "127.0.0.1", "--port", str(port), "--no-log"]
        return [*cmd, *(["--factory"] if app.endswith("()") else []), target], {}
    env = {"GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": str(workers)}
    if server == "gunicorn-sync":
        env.update(GUNICORN_WORKER_CLASS="sync", GUNICORN_THREADS="1")  # threads > 1 makes sync gthread
    elif server == "gunicorn-gthread":
        # keep-alive; one thread runs requests (threads only add GIL contention on 2 cores, and a
        # peer engine per thread would be built in the measured window: regorus at 1M memberships)
        env.update(GUNICORN_WORKER_CLASS="gthread", GUNICORN_THREADS=os.environ.get("BENCH_GTHREAD_THREADS", "1"))
    elif server != "gunicorn":
        raise ValueError(f"unknown server {server!r}; one of {', '.join(SERVERS)}")
    return [sys.executable, "-m", "gunicorn", "-c", os.path.join(root, "gunicorn.conf.py"), app], env


# The pid of the server on each port app_server serves (taskset execs the server: the same pid).
SERVER_PIDS: dict[int, int] = {}


@contextmanager
def app_server(
    url: str,
    app: str,
    workers: int,
    log_path: str,
    sync: str = "auto",
    cpu: str | None = None,
    extra_env: dict[str, str] | None = None,
    server: str = "gunicorn",
) -> Iterator[int]:
    """A server of app (gunicorn by default, any of ``SERVERS``) on a free port, pinned to ``cpu``
    with taskset when given; yields the port once /readyz answers (any answer for a peer app)."""
    port = free_port()
    cmd, server_env = server_command(server, app, port, workers)
    env = app_env(url, **{"FLASK_POLICY_SYNC": sync, **server_env, **(extra_env or {})})
    pin = ["taskset", "-c", cpu] if cpu is not None and shutil.which("taskset") else []
    with process([*pin, *cmd], env, log_path) as proc:
        _wait_listening(port, proc, workers, any_answer=app.startswith("bench.peer"))
        SERVER_PIDS[port] = proc.pid
        try:
            yield port
        finally:
            SERVER_PIDS.pop(port, None)


def _wait_listening(
    port: int, proc: subprocess.Popen[bytes] | None, workers: int, timeout: float = 300, any_answer: bool = False
) -> None:
    """Until the server on port answers /readyz 200 (any answer: ``any_answer``); RuntimeError if
    ``proc`` (the server's, when the caller has it) exits first."""
    deadline = time.monotonic() + timeout
    ready: set[int] = set()
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited early ({proc.returncode})")
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            c.request("GET", "/readyz")
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200 or any_answer:
                ready.add(1)
                # workers load the policy before accepting: one answer means one is ready;
                # give the others the same chance
                time.sleep(0.5)
                return
        except OSError:
            c.close()
        time.sleep(0.2)
    raise TimeoutError("server not ready")


# -- decision API load -----------------------------------------------------------------------
def _items(workspaces: int, n: int, seed: int) -> list[dict[str, Any]]:
    packs = list(load_packs(os.path.join(ROOT, "policy"), os.path.join(ROOT, "model.conf")).packs.values())
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        w = rnd.randrange(min(workspaces, 2000))  # users of the first 2,000 workspaces exist
        pack = packs[w % len(packs)]
        user = w * 10 + rnd.randrange(10) + 1
        out.append({"subject": f"user:{user}", "workspace": f"w{w}", "action": rnd.choice(pack.actions).id})
    return out


def _client(args: tuple[int, str, str, list[bytes], float, Any]) -> tuple[int, int, list[int]]:
    port, token, path, bodies, seconds, start = args
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    lat: list[int] = []
    ok = errors = 0
    while time.time() < start:
        time.sleep(0.001)
    end = time.time() + seconds
    i = 0
    while time.time() < end:
        body = bodies[i % len(bodies)]
        i += 1
        t = time.perf_counter_ns()
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        r.read()
        lat.append(time.perf_counter_ns() - t)
        if r.status == 200:
            ok += 1
        else:
            errors += 1
    conn.close()
    return ok, errors, lat


def load(port: int, token: str, path: str, bodies: list[bytes], clients: int, seconds: float) -> dict[str, Any]:
    """Requests/s and latency percentiles with `clients` keep-alive connections."""
    start = time.time() + 0.5
    with mp.get_context("fork").Pool(clients) as pool:
        results = pool.map(_client, [(port, token, path, bodies, seconds, start)] * clients)
    ok = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    lat = [x for r in results for x in r[2]]
    stats = percentiles(lat)
    return {
        "clients": clients,
        "seconds": seconds,
        "requests": ok + errors,
        "errors": errors,
        "requests_per_s": (ok + errors) / seconds,
        "p50_ms": stats.get("p50_us", 0) / 1000,
        "p99_ms": stats.get("p99_us", 0) / 1000,
    }


def wrk_path() -> str | None:
    """The wrk binary, unless BENCH_WRK=0 or it is not installed."""
    if os.environ.get("BENCH_WRK", "1") == "0":
        return None
    return shutil.which("wrk")


_WRK_SCRIPT = """
local bodies = {%(bodies)s}
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
%(close)s
%(pace)s
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, "%(path)s", nil, bodies[i])
end
local shown = false
response = function(status, headers, body)
  if status ~= 200 and not shown then
    shown = true
    io.write("WRKFIRSTERROR " .. status .. " " .. string.sub(body, 1, 300) .. "\\n")
  end
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %%d, "errors": %%d, "p50_us": %%d, "p99_us": %%d, "duration_us": %%d}\\n',
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99), summary.duration))
end
"""


def load_wrk(
    wrk: str,
    port: int,
    token: str,
    path: str,
    bodies: list[bytes],
    clients: int,
    seconds: float,
    keepalive: bool = True,
    cpu: str | None = None,
    rate: float | None = None,
) -> dict[str, Any]:
    """Like :func:`load`, generated by wrk (one thread, `clients` connections; ``keepalive=False``
    sends ``Connection: close``: a new connection per request), pinned to ``cpu`` when given.
    ``rate`` (requests/s in all) paces it: each connection waits clients/rate between answer and
    next request (wrk's ``delay``; the wait is not in the latency), so servers can be compared at
    one offered load instead of each at its own saturation."""
    pace = "" if not rate else f"delay = function() return {max(1, round(clients / rate * 1000))} end"
    lua = _WRK_SCRIPT % {
        "pace": pace,
        "close": "" if keepalive else 'wrk.headers["Connection"] = "close"',
        "bodies": ",\n".join("[==[" + b.decode() + "]==]" for b in bodies),
        "token": token,
        "path": path,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(lua)
        script = fh.name
    try:
        pin = ["taskset", "-c", cpu] if cpu is not None and shutil.which("taskset") else []
        proc = subprocess.run(
            [
                *pin,
                wrk,
                "-t1",
                f"-c{clients}",
                f"-d{max(1, round(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                script,
                f"http://127.0.0.1:{port}{path}",
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 60,
            check=True,
        )
    finally:
        os.unlink(script)
    m = re.search(r"WRKJSON (\{.*\})", proc.stdout)
    if m is None:
        raise RuntimeError(f"wrk said: {proc.stdout[-500:]} {proc.stderr[-500:]}")
    r = json.loads(m.group(1))
    took = r["duration_us"] / 1e6
    return {
        "generator": "wrk",
        "clients": clients,
        "seconds": took,
        "requests": r["requests"],
        "errors": r["errors"],
        "requests_per_s": r["requests"] / took,
        "p50_ms": r["p50_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
    }


def decision_api(url: str, token: str, workspaces: int, seconds: float, log_dir: str) -> dict[str, Any]:
    """Single and batch throughput of the real decision API under gunicorn -w 2."""
    out: dict[str, Any] = {}
    singles = [json.dumps(it).encode() for it in _items(workspaces, 5000, 1)]
    batches = [json.dumps({"checks": _items(workspaces, BATCH, s)}).encode() for s in range(20)]
    workers = workers_default()
    out["workers"] = workers
    wrk = wrk_path()
    out["generator"] = "wrk" if wrk else "python"

    def run(path: str, bodies: list[bytes], clients: int, secs: float) -> dict[str, Any]:
        if wrk:
            return load_wrk(wrk, port, token, path, bodies, clients, secs)
        return load(port, token, path, bodies, clients, secs)

    with app_server(url, "app:create_app()", workers, os.path.join(log_dir, "gunicorn-api.log")) as port:
        # warm both workers' memos and connections
        run("/v1/check", singles, 2, 2.0)
        run("/v1/check/batch", batches, 2, 2.0)
        out["single"] = run("/v1/check", singles, 4, seconds)
        out["batch"] = run("/v1/check/batch", batches, 2, seconds)
        out["batch"]["decisions_per_s"] = out["batch"]["requests_per_s"] * BATCH
        out["batch"]["checks_per_request"] = BATCH
    return out


# -- propagation ------------------------------------------------------------------------------
def _get(port: int, path: str) -> tuple[int, dict[str, Any]]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("GET", path)
    r = c.getresponse()
    body = json.loads(r.read() or b"{}")
    c.close()
    return r.status, body


def _post(port: int, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", path, body=json.dumps(payload), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    body = json.loads(r.read() or b"{}")
    c.close()
    if r.status != 200:
        raise RuntimeError(f"{path}: {r.status} {body}")
    return dict(body)


def propagation(url: str, changes: int, log_dir: str) -> dict[str, Any]:
    """Commit a role change through server A; time until server B decides accordingly."""
    ws, user = "ws:w0", "user:990000999"
    packs = load_packs(os.path.join(ROOT, "policy"), os.path.join(ROOT, "model.conf"))
    pack = list(packs.packs.values())[0]  # workspace w0 is of the first pack
    top = pack.workspace_roles[-1]
    action = next(
        a.id
        for a in pack.actions
        if any(r[0] == "p" and r[2] == pack.role_key(top.id) and r[3] == a.id and r[4] == "any" for r in pack.rules)
    )
    rule = ["g", user, pack.role_key(top.id), ws]
    check = f"/_mp/check?sub={user}&dom={ws}&act={action}"
    lat: list[int] = []
    with (
        app_server(url, "tests.mp_app:create()", 1, os.path.join(log_dir, "gunicorn-a.log")) as a,
        app_server(url, "tests.mp_app:create()", 1, os.path.join(log_dir, "gunicorn-b.log")) as b,
    ):
        for i in range(changes):
            op, want = ("add", True) if i % 2 == 0 else ("remove", False)
            _post(a, "/_mp/link", {"op": op, "rule": rule})
            t = time.perf_counter_ns()
            while _get(b, check)[1].get("allowed") is not want:
                if time.perf_counter_ns() - t > 5e9:
                    raise TimeoutError("change not seen in 5 s")
            lat.append(time.perf_counter_ns() - t)
        if len(lat) % 2:
            _post(a, "/_mp/link", {"op": "remove", "rule": rule})
    stats = percentiles(lat)
    return {
        "changes": changes,
        "p50_ms": stats["p50_us"] / 1000,
        "p99_ms": stats["p99_us"] / 1000,
        "max_ms": stats["max_us"] / 1000,
    }


def api_breakdown(url: str, token: str, workspaces: int, n: int = 1000) -> dict[str, Any]:
    """Where a ``/v1/check`` request spends its time, in-process (ms per call)."""
    from app import create_app
    from app.api.decision import resolve_users
    from app.authz import AccessRequest, ResourceFacts
    from app.extensions import authz, db
    from app.policy import tokens

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench-" + "x" * 32, "POLICY_SYNC": "off"})
    items = _items(workspaces, n, 3)
    bodies = [json.dumps(it) for it in items]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    out: dict[str, Any] = {}
    with app.app_context():
        eng = authz.engine
        client = app.test_client()
        for b in bodies[:200]:
            client.post("/v1/check", data=b, headers=headers)
        t = time.perf_counter()
        for b in bodies:
            client.post("/v1/check", data=b, headers=headers)
        out["request_ms"] = (time.perf_counter() - t) / n * 1000
        t = time.perf_counter()
        for _ in range(n):
            tokens.authenticate(db.session(), token)
        out["token_lookup_ms"] = (time.perf_counter() - t) / n * 1000
        with app.test_request_context():
            t = time.perf_counter()
            for it in items:
                resolve_users([it["subject"]], eng, f"ws:{it['workspace']}")
            out["subject_lookup_ms"] = (time.perf_counter() - t) / n * 1000
        reqs = [AccessRequest(it["subject"], f"ws:{it['workspace']}", ResourceFacts(), it["action"]) for it in items]
        t = time.perf_counter()
        for r in reqs:
            eng.check(r)
        out["engine_check_ms"] = (time.perf_counter() - t) / n * 1000
        db.session.remove()
        db.engine.dispose()
    return out
