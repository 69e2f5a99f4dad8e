"""Liveness, readiness and metrics. Registering this blueprint also installs request ids and metrics."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from flask.blueprints import BlueprintSetupState

from app import database, observability
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
    "Ready to decide: policy loaded, verified, in step and within POLICY_MAX_STALENESS_SECONDS "
    "(200 through a database outage until that bound; 503 otherwise).",
    tags=["health"],
    response=Health,
)
def readyz() -> tuple[Response, int]:
    """Ready to decide: the policy is loaded (never loaded here when a server loads it at start:
    ``checks.policy: loading``), passes the verifier, is at most POLICY_READY_MAX_LAG_REVISIONS
    behind the head, (with a listener) read the revision log within
    POLICY_READY_MAX_SYNC_AGE_SECONDS and is not past POLICY_MAX_STALENESS_SECONDS. The database
    is reported (``checks.database``) but does not gate: decisions are answered from memory
    during an outage until the staleness bound. Reports revision, head, lag, staleness, sync mode,
    rebuild. Writes: ``/readyz/writes``.

    With a policy listener (every server) it never waits on the database: the head is the newest
    revision the listener read from the log, ``checks.database`` what the process last found
    (``app.database``: held down after a failure). A frozen database cannot make it slow, so a load
    balancer's check (deploy/haproxy.cfg: 500 ms) never times out on it. Without a listener
    (``POLICY_SYNC=off``, ``flask run`` before its first poll, tests) nothing else learns the
    head, and it is read here, bounded by DATABASE_REQUEST_WAIT_SECONDS."""
    config = current_app.config
    checks: dict[str, str] = {}
    revision = head = None
    try:
        listening = authz.sync_status().get("listener") is not None
    except Exception:  # noqa: BLE001 - reported below; the database is then asked as without a listener
        listening = False
    if listening and authz.following():
        # A follower (app.sidecar) has no database: its upstream (the change feed) stands in for it.
        head = authz.known_head()
        checks["upstream"] = "ok" if (authz.sync_status().get("listener") or {}).get("connected") else "unreachable"
    elif listening:
        head = authz.known_head()
        checks["database"] = "ok" if database.reachable() else "unreachable"
    else:
        try:
            head = policy_store.current_revision(db.session)  # type: ignore[arg-type]  # the scoped session proxies it
            checks["database"] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            log.warning("readiness: database unreachable: %s", exc)
            checks["database"] = "unreachable"
            db.session.rollback()
    if not authz.loaded and authz.loading:
        checks["policy"] = "loading"  # the server's start-up load is under way (its listener retries)
    else:
        try:
            revision = authz.engine.revision  # loads only where no server loads at start (tests)
            checks["policy"] = "loaded"
        except Exception as exc:  # noqa: BLE001
            log.warning("readiness: policy not loaded: %s", exc)
            checks["policy"] = "not loaded"
    refusal = None if checks["policy"] == "loaded" else authz.refusal()
    if refusal is not None:
        checks["policy"] = "refused"  # the database's schema is not at the head: the reason is reported
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
    # A listener behind while the database answers is out of step; during an outage the
    # staleness bound (POLICY_MAX_STALENESS_SECONDS) decides instead.
    answering = "ok" in (checks.get("database"), checks.get("upstream"))
    if listener and max_age > 0 and age is not None and age > max_age and answering:
        checks["sync_age"] = "stale"
    ready = (
        checks.get("policy") == "loaded"
        and checks.get("verification") == "pass"
        and not {"staleness", "lag", "sync_age"} & checks.keys()
    )
    body = Health(status="ready" if ready else "unavailable", checks=checks, revision=revision)
    out = body.model_dump(exclude_none=True)
    out["head"] = head
    out["lag_revisions"] = lag
    if refusal is not None:
        out["reason"] = refusal
    if listener and listener.get("reason"):
        out["sync_reason"] = listener["reason"]
    if status:
        out["sync"] = status
        # Seconds since the engine last read the revision log (decisions go on from memory meanwhile).
        out["staleness_seconds"] = age
        if status.get("rebuild"):
            out["rebuild"] = status["rebuild"]
    source = authz.source() if checks.get("policy") == "loaded" else None
    if source is not None:
        # "database", or "snapshot" (started with the database down) with the snapshot's revision,
        # path, current_at (when its state was read) and age_seconds, until the database answers.
        out["source"] = source.pop("source")
        if out["source"] == "snapshot":
            out["snapshot"] = source
    out["held"] = authz.selection.describe()  # "all", or this replica's partition (POLICY_PARTITION)
    if "staleness_seconds" not in out:
        age_now = authz.staleness()
        out["staleness_seconds"] = round(age_now, 3) if age_now is not None else None
    return jsonify(out), 200 if ready else 503


@bp.get("/readyz/writes")
@api_doc(
    "Ready to accept writes: the database answers (503 with Retry-After otherwise).", tags=["health"], response=Health
)
def readyz_writes() -> tuple[Response, int] | Response:
    """Ready to accept writes: the database answers within DATABASE_REQUEST_WAIT_SECONDS (at once
    while it is held down). Route state-changing traffic and pages on this; decisions on ``/readyz``."""
    try:
        head = policy_store.current_revision(db.session)  # type: ignore[arg-type]  # the scoped session proxies it
    except Exception as exc:  # noqa: BLE001 - any failure means writes cannot be accepted
        log.warning("write readiness: database unreachable: %s", exc)
        db.session.rollback()
        body = Health(status="unavailable", checks={"database": "unreachable"}).model_dump(exclude_none=True)
        resp = jsonify(body)
        g = database.guard()
        resp.headers["Retry-After"] = str(g.retry_after if g is not None else 1)
        return resp, 503
    out = Health(status="ready", checks={"database": "ok"}).model_dump(exclude_none=True)
    out["head"] = head
    return jsonify(out), 200


@bp.get("/metrics")
@api_doc("Prometheus metrics (text exposition).", tags=["health"])
def metrics() -> Response:
    """Prometheus metrics: decisions by result and reason, latency histograms, policy revision."""
    return observability.metrics_response()
