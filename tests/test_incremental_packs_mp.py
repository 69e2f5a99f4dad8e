"""A pack edit reaches every process in place: two real gunicorn processes on PostgreSQL.

Process A makes policy edits (``app.policy.edits``: a new role with its pack link and a rule, then
the rule removed); B, listening, answers at each new revision without loading its policy again:
its load counter (``sync_status()["loads"]``) and A's stay where they were, and no rebuild runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import fresh_pg_database
from tests.test_multiprocess import USER, WS, Server, add_workspace

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROLE = "role:simulations:auditor"
RULE = ["p", "85", ROLE, "view_dashboard", "any", "-", "allow"]
LINK = ["g4", "pack:simulations", ROLE]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """A and B, both listening, on a fresh database with one simulations workspace."""
    tmp = tmp_path_factory.mktemp("packedit")
    with fresh_pg_database("test_packedit") as url:
        add_workspace(url, "pack edit workspace")
        a, b = Server(url, "a", tmp), Server(url, "b", tmp)
        try:
            a.wait_ready()
            b.wait_ready()
            yield a, b
        finally:
            a.stop()
            b.stop()


def _edit(server: Server, edits: list[dict[str, Any]]) -> int:
    r = server.http.post(f"{server.base}/_mp/edit", json={"edits": edits}, timeout=30)
    assert r.status_code == 200, r.text
    return int(r.json()["revision"])


def _check(server: Server) -> dict[str, Any]:
    params = {"sub": USER, "dom": WS, "act": "view_dashboard"}
    return dict(server.http.get(f"{server.base}/_mp/check", params=params, timeout=5).json())


def _until(pred: Any, timeout: float = 5.0) -> float:
    t0 = time.perf_counter()
    while not pred():
        if time.perf_counter() - t0 > timeout:
            raise TimeoutError("condition not reached")
        time.sleep(0.002)
    return time.perf_counter() - t0


def test_pack_edit_reaches_the_other_process_without_a_load(pair: tuple[Server, Server]) -> None:
    a, b = pair
    loads = {name: s.status()["loads"] for name, s in (("a", a), ("b", b))}
    assert loads["a"] >= 1 and loads["b"] >= 1
    assert _check(b)["allowed"] is False
    added = _edit(
        a,
        [
            {"op": "add_role", "pack": "simulations", "role": {"id": "auditor", "label": "Auditor", "rank": 1}},
            {"op": "add", "rule": LINK},
            {"op": "add", "rule": RULE},
        ],
    )
    seconds = _until(lambda: b.status()["revision"] >= added)
    granted = a.link("add", ("g", USER, ROLE, WS))
    _until(lambda: _check(b)["revision"] >= granted)
    got = _check(b)
    assert got["allowed"] is True and got["reason"] == "granted", got
    assert _check(a)["allowed"] is True  # the writer too (read-your-writes)
    removed = _edit(a, [{"op": "remove", "rule": RULE}])
    _until(lambda: _check(b)["revision"] >= removed)
    got = _check(b)
    assert got["allowed"] is False and got["reason"] == "not_permitted", got
    for name, server in (("a", a), ("b", b)):
        status = server.status()
        assert status["loads"] == loads[name], (name, status)  # no full load: applied in place
        assert status["rebuild"] is None and status["revision"] == removed, status
    print(f"pack edit visible in B after {seconds * 1000:.1f} ms")
