"""Liveness, readiness and metrics. Registering this blueprint also installs request ids and metrics."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from flask.blueprints import BlueprintSetupState
from sqlalchemy import text

from app import observability
from app.api import api_doc
from app.api.schemas import Health

log = logging.getLogger("app.health")

bp = Blueprint("health", __name__)


@bp.record_once
def _setup(state: BlueprintSetupState) -> None:
    observability.init_app(state.app)  # type: ignore[arg-type]


@bp.get("/healthz")
@api_doc("Liveness: the process answers.", tags=["health"], response=Health)
def healthz() -> Response:
    """Liveness: the process is up (no dependency is checked)."""
    return jsonify(Health(status="ok").model_dump(exclude_none=True))


@bp.get("/readyz")
@api_doc("Readiness: policy loaded and database reachable (503 otherwise).", tags=["health"], response=Health)
def readyz() -> tuple[Response, int]:
    """Readiness: the database answers and the policy engine is loaded; reports the policy's staleness.

    Bounded: the database check waits at most DATABASE_REQUEST_WAIT_SECONDS (at once while the
    database is held down), everything else is in memory."""
    from app.extensions import authz, db

    checks: dict[str, str] = {}
    revision = None
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        log.warning("readiness: database unreachable: %s", exc)
        checks["database"] = "unreachable"
        db.session.rollback()
    try:
        revision = authz.engine.revision
        checks["policy"] = "loaded"
    except Exception as exc:  # noqa: BLE001
        log.warning("readiness: policy not loaded: %s", exc)
        checks["policy"] = "not loaded"
    if checks["policy"] == "loaded":
        # A stored policy that fails the escalation verifier is not served silently.
        checks["verification"] = "fail" if authz.verification_problems() else "pass"
    try:
        authz.require_fresh()
    except Exception:  # noqa: BLE001 - past POLICY_MAX_STALENESS_SECONDS (or unknown): not ready
        checks["staleness"] = "stale"
    ready = (
        checks.get("database") == "ok"
        and checks.get("policy") == "loaded"
        and checks.get("verification") == "pass"
        and "staleness" not in checks
    )
    body = Health(status="ready" if ready else "unavailable", checks=checks, revision=revision)
    out = body.model_dump(exclude_none=True)
    try:
        out["sync"] = status = authz.sync_status()  # revision and the policy listener's state
        # Seconds since the engine last read the revision log (decisions go on from memory meanwhile).
        out["staleness_seconds"] = status.get("seconds_since_sync")
    except Exception as exc:  # noqa: BLE001 - informational: never turns a ready process unready
        log.warning("readiness: sync status unavailable: %s", exc)
    return jsonify(out), 200 if ready else 503


@bp.get("/metrics")
@api_doc("Prometheus metrics (text exposition).", tags=["health"])
def metrics() -> Response:
    """Prometheus metrics: decisions by result and reason, latency histograms, policy revision."""
    return observability.metrics_response()
