"""A private PostgreSQL cluster for outage drills: ``initdb`` in a temporary directory, one server
on a free loopback port, frozen (SIGSTOP), thawed, killed (SIGKILL) and restarted at will.

Uses the server binaries of the Debian ``postgresql`` package (``/usr/lib/postgresql/*/bin``);
as root it runs them as the ``postgres`` user (``initdb`` refuses root). Used by
``tests/test_outage.py`` and ``bench/outage.py``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from sqlalchemy import create_engine, text

BINARIES = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


class ClusterUnavailableError(RuntimeError):
    """A private cluster cannot be started here (no server binaries, or root without runuser)."""


def _free_port() -> int:
    from bench.http import free_port  # BENCH_PORT_BASE decides the range when set

    return free_port()


class Cluster:
    """A private PostgreSQL cluster in a temporary directory, serving database ``name``."""

    def __init__(self, name: str = "outage", port: int | None = None) -> None:
        if not BINARIES:
            raise ClusterUnavailableError("PostgreSQL server binaries not installed (/usr/lib/postgresql/*/bin/initdb)")
        self.name = name
        self.bin = Path(BINARIES[-1]).parent
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root
            if not shutil.which("runuser"):
                raise ClusterUnavailableError("running as root without runuser: cannot start a private PostgreSQL")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.dir = Path(tempfile.mkdtemp(prefix="outage-pg-"))
        self.data = self.dir / "data"
        self.port = port or _free_port()
        if self.as_user:
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-A", "trust", "-U", "postgres", "--no-sync", "-D", str(self.data))
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.as_user, str(self.bin / tool), *args], check=True, capture_output=True, timeout=60)

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the cluster's database ``name``."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{self.name}"

    def create_database(self) -> str:
        """Create database ``name`` (empty); returns its URL."""
        admin = create_engine(self.url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        admin.dispose()
        return self.url

    def start(self) -> None:
        """Start (or restart after a kill) the server; returns once it accepts connections."""
        opts = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "start", "-w", "-t", "30", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", opts)

    def pids(self) -> list[int]:
        """The postmaster first, then every process it started."""
        master = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in glob.glob("/proc/[0-9]*/stat"):
            try:
                fields = Path(stat).read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master:
                children.append(int(stat.split("/")[2]))
        return [master, *children]

    def signal(self, sig: signal.Signals) -> None:
        """Send sig to the postmaster and every process it started (SIGSTOP freezes, SIGKILL kills)."""
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def stop(self) -> None:
        """Stop the server (thawing it first) and remove the directory."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            self.signal(signal.SIGCONT)
        subprocess.run([*self.as_user, str(self.bin / "pg_ctl"), "stop", "-m", "immediate", "-D", str(self.data)],
                       capture_output=True, timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)
