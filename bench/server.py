"""A gunicorn server of the real app whose processes the benchmark can see (master and worker pids),
and requests that reach *every* sync worker, for ``bench.memory`` and ``bench.packedit``.

A sync worker serves one connection at a time and blocks reading a request from the connection it
accepted. So ``n`` connections, each held by a different worker (the accepted socket found in
``/proc/<worker>/fd``), ask every worker once when one request is sent on each (:func:`each_worker`).
That is how readiness, warm-up and "every worker is at revision r" are checked without a worker id
in the response. gunicorn runs ``gthread`` instead of ``sync`` when ``threads > 1`` (which
``gunicorn.conf.py`` defaults to), so the server here sets ``GUNICORN_THREADS=1``.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from bench.http import app_env, free_port, process, server_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def children(pid: int) -> list[int]:
    """The direct children of pid (gunicorn's workers of its master)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def cpu_ticks(pid: int) -> int:
    """utime + stime (clock ticks) of pid and its direct children now (a server's master and workers)."""
    total = 0
    for p in (pid, *children(pid)):
        try:
            with open(f"/proc/{p}/stat", encoding="ascii") as fh:
                fields = fh.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            continue
    return total


def settle(pids: list[int], idle_ticks: int = 1, window: float = 0.5, timeout: float = 60.0) -> float:
    """Wait until the servers of pids are idle (at most ``idle_ticks`` of CPU in a ``window``, twice in
    a row); returns the seconds waited (``timeout`` when they never were).

    A server still busy from its start (a peer building an engine per thread, a cold cache) would
    otherwise take the core from the app measured next: a pinned run of ours measured right after
    the peers started answered 4,389/s, and 13,500/s once they were idle.
    """
    started = time.monotonic()
    quiet = 0
    before = sum(cpu_ticks(p) for p in pids)
    while time.monotonic() - started < timeout:
        time.sleep(window)
        now = sum(cpu_ticks(p) for p in pids)
        quiet = quiet + 1 if now - before <= idle_ticks else 0
        before = now
        if quiet >= 2:
            break
    return time.monotonic() - started


def _socket_inodes(pid: int) -> set[int]:
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                out.add(int(link[8:-1]))
    except OSError:
        pass
    return out


def _server_inodes(port: int) -> dict[int, int]:
    """Server-side sockets of loopback connections to port: {client port: inode}."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as fh:
                next(fh)
                for line in fh:
                    f = line.split()
                    local_port = int(f[1].rsplit(":", 1)[1], 16)
                    if local_port == port and f[3] == "01":  # ESTABLISHED
                        out[int(f[2].rsplit(":", 1)[1], 16)] = int(f[9])
        except OSError:
            continue
    return out


def each_worker(
    port: int, pids: list[int], method: str, path: str, body: bytes | None = None,
    headers: dict[str, str] | None = None, timeout: float = 600.0,
) -> list[tuple[int, int, dict[str, Any]]]:
    """One request answered by each worker in pids: (pid, status, json) each.

    Opens one connection per worker and waits (up to timeout) until each is held by a different
    worker (read from /proc), so a worker still loading is waited for, not skipped."""
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=timeout) for _ in pids]
    try:
        for c in conns:
            c.connect()
        owner: dict[int, int] = {}
        deadline = time.monotonic() + timeout
        while True:
            inodes = _server_inodes(port)
            held = {pid: _socket_inodes(pid) for pid in pids}
            owner = {}
            for i, c in enumerate(conns):
                ino = inodes.get(c.sock.getsockname()[1])
                for pid, socks in held.items():
                    if ino is not None and ino in socks:
                        owner[i] = pid
            if len(owner) == len(conns) and len(set(owner.values())) == len(conns):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"connections not held by distinct workers: {owner}")
            time.sleep(0.05)
        for c in conns:
            c.request(method, path, body=body, headers=headers or {})
        out = []
        for i, c in enumerate(conns):
            r = c.getresponse()
            raw = r.read()
            try:
                data = json.loads(raw or b"{}")
            except ValueError:
                data = {"raw": raw[:200].decode(errors="replace")}
            out.append((owner[i], r.status, data if isinstance(data, dict) else {"value": data}))
        return out
    finally:
        for c in conns:
            c.close()


def wait_ready(port: int, workers: int, proc: subprocess.Popen[bytes], timeout: float = 600.0) -> float:
    """Until /readyz answers 200 on every worker; returns the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited early ({proc.returncode})")
        try:
            pids = children(proc.pid)
            if len(pids) == workers and all(
                s == 200 for _, s, _ in each_worker(port, pids, "GET", "/readyz", timeout=20)
            ):
                return time.monotonic() - t0
        except (OSError, TimeoutError):
            pass  # a worker still loading (or re-forked): ask again
        time.sleep(0.3)
    raise TimeoutError("not every worker became ready")


def source_tree(commit: str, dest: str, paths: tuple[str, ...] = ()) -> str:
    """The project's files at ``commit`` (``git archive``; only ``paths`` when given) under dest, for a
    figure before a change."""
    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryFile() as fh:
        subprocess.run(["git", "-C", ROOT, "archive", commit, *paths], stdout=fh, check=True, timeout=120)
        fh.seek(0)
        with tarfile.open(fileobj=fh) as tar:
            tar.extractall(dest, filter=_data_or_skip)
    return dest


def _data_or_skip(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    """tarfile's ``data`` filter, skipping (not failing on) what it refuses: a committed link to an
    absolute path (a local virtualenv link) is no part of the project's files."""
    try:
        return tarfile.data_filter(member, path)
    except tarfile.FilterError:
        return None


@contextmanager
def serve(
    url: str,
    workers: int,
    log_path: str,
    extra_env: dict[str, str] | None = None,
    root: str = ROOT,
    app: str = "app:create_app()",
) -> Iterator[tuple[subprocess.Popen[bytes], int, float]]:
    """gunicorn (``<root>/gunicorn.conf.py``, sync workers) serving the app of ``root`` on a free
    port; yields (master process, port, seconds until every worker was ready)."""
    port = free_port()
    cmd, server_env = server_command("gunicorn-sync", app, port, workers, root)
    with process(cmd, app_env(url, root, **server_env, **(extra_env or {})), log_path, cwd=root) as proc:
        _wait_bound(port, proc)
        yield proc, port, wait_ready(port, workers, proc)


def _wait_bound(port: int, proc: subprocess.Popen[bytes], timeout: float = 600.0) -> None:
    """Until the port accepts connections (with preload the master loads the policy first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited early ({proc.returncode})")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError("gunicorn never listened")


def copy_database(url: str, suffix: str) -> tuple[str, bool]:
    """A copy of the data set at url (``CREATE DATABASE ... TEMPLATE``), so that a benchmark's writes
    touch no shared database: (url of the copy, True), or (url, False) when someone is connected to
    the original (a template must have no other session)."""
    base, name = url.rsplit("/", 1)
    copy = f"{os.environ.get('BENCH_COPY_PREFIX', 'h15b_')}{name}_{suffix}"
    admin = base.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    try:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
            c.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{name}"')
    except psycopg.Error:
        return url, False
    return f"{base}/{copy}", True


def drop_database(url: str) -> None:
    """Drop the database at url (a copy made by :func:`copy_database`)."""
    base, name = url.rsplit("/", 1)
    admin = base.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
