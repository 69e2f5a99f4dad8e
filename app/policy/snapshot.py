"""The policy snapshot: everything a decision needs, on disk, so a process can start without the database.

After each full load (``PolicyRuntime.reload``, a background rebuild) a process writes what the load
read — pack documents and pack rules, every fact (role links, scopes, workspaces, features), every
user of the directory and the AuthZEN catalogs, every live service token (its SHA-256 only, never
the secret), the revision, and when that state was read (``current_at``: it was known current then)
— to ``POLICY_SNAPSHOT_PATH``. A process that finds the database unreachable at start builds its
engine from it (:func:`read`), serves decisions at the snapshot's revision, and catches up from the
revision log when the database returns.

File layout (format 1)::

    LEARNAUTHZ-SNAPSHOT 1\\n
    {"format":1,"revision":…,"current_at":…,"written_at":…,"length":…,"model_sha256":…,"database":…}\\n
    <hex SHA-256 of the line above (with its newline) and the payload>\\n
    <payload: msgspec MessagePack of State, length bytes>

Refused (:class:`SnapshotError`, one line saying why): another format, an unreadable header, a
payload shorter or longer than its header says (truncated), a checksum that does not match
(any flipped byte), a snapshot of another ``model.conf`` or another database (host, port, name),
a payload that does not decode. Nothing of a refused file is used.

Writes are atomic and the newest wins: the bytes go to a unique temporary file in the same
directory (fsync'ed), then, under an exclusive ``flock`` of ``<path>.lock`` (one writer at a time
across processes), the file in place is read and verified, and the temporary file replaces it
(``os.replace``, then the directory is fsync'ed) unless the one in place is newer (a higher revision,
or the same revision read later). A crash before the replace leaves the old snapshot intact.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy.engine import make_url

from app.policy.directory import Directory
from app.policy.tokens import TokenIdentity

FORMAT = 1
MAGIC = b"LEARNAUTHZ-SNAPSHOT"
STALE_TEMP_SECONDS = 600.0  # a temporary file this old was left by a writer that crashed


class SnapshotError(ValueError):
    """A snapshot file that must not be used; the message says why, in one line."""


class TokenRow(msgspec.Struct, array_like=True, frozen=True):
    """One live service token: its hash and what authenticating it yields."""

    hash: str
    id: int
    name: str
    workspace: str | None
    domains: list[str]
    platform: str | None
    wide: bool
    feed: bool = False  # (added after format 1's first files: absent reads as False)


class State(msgspec.Struct, array_like=True):
    """What a full load read (the payload)."""

    documents: dict[str, Any]
    pack_rules: list[tuple[str, ...]]
    facts: list[tuple[str, ...]]
    users: list[tuple[int, str, str | None]]
    catalogs: dict[str, Any]
    tokens: list[TokenRow]


class Meta(msgspec.Struct, forbid_unknown_fields=True):
    """The header: which state this is and what it belongs to (covered by the checksum)."""

    format: int
    revision: int
    current_at: float  # wall clock (epoch seconds) when the state was read from the database
    written_at: float
    length: int
    model_sha256: str
    database: str


@dataclass(frozen=True)
class Snapshot:
    """A verified snapshot."""

    meta: Meta
    state: State


def model_digest(model_text: str) -> str:
    """SHA-256 of the Casbin model text (a snapshot serves only the model it was written with)."""
    return hashlib.sha256(model_text.encode("utf-8")).hexdigest()


def database_identity(url: str) -> str:
    """``host:port/name`` of a database URL (no user, no password): whose state a snapshot holds."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        return f"sqlite:{u.database or ''}"
    return f"{u.host or ''}:{u.port or ''}/{u.database or ''}"


@dataclass
class Capture:
    """What one full load reads, kept for its snapshot (:meth:`tee` the facts while the engine loads them)."""

    current_at: float = field(default_factory=time.time)  # taken before the load's transaction starts
    revision: int = 0
    documents: dict[str, Any] = field(default_factory=dict)
    pack_rules: list[tuple[str, ...]] = field(default_factory=list)
    facts: list[tuple[str, ...]] = field(default_factory=list)

    def tee(self, facts: Iterable[tuple[str, ...]]) -> Iterator[tuple[str, ...]]:
        """The facts, each also kept here."""
        keep = self.facts.append
        for row in facts:
            row = tuple(row)
            keep(row)
            yield row

    def state(self, users: Directory, live: Mapping[str, TokenIdentity]) -> State:
        """The payload: this load's policy, with the directory and tokens it loaded (call before they are shared)."""
        return State(
            documents=self.documents,
            pack_rules=[tuple(r) for r in self.pack_rules],
            facts=self.facts,
            users=users.rows(),
            catalogs=dict(users.catalogs),
            tokens=[
                TokenRow(h, t.id, t.name, t.workspace, sorted(t.domains), t.platform, t.wide, t.feed)
                for h, t in live.items()
            ],
        )


def identities(rows: Iterable[TokenRow]) -> dict[str, TokenIdentity]:
    """The token cache's entries (hash → identity) from a snapshot's tokens."""
    return {r.hash: TokenIdentity(r.id, r.name, r.workspace, frozenset(r.domains), r.platform, r.wide, r.feed)
        for r in rows
    }


def encode(state: State, revision: int, current_at: float, model_sha256: str, database: str) -> bytes:
    """The file's bytes: format line, header, checksum, payload."""
    payload = msgspec.msgpack.encode(state)
    meta = msgspec.json.encode(
        Meta(FORMAT, revision, current_at, time.time(), len(payload), model_sha256, database)
    )
    digest = hashlib.sha256(meta + b"\n" + payload).hexdigest().encode()
    return b"".join((MAGIC, b" %d\n" % FORMAT, meta, b"\n", digest, b"\n", payload))


def _verified_meta(data: bytes) -> tuple[Meta, memoryview]:
    """The header and payload of data once its format, length and checksum check out."""
    parts = data.split(b"\n", 3)
    if len(parts) < 4 or not parts[0].startswith(MAGIC + b" "):
        raise SnapshotError("not a policy snapshot (no header)")
    version = parts[0][len(MAGIC) + 1 :]
    if version != b"%d" % FORMAT:
        raise SnapshotError(f"format {version.decode('ascii', 'replace')[:20]!r}, this version reads {FORMAT}")
    meta_line, digest = parts[1], parts[2]
    start = len(parts[0]) + len(meta_line) + len(digest) + 3
    payload = memoryview(data)[start:]
    try:
        meta = msgspec.json.decode(meta_line, type=Meta)
    except msgspec.DecodeError as exc:
        raise SnapshotError(f"unreadable header ({exc})") from None
    if meta.length != len(payload):
        raise SnapshotError(f"truncated or padded: {len(payload)} payload bytes, the header says {meta.length}")
    h = hashlib.sha256(meta_line)
    h.update(b"\n")
    h.update(payload)
    if h.hexdigest().encode() != digest:
        raise SnapshotError("checksum mismatch (the file was changed or damaged)")
    return meta, payload


def decode(data: bytes, model_sha256: str, database: str) -> Snapshot:
    """A verified snapshot from data, or SnapshotError (nothing of a refused file is used)."""
    meta, payload = _verified_meta(data)
    if meta.model_sha256 != model_sha256:
        raise SnapshotError("written for another model.conf")
    if meta.database != database:
        raise SnapshotError(f"written for another database ({meta.database}, not {database})")
    try:
        state = msgspec.msgpack.decode(payload, type=State)
    except msgspec.DecodeError as exc:
        raise SnapshotError(f"payload unreadable ({exc})") from None
    return Snapshot(meta, state)


def read(path: Path, model_sha256: str, database: str) -> Snapshot | None:
    """The verified snapshot at path; None when there is none; SnapshotError when it must not be used."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SnapshotError(f"unreadable ({exc.strerror or exc})") from None
    return decode(data, model_sha256, database)


def _in_place(path: Path) -> tuple[int, float] | None:
    """(revision, current_at) of the valid snapshot at path; None when none or not valid."""
    try:
        meta, _ = _verified_meta(path.read_bytes())
    except (OSError, SnapshotError):
        return None
    return meta.revision, meta.current_at


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An exclusive flock of ``<path>.lock`` (every writer of this path, in every process)."""
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_path(path: Path) -> Path:
    """A unique temporary file beside path (same directory: os.replace stays atomic)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.{secrets.token_hex(4)}.tmp")


def write_temp(path: Path, data: bytes) -> Path:
    """Write data to a new temporary file beside path, fsync'ed; returns its path."""
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def install(tmp: Path, path: Path, revision: int, current_at: float, force: bool = False) -> bool:
    """Replace path with tmp unless the snapshot in place is newer (and not ``force``: the database
    itself went back to an older revision); False (tmp removed) if it is."""
    try:
        with _exclusive(path):
            there = _in_place(path)
            if not force and there is not None and there > (revision, current_at):
                return False
            os.replace(tmp, path)
        _fsync_dir(path.parent)
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()  # gone already after the replace


def write(path: Path, data: bytes, revision: int, current_at: float, force: bool = False) -> bool:
    """Write a snapshot atomically (see the module docstring); False when a newer one is in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = write_temp(path, data)
    written = install(tmp, path, revision, current_at, force)
    _remove_stale_temps(path)
    return written


def _remove_stale_temps(path: Path) -> None:
    """Temporary files of crashed writers (older than STALE_TEMP_SECONDS) are removed."""
    now = time.time()
    for old in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if now - old.stat().st_mtime > STALE_TEMP_SECONDS:
                old.unlink()
