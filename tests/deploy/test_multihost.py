"""Multi-host harness (issue 15): hosts as network namespaces on one machine.

Builds the network (bridge ``lzbr0``, namespaces ``lz-db`` .10, ``lz-a`` .11, ``lz-b`` .12) and a
private PostgreSQL + PgBouncer (transaction pool ``app``, session pool ``app_listen``) on the db host
with ``bench.netns`` (shared with ``bench.crosshost``), and checks that app hosts reach both; the
gunicorn hosts, HAProxy and assertions (a)-(d) are in ``test_multihost_web.py``. Run with
``make test-deploy`` (root). Skipped without root or the tools; under
``CI=true`` a selected deploy test fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.netns import Topology, missing

pytestmark = [pytest.mark.deploy]

TOPO = Topology(prefix="lz", subnet="10.231.15", bridge="lzbr0", hosts={"db": 10, "a": 11, "b": 12})
NET = TOPO.subnet


def _need() -> None:
    why = missing(private_pg=True)
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"deploy test selected but {why}")
        pytest.skip(why)


def in_ns(ns: str, *cmd: str) -> list[str]:
    return TOPO.in_ns(ns, *cmd)


@pytest.fixture(scope="module")
def hosts() -> Iterator[Path]:
    _need()
    TOPO.cleanup()
    tmp = Path(tempfile.mkdtemp(prefix="lz-deploy-"))
    try:
        TOPO.build()
        TOPO.start_db(tmp)
        yield tmp
    finally:
        TOPO.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


PROBE = f"""
import psycopg
for port, db in ((5432, "app"), (6432, "app"), (6432, "app_listen")):
    with psycopg.connect(host="{NET}.10", port=port, user="postgres", dbname=db, prepare_threshold=None) as c:
        assert c.execute("select 1").fetchone() == (1,)
print("ok")
"""


def test_app_hosts_reach_postgres_and_pgbouncer(hosts: Path) -> None:
    py = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "python")
    for ns in ("lz-a", "lz-b"):
        out = subprocess.run(in_ns(ns, py, "-c", PROBE), capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
