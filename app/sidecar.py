"""``learnauthz sidecar``: a follower replica of the decision API beside a service.

It loads the policy its feed token may see from the central tier (``GET /v1/snapshot``), follows
``GET /v1/changes`` (``app.policy.follower``) and answers ``/v1/check``, ``/v1/check/batch``,
AuthZEN evaluation(s), ``/healthz``, ``/readyz`` and ``/metrics`` on localhost or a Unix socket,
with the same engine and answer code as the central tier (``create_app`` in follower mode). No
database URL, no credentials but its token; it keeps deciding from memory while the upstream is
unreachable, until ``POLICY_MAX_STALENESS_SECONDS`` (``--max-staleness``, default 60 s) fails it
closed (503), as the central tier does. docs/deploy.md, "Sidecars".
"""

from __future__ import annotations

import gc
import logging
import multiprocessing.util
import os
import secrets
import sys
from pathlib import Path

import click
from flask import Flask

from app import create_app, logs, observability
from app.authz.selection import Selection
from app.config import ConfigError, load_config
from app.extensions import authz
from app.policy.follower import Follower
from app.serve import SERVER, THREADS, DrainedBodies, _bind
from app.startup import EXIT_BAD_SETTING

log = logging.getLogger("app.sidecar")

DEFAULT_STALENESS = 60.0


def follower_of(app: Flask) -> Follower:
    """The app's follower, from its settings (FOLLOWER_UPSTREAM, FOLLOWER_TOKEN, the selection)."""
    cfg = app.config
    query = {"partition": str(cfg.get("POLICY_PARTITION") or ""), "workspaces": str(cfg.get("POLICY_WORKSPACES") or "")}
    return Follower(app, authz, str(cfg["FOLLOWER_UPSTREAM"]), str(cfg["FOLLOWER_TOKEN"]), query)


def worker_app() -> Flask:
    """One granian worker: the follower app, its first snapshot loaded (or retried by the follower's
    thread when the upstream does not answer: unready meanwhile), the feed followed."""
    app = create_app()
    app.wsgi_app = DrainedBodies(app.wsgi_app)  # type: ignore[method-assign]
    follower = follower_of(app)
    authz.follow(app, follower)
    try:
        with app.app_context():
            follower.load()
    except Exception:  # noqa: BLE001 - upstream unreachable at boot: unready, the follower retries
        log.exception("no snapshot from %s at boot; retrying", follower.upstream)
    follower.start()
    flusher = app.extensions["metrics_flusher"] = observability.start_flusher(app)
    if flusher is not None:
        multiprocessing.util.Finalize(None, flusher.stop, exitpriority=10)
    gc.collect()
    gc.freeze()
    return app


@click.command("sidecar")
@click.option("--upstream", required=True, metavar="URL", help="the central tier's base URL (serves /v1/snapshot)")
@click.option("--token", envvar="FLASK_FOLLOWER_TOKEN", required=True, help="a service token with --feed")
@click.option("--workspaces", default="", metavar="A,B", help="hold only these workspaces (∩ the token's binding)")
@click.option("--partition", default="", metavar="k/N", help="hold only partition k of N (app.authz.selection)")
@click.option("--bind", "bind", default="127.0.0.1:8181", metavar="HOST:PORT", help="where to answer")
@click.option("--uds", default=None, type=click.Path(dir_okay=False), help="answer on this Unix socket instead")
@click.option("--workers", default=1, type=click.IntRange(1, 64), help="processes (each follows the feed)")
@click.option("--threads", default=THREADS, type=click.IntRange(1, 256), help="blocking threads per worker")
@click.option("--max-staleness", default=DEFAULT_STALENESS, type=float, help="seconds without the upstream before 503")
def sidecar_cmd(
    upstream: str,
    token: str,
    workspaces: str,
    partition: str,
    bind: str,
    uds: str | None,
    workers: int,
    threads: int,
    max_staleness: float,
) -> None:
    """Serve decisions beside a service from the central tier's change feed (no database)."""
    sys.exit(main(upstream, token, workspaces, partition, bind, uds, workers, threads, max_staleness))


def main(
    upstream: str,
    token: str,
    workspaces: str = "",
    partition: str = "",
    bind: str = "127.0.0.1:8181",
    uds: str | None = None,
    workers: int = 1,
    threads: int = THREADS,
    max_staleness: float = DEFAULT_STALENESS,
) -> int:
    """Check the settings, then serve with granian (returns its exit)."""
    from granian import Granian
    from granian.constants import Interfaces

    try:
        Selection.parse(partition=partition or None, workspaces=workspaces or None)
        host, port = _bind(bind)
    except (ValueError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTING
    os.environ.update(
        SERVER_SOFTWARE=SERVER,
        FLASK_FOLLOWER_UPSTREAM=upstream,
        FLASK_FOLLOWER_TOKEN=token,
        FLASK_POLICY_WORKSPACES=workspaces,
        FLASK_POLICY_PARTITION=partition,
        FLASK_POLICY_MAX_STALENESS_SECONDS=str(max_staleness),
        # No database: the ORM is bound to an empty in-memory SQLite (app._follower_app).
        FLASK_SQLALCHEMY_DATABASE_URI="sqlite://",
    )
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("FLASK_SECRET_KEY", secrets.token_hex(32))  # no sessions here: any key will do
    try:
        load_config()
        log_config = logs.dict_config(server="granian")
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTING
    metrics_dir = observability.prepare_multiprocess_dir()
    where = {"uds": Path(uds)} if uds else {"address": host, "port": port}
    try:
        Granian(
            "app.sidecar:worker_app",
            interface=Interfaces.WSGI,
            factory=True,
            workers=workers,
            blocking_threads=threads,
            respawn_failed_workers=True,
            log_dictconfig=log_config,
            log_access=False,
            **where,
        ).serve()
    finally:
        observability.remove_private_dir(metrics_dir)
    return 0
