"""Metrics (Prometheus, one registry per app), request ids, and the structured decision log.

Everything lives in ``app.extensions["observability"]``; nothing is global, so two apps in one
process (tests) never share counters. :func:`init_app` is idempotent.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
import random
import re
import time
from collections import Counter as TallyCounter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, current_app, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

decision_log = logging.getLogger("app.decisions")

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_ENV_ID = "learnauthz.request_id"
_ENV_STARTED = "learnauthz.request_started"
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


@dataclass
class Observability:
    """The per-app metrics registry and its instruments."""

    registry: CollectorRegistry
    decisions: Counter
    decision_seconds: Histogram
    request_seconds: Histogram
    revision: Gauge
    policy_edits: Counter
    # Labelled children by label values: ``labels()`` costs ~1.5 µs a call, as much as a decision.
    children: dict[tuple[str, ...], Any] = field(default_factory=dict, repr=False)

    def child(self, metric: Counter | Histogram, *values: str) -> Any:
        """metric's child for these label values (looked up once)."""
        key = (str(id(metric)), *values)
        got = self.children.get(key)
        if got is None:
            got = self.children[key] = metric.labels(*values)
        return got


def init_app(app: Flask) -> Observability:
    """Create the app's registry and instruments, and the request-id hooks (once per app)."""
    existing = app.extensions.get("observability")
    if isinstance(existing, Observability):
        return existing
    app.config.setdefault("DECISION_LOG_SAMPLE", 0.0)
    registry = CollectorRegistry(auto_describe=True)
    obs = Observability(
        registry=registry,
        decisions=Counter(
            "authz_decisions", "Decisions answered, by result and reason.", ["result", "reason"], registry=registry
        ),
        decision_seconds=Histogram(
            "authz_decision_seconds",
            "Time to decide one check (resolution + engine), in seconds.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        request_seconds=Histogram(
            "authz_http_request_seconds",
            "HTTP request latency of the API, in seconds.",
            ["endpoint", "status"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        revision=Gauge("authz_policy_revision", "Policy revision of this process's engine.", registry=registry),
        policy_edits=Counter("authz_policy_edits", "Policy edits applied, by kind.", ["kind"], registry=registry),
    )
    app.extensions["observability"] = obs
    app.before_request(_start_request)
    app.after_request(_finish_request)
    return obs


def get() -> Observability:
    """The current app's instruments (initialising them if needed)."""
    return init_app(current_app._get_current_object())  # type: ignore[attr-defined]


def request_id() -> str:
    """The current request's id: the caller's X-Request-ID if safe, else a generated one."""
    return request_id_of(request.environ)


def request_id_of(environ: dict[str, Any]) -> str:
    """The id of the request with this WSGI environ (kept there, decided once)."""
    # Kept in the WSGI environ, not in flask.g: g belongs to the app context, which can outlive
    # one request (tests, CLI) and would leak an id into the next request.
    rid = environ.get(_ENV_ID)
    if rid is None:
        raw = environ.get("HTTP_X_REQUEST_ID", "")
        rid = raw if _REQUEST_ID.fullmatch(raw) else os.urandom(16).hex()  # as uuid4().hex, a third of the cost
        environ[_ENV_ID] = rid
    return str(rid)


def _start_request() -> None:
    request.environ[_ENV_STARTED] = time.perf_counter()
    request_id()


def _finish_request(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = request_id()
    started = request.environ.get(_ENV_STARTED)
    endpoint = request.endpoint or "unmatched"
    if started is not None and endpoint.startswith(("decision.", "policy.")):
        obs = get()
        obs.child(obs.request_seconds, endpoint, str(response.status_code)).observe(time.perf_counter() - started)
    return response


def record_decisions(outcomes: Iterable[tuple[bool, str]]) -> None:
    """Count decisions by result and reason (aggregated, one increment per label pair)."""
    tally = TallyCounter(("allow" if allowed else "deny", reason) for allowed, reason in outcomes)
    obs = get()
    for (result, reason), n in tally.items():
        obs.child(obs.decisions, result, reason).inc(n)


def observe_decision_time(endpoint: str, seconds: float, n: int = 1) -> None:
    """Record per-decision latency; a batch records its mean once per item."""
    obs = get()
    hist = obs.child(obs.decision_seconds, endpoint)
    per = seconds / max(n, 1)
    if n > 1 and _observe_many(hist, per, n):
        return
    for _ in range(n):
        hist.observe(per)


def _observe_many(hist: Any, amount: float, n: int) -> bool:
    """n observations of amount in two increments (what n ``observe`` calls would record).

    A batch of 1,000 would otherwise take 1,000 locked increments. Uses prometheus_client's
    histogram internals (``_upper_bounds``, ``_buckets``, ``_sum``); False if they are not there.
    """
    bounds = getattr(hist, "_upper_bounds", None)
    buckets = getattr(hist, "_buckets", None)
    total = getattr(hist, "_sum", None)
    if bounds is None or buckets is None or total is None or len(buckets) != len(bounds):
        return False
    i = bisect.bisect_left(bounds, amount)  # observe() counts the first bucket with amount <= bound
    if i >= len(buckets):
        return False
    total.inc(amount * n)
    buckets[i].inc(n)
    return True


def log_decisions(entries: Iterable[Mapping[str, Any]]) -> int:
    """Write sampled decisions as one JSON line each; returns how many were written."""
    rate = float(current_app.config.get("DECISION_LOG_SAMPLE", 0.0) or 0.0)
    if rate <= 0.0 or not decision_log.isEnabledFor(logging.INFO):
        return 0
    rid = request_id()
    written = 0
    for entry in entries:
        if rate < 1.0 and random.random() >= rate:  # noqa: S311 - sampling, not security
            continue
        line = {"event": "decision", "request_id": rid, "ts": round(time.time(), 6), **entry}
        decision_log.info(json.dumps(line, separators=(",", ":"), sort_keys=True, default=str))
        written += 1
    return written


def metrics_response() -> Response:
    """The Prometheus text exposition of this app's registry."""
    obs = get()
    authz = current_app.extensions.get("authz")
    if authz is not None and getattr(authz, "loaded", False):
        obs.revision.set(authz.engine.revision)
    return Response(generate_latest(obs.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
