"""Liveness, readiness and metrics. Registering this blueprint also installs request ids and metrics."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from flask.blueprints import BlueprintSetupState

from app import observability
from app.api import api_doc
from app.api.schemas import Health
from app.extensions import authz, db
from app.policy import store as policy_store

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
@api_doc(
    "Readiness: database reachable, policy loaded, verified and in step with the database (503 otherwise).",
    tags=["health"],
    response=Health,
)
def readyz() -> tuple[Response, int]:
    """Readiness: the database answers, the policy is loaded (never loaded here when a server
    loads it at start: ``checks.policy: loading``), passes the verifier, is at most
    POLICY_READY_MAX_LAG_REVISIONS behind the head and (with a listener) read the revision log
    within POLICY_READY_MAX_SYNC_AGE_SECONDS. Reports revision, head, lag, sync mode, rebuild.

    Bounded: the database check waits at most DATABASE_REQUEST_WAIT_SECONDS (at once while the
    database is held down), everything else is in memory."""
    config = current_app.config
    checks: dict[str, str] = {}
    revision = head = None
    try:
        head = policy_store.current_revision(db.session)  # type: ignore[arg-type]  # the scoped session proxies it
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        log.warning("readiness: database unreachable: %s", exc)
        checks["database"] = "unreachable"
        db.session.rollback()
    if not authz.loaded and authz.loading:
        checks["policy"] = "loading"  # the server's start-up load is under way
    else:
        try:
            revision = authz.engine.revision  # loads only where no server loads at start (tests)
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
    lag = head - revision if head is not None and revision is not None else None
    max_lag = int(config.get("POLICY_READY_MAX_LAG_REVISIONS") or 0)
    if lag is not None and max_lag > 0 and lag > max_lag:
        checks["lag"] = "behind"
    status: dict[str, Any] = {}
    try:
        status = authz.sync_status()  # revision and the policy listener's state
    except Exception as exc:  # noqa: BLE001 - informational: never turns a ready process unready
        log.warning("readiness: sync status unavailable: %s", exc)
    listener = status.get("listener")
    checks["sync"] = listener["mode"] if listener else "off"
    max_age = float(config.get("POLICY_READY_MAX_SYNC_AGE_SECONDS") or 0)
    age = status.get("seconds_since_sync")
    if listener and max_age > 0 and age is not None and age > max_age:
        checks["sync_age"] = "stale"
    ready = (
        checks.get("database") == "ok"
        and checks.get("policy") == "loaded"
        and checks.get("verification") == "pass"
        and not {"staleness", "lag", "sync_age"} & checks.keys()
    )
    body = Health(status="ready" if ready else "unavailable", checks=checks, revision=revision)
    out = body.model_dump(exclude_none=True)
    out["head"] = head
    out["lag_revisions"] = lag
    if listener and listener.get("reason"):
        out["sync_reason"] = listener["reason"]
    if status:
        out["sync"] = status
        # Seconds since the engine last read the revision log (decisions go on from memory meanwhile).
        out["staleness_seconds"] = age
        if status.get("rebuild"):
            out["rebuild"] = status["rebuild"]
    return jsonify(out), 200 if ready else 503


@bp.get("/metrics")
@api_doc("Prometheus metrics (text exposition).", tags=["health"])
def metrics() -> Response:
    """Prometheus metrics: decisions by result and reason, latency histograms, policy revision."""
    return observability.metrics_response()
