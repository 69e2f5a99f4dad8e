"""A keep-alive production server for the decision API: granian (HTTP in Rust, WSGI workers).

Run: ``python -m app.serve`` (settings from the environment, as the app's own ``FLASK_*``):

- ``SERVE_BIND`` (``127.0.0.1:8000``), ``SERVE_WORKERS`` (2 processes), ``SERVE_THREADS`` (blocking
  threads per worker, 1: the engine is thread-safe, so more is safe), ``SERVE_BACKLOG`` (1024).

Each worker builds the app (:func:`worker_app`), loads the policy and starts its listener before
granian gives it a request: what ``gunicorn.conf.py``'s ``post_worker_init`` does under gunicorn.
The difference is memory: granian has no preload, so every worker holds its own engine (W =
100,000 workspaces: 364 MB RSS, 337 MB of it private, a worker, where gunicorn's preloaded
workers share it copy-on-write: 21 MB private each).
What it buys is throughput: HTTP/1.1 keep-alive, and the HTTP parsing and connection handling that
cost a gunicorn worker more than the decision itself done outside Python (``make bench``, part
``compare``, measures both servers in one run). The server refuses to start without
``FLASK_SECRET_KEY``, as gunicorn does.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from typing import Any

from flask import Flask

from app import create_app
from app.config import load_config
from app.extensions import authz
from app.policy.sync import start_listener

SERVER = "granian"
log = logging.getLogger("app.serve")


def worker_app() -> Flask:
    """The app one granian worker serves: policy loaded and listener started before it serves."""
    app = create_app()
    try:
        with app.app_context():
            authz.reload()
    except Exception:  # noqa: BLE001 - database unreachable at boot: serve unready (/readyz 503); the listener retries
        log.exception("policy not loaded at boot; the listener retries with back-off")
    app.extensions["serve_listener"] = start_listener(app)
    gc.collect()
    gc.freeze()  # the loaded engine leaves the collector's generations: no full collection rescans it
    return app


def _bind(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"SERVE_BIND must be host:port, not {value!r}")
    return host.strip("[]"), int(port)


def _count(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"{name} must be a positive integer, not {raw!r}")
    return int(raw)


def options() -> dict[str, Any]:
    """granian's settings from the environment (SystemExit with the reason on a bad value)."""
    host, port = _bind(os.environ.get("SERVE_BIND", "127.0.0.1:8000"))
    return {
        "address": host,
        "port": port,
        "workers": _count("SERVE_WORKERS", 2),
        "blocking_threads": _count("SERVE_THREADS", 1),
        "backlog": _count("SERVE_BACKLOG", 1024),
    }


def main() -> int:
    """Check the configuration once, then serve (returns granian's exit)."""
    from granian import Granian
    from granian.constants import Interfaces

    opts = options()
    os.environ["SERVER_SOFTWARE"] = SERVER  # a production server: no per-host secret (app.config)
    try:
        load_config()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    Granian(
        "app.serve:worker_app",
        interface=Interfaces.WSGI,
        factory=True,
        respawn_failed_workers=True,
        **opts,
    ).serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
