"""gunicorn settings: the policy loaded once in the master, a policy listener per worker after the fork.

Run: ``gunicorn -c gunicorn.conf.py 'app:create_app()'``. With ``GUNICORN_PRELOAD=1`` (default)
the master builds the app, loads the policy (``when_ready``), closes its database connections and
``gc.freeze()``s the heap, so the workers it forks share the engine's pages copy-on-write instead
of each loading its own. Every worker then drops the inherited connection pools, catches up the
revisions committed since the master loaded (before its first request, so it is current when it
serves), and starts its own LISTEN thread (``app.policy.sync``): a connection or thread
created in the master before forking would be shared by every worker, which is how stock watchers
go wrong. ``GUNICORN_PRELOAD=0``: each worker builds the app and loads the policy itself.

Metrics and logs (docs/deploy.md, "Metrics and logs"): the workers' metrics add up in
prometheus_client's multiprocess directory (prepared below, at config load, before the app;
each worker flushes into it; ``child_exit`` marks a dead worker's live gauges gone), and
gunicorn's own log lines go through the app's handler (``AppFormatLogger``).
"""

from __future__ import annotations

import gc
import logging
import logging.config
import os
from typing import Any

from gunicorn.glogging import Logger

from app import logs, observability
from app.startup import refuse_bad_settings

# Before the master binds or forks: a bad setting or a database not migrated to the head is one
# line on stderr and exit 2 (a database that does not answer is no refusal: the server starts unready).
refuse_bad_settings("gunicorn")

# Metrics that add up across workers: prometheus_client's multiprocess files in
# PROMETHEUS_MULTIPROC_DIR, emptied here at server start (or a private temporary directory,
# removed at exit), before the app is loaded; each worker flushes into it (post_worker_init).
_metrics_dir = observability.prepare_multiprocess_dir()

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
# Worker class: "sync" with GUNICORN_THREADS=4 (the defaults), which gunicorn runs as gthread (keep-alive);
# GUNICORN_THREADS=1 gives the one-request sync worker (``Connection: close``). gthread keeps connections alive:
# measured in one run (make bench, part compare, 1M memberships, realistic mix, 2 workers, wrk on the
# same 2 cores, 2026-12-03) /v1/check 6,051-6,854/s with gthread (one request thread, keep-alive)
# vs 4,044-4,337/s with sync (close), and 19,416-25,220/s behind granian (``python -m app.serve``),
# the server to use for keep-alive clients. ``GUNICORN_WORKER_CLASS=gthread`` is safe: the engine
# serialises check/apply under its lock, swaps are one reference assignment, and readers outside the
# lock iterate snapshots.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")  # with threads > 1 gunicorn runs "sync" as gthread
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))  # a cold load of 1M memberships takes seconds
keepalive = 5
backlog = 2048
# The app and its policy are built once in the master and shared copy-on-write (see when_ready).
preload_app = os.environ.get("GUNICORN_PRELOAD", "1").strip().lower() not in ("0", "false", "no", "off")
# The app writes one access line a request (app.logs.LoggingFlask, ACCESS_LOG); gunicorn's own only
# if GUNICORN_ACCESSLOG is set (then also in the app's format, on stderr).
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None


class AppFormatLogger(Logger):
    """gunicorn's logger, writing through the app's handler: its lines (booting, worker exits,
    errors) in the app's format (LOG_FORMAT json|text, LOG_LEVEL). Not ``logconfig_dict``, which
    would also switch gunicorn's access log on (built for every request, then dropped)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        logging.config.dictConfig(logs.dict_config(server="gunicorn"))


logger_class = AppFormatLogger

log = logging.getLogger("gunicorn.policy")


def _flask_app(wsgi: Any) -> Any:
    """The Flask app behind the WSGI callable (unwrapping middleware such as ProxyFix)."""
    app = wsgi
    for _ in range(5):
        if hasattr(app, "app_context"):
            return app
        app = getattr(app, "app", None) or getattr(app, "wsgi_app", None)
        if app is None:
            break
    return None


def _dispose_pools(app: Any, close: bool) -> None:
    """Drop the app's pooled database connections (close=False after fork: the master's sockets
    are left alone, the child only forgets them)."""
    from app.extensions import db

    with app.app_context():
        for engine in db.engines.values():
            engine.dispose(close=close)


def when_ready(server: Any) -> None:
    """In the master, before the first fork (preload only): load the policy once and freeze it."""
    if not server.cfg.preload_app:
        return
    from app.extensions import authz

    app = _flask_app(server.app.wsgi())
    if app is None:
        return
    try:
        with app.app_context():
            authz.reload()  # the database down: from POLICY_SNAPSHOT_PATH if there is a valid one
    except Exception:  # noqa: BLE001 - each worker tries again (and fails to boot the same way)
        log.exception("policy not loaded in the master; the workers load it themselves")
    authz.wait_snapshot()  # its writer thread must not be under way when the master forks
    _dispose_pools(app, close=True)  # no connection may be shared by the workers
    gc.collect()
    gc.freeze()  # the loaded heap leaves the collector's generations: the workers' GC never writes to it


def post_fork(server: Any, worker: Any) -> None:
    """In the new worker: nothing inherited from the master may carry a listener or a connection."""
    worker.policy_listener = None
    worker.metrics_flusher = None
    if server.cfg.preload_app:
        app = _flask_app(server.app.wsgi())
        if app is not None:
            _dispose_pools(app, close=False)


def post_worker_init(worker: Any) -> None:
    """After the worker loaded the app (still after fork): bring the policy to the database's head
    (load it, or catch up from the master's revision), then start the listener."""
    from app.extensions import authz
    from app.policy.sync import start_listener

    app = _flask_app(worker.wsgi)
    if app is None:
        log.warning("policy listener not started: no Flask app behind %r", worker.wsgi)
        return
    try:
        with app.app_context():
            if authz.loaded:
                authz.sync(background=False)  # revisions committed since the master loaded, before serving
            else:
                authz.reload()  # ready before the first request
    except Exception:  # noqa: BLE001 - database unreachable at boot: stay up, unready; the listener retries
        log.exception("policy not brought to the database's head at boot; the listener retries with back-off")
    worker.policy_listener = start_listener(app)
    worker.metrics_flusher = observability.start_flusher(app)


def worker_exit(server: Any, worker: Any) -> None:
    """Close the listener's connection and write the last counts on the way out."""
    listener = getattr(worker, "policy_listener", None)
    if listener is not None:
        listener.stop(timeout=1.0)
    flusher = getattr(worker, "metrics_flusher", None)
    if flusher is not None:
        flusher.stop()


def child_exit(server: Any, worker: Any) -> None:
    """In the master, a worker gone (exit, crash or kill): its live gauges leave /metrics; its
    counters stay (they only grow)."""
    observability.mark_worker_dead(worker.pid)


def on_exit(server: Any) -> None:
    """The server stops: remove the private metrics directory, if it made one."""
    observability.remove_private_dir(_metrics_dir)
