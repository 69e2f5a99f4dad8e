"""A test-only WSGI app for tests/test_multiprocess.py: the real app plus three tiny endpoints.

``POST /_mp/link`` adds or removes one rule through the real policy store (one transaction, a
new revision, NOTIFY at commit, applied locally after commit); ``POST /_mp/edit`` makes a policy edit
(``app.policy.edits``: add a role, add or remove pack rules); ``GET /_mp/check`` decides through
``authz.wait_for(min_revision)`` and ``engine.check`` (503 problem when the revision is not
reached); ``GET /_mp/status`` reports the process id, the revision and the listener's state.
Served by gunicorn with ``gunicorn.conf.py``: ``gunicorn -c gunicorn.conf.py 'tests.mp_app:create()'``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request

from app import create_app
from app.authz import AccessRequest, ResourceFacts, RuleChange
from app.extensions import authz, db
from app.policy import edits
from app.policy import store as policy_store

bp = Blueprint("mp", __name__, url_prefix="/_mp")


@bp.post("/link")
def link() -> Any:
    """Add or remove one rule in its own transaction; returns the committed revision."""
    body = request.get_json(force=True)
    session = db.session()
    handle = policy_store.begin_write(session, "test", None, "multiprocess test")
    policy_store.add_changes(session, handle, [RuleChange(body["op"], tuple(body["rule"]))])
    session.commit()
    return jsonify(revision=handle.number, engine_revision=authz.engine.revision, pid=os.getpid())


@bp.post("/edit")
def edit() -> Any:
    """A policy edit (``app.policy.edits``: drafted, verified, written as one revision, then this
    process's engine follows); returns the committed revision."""
    body = request.get_json(force=True)
    model_text = Path(current_app.config["MODEL_PATH"]).read_text(encoding="utf-8")
    changes = [edits.Edit(**e) for e in body["edits"]]
    d = edits.commit(db.session(), authz, lambda s: edits.apply(s, changes, model_text, None))
    return jsonify(revision=d.revision, engine_revision=authz.engine.revision, pid=os.getpid())


@bp.get("/check")
def check() -> Any:
    """One decision, at least at ?min_revision."""
    args = request.args
    min_revision = int(args.get("min_revision", "0"))
    eng = authz.wait_for(min_revision) if min_revision else authz.engine
    decision = eng.check(AccessRequest(args["sub"], args["dom"], ResourceFacts(), args["act"]))
    return jsonify(allowed=decision.allowed, reason=decision.reason, revision=decision.revision, pid=os.getpid())


@bp.get("/status")
def status() -> Any:
    """Process id, engine revision, listener state."""
    return jsonify(pid=os.getpid(), **authz.sync_status())


def create() -> Flask:
    """The app with the test endpoints (configuration from FLASK_* environment variables)."""
    app = create_app()
    app.register_blueprint(bp)
    return app
