"""A keep-alive production server for the decision API: granian (HTTP in Rust, WSGI workers).

Run: ``python -m app.serve`` (settings from the environment, as the app's own ``FLASK_*``):

- ``SERVE_BIND`` (``127.0.0.1:8000``), ``SERVE_WORKERS`` (2 processes), ``SERVE_THREADS`` (blocking
  threads per worker, 4: the engine is thread-safe; one request waiting on the database must not
  hold the worker's decisions; ``auto``: :func:`auto_threads`), ``SERVE_BACKLOG`` (1024).
- ``SERVE_DECISION_BIND`` (unset: off): a decision listener of its own on this ``host:port``, a second
  granian server (``SERVE_DECISION_WORKERS`` processes, 2; ``SERVE_DECISION_THREADS`` threads each,
  ``auto``: :func:`auto_threads`) whose app serves only the decision and AuthZEN APIs, probes and
  metrics (``DECISION_ONLY``), so no write can occupy its threads or hold its workers' GIL
  (docs/deploy.md, "Writes never stall decisions"). It runs as a child of this process and stops
  with it; either one exiting stops both.
  ``SERVE_WRITE_NICE`` (5 with a decision listener): this server's workers run that much lower in
  the kernel's priority, so on shared cores a decision worker runs before a write.

- ``SERVE_PRELOAD`` (``1``): the policy is loaded once, in granian's main process, before it forks
  its workers (granian's ``multiprocessing`` start method is ``fork`` on Linux), which share the
  loaded engine and directory copy-on-write (:func:`preload`, then :func:`preloaded_app` in each
  worker: drop the inherited connection pools, catch up the revisions committed since the load,
  start its listener), as gunicorn's preload does. ``0``, or a start method other than ``fork``:
  each worker builds the app and loads the policy itself (:func:`worker_app`).

The policy is loaded and the listener started before granian gives a worker a request: what
``gunicorn.conf.py``'s ``post_worker_init`` does under gunicorn. Memory (docs/scale.md, "Memory"):
1M memberships + 1M users, 2 workers, total PSS 323 MB preloaded vs 578 MB loading in each.
What it buys is throughput: HTTP/1.1 keep-alive, and the HTTP parsing and connection handling that
cost a gunicorn worker more than the decision itself done outside Python (``make bench``, part
``compare``, measures both servers in one run). The server refuses to start (one line, exit 2) on a
bad setting or a database not migrated to the head, as gunicorn does (:mod:`app.startup`). Its metrics
add up across workers (a multiprocess directory prepared once in :func:`main`, each worker flushing
into it) and granian's own log lines are in the app's format (``LOG_FORMAT``); docs/deploy.md,
"Metrics and logs".
"""

from __future__ import annotations

import gc
import logging
import multiprocessing.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from flask import Flask

from app import create_app, logs, observability
from app.config import ConfigError
from app.extensions import authz, db
from app.logs import LoggingFlask
from app.policy.sync import start_listener
from app.startup import EXIT_BAD_SETTING, refuse_bad_settings

SERVER = "granian"
log = logging.getLogger("app.serve")
# Blocking threads per worker (as gunicorn.conf.py's 4 threads): with one, a request waiting on a
# frozen database (up to DATABASE_REQUEST_WAIT_SECONDS) held every decision of its worker (the
# HAProxy outage drill, frozen phase: decision p99 2.0 s with 1 thread, 41 ms with 4).
THREADS = 4
# The decision listener's default: as many as auto_threads finds best where it runs.
DECISION_THREADS = "auto"
# Set in the decision listener's environment: its server's parent (whose metrics directory it shares).
PARENT_ENV = "LEARNAUTHZ_SERVE_PARENT"
DRAIN_LIMIT = 1 << 20  # bytes of an unread request body read and dropped to keep its connection
StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
WSGIEntry = Callable[[Any, Any], Any]  # LoggingFlask.entry


class DrainedBodies:
    """WSGI middleware: the request body the app left unread is read before the answer goes out.

    granian closes a keep-alive connection whose request body was not read to the end without
    saying so (no ``Connection: close``): the client's next request on it fails (BrokenPipe,
    issue 23 reproduction 9). Answers given before the body is parsed (503 while the database is
    down, 401, a CSRF refusal) did that whenever the body arrived after the headers. The rest of
    the body is read (up to ``DRAIN_LIMIT`` bytes) when the app starts its response; a longer one
    gets ``Connection: close``. gunicorn discards an unread body itself."""

    def __init__(self, wsgi_app: WSGIApp, limit: int = DRAIN_LIMIT) -> None:
        self.wsgi_app = wsgi_app
        self.limit = limit

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        def drained(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if not _drain(environ.get("wsgi.input"), self.limit):
                headers = [*headers, ("Connection", "close")]
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, drained)


def _drain(stream: Any, limit: int) -> bool:
    """Read and drop what is left of stream, up to limit bytes; True when it reached the end."""
    if stream is None:
        return True
    left = limit
    try:
        while left > 0:
            chunk = stream.read(min(65536, left))
            if not chunk:
                return True
            left -= len(chunk)
        return not stream.read(1)
    except Exception:  # noqa: BLE001 - a broken input stream: the connection cannot be kept anyway
        log.debug("request body not drained", exc_info=True)
        return False


def _served_app() -> Flask:
    app = create_app()
    app.wsgi_app = DrainedBodies(app.wsgi_app)  # type: ignore[method-assign]
    return app


def worker_app() -> WSGIEntry:
    """The app one granian worker serves: policy loaded and listener started before it serves."""
    app = _served_app()
    try:
        with app.app_context():
            authz.reload()
    except Exception:  # noqa: BLE001 - database unreachable at boot: serve unready (/readyz 503); the listener retries
        log.exception("policy not loaded at boot; the listener retries with back-off")
    return _start_worker(app)


def _dispose_pools(app: Flask, close: bool) -> None:
    """Drop the app's pooled database connections (close=False after fork: the parent's sockets are
    left alone, the child only forgets them)."""
    with app.app_context():
        for engine in db.engines.values():
            engine.dispose(close=close)


def preload() -> Flask:
    """In granian's main process, before it forks: the app with the policy loaded once, no database
    connection open, no thread running, and the heap frozen (``gc.freeze``: the workers' collections
    never write to the shared pages)."""
    app = _served_app()
    try:
        with app.app_context():
            authz.reload()  # the database down: from POLICY_SNAPSHOT_PATH if there is a valid one
    except Exception:  # noqa: BLE001 - each worker tries again (preloaded_app)
        log.exception("policy not loaded before the fork; the workers load it themselves")
    authz.wait_snapshot()  # its writer thread must not be under way at the fork
    _dispose_pools(app, close=True)
    gc.collect()
    gc.freeze()
    return app


def preloaded_app(app: Flask) -> WSGIEntry:
    """In a forked worker: the preloaded app brought to the database's head, with its own listener."""
    _dispose_pools(app, close=False)  # the parent's connections are not this worker's
    try:
        with app.app_context():
            if authz.loaded:
                authz.sync(background=False)  # revisions committed since the load, before serving
            else:
                authz.reload()
    except Exception:  # noqa: BLE001 - database unreachable: serve unready (/readyz 503); the listener retries
        log.exception("policy not brought to the database's head at boot; the listener retries with back-off")
    return _start_worker(app)


def _start_worker(app: Flask) -> WSGIEntry:
    """The worker's listener and metrics flusher started, the heap frozen; what granian calls:
    the app's entry (``LoggingFlask.entry``: a function's call, not the app object's)."""
    app.extensions["serve_listener"] = start_listener(app)
    flusher = app.extensions["metrics_flusher"] = observability.start_flusher(app)
    if flusher is not None:
        # The last counts when the worker stops: granian's workers are multiprocessing processes,
        # which end with os._exit after running multiprocessing's finalizers (atexit never runs).
        multiprocessing.util.Finalize(None, flusher.stop, exitpriority=10)
    gc.collect()
    gc.freeze()  # the loaded engine leaves the collector's generations: no full collection rescans it
    return cast(LoggingFlask, app).entry()


def _bind(value: str, name: str = "SERVE_BIND") -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{name} must be host:port, not {value!r}")
    return host.strip("[]"), int(port)


def _count(name: str, default: int | str) -> int:
    raw = os.environ.get(name, str(default))
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{name} must be a positive integer, not {raw!r}")
    return int(raw)


def auto_threads(workers: int, cores: int | None = None) -> int:
    """Blocking threads per worker for a server that never waits on the database (the decision
    listener): 1 when every worker has a core of its own (``cores``: the CPUs this process may run
    on, its affinity), :data:`THREADS` when workers share cores.

    Measured behind granian, W = 100,000, 2 workers, rounds alternating with the no-op (docs/scale.md
    §4): on 2 cores one thread spares the idle threads' spinning and handoffs (server CPU a single
    check 47–53 µs against 60–66 µs with 4; throughput 0.83–1.06× the no-op's against 0.70–0.80×,
    7 Dec afternoon; the same, 0.90×, in the morning); with both workers on one core 4 threads win
    (0.92–0.96× against 0.79–0.83×; batches 0.65× against 0.59×; in the morning 0.90× against 0.79×).
    """
    if cores is None:
        affinity = getattr(os, "sched_getaffinity", None)  # Linux; elsewhere every core counts
        cores = len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)
    return 1 if cores >= workers else THREADS


def _threads(workers: int) -> int:
    """``SERVE_THREADS``: a positive integer, or ``auto`` (:func:`auto_threads`)."""
    if os.environ.get("SERVE_THREADS", "").strip().lower() == "auto":
        return auto_threads(workers)
    return _count("SERVE_THREADS", THREADS)


def write_nice(decision: dict[str, str] | None) -> int:
    """How much lower the app server's scheduling priority is than its decision listener's
    (``SERVE_WRITE_NICE``, 0..19, default 5; only with a decision listener, which keeps the
    priority it was started with): on cores both share, the kernel then runs a decision worker
    before a write (nice 5: about a third of the CPU weight), so writes cannot take the decisions'
    CPU either."""
    if decision is None:
        return 0
    raw = os.environ.get("SERVE_WRITE_NICE", "5").strip()
    if not raw.isdigit() or int(raw) > 19:
        raise ConfigError(f"SERVE_WRITE_NICE must be an integer from 0 to 19, not {raw!r}")
    return int(raw)


def preloading() -> bool:
    """``SERVE_PRELOAD`` (default on), and granian forks its workers (ConfigError on a bad value)."""
    raw = os.environ.get("SERVE_PRELOAD", "1").strip().lower()
    if raw not in ("0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ConfigError(f"SERVE_PRELOAD must be 1 or 0, not {raw!r}")
    return raw in ("1", "true", "yes", "on") and multiprocessing.get_start_method() == "fork"


def options() -> dict[str, Any]:
    """granian's settings from the environment (ConfigError with the reason on a bad value)."""
    host, port = _bind(os.environ.get("SERVE_BIND", "127.0.0.1:8000"))
    workers = _count("SERVE_WORKERS", 2)
    return {
        "address": host,
        "port": port,
        "workers": workers,
        "blocking_threads": _threads(workers),
        "backlog": _count("SERVE_BACKLOG", 1024),
    }


def decision_options() -> dict[str, str] | None:
    """The decision listener's environment overrides (``SERVE_DECISION_*``), None when it is off."""
    raw = os.environ.get("SERVE_DECISION_BIND", "").strip()
    if not raw or os.environ.get(PARENT_ENV):
        return None
    host, port = _bind(raw, "SERVE_DECISION_BIND")
    main_host, main_port = _bind(os.environ.get("SERVE_BIND", "127.0.0.1:8000"))
    if (host, port) == (main_host, main_port):
        raise ConfigError(f"SERVE_DECISION_BIND must differ from SERVE_BIND, not {raw!r}")
    return {
        "SERVE_BIND": raw,
        "SERVE_DECISION_BIND": "",
        "SERVE_WORKERS": str(_count("SERVE_DECISION_WORKERS", 2)),
        "SERVE_THREADS": _decision_threads(),
        "FLASK_DECISION_ONLY": "1",
        PARENT_ENV: str(os.getpid()),
    }


def _decision_threads() -> str:
    """``SERVE_DECISION_THREADS`` checked: ``auto`` (the default) or a positive integer."""
    raw = os.environ.get("SERVE_DECISION_THREADS", DECISION_THREADS).strip().lower()
    return raw if raw == "auto" else str(_count("SERVE_DECISION_THREADS", DECISION_THREADS))


class DecisionListener:
    """The decision listener: ``python -m app.serve`` again with the overrides of
    :func:`decision_options`, watched by a thread that stops this server (SIGTERM to itself) when
    it exits unasked, so a supervisor restarts both."""

    def __init__(self, overrides: dict[str, str]) -> None:
        self.stopping = threading.Event()
        self.proc = subprocess.Popen([sys.executable, "-m", "app.serve"], env={**os.environ, **overrides})
        threading.Thread(target=self._watch, name="decision-listener-watch", daemon=True).start()

    def _watch(self) -> None:
        code = self.proc.wait()
        if not self.stopping.is_set():
            log.error("the decision listener exited (%s); stopping the server", code)
            os.kill(os.getpid(), signal.SIGTERM)

    def stop(self) -> int | None:
        """Stop it (SIGTERM, SIGKILL after 20 s); its exit code when it had ended on its own, else None."""
        self.stopping.set()
        died = self.proc.poll()
        if died is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return died


def _follow_parent(parent: int) -> None:
    """In the decision listener: stop (SIGTERM to self) when the server that started it is gone."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main() -> int:
    """Check the configuration once, then serve (returns granian's exit)."""
    from granian import Granian
    from granian.constants import Interfaces

    try:
        opts = options()
        decision = decision_options()
        nice = write_nice(decision)
        shared = preloading()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTING
    os.environ["SERVER_SOFTWARE"] = SERVER  # a production server: no per-host secret (app.config)
    refuse_bad_settings(SERVER)  # settings and schema: one line and exit 2
    try:
        log_config = logs.dict_config(server="granian")  # granian's own lines in the app's format
    except ConfigError as exc:  # LOG_LEVEL, LOG_FORMAT
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTING
    parent = os.environ.get(PARENT_ENV, "")
    # Metrics that add up across workers: the multiprocess directory emptied (or a private one
    # made) once here, before any worker; each worker flushes into it (worker_app). The decision
    # listener's workers flush into its parent's.
    metrics_dir = None if parent else observability.prepare_multiprocess_dir()
    if parent.isdigit():
        _follow_parent(int(parent))
    child = DecisionListener(decision) if decision is not None else None
    if nice:
        os.nice(nice)  # after the decision listener started (it keeps ours): the workers inherit it
    died = None
    try:
        server = Granian(
            "app.serve:worker_app",
            interface=Interfaces.WSGI,
            factory=True,
            respawn_failed_workers=True,
            log_dictconfig=log_config,
            log_access=False,  # the app writes one access line a request (app.logs.LoggingFlask)
            **opts,
        )
        if shared:
            app = preload()
            # granian calls the loader in each forked worker (a respawned one too: it catches up from the load)
            server.serve(target_loader=lambda: preloaded_app(app), wrap_loader=False)
        else:
            server.serve()
    finally:
        if child is not None:
            died = child.stop()
        observability.remove_private_dir(metrics_dir)
    return 1 if died else 0  # the decision listener failed (0: it stopped with us, e.g. on Ctrl-C)


if __name__ == "__main__":
    raise SystemExit(main())
