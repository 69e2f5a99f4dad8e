"""Our exceptions and their RFC 9457 ``application/problem+json`` responses."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, json, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger("app.errors")

PROBLEM = "application/problem+json"


class AppError(Exception):
    """Base of every error we raise on purpose; maps to a problem response."""

    status = 400
    title = "Bad request"
    slug = "bad-request"

    def __init__(self, detail: str = "", *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra
        self.headers = dict(headers or {})


class BadRequestError(AppError):
    """Malformed request (not JSON, wrong shape)."""


class ValidationError(AppError):
    """Well-formed but invalid input; ``errors`` lists each problem."""

    status = 422
    title = "Validation failed"
    slug = "validation-failed"


class UnauthenticatedError(AppError):
    """No valid session or token."""

    status = 401
    title = "Authentication required"
    slug = "unauthenticated"


class ForbiddenError(AppError):
    """Casbin denied; the response never says which rule or whether the target exists."""

    status = 403
    title = "Forbidden"
    slug = "forbidden"


class NotFoundError(AppError):
    """The resource does not exist (or is not visible to the caller)."""

    status = 404
    title = "Not found"
    slug = "not-found"


class ConflictError(AppError):
    """The request breaks an invariant (last owner, duplicate, group in use, stale revision)."""

    status = 409
    title = "Conflict"
    slug = "conflict"


class GoneError(AppError):
    """A used, revoked or expired single-use token."""

    status = 410
    title = "Gone"
    slug = "gone"


class PayloadTooLargeError(AppError):
    """Too many items in one request."""

    status = 413
    title = "Payload too large"
    slug = "payload-too-large"


class UnsupportedMediaTypeError(AppError):
    """The body is not JSON."""

    status = 415
    title = "Unsupported media type"
    slug = "unsupported-media-type"


class UnavailableError(AppError):
    """Not ready, or could not reach the requested policy revision in time."""

    status = 503
    title = "Service unavailable"
    slug = "unavailable"


class WorkspaceNotHeldError(AppError):
    """A decision about a workspace this process's partition does not hold (``POLICY_PARTITION``):
    the caller (or HAProxy) sent it to the wrong replica; nothing was decided."""

    status = 421
    title = "Misdirected request"
    slug = "workspace-not-held"


def problem(status: int, title: str, detail: str = "", slug: str = "", **extra: Any) -> Response:
    """Build an RFC 9457 problem response."""
    body: dict[str, Any] = {
        "type": f"https://learnauthz.dev/problems/{slug or 'error'}",
        "title": title,
        "status": status,
        "detail": detail or title,
        "instance": request.path if request else None,
    }
    body.update(extra)
    resp = Response(json.dumps(body), status=status, mimetype=PROBLEM)
    return resp


def register_error_handlers(app: Flask) -> None:
    """Map AppError, HTTP errors and anything unexpected to problem responses."""

    @app.errorhandler(AppError)
    def _app_error(exc: AppError) -> Response:
        resp = problem(exc.status, exc.title, exc.detail, exc.slug, **exc.extra)
        for name, value in getattr(exc, "headers", {}).items():
            resp.headers[name] = value
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        name = exc.name or "Error"
        resp = problem(code, name, exc.description or name, name.lower().replace(" ", "-"))
        if code == 405 and exc.get_response().headers.get("Allow"):
            resp.headers["Allow"] = exc.get_response().headers["Allow"]
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if current_app.testing and current_app.config.get("PROPAGATE_UNEXPECTED", True):
            raise exc
        log.exception("unhandled error on %s %s", request.method, request.path)
        return problem(500, "Internal server error", "An unexpected error occurred.", "internal")


class CSRFFailedError(AppError):
    """A cookie-authenticated change without a valid CSRF token (header ``X-CSRFToken``)."""

    status = 400
    title = "CSRF token missing or invalid"
    slug = "csrf-failed"
