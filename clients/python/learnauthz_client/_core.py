"""What the sync and async clients share: results, errors, request shapes, the retry schedule, the
read-your-writes high-water mark. No I/O here."""

from __future__ import annotations

import email.utils
import random
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

#: The reason a fail-closed client gives when it could not get an answer (the service never says it).
CLIENT_ERROR = "client_error"


class LearnAuthzError(Exception):
    """The service could not answer (network, timeout, 5xx after the retries) or refused the request (4xx)."""

    def __init__(self, message: str, *, status: int | None = None, problem: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.problem = dict(problem or {})


@dataclass(frozen=True)
class Decision:
    """One answer: ``allowed``, the service's stable ``reason`` code and the policy ``revision``.

    ``error`` is set (and ``allowed`` is False, ``reason`` ``client_error``) when a fail-closed client got no
    answer. ``bool(decision)`` is ``allowed``."""

    allowed: bool
    reason: str
    revision: int | None = None
    error: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __bool__(self) -> bool:
        return self.allowed


@dataclass(frozen=True)
class Permissions:
    """Every action of the workspace's pack decided for one subject; ``allowed`` lists the granted ones."""

    allowed: frozenset[str]
    decisions: Mapping[str, Decision]
    revision: int | None = None
    reason: str | None = None
    error: str | None = None

    def __contains__(self, action: object) -> bool:
        return action in self.allowed


@dataclass(frozen=True)
class WhoCanPage:
    """One page of ``who-can``: people (dicts as the service sends them), the cursor to the next page, and
    ``complete`` (True only when nobody is left to examine). A failed call is an empty, incomplete page."""

    items: Sequence[Mapping[str, Any]]
    next_cursor: str | None
    complete: bool
    revision: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Evaluation:
    """An AuthZEN decision and its ``context`` (our reason code and revision are in it)."""

    decision: bool
    context: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None

    def __bool__(self) -> bool:
        return self.decision


@dataclass(frozen=True)
class Retry:
    """Retries of 503 answers and transport failures (connect errors, timeouts): ``attempts`` in all,
    exponential backoff from ``backoff`` seconds (×2 each time, ±25 % jitter, at most ``max_backoff``).
    A ``Retry-After`` header (seconds or an HTTP date) replaces the backoff; one longer than
    ``max_retry_after`` is not waited for (the call fails at once)."""

    attempts: int = 3
    backoff: float = 0.1
    max_backoff: float = 2.0
    max_retry_after: float = 5.0

    def delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before retry number ``attempt`` (1-based), or None to stop retrying."""
        if attempt >= self.attempts:
            return None
        if response is not None:
            after = retry_after(response.headers.get("Retry-After"))
            if after is not None:
                return float(after) if after <= self.max_retry_after else None
        base = min(self.max_backoff, self.backoff * float(2 ** (attempt - 1)))
        return base * random.uniform(0.75, 1.25)


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


RETRYABLE_STATUS = frozenset({503})
#: Problem types of a write that is retried with the same key: the first attempt is still running.
RETRYABLE_WRITE_PROBLEMS = ("/idempotency-in-flight",)
#: The problem type of a write applied earlier whose answer the service could not record.
APPLIED_PROBLEM = "/idempotency-applied"
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"


@dataclass(frozen=True)
class WriteResult:
    """The answer to a write sent with an ``Idempotency-Key``: ``status`` and ``body`` (JSON, or None
    for an empty answer), the ``key`` it was sent with, ``replayed`` (the service answered a repeat of
    that key with the first outcome) and ``attempts`` (1 + retries).

    ``outcome_lost`` is True when the service says the write was applied earlier but its answer could
    not be recorded (409 ``idempotency-applied``): it was applied exactly once; read the resource."""

    status: int
    body: Any
    key: str
    replayed: bool = False
    attempts: int = 1

    @property
    def outcome_lost(self) -> bool:
        return self.status == 409 and str((self.body or {}).get("type", "")).endswith(APPLIED_PROBLEM)


def new_key() -> str:
    """A fresh idempotency key (a random UUID)."""
    return str(uuid.uuid4())


def problem_type(response: httpx.Response) -> str:
    """The ``type`` of a problem+json answer ("" when there is none)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("type", "")) if isinstance(body, dict) else ""


def retry_write(response: httpx.Response) -> bool:
    """Whether a write's answer is retried with the same key: 503, or 409 "still in flight"."""
    if response.status_code in RETRYABLE_STATUS:
        return True
    return response.status_code == 409 and problem_type(response).endswith(RETRYABLE_WRITE_PROBLEMS)


def write_result(response: httpx.Response, key: str, attempts: int) -> WriteResult:
    """A WriteResult from a write's final answer; LearnAuthzError for a refusal (4xx, 5xx)."""
    replayed = response.headers.get(REPLAYED_HEADER, "").lower() == "true"
    if response.status_code >= 400:
        if response.status_code == 409 and problem_type(response).endswith(APPLIED_PROBLEM):
            return WriteResult(409, response.json(), key, True, attempts)
        raise problem_error(response)
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = response.text
    return WriteResult(response.status_code, body, key, replayed, attempts)
RETRYABLE_ERRORS: tuple[type[Exception], ...] = (httpx.TransportError,)


class Revisions:
    """The highest policy revision this client has been told about (``observe``): every read carries it
    as ``min_revision``, so a decision after a write sees that write, in any process of the service."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: int | None = None

    @property
    def seen(self) -> int | None:
        return self._seen

    def observe(self, revision: int | None) -> None:
        if revision is None:
            return
        with self._lock:
            if self._seen is None or revision > self._seen:
                self._seen = int(revision)

    def floor(self, explicit: int | None) -> int | None:
        """The ``min_revision`` to send: the larger of an explicit one and the observed one."""
        seen = self._seen
        if explicit is None:
            return seen
        return explicit if seen is None else max(explicit, seen)


def check_body(
    subject: str | int,
    workspace: str,
    action: str,
    resource: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One check as the decision API takes it."""
    body: dict[str, Any] = {"subject": subject, "workspace": workspace, "action": action}
    if resource is not None:
        body["resource"] = dict(resource)
    return body


def decision_of(item: Mapping[str, Any]) -> Decision:
    """A Decision from one result object of /v1/check or /v1/check/batch."""
    return Decision(
        allowed=item.get("allowed") is True,
        reason=str(item.get("reason", "")),
        revision=item.get("revision"),
        raw=item,
    )


def denied(error: str) -> Decision:
    """The fail-closed answer."""
    return Decision(False, CLIENT_ERROR, None, error)


def permissions_of(body: Mapping[str, Any]) -> Permissions:
    """Permissions from the body of /v1/permissions."""
    decisions = {a: decision_of(d) for a, d in (body.get("decisions") or {}).items()}
    return Permissions(
        allowed=frozenset(a for a, d in decisions.items() if d.allowed),
        decisions=decisions,
        revision=body.get("revision"),
        reason=body.get("reason"),
    )


def evaluation_of(item: Mapping[str, Any]) -> Evaluation:
    """An Evaluation from one AuthZEN decision object."""
    return Evaluation(decision=item.get("decision") is True, context=item.get("context") or {})


def authzen_body(
    subject: Mapping[str, Any] | str,
    action: Mapping[str, Any] | str,
    resource: Mapping[str, Any],
    context: Mapping[str, Any] | None,
    workspace: str | None,
) -> dict[str, Any]:
    """An AuthZEN evaluation request; a plain string subject is ``{"type": "user", "id": ...}``, a string
    action ``{"name": ...}``; ``workspace`` goes into ``context.workspace``."""
    body: dict[str, Any] = {
        "subject": {"type": "user", "id": subject} if isinstance(subject, str) else dict(subject),
        "action": {"name": action} if isinstance(action, str) else dict(action),
        "resource": dict(resource),
    }
    ctx = dict(context or {})
    if workspace is not None:
        ctx.setdefault("workspace", workspace)
    if ctx:
        body["context"] = ctx
    return body


def problem_error(response: httpx.Response) -> LearnAuthzError:
    """A LearnAuthzError from a non-2xx answer (its problem+json body when there is one)."""
    try:
        problem = response.json()
    except ValueError:
        problem = {}
    if not isinstance(problem, dict):
        problem = {}
    detail = problem.get("detail") or problem.get("title") or response.reason_phrase
    return LearnAuthzError(f"{response.status_code} {detail}", status=response.status_code, problem=problem)


def headers(token: str | None, user_agent: str) -> dict[str, str]:
    """Default headers: the Bearer token and our user agent."""
    out = {"User-Agent": user_agent, "Accept": "application/json"}
    if token:
        out["Authorization"] = f"Bearer {token}"
    return out


def timeout_of(timeout: float | httpx.Timeout) -> httpx.Timeout:
    """A float is the whole budget per attempt, with a shorter connect timeout."""
    if isinstance(timeout, httpx.Timeout):
        return timeout
    return httpx.Timeout(timeout, connect=min(timeout, 1.0))
