"""Sidecars on hosts (issue 27): network namespaces ``lzs-*`` on bridge ``lzsbr0`` (10.231.17.0/24).

``lzs-db`` (.10) runs a private PostgreSQL + PgBouncer, ``lzs-central`` (.11) the central writer
(``python -m app.serve``, 2 workers, through PgBouncer), and two service hosts ``lzs-svc1`` (.12),
``lzs-svc2`` (.13) each a ``learnauthz sidecar`` for its service's workspaces, answering on a Unix
socket (the service beside it; this test reaches the socket through the shared filesystem) and
following the central tier across the bridge. Asserted: every decision of both sidecars equals stock
pycasbin (``casbin.Enforcer`` over the committed ``casbin_rule`` table); role changes written through
the central tier's API become visible at the sidecars (p50/p99 printed over 60 changes); with
PostgreSQL and the central tier killed, both sidecars keep answering the same (``/readyz`` reports
the upstream unreachable). Run with ``make test-deploy`` (root).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from app.embedded import EmbeddedEnforcer
from bench.netns import ROOT, Topology, app_env, missing
from bench.outage import HIGH, HIGH_ACTION, build
from tests.test_sidecar import SECRET, _batch, _client, _pct, _sign_in, _tokens, _wait

pytestmark = [
    pytest.mark.deploy,
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),  # see tests/test_sidecar.py
]

TOPO = Topology(
    prefix="lzs", subnet="10.231.17", bridge="lzsbr0", hosts={"db": 10, "central": 11, "svc1": 12, "svc2": 13}
)
CHANGES = 60


def _need() -> None:
    why = missing(private_pg=True)
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"deploy test selected but {why}")
        pytest.skip(why)


@pytest.fixture(scope="module")
def hosts() -> Iterator[Path]:
    _need()
    TOPO.cleanup()
    tmp = Path(tempfile.mkdtemp(prefix="lzs-deploy-"))
    try:
        TOPO.build()
        TOPO.start_db(tmp)
        yield tmp
    finally:
        TOPO.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _in_host(host: str, cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "w") as out:
        proc = subprocess.Popen(TOPO.in_ns(host, *cmd), env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        for pid in TOPO.pids(host):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 15)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)


def test_sidecars_on_service_hosts(hosts: Path) -> None:
    db_ip, central_ip = TOPO.ip("db"), TOPO.ip("central")
    url = f"postgresql+psycopg://postgres@{db_ip}:5432/app"
    world = build(url, workspaces=40, members=6)
    sim = sorted({slug for slug, _ in world.targets})
    others = sorted({c["workspace"] for c in world.checks} - set(sim))
    held = {"svc1": sim[:8] + others[:4], "svc2": sim[8:16] + others[4:8]}
    tokens = {h: _tokens(url, ws, names=(f"{h}-feed", f"{h}-wide"))[0] for h, ws in held.items()}
    base = f"http://{central_ip}:8000"
    env = dict(
        app_env(db_ip, SECRET),
        SERVE_BIND=f"{central_ip}:8000",
        SERVE_WORKERS="2",
        SERVE_THREADS="6",
        FLASK_FEED_HEARTBEAT_SECONDS="1",
        FLASK_FEED_MAX_CONNECTIONS="3",
        PYTHONPATH=str(ROOT),
    )
    socks = {h: str(hosts / f"{h}.sock") for h in held}
    with contextlib.ExitStack() as stack:
        central = stack.enter_context(
            _in_host("central", [sys.executable, "-m", "app.serve"], env, hosts / "central.log")
        )
        _wait(lambda: requests.get(base + "/readyz", timeout=2).status_code == 200, 90, "central /readyz")
        for h in held:
            side_env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
            side_env.update(FLASK_FOLLOWER_TOKEN=tokens[h], PYTHONPATH=str(ROOT))
            cmd = [
                sys.executable,
                "-m",
                "app",
                "sidecar",
                "--upstream",
                base,
                "--uds",
                socks[h],
                "--workspaces",
                ",".join(held[h]),
                "--max-staleness",
                "600",
            ]
            stack.enter_context(_in_host(h, cmd, side_env, hosts / f"{h}.log"))
        clients = {h: stack.enter_context(_client(socks[h])) for h in held}
        for h, c in clients.items():
            _wait(lambda c=c, h=h: os.path.exists(socks[h]) and c.get("/readyz").status_code == 200, 90, f"{h} /readyz")

        def agree(label: str) -> dict[str, list[Any]]:
            answers = {}
            with EmbeddedEnforcer(url) as emb:
                for h, c in clients.items():
                    mine = [x for x in world.checks if x["workspace"] in held[h]]
                    got = _batch(c, "", tokens[h], mine)
                    for check, (allowed, _) in zip(mine, got):
                        subject = check["subject"]
                        if isinstance(subject, int) and subject < 2_000_000_000 - 1000:
                            want = emb.check(f"user:{subject}", f"ws:{check['workspace']}", check["action"])
                            assert allowed == want, (label, h, check)
                    answers[h] = got
            return answers

        agree("start")
        web, csrf = _sign_in(base)
        delays: list[float] = []
        for h in held:
            auth = {"Authorization": f"Bearer {tokens[h]}"}
            for slug, uid in [t for t in world.targets if t[0] in held[h]][: CHANGES // 2]:
                ask = {"subject": uid, "workspace": slug, "action": HIGH_ACTION}
                r = web.patch(
                    f"{base}/api/workspaces/{slug}/members/{uid}",
                    json={"role": HIGH},
                    headers={"X-CSRFToken": csrf},
                    timeout=10,
                )
                assert r.status_code == 200, r.text
                t0 = time.perf_counter()
                while not clients[h].post("/v1/check", json=ask, headers=auth).json()["allowed"]:
                    assert time.perf_counter() - t0 < 2.0, (h, slug, uid)
                delays.append(time.perf_counter() - t0)
        web.close()
        print(
            f"\nsidecars across hosts: role change visible n={len(delays)}"
            f" p50 {statistics.median(delays) * 1000:.1f} ms p99 {_pct(delays, 0.99) * 1000:.1f} ms"
            f" max {max(delays) * 1000:.1f} ms"
        )
        before = agree("after the changes")

        # PostgreSQL and the central tier killed: the sidecars keep answering the same
        for pid in TOPO.pids("central") + TOPO.pids("db"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        central.wait(20)
        for h, c in clients.items():
            _wait(lambda c=c: c.get("/readyz").json()["checks"]["upstream"] == "unreachable", 20, f"{h} sees it")
            mine = [x for x in world.checks if x["workspace"] in held[h]]
            assert _batch(c, "", tokens[h], mine) == before[h]
            assert c.get("/readyz").json()["staleness_seconds"] > 0
        print("sidecars: PostgreSQL and the central tier killed, both sidecars answered every question as before")
