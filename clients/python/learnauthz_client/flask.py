"""Flask extension for a service's own views: ``@authz.require(action, resource=...)``.

Config (``setdefault`` on ``init_app``): ``LEARNAUTHZ_URL`` and ``LEARNAUTHZ_TOKEN`` (required),
``LEARNAUTHZ_WORKSPACE`` (default workspace), ``LEARNAUTHZ_TIMEOUT`` (seconds, 2.0),
``LEARNAUTHZ_RAISE_ERRORS`` (False: fail closed, an unreachable service is a 403), and the retries
(:class:`~learnauthz_client.Retry`): ``LEARNAUTHZ_RETRY_ATTEMPTS`` (3, attempts in all; 1 = no retry),
``LEARNAUTHZ_RETRY_BACKOFF`` (0.1 s), ``LEARNAUTHZ_RETRY_MAX_BACKOFF`` (2.0 s),
``LEARNAUTHZ_RETRY_MAX_AFTER`` (5.0 s: a longer ``Retry-After`` is not waited for).
The subject of every check comes from the function registered with :meth:`LearnAuthz.subject_loader`.
``require`` works on plain and ``async def`` views (Flask's async views need ``flask[async]``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from flask import Flask, abort, current_app, g

from ._core import Decision, Retry
from .client import Client

F = TypeVar("F", bound=Callable[..., Any])
#: A resource (or workspace) given as a value, or as a function of the view's keyword arguments.
Resource = Mapping[str, Any] | Callable[..., Mapping[str, Any] | None] | None
Workspace = str | Callable[..., str] | None

EXTENSION = "learnauthz"


class LearnAuthz:
    """The extension: one :class:`Client` per app in ``app.extensions["learnauthz"]``."""

    def __init__(self, app: Flask | None = None) -> None:
        self._subject: Callable[[], str | int | None] | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the config (URL and token required) and create the app's client."""
        app.config.setdefault("LEARNAUTHZ_URL", None)
        app.config.setdefault("LEARNAUTHZ_TOKEN", None)
        app.config.setdefault("LEARNAUTHZ_WORKSPACE", None)
        app.config.setdefault("LEARNAUTHZ_TIMEOUT", 2.0)
        app.config.setdefault("LEARNAUTHZ_RAISE_ERRORS", False)
        default = Retry()
        app.config.setdefault("LEARNAUTHZ_RETRY_ATTEMPTS", default.attempts)
        app.config.setdefault("LEARNAUTHZ_RETRY_BACKOFF", default.backoff)
        app.config.setdefault("LEARNAUTHZ_RETRY_MAX_BACKOFF", default.max_backoff)
        app.config.setdefault("LEARNAUTHZ_RETRY_MAX_AFTER", default.max_retry_after)
        for key in ("LEARNAUTHZ_URL", "LEARNAUTHZ_TOKEN"):
            if not app.config[key]:
                raise RuntimeError(f"{key} must be set to use LearnAuthz")
        app.extensions[EXTENSION] = Client(
            app.config["LEARNAUTHZ_URL"],
            app.config["LEARNAUTHZ_TOKEN"],
            workspace=app.config["LEARNAUTHZ_WORKSPACE"],
            timeout=float(app.config["LEARNAUTHZ_TIMEOUT"]),
            raise_errors=bool(app.config["LEARNAUTHZ_RAISE_ERRORS"]),
            retry=Retry(
                attempts=max(1, int(app.config["LEARNAUTHZ_RETRY_ATTEMPTS"])),
                backoff=float(app.config["LEARNAUTHZ_RETRY_BACKOFF"]),
                max_backoff=float(app.config["LEARNAUTHZ_RETRY_MAX_BACKOFF"]),
                max_retry_after=float(app.config["LEARNAUTHZ_RETRY_MAX_AFTER"]),
            ),
        )

    @property
    def client(self) -> Client:
        """The current app's client (for checks a decorator cannot express, and ``observe``)."""
        client: Client = current_app.extensions[EXTENSION]
        return client

    def subject_loader(self, fn: Callable[[], str | int | None]) -> Callable[[], str | int | None]:
        """Register the function that names the acting user (id, email or external id; None: nobody)."""
        self._subject = fn
        return fn

    def check(
        self, action: str, resource: Mapping[str, Any] | None = None, *, workspace: str | None = None
    ) -> Decision:
        """Decide ``action`` for the current subject (no subject: denied ``no_subject``)."""
        subject = self._subject() if self._subject is not None else None
        if subject is None or subject == "":
            return Decision(False, "no_subject")
        return self.client.check(subject, action, resource, workspace=workspace)

    def require(self, action: str, resource: Resource = None, *, workspace: Workspace = None) -> Callable[[F], F]:
        """Decorator: the view runs only if the service allows ``action``; otherwise ``abort(403)``.
        ``resource`` and ``workspace`` may be functions of the view's keyword arguments. The decision is
        in ``g.learnauthz_decision`` (for the view, or an errorhandler that wants the reason)."""

        def allow(kwargs: dict[str, Any]) -> None:
            res = resource(**kwargs) if callable(resource) else resource
            ws = workspace(**kwargs) if callable(workspace) else workspace
            decision = self.check(action, res, workspace=ws)
            g.learnauthz_decision = decision
            if not decision.allowed:
                abort(403)

        def decorate(view: F) -> F:
            if inspect.iscoroutinefunction(view):

                @functools.wraps(view)
                async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                    allow(kwargs)
                    return await view(*args, **kwargs)

                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(view)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                allow(kwargs)
                return view(*args, **kwargs)

            return wrapper  # type: ignore[return-value]

        return decorate
