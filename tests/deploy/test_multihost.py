"""Multi-host harness (issue 15): hosts as network namespaces on one machine.

PARTIAL: builds the network (bridge ``lzbr0``, namespaces ``lz-db`` .10, ``lz-a`` .11, ``lz-b`` .12)
and a private PostgreSQL + PgBouncer (transaction pool ``app``, session pool ``app_listen``) on the
db host, and checks that app hosts reach both. The gunicorn hosts, HAProxy and assertions (a)-(d)
are still to come. Run with ``make test-deploy`` (root). Skipped without root or the tools; under
``CI=true`` a selected deploy test fails instead.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.deploy]

NET = "10.231.15"
HOSTS = {"lz-db": 10, "lz-a": 11, "lz-b": 12}
BRIDGE = "lzbr0"
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def _need() -> None:
    missing = [t for t in ("ip", "runuser") if not shutil.which(t)]
    if not os.path.exists(PGBOUNCER):
        missing.append("pgbouncer")
    if not PG_BIN:
        missing.append("postgresql server")
    why = "not root" if os.geteuid() != 0 else (f"missing: {', '.join(missing)}" if missing else "")
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"deploy test selected but {why}")
        pytest.skip(why)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=60)


def cleanup() -> None:
    """Kill every process in the namespaces, delete them and the bridge (leftovers too)."""
    for ns in HOSTS:
        pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        sh("ip", "netns", "del", ns, check=False)
        sh("ip", "link", "del", f"lzv{HOSTS[ns]}", check=False)  # the veth outlives a lazily deleted netns
    sh("ip", "link", "del", BRIDGE, check=False)


def build_network() -> None:
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    sh("ip", "addr", "add", f"{NET}.1/24", "dev", BRIDGE)
    sh("ip", "link", "set", BRIDGE, "up")
    for ns, host in HOSTS.items():
        veth, peer = f"lzv{host}", f"lzp{host}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", veth, "master", BRIDGE)
        sh("ip", "link", "set", veth, "up")
        sh("ip", "link", "set", peer, "netns", ns)
        sh("ip", "-n", ns, "addr", "add", f"{NET}.{host}/24", "dev", peer)
        sh("ip", "-n", ns, "link", "set", peer, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def start_db(tmp: Path) -> None:
    """PostgreSQL on .10:5432 and PgBouncer on .10:6432, both as the postgres user in lz-db."""
    pg = Path(PG_BIN[-1]).parent
    shutil.chown(tmp, "postgres")
    data = tmp / "data"
    as_pg = ["runuser", "-u", "postgres", "--"]
    sh(*as_pg, str(pg / "initdb"), "-A", "trust", "-U", "postgres", "--no-sync", "-D", str(data))
    with open(data / "pg_hba.conf", "a") as f:
        f.write(f"host all all {NET}.0/24 trust\n")
    opts = f"-p 5432 -k {data} -c listen_addresses={NET}.10 -c fsync=off -c max_connections=100"
    sh(*in_ns("lz-db", *as_pg, str(pg / "pg_ctl"), "start", "-w", "-t", "30", "-D", str(data),
              "-l", str(tmp / "pg.log"), "-o", opts))
    sh(*in_ns("lz-db", *as_pg, str(pg / "createdb"), "-h", f"{NET}.10", "-U", "postgres", "app"))
    # options: psycopg/SQLAlchemy may send "-c statement_timeout=..." at connect; PgBouncer refuses
    # unknown startup parameters unless ignored (the app then runs with no server-side timeout).
    ini = tmp / "pgbouncer.ini"
    ini.write_text(f"""[databases]
app = host={NET}.10 port=5432 dbname=app pool_mode=transaction
app_listen = host={NET}.10 port=5432 dbname=app pool_mode=session
[pgbouncer]
listen_addr = {NET}.10
listen_port = 6432
unix_socket_dir =
auth_type = trust
auth_file = {tmp}/users.txt
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
ignore_startup_parameters = extra_float_digits,options
logfile = {tmp}/pgbouncer.log
pidfile = {tmp}/pgbouncer.pid
""")
    (tmp / "users.txt").write_text('"postgres" ""\n')
    shutil.chown(ini, "postgres")
    shutil.chown(tmp / "users.txt", "postgres")
    sh(*in_ns("lz-db", *as_pg, PGBOUNCER, "-d", str(ini)))
    time.sleep(0.5)


@pytest.fixture(scope="module")
def hosts() -> Iterator[Path]:
    _need()
    cleanup()
    tmp = Path(tempfile.mkdtemp(prefix="lz-deploy-"))
    try:
        build_network()
        start_db(tmp)
        yield tmp
    finally:
        cleanup()
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
