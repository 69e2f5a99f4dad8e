"""Hosts made of network namespaces on this machine: the multi-host test's and benchmark's harness.

A :class:`Topology` names a bridge (``<bridge>``, ``<subnet>.1/24``) and namespaces
``<prefix>-<host>`` at ``<subnet>.<octet>``, each joined to the bridge by a veth pair
(``<prefix>v<octet>`` on the bridge, ``<prefix>p<octet>`` inside). On top: a private PostgreSQL and
PgBouncer on a database host (:meth:`Topology.start_db`), or PgBouncer alone in front of an existing
server (:func:`start_pgbouncer`), and gunicorn hosts (:meth:`Topology.start_host`). PgBouncer has two
pools: ``<db>`` in transaction mode for the application's queries, ``<db>_listen`` in session mode
for the policy listener's LISTEN. Needs root, iproute2, runuser, pgbouncer (Debian's package) and a
PostgreSQL server for the private database (:func:`missing` says what is not there).

Used by ``tests/deploy`` (``lz-*``, ``lzbr0``, 10.231.15.0/24) and ``bench.crosshost`` (``lzb-*``,
``lzbr1``, 10.231.16.0/24): different names, so both can run at once.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
AS_PG = ["runuser", "-u", "postgres", "--"]


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output (raise on failure unless check=False)."""
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=60)


def missing(private_pg: bool = True) -> str:
    """Why the harness cannot run here ("" when it can): not root, or the missing tools."""
    if os.geteuid() != 0:
        return "not root"
    lack = [t for t in ("ip", "runuser") if not shutil.which(t)]
    if not os.path.exists(PGBOUNCER):
        lack.append("pgbouncer")
    if private_pg and not PG_BIN:
        lack.append("postgresql server")
    return f"missing: {', '.join(lack)}" if lack else ""


@dataclass
class Topology:
    """Names and addresses of one set of namespace hosts."""

    prefix: str = "lz"
    subnet: str = "10.231.15"
    bridge: str = "lzbr0"
    hosts: dict[str, int] = field(default_factory=lambda: {"db": 10, "a": 11, "b": 12})

    def ns(self, host: str) -> str:
        """The namespace of a host ("a" -> "lz-a"); a full namespace name is returned as it is."""
        return host if host.startswith(self.prefix + "-") else f"{self.prefix}-{host}"

    def ip(self, host: str) -> str:
        """The host's address on the bridge."""
        return f"{self.subnet}.{self.hosts[self.ns(host)[len(self.prefix) + 1:]]}"

    @property
    def gateway(self) -> str:
        """The bridge's own address (the root namespace, seen from the hosts)."""
        return f"{self.subnet}.1"

    def in_ns(self, host: str, *cmd: str) -> list[str]:
        """cmd run inside the host's namespace."""
        return ["ip", "netns", "exec", self.ns(host), *cmd]

    def cleanup(self) -> None:
        """Kill every process in the namespaces, delete them and the bridge (leftovers too)."""
        for host, octet in self.hosts.items():
            ns = self.ns(host)
            for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), 9)
            sh("ip", "netns", "del", ns, check=False)
            sh("ip", "link", "del", f"{self.prefix}v{octet}", check=False)  # outlives a lazily deleted netns
        sh("ip", "link", "del", self.bridge, check=False)

    def build(self) -> None:
        """The bridge and one namespace per host, addressed and up."""
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")
        for host, octet in self.hosts.items():
            ns, veth, peer = self.ns(host), f"{self.prefix}v{octet}", f"{self.prefix}p{octet}"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
            sh("ip", "link", "set", veth, "master", self.bridge)
            sh("ip", "link", "set", veth, "up")
            sh("ip", "link", "set", peer, "netns", ns)
            sh("ip", "-n", ns, "addr", "add", f"{self.subnet}.{octet}/24", "dev", peer)
            sh("ip", "-n", ns, "link", "set", peer, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def start_db(self, tmp: Path, host: str = "db", dbname: str = "app") -> None:
        """A private PostgreSQL on <host>:5432 and PgBouncer on <host>:6432, as the postgres user."""
        pg = Path(PG_BIN[-1]).parent
        shutil.chown(tmp, "postgres")
        data = tmp / "data"
        ip = self.ip(host)
        sh(*AS_PG, str(pg / "initdb"), "-A", "trust", "-U", "postgres", "--no-sync", "-D", str(data))
        with open(data / "pg_hba.conf", "a") as f:
            f.write(f"host all all {self.subnet}.0/24 trust\n")
        opts = f"-p 5432 -k {data} -c listen_addresses={ip} -c fsync=off -c max_connections=100"
        sh(*self.in_ns(host, *AS_PG, str(pg / "pg_ctl"), "start", "-w", "-t", "30", "-D", str(data),
                       "-l", str(tmp / "pg.log"), "-o", opts))
        sh(*self.in_ns(host, *AS_PG, str(pg / "createdb"), "-h", ip, "-U", "postgres", dbname))
        start_pgbouncer(tmp, ip, ip, 5432, dbname, ns=self.ns(host))

    def start_host(self, host: str, env: dict[str, str], log: IO[Any], app: str = "app:create_app()",
                   port: int = 8000) -> subprocess.Popen[bytes]:
        """gunicorn (``gunicorn.conf.py``) serving app on <host>:port inside the host's namespace."""
        return subprocess.Popen(
            self.in_ns(host, str(ROOT / ".venv/bin/gunicorn"), "-c", "gunicorn.conf.py", app),
            env=dict(env, GUNICORN_BIND=f"{self.ip(host)}:{port}"), cwd=ROOT, stdout=log, stderr=log,
        )

    def pids(self, host: str) -> list[int]:
        """Every process in the host's namespace."""
        return [int(p) for p in sh("ip", "netns", "pids", self.ns(host), check=False).stdout.split()]


def start_pgbouncer(tmp: Path, listen: str, backend: str, backend_port: int, dbname: str,
                    ns: str | None = None, alias: str = "app", port: int = 6432) -> None:
    """PgBouncer on listen:port in front of backend:backend_port/dbname: pool ``<alias>`` in
    transaction mode, ``<alias>_listen`` in session mode (LISTEN needs a session). Runs as postgres,
    in namespace ns when given (else here); its files under tmp."""
    # options: psycopg/SQLAlchemy may send "-c statement_timeout=..." at connect; PgBouncer refuses
    # unknown startup parameters unless ignored (the app then runs with no server-side timeout).
    ini = tmp / "pgbouncer.ini"
    ini.write_text(f"""[databases]
{alias} = host={backend} port={backend_port} dbname={dbname} pool_mode=transaction
{alias}_listen = host={backend} port={backend_port} dbname={dbname} pool_mode=session
[pgbouncer]
listen_addr = {listen}
listen_port = {port}
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
    for p in (tmp, ini, tmp / "users.txt"):
        shutil.chown(p, "postgres")
    cmd = [*AS_PG, PGBOUNCER, "-d", str(ini)]
    sh(*(["ip", "netns", "exec", ns, *cmd] if ns else cmd))
    time.sleep(0.5)


def stop_pgbouncer(tmp: Path) -> None:
    """Stop the PgBouncer started with files under tmp."""
    with contextlib.suppress(OSError, ValueError):
        os.kill(int((tmp / "pgbouncer.pid").read_text().strip()), 15)


def app_env(db_host: str, secret: str, workers: int = 2, alias: str = "app", port: int = 6432) -> dict[str, str]:
    """The environment of an app host: queries through PgBouncer's transaction pool, LISTEN through
    its session pool, no prepared statements (transaction pooling), ProxyFix for one proxy."""
    env = dict(os.environ)
    env.update({
        "FLASK_SECRET_KEY": secret,
        "FLASK_SQLALCHEMY_DATABASE_URI": f"postgresql+psycopg://postgres@{db_host}:{port}/{alias}",
        "FLASK_POLICY_LISTEN_URL": f"postgresql+psycopg://postgres@{db_host}:{port}/{alias}_listen",
        "FLASK_SQLALCHEMY_ENGINE_OPTIONS": json.dumps(
            {"pool_pre_ping": True, "connect_args": {"prepare_threshold": None}}),
        "FLASK_TRUSTED_PROXIES": "1",
        "GUNICORN_WORKERS": str(workers),
    })
    return env
