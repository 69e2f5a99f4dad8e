"""What a follower app (``learnauthz sidecar``) serves: decisions, health and metrics; 404 for the rest."""

from __future__ import annotations

from flask import Flask, request

from app.errors import NotFoundError

# Decisions (check, batch, AuthZEN), health and metrics. Nothing writes; nothing needs the database.
ENDPOINTS = frozenset(
    {
        "health.healthz",
        "health.readyz",
        "health.metrics",
        "decision.check",
        "decision.check_batch",
        "authzen.evaluation",
        "authzen.evaluations",
        "authzen.configuration",
    }
)


def restrict(app: Flask) -> None:
    """Answer 404 for every path a follower does not serve (before the view, and before a 405)."""

    def only_decisions() -> None:
        if request.endpoint not in ENDPOINTS:
            raise NotFoundError("not served by a sidecar (decisions, health and metrics only)")

    app.before_request(only_decisions)
