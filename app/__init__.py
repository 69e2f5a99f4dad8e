"""Application factory: config → extensions → blueprints → error handlers."""

from __future__ import annotations

from typing import Any

from flask import Flask

from . import logs
from .config import load_config

_log_level = logs.level  # LOG_LEVEL (app.logs)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the Flask app; nothing happens at import time."""
    app = logs.LoggingFlask(__name__, instance_relative_config=True)  # request ids in logs, access lines
    app.config.update(load_config(test_config))
    logs.configure()  # LOG_LEVEL, LOG_FORMAT (app.logs)
    app.access_lines = bool(app.config["ACCESS_LOG"])
    app.access_decisions = bool(app.config["ACCESS_LOG_DECISIONS"])

    from . import database
    from .extensions import authz, csrf, db, login_manager

    database.init_app(app, db)  # timeouts into the engine options, before the engines exist
    db.init_app(app)
    with app.app_context():
        database.bind(app, db)
    login_manager.init_app(app)
    csrf.init_app(app)
    authz.init_app(app, db)
    # A follower (`learnauthz sidecar`, app.sidecar): its policy from the upstream's change feed, no
    # database (the ORM is bound to an empty in-memory SQLite only because the shared views import
    # it); decisions, health and metrics only, nothing writes (app.api.follower answers 404 for the rest).
    follower = bool(app.config["FOLLOWER_UPSTREAM"])

    from . import after_commit

    if not follower:
        after_commit.init_app(app, db)  # the one after-commit path: policy, tokens, directory

    from .errors import register_error_handlers

    register_error_handlers(app)

    from .api import auth, authzen, decision, docs, feed, groups, health, members, policy
    from .api import follower as follower_api
    from .web import pages, workbench

    everything = (
        health.bp,
        auth.bp,
        members.bp,
        groups.bp,
        decision.bp,
        feed.bp,
        authzen.bp,
        policy.bp,
        docs.bp,
        pages.bp,
        workbench.bp,
    )
    for blueprint in (health.bp, decision.bp, authzen.bp) if follower else everything:
        app.register_blueprint(blueprint)

    from . import idempotency

    if follower:
        follower_api.restrict(app)
    else:
        idempotency.init_app(app, db)  # wraps the write views: Idempotency-Key (after the blueprints)

    from . import security

    security.init_app(app)  # after the blueprints: its rate limits wrap registered views

    from .api import decision_wsgi

    decision_wsgi.install(app)  # asked first by LoggingFlask.__call__: plain decisions skip every middleware

    from .cli import register_cli

    if not follower:
        register_cli(app)
    return app
