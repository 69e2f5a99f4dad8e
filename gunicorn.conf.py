"""gunicorn settings: sync workers, and a policy listener per worker created after the fork.

Run: ``gunicorn -c gunicorn.conf.py 'app:create_app()'``. Every worker loads the policy before it
accepts its first request (so it is ready when it serves), then starts its own LISTEN thread
(``app.services.policy_sync``): a connection or thread created in the master before forking
would be shared by every worker, which is how stock watchers go wrong.
"""

from __future__ import annotations

import logging
import os
from typing import Any

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = "sync"  # one request at a time per process: decisions never share a thread
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "120"))  # a cold load of 1M memberships takes seconds
keepalive = 5
backlog = 2048
preload_app = False  # the app (and its policy) is built in each worker, after fork
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None

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


def post_fork(server: Any, worker: Any) -> None:
    """In the new worker: nothing inherited from the master may carry a listener."""
    worker.policy_listener = None


def post_worker_init(worker: Any) -> None:
    """After the worker loaded the app (still after fork): load the policy, start the listener."""
    from app.extensions import authz
    from app.services.policy_sync import start_listener

    app = _flask_app(worker.wsgi)
    if app is None:
        log.warning("policy listener not started: no Flask app behind %r", worker.wsgi)
        return
    with app.app_context():
        authz.reload()  # ready before the first request
    worker.policy_listener = start_listener(app)


def worker_exit(server: Any, worker: Any) -> None:
    """Close the listener's connection on the way out."""
    listener = getattr(worker, "policy_listener", None)
    if listener is not None:
        listener.stop(timeout=1.0)
