"""Sync and async clients of the decision API (``/v1/...``) and the AuthZEN 1.0 endpoints (``/access/v1/...``).

Both fail closed by default: any error (network, timeout, a 4xx, a 5xx after the retries) is a *deny*
with reason ``client_error`` and the cause in ``error``; ``raise_errors=True`` raises
:class:`LearnAuthzError` instead.

Partitioned tiers: every request naming a workspace carries it in ``X-Authz-Workspace`` (HAProxy routes
by it); with ``partitions=N`` a batch whose checks span partitions is sent as one request per partition
(answers reassembled in order; a group that fails is denied alone), since a replica refuses a batch naming
a workspace it does not hold (421).

Retries (:class:`Retry`): a 503 or a transport error is retried with backoff (``Retry-After`` honoured).
Reads are safe to retry; writes (``write``, after ``sign_in``) carry an ``Idempotency-Key`` that every
retry repeats, and a 409 "still in flight" of that key is retried too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from ._core import (
    IDEMPOTENCY_HEADER,
    RETRYABLE_ERRORS,
    RETRYABLE_STATUS,
    Decision,
    Evaluation,
    LearnAuthzError,
    Permissions,
    Retry,
    Revisions,
    WhoCanPage,
    WriteResult,
    authzen_body,
    check_body,
    decision_of,
    denied,
    evaluation_of,
    headers,
    new_key,
    permissions_of,
    problem_error,
    retry_write,
    timeout_of,
    write_result,
)
from .partitions import WORKSPACE_HEADER, partition_of

log = logging.getLogger("learnauthz_client")
#: What a call may raise on its way to an answer; each is a deny (or LearnAuthzError with raise_errors).
FAILURES = (LearnAuthzError, KeyError, TypeError, ValueError, AttributeError, httpx.HTTPError, httpx.InvalidURL)
USER_AGENT = "learnauthz-client/0.1"


@dataclass(frozen=True)
class _Call:
    """One HTTP call: method, path, JSON body, query parameters, extra headers; ``write``: retried
    with the same Idempotency-Key on 503, transport errors and 409 "still in flight"."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, Any] | None = None
    headers: Mapping[str, str] | None = None
    write: bool = False


def _route(workspace: str | None) -> dict[str, str] | None:
    """The routing header of a request about workspace (HAProxy strips a ``ws:`` prefix itself)."""
    return {WORKSPACE_HEADER: workspace} if workspace else None


def _retry_status(call: _Call, response: httpx.Response) -> bool:
    return retry_write(response) if call.write else response.status_code in RETRYABLE_STATUS


class _Base:
    """Request building and answer parsing shared by :class:`Client` and :class:`AsyncClient`."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        workspace: str | None = None,
        timeout: float | httpx.Timeout = 2.0,
        retry: Retry | None = None,
        raise_errors: bool = False,
        partitions: int | None = None,
    ) -> None:
        if partitions is not None and partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.partitions = partitions  # N of a partitioned tier: batches are split by partition
        self.token = token
        self.workspace = workspace
        self.timeout = timeout_of(timeout)
        self.retry = retry or Retry()
        self.raise_errors = raise_errors
        self.revisions = Revisions()
        self.csrf_token: str | None = None  # set by sign_in: sent as X-CSRFToken on writes

    # -- read-your-writes -------------------------------------------------------------------------
    def observe(self, revision: int | Mapping[str, Any] | None) -> None:
        """Remember a revision a write returned (an int, or the write's JSON body with ``revision``): every
        later read of this client carries it as ``min_revision``."""
        if isinstance(revision, Mapping):
            revision = revision.get("revision")
        self.revisions.observe(revision)

    def _ws(self, workspace: str | None) -> str:
        ws = workspace or self.workspace
        if not ws:
            raise LearnAuthzError("no workspace: pass workspace= or set the client's default")
        return ws

    def _check_call(
        self, body: dict[str, Any], min_revision: int | None, path: str, workspace: str | None
    ) -> _Call:
        floor = self.revisions.floor(min_revision)
        if floor is not None:
            body["min_revision"] = floor
        return _Call("POST", path, json=body, headers=_route(workspace))

    def _call_check(
        self, subject: str | int, action: str, resource: Mapping[str, Any] | None, workspace: str | None,
        min_revision: int | None,
    ) -> _Call:  # fmt: skip
        ws = self._ws(workspace)
        return self._check_call(check_body(subject, ws, action, resource), min_revision, "/v1/check", ws)

    def _calls_batch(
        self, checks: Sequence[Mapping[str, Any]], min_revision: int | None
    ) -> list[tuple[list[int], _Call]]:
        """One call per partition the checks name (one call without ``partitions``), with the
        positions of its checks."""
        groups: dict[int, list[int]] = {}
        items = []
        for i, c in enumerate(checks):
            item = dict(c)
            if "workspace" not in item and self.workspace:
                item["workspace"] = self.workspace
            items.append(item)
            ws = item.get("workspace")
            part = partition_of(ws, self.partitions) if self.partitions and isinstance(ws, str) else 0
            groups.setdefault(part, []).append(i)
        out = []
        for positions in groups.values():
            first = items[positions[0]].get("workspace")
            body = {"checks": [items[i] for i in positions]}
            call = self._check_call(body, min_revision, "/v1/check/batch", first if isinstance(first, str) else None)
            out.append((positions, call))
        return out

    def _params(self, params: dict[str, Any], min_revision: int | None) -> dict[str, Any]:
        floor = self.revisions.floor(min_revision)
        if floor is not None:
            params["min_revision"] = floor
        return {k: v for k, v in params.items() if v is not None}

    def _call_permissions(
        self, subject: str | int, workspace: str | None, min_revision: int | None, any_target: bool = False
    ) -> _Call:
        query: dict[str, Any] = {"subject": subject, "workspace": self._ws(workspace)}
        if any_target:
            query["any_target"] = "true"
        route = _route(query["workspace"])
        return _Call("GET", "/v1/permissions", params=self._params(query, min_revision), headers=route)

    def _call_who_can(
        self, action: str, workspace: str | None, limit: int, cursor: str | None, min_revision: int | None
    ) -> _Call:
        params = {"workspace": self._ws(workspace), "action": action, "limit": limit, "cursor": cursor}
        route = _route(params["workspace"])
        return _Call("GET", "/v1/who-can", params=self._params(params, min_revision), headers=route)

    def _call_evaluation(
        self, subject: Mapping[str, Any] | str, action: Mapping[str, Any] | str, resource: Mapping[str, Any],
        context: Mapping[str, Any] | None, workspace: str | None,
    ) -> _Call:  # fmt: skip
        body = authzen_body(subject, action, resource, context, workspace or self.workspace)
        ws = (body.get("context") or {}).get("workspace")
        return _Call("POST", "/access/v1/evaluation", json=body, headers=_route(ws if isinstance(ws, str) else None))

    def _call_evaluations(
        self, evaluations: Sequence[Mapping[str, Any]], defaults: Mapping[str, Any] | None,
        semantic: str | None, workspace: str | None,
    ) -> _Call:  # fmt: skip
        body: dict[str, Any] = {"evaluations": [dict(e) for e in evaluations]}
        if defaults:
            body.update({k: v for k, v in defaults.items() if k in ("subject", "action", "resource", "context")})
        ws = workspace or self.workspace
        if ws is not None:
            body["context"] = {**body.get("context", {}), "workspace": ws}
        body["options"] = {"reasons": True}  # each item's reason in its context (the service's default: none)
        if semantic:
            body["options"]["evaluations_semantic"] = semantic
        return _Call("POST", "/access/v1/evaluations", json=body, headers=_route(ws))

    # -- writes (the admin API, signed in with a cookie session) --------------------------------------
    def _call_csrf(self) -> _Call:
        return _Call("GET", "/api/auth/csrf")

    def _call_sign_in(self, email: str, password: str, csrf: str) -> _Call:
        body = {"email": email, "password": password}
        return _Call("POST", "/api/auth/signin", json=body, headers={"X-CSRFToken": csrf})

    def _call_write(self, method: str, path: str, json: Any, key: str) -> _Call:
        extra = {IDEMPOTENCY_HEADER: key}
        if self.csrf_token:
            extra["X-CSRFToken"] = self.csrf_token
        return _Call(method.upper(), path, json=json, headers=extra, write=True)

    # -- answers --------------------------------------------------------------------------------
    def _failed(self, exc: Exception) -> str:
        if not isinstance(exc, LearnAuthzError):  # a malformed answer (missing field, wrong type)
            exc = LearnAuthzError(f"unexpected answer: {type(exc).__name__}: {exc}")
        if self.raise_errors:
            raise exc
        log.warning("learnauthz: failing closed: %s", exc)
        return str(exc)

    def _answer(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise problem_error(response)
        try:
            return response.json()
        except ValueError as exc:
            raise LearnAuthzError(f"{response.status_code}: not JSON", status=response.status_code) from exc


class Client(_Base):
    """Synchronous client (one ``httpx.Client``, thread-safe; use as a context manager or call ``close``)."""

    def __init__(self, base_url: str, token: str | None = None, *, http: httpx.Client | None = None, **kw: Any):
        super().__init__(base_url, token, **kw)
        self._http = http or httpx.Client(timeout=self.timeout, trust_env=False)
        self._http.headers.update(headers(token, USER_AGENT))

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def _exchange(self, call: _Call) -> tuple[httpx.Response, int]:
        """The call's final answer and the attempts it took (retries as the module docstring says)."""
        attempt = 0
        while True:
            attempt += 1
            response: httpx.Response | None = None
            try:
                response = self._http.request(
                    call.method, self.base_url + call.path, json=call.json, params=call.params,
                    headers=call.headers, timeout=self.timeout,
                )  # fmt: skip
            except RETRYABLE_ERRORS as exc:
                wait = self.retry.delay(attempt, None)
                if wait is None:
                    raise LearnAuthzError(f"{type(exc).__name__}: {exc}") from exc
                time.sleep(wait)
                continue
            if _retry_status(call, response):
                wait = self.retry.delay(attempt, response)
                if wait is not None:
                    time.sleep(wait)
                    continue
            return response, attempt

    def _send(self, call: _Call) -> Any:
        return self._answer(self._exchange(call)[0])

    def sign_in(self, email: str, password: str) -> None:
        """Sign in to the admin API (cookie session and CSRF token kept by this client) for :meth:`write`."""
        csrf = self._send(self._call_csrf())["csrf_token"]
        self.csrf_token = self._send(self._call_sign_in(email, password, csrf))["csrf_token"]

    def write(self, method: str, path: str, json: Any = None, *, idempotency_key: str | None = None) -> WriteResult:
        """A write of the admin API (``POST /api/workspaces/<slug>/groups``, ``PATCH .../members/<id>``, ...)
        with an ``Idempotency-Key`` (a new random one unless given): a 503, a transport error or a 409
        "still in flight" is retried with the same key, so the write is applied at most once. Raises
        LearnAuthzError for a refusal; see :class:`WriteResult` for a write applied without its answer."""
        key = idempotency_key or new_key()
        response, attempts = self._exchange(self._call_write(method, path, json, key))
        return write_result(response, key, attempts)

    def check(
        self, subject: str | int, action: str, resource: Mapping[str, Any] | None = None, *,
        workspace: str | None = None, min_revision: int | None = None,
    ) -> Decision:  # fmt: skip
        """May ``subject`` do ``action`` (on ``resource``: ``{type, id, attributes}``) in the workspace?"""
        try:
            return decision_of(self._send(self._call_check(subject, action, resource, workspace, min_revision)))
        except FAILURES as exc:
            return denied(self._failed(exc))

    def batch(self, checks: Sequence[Mapping[str, Any]], *, min_revision: int | None = None) -> list[Decision]:
        """Many checks (dicts with subject, action, resource?, workspace?) in one request (one per partition
        with ``partitions``), answered in order; on failure every check of the failed request is denied."""
        out: list[Decision] = [denied("not asked")] * len(checks)
        for positions, call in self._calls_batch(checks, min_revision):
            try:
                results = self._send(call)["results"]
                decided = [decision_of(r) for r in results]
                if len(decided) != len(positions):
                    raise LearnAuthzError(f"{len(decided)} results for {len(positions)} checks")
            except FAILURES as exc:
                decided = [denied(self._failed(exc))] * len(positions)
            for i, d in zip(positions, decided):
                out[i] = d
        return out

    def permissions(
        self, subject: str | int, *, workspace: str | None = None, min_revision: int | None = None,
        any_target: bool = False,
    ) -> Permissions:  # fmt: skip
        """Every action of the workspace's pack decided for ``subject``; on failure nothing is allowed.

        Actions on a member (rank-scoped) need a target: without one they are denied
        (``target_required``); ``any_target=True`` asks "may they do it to anyone at all?" (for UIs).
        """
        try:
            call = self._call_permissions(subject, workspace, min_revision, any_target)
            return permissions_of(self._send(call))
        except FAILURES as exc:
            return Permissions(frozenset(), {}, error=self._failed(exc))

    def who_can(
        self, action: str, *, workspace: str | None = None, limit: int = 100, cursor: str | None = None,
        min_revision: int | None = None,
    ) -> WhoCanPage:  # fmt: skip
        """One page of the people allowed ``action``; on failure an empty, incomplete page."""
        try:
            body = self._send(self._call_who_can(action, workspace, limit, cursor, min_revision))
        except FAILURES as exc:
            return WhoCanPage([], None, False, error=self._failed(exc))
        self.revisions.observe(body.get("revision"))  # later pages at least as fresh as this one
        return WhoCanPage(body["items"], body.get("next_cursor"), body.get("complete") is True, body.get("revision"))

    def who_can_all(
        self, action: str, *, workspace: str | None = None, limit: int = 100
    ) -> Iterator[Mapping[str, Any]]:
        """Every person allowed ``action``, page after page; raises LearnAuthzError if a page fails (an
        iterator that stopped early would look like a complete answer)."""
        cursor: str | None = None
        while True:
            page = self.who_can(action, workspace=workspace, limit=limit, cursor=cursor)
            if page.error is not None:
                raise LearnAuthzError(page.error)
            yield from page.items
            if page.complete or page.next_cursor is None:
                return
            cursor = page.next_cursor

    def evaluation(
        self, subject: Mapping[str, Any] | str, action: Mapping[str, Any] | str, resource: Mapping[str, Any], *,
        context: Mapping[str, Any] | None = None, workspace: str | None = None,
    ) -> Evaluation:  # fmt: skip
        """AuthZEN ``POST /access/v1/evaluation``."""
        try:
            return evaluation_of(self._send(self._call_evaluation(subject, action, resource, context, workspace)))
        except FAILURES as exc:
            return Evaluation(False, error=self._failed(exc))

    def evaluations(
        self, evaluations: Sequence[Mapping[str, Any]], *, defaults: Mapping[str, Any] | None = None,
        semantic: str | None = None, workspace: str | None = None,
    ) -> list[Evaluation]:  # fmt: skip
        """AuthZEN ``POST /access/v1/evaluations`` (``defaults``: subject/action/resource/context merged into
        each item; ``semantic``: ``execute_all``, ``deny_on_first_deny``, ``permit_on_first_permit``). The
        list may be shorter than ``evaluations`` under the short-circuit semantics, as the spec says."""
        try:
            body = self._send(self._call_evaluations(evaluations, defaults, semantic, workspace))
            return [evaluation_of(e) for e in body["evaluations"]]
        except FAILURES as exc:
            error = self._failed(exc)
            return [Evaluation(False, error=error) for _ in evaluations]


class AsyncClient(_Base):
    """Asynchronous client (one ``httpx.AsyncClient``; ``async with`` or ``await aclose()``)."""

    def __init__(
        self, base_url: str, token: str | None = None, *, http: httpx.AsyncClient | None = None, **kw: Any
    ) -> None:
        super().__init__(base_url, token, **kw)
        self._http = http or httpx.AsyncClient(timeout=self.timeout, trust_env=False)
        self._http.headers.update(headers(token, USER_AGENT))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def _exchange(self, call: _Call) -> tuple[httpx.Response, int]:
        """The call's final answer and the attempts it took; see :meth:`Client._exchange`."""
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(
                    call.method, self.base_url + call.path, json=call.json, params=call.params,
                    headers=call.headers, timeout=self.timeout,
                )  # fmt: skip
            except RETRYABLE_ERRORS as exc:
                wait = self.retry.delay(attempt, None)
                if wait is None:
                    raise LearnAuthzError(f"{type(exc).__name__}: {exc}") from exc
                await asyncio.sleep(wait)
                continue
            if _retry_status(call, response):
                wait = self.retry.delay(attempt, response)
                if wait is not None:
                    await asyncio.sleep(wait)
                    continue
            return response, attempt

    async def _send(self, call: _Call) -> Any:
        return self._answer((await self._exchange(call))[0])

    async def sign_in(self, email: str, password: str) -> None:
        """Sign in to the admin API; see :meth:`Client.sign_in`."""
        csrf = (await self._send(self._call_csrf()))["csrf_token"]
        self.csrf_token = (await self._send(self._call_sign_in(email, password, csrf)))["csrf_token"]

    async def write(
        self, method: str, path: str, json: Any = None, *, idempotency_key: str | None = None
    ) -> WriteResult:
        """A write with an ``Idempotency-Key``, retried safely; see :meth:`Client.write`."""
        key = idempotency_key or new_key()
        response, attempts = await self._exchange(self._call_write(method, path, json, key))
        return write_result(response, key, attempts)

    async def check(
        self, subject: str | int, action: str, resource: Mapping[str, Any] | None = None, *,
        workspace: str | None = None, min_revision: int | None = None,
    ) -> Decision:  # fmt: skip
        """May ``subject`` do ``action`` (on ``resource``) in the workspace? See :meth:`Client.check`."""
        try:
            return decision_of(await self._send(self._call_check(subject, action, resource, workspace, min_revision)))
        except FAILURES as exc:
            return denied(self._failed(exc))

    async def batch(self, checks: Sequence[Mapping[str, Any]], *, min_revision: int | None = None) -> list[Decision]:
        """Many checks in one request (one per partition, concurrently, with ``partitions``), answered in
        order; on failure every check of the failed request is denied. See :meth:`Client.batch`."""

        async def one(call: _Call, count: int) -> list[Decision]:
            try:
                decided = [decision_of(r) for r in (await self._send(call))["results"]]
                if len(decided) != count:
                    raise LearnAuthzError(f"{len(decided)} results for {count} checks")
                return decided
            except FAILURES as exc:
                return [denied(self._failed(exc))] * count

        calls = self._calls_batch(checks, min_revision)
        answers = await asyncio.gather(*(one(call, len(positions)) for positions, call in calls))
        out: list[Decision] = [denied("not asked")] * len(checks)
        for (positions, _), decided in zip(calls, answers):
            for i, d in zip(positions, decided):
                out[i] = d
        return out

    async def permissions(
        self, subject: str | int, *, workspace: str | None = None, min_revision: int | None = None,
        any_target: bool = False,
    ) -> Permissions:  # fmt: skip
        """Every action of the workspace's pack decided for ``subject`` (``any_target``: as the sync
        client); on failure nothing is allowed."""
        try:
            call = self._call_permissions(subject, workspace, min_revision, any_target)
            return permissions_of(await self._send(call))
        except FAILURES as exc:
            return Permissions(frozenset(), {}, error=self._failed(exc))

    async def who_can(
        self, action: str, *, workspace: str | None = None, limit: int = 100, cursor: str | None = None,
        min_revision: int | None = None,
    ) -> WhoCanPage:  # fmt: skip
        """One page of the people allowed ``action``; on failure an empty, incomplete page."""
        try:
            body = await self._send(self._call_who_can(action, workspace, limit, cursor, min_revision))
        except FAILURES as exc:
            return WhoCanPage([], None, False, error=self._failed(exc))
        self.revisions.observe(body.get("revision"))
        return WhoCanPage(body["items"], body.get("next_cursor"), body.get("complete") is True, body.get("revision"))

    async def who_can_all(
        self, action: str, *, workspace: str | None = None, limit: int = 100
    ) -> AsyncIterator[Mapping[str, Any]]:
        """Every person allowed ``action``, page after page; raises LearnAuthzError if a page fails."""
        cursor: str | None = None
        while True:
            page = await self.who_can(action, workspace=workspace, limit=limit, cursor=cursor)
            if page.error is not None:
                raise LearnAuthzError(page.error)
            for item in page.items:
                yield item
            if page.complete or page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def evaluation(
        self, subject: Mapping[str, Any] | str, action: Mapping[str, Any] | str, resource: Mapping[str, Any], *,
        context: Mapping[str, Any] | None = None, workspace: str | None = None,
    ) -> Evaluation:  # fmt: skip
        """AuthZEN ``POST /access/v1/evaluation``."""
        try:
            body = await self._send(self._call_evaluation(subject, action, resource, context, workspace))
            return evaluation_of(body)
        except FAILURES as exc:
            return Evaluation(False, error=self._failed(exc))

    async def evaluations(
        self, evaluations: Sequence[Mapping[str, Any]], *, defaults: Mapping[str, Any] | None = None,
        semantic: str | None = None, workspace: str | None = None,
    ) -> list[Evaluation]:  # fmt: skip
        """AuthZEN ``POST /access/v1/evaluations``; see :meth:`Client.evaluations`."""
        try:
            body = await self._send(self._call_evaluations(evaluations, defaults, semantic, workspace))
            return [evaluation_of(e) for e in body["evaluations"]]
        except FAILURES as exc:
            error = self._failed(exc)
            return [Evaluation(False, error=error) for _ in evaluations]
