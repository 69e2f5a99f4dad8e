"""The client package's partition routing: its slot and jump hash agree with the service's on many slugs,
every request naming a workspace carries ``X-Authz-Workspace``, and with ``partitions=N`` a batch spanning
partitions goes out as one request per partition, answered in order (a failed group alone denied)."""

from __future__ import annotations

import asyncio
import json
import random
import string
from typing import Any

import httpx
from learnauthz_client import AsyncClient, Client
from learnauthz_client import partitions as client_partitions

from app.authz import selection


def test_the_client_computes_partitions_as_the_service() -> None:
    rnd = random.Random(27)
    alphabet = string.ascii_lowercase + string.digits + "-_.é"
    slugs = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 40))) for _ in range(5000)]
    for slug in slugs + ["acme", "ws:acme", "service"]:
        assert client_partitions.slot_of(slug) == selection.slot_of(slug)
        for n in (1, 2, 3, 4, 7, 16):
            assert client_partitions.partition_of(slug, n) == selection.partition_of(slug, n)


def _server(seen: list[httpx.Request], fail_partition: int | None = None) -> httpx.MockTransport:
    """Answers each check allowed when its subject's number is even; refuses (421) a batch whose first
    workspace is in ``fail_partition`` of 3."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = json.loads(request.content or b"{}")
        checks = body.get("checks", [body])
        if fail_partition is not None and client_partitions.partition_of(checks[0]["workspace"], 3) == fail_partition:
            return httpx.Response(421, json={"type": "x/workspace-not-held", "title": "Misdirected request"})
        results = [{"allowed": int(c["subject"][5:]) % 2 == 0, "reason": "r", "revision": 1} for c in checks]
        return httpx.Response(200, json={"results": results, "revision": 1} if "checks" in body else results[0])

    return httpx.MockTransport(handle)


def _checks() -> list[dict[str, Any]]:
    return [{"subject": f"user:{i}", "workspace": f"w{i % 9}", "action": "view"} for i in range(30)]


def test_batches_are_split_by_partition_and_reassembled() -> None:
    seen: list[httpx.Request] = []
    with Client("http://tier", "t", partitions=3, http=httpx.Client(transport=_server(seen))) as client:
        decisions = client.batch(_checks())
        assert [d.allowed for d in decisions] == [i % 2 == 0 for i in range(30)]
        parts = {client_partitions.partition_of(c["workspace"], 3) for c in _checks()}
        assert len(seen) == len(parts) > 1
        for request in seen:
            workspaces = [c["workspace"] for c in json.loads(request.content)["checks"]]
            assert len({client_partitions.partition_of(w, 3) for w in workspaces}) == 1
            assert request.headers["X-Authz-Workspace"] == workspaces[0]
        seen.clear()
        assert client.check("user:4", "view", workspace="w2").allowed
        assert seen[0].headers["X-Authz-Workspace"] == "w2"
    seen.clear()
    with Client("http://tier", "t", http=httpx.Client(transport=_server(seen))) as whole:
        assert len(whole.batch(_checks())) == 30 and len(seen) == 1  # without partitions: one request


def test_a_failed_partition_is_denied_alone_async() -> None:
    seen: list[httpx.Request] = []
    failing = client_partitions.partition_of("w0", 3)

    async def run() -> list[Any]:
        http = httpx.AsyncClient(transport=_server(seen, failing))
        async with AsyncClient("http://tier", "t", partitions=3, http=http) as client:
            return await client.batch(_checks())

    decisions = asyncio.run(run())
    for i, d in enumerate(decisions):
        if client_partitions.partition_of(f"w{i % 9}", 3) == failing:
            assert not d.allowed and d.error and "421" in d.error
        else:
            assert d.allowed == (i % 2 == 0) and d.error is None
