"""What decisions need from the database besides the engine, held in memory beside it.

A :class:`Directory` is loaded with every engine (``PolicyRuntime.reload`` and background
rebuilds, from the same snapshot as the policy) and swapped in with it:

* **every user**: id → (email, external id), and email → id, external id → id. Every reference
  is answered from here, so no decision queries the users table and a database outage changes
  nothing for anyone: a reference not held names nobody at this revision (``unknown_subject``).
  It is kept current through the revision log: creating a user and changing a user's email or
  external id is a revision (``user-change``, message ``user:<id>``, written by
  :func:`record_change` in the changing transaction), so every process fetches that user when it
  syncs, like a role change; a revision adding facts for a user it does not hold (one written
  outside the app's services) fetches that user too. Both happen in the sync or after-commit
  path, never on a decision. A user inserted in this process is held from its commit on.
* **AuthZEN resource catalogs** (``settings.authzen_resources``) of every workspace ({} for one
  without), as loaded, as fetched when a revision gives a new workspace its pack or changes a
  workspace's settings (``workspaces.update_settings``: kind ``workspace``, message ``settings of
  ws:<slug>``), and as committed by this process: ``authzen.catalog`` reads them, not the database.

Users are never deleted and ids never reused, so an entry never names the wrong person.

Memory: the users held at the load are one :class:`UserTable` of flat arrays (``array('q')`` of
ids, record offsets and two hash tables, one ``bytes`` of the UTF-8 texts): ~76
bytes a user (1M users, half with an external id; the dicts of strings it replaced took ~373),
with no per-user object, so the pages stay shared copy-on-write between forked workers. Users
put after the load (created, changed, fetched) sit in small dicts in front of it (``_ids``,
``_emails``, ``_externals``), which win over the table; the next load folds them in.

**A partition's directory** (``POLICY_PARTITION`` / ``POLICY_WORKSPACES``, :func:`load` given the
users the held facts name) holds those users in its table and every other user only in an
:class:`Index`: sorted ids and sorted 64-bit hashes of emails and external ids (~30 bytes a
user), so a reference to anyone — a grantee invited by email included — resolves to the same user
key as in a process holding everything, and every decision and reason stays the same. A hash match
is trusted: two different emails sharing a 64-bit hash is the one way it could name the wrong user
(about 10⁻⁸ at 10M users). Users created or changed after the load are fetched in full, as everywhere.
"""

from __future__ import annotations

import itertools
import struct
import threading
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.authz.rolemanager import user_number
from app.models import PolicyRevision, User, Workspace
from app.policy import store as policy_store
from app.policy.refs import user_ref

if TYPE_CHECKING:
    from app.authz.engine import RuleChange

SETTINGS_OF = "settings of ws:"  # the message of a workspace settings revision: "settings of ws:<slug>"
WORKSPACE_KIND = "workspace"  # the revision kind of workspace changes (settings among them)
USER_CHANGE = "user-change"  # the revision kind of a new user, an email or external id change (message: user:<id>)
USER_FACTS = ("g", "g2", "g3")  # fact types whose first field may be a user
MESSAGE_KINDS = (USER_CHANGE, WORKSPACE_KIND)  # revisions whose message names what to refetch
FETCH_CHUNK = 5000  # ids per query (SQLite binds at most 32,766 parameters)
_HEADER = struct.Struct("<HH")  # a user record's lengths: external id + 1 (0: none), email
_MAX_TEXT = 0xFFFF  # bytes of an email or external id a record holds (the columns: 254 characters)

Row = tuple[int, str, "str | None"]


def _slots(hashes: array[int], present: bytearray | None = None) -> array[int]:
    """An open-addressing table (linear probing, at most half full) of k + 1 for each k (with present[k])."""
    ks = range(len(hashes)) if present is None else [k for k in range(len(hashes)) if present[k]]
    mask = (1 << (2 * len(ks)).bit_length()) - 1
    slots = array("q", bytes(8 * (mask + 1)))
    for k in ks:
        i = hashes[k] & mask
        while slots[i]:
            i = (i + 1) & mask
        slots[i] = k + 1
    return slots


class UserTable:
    """Users as flat arrays, immutable once built: sorted ids with the offset of each one's record
    (``len(ext)+1 len(email)`` as two 16-bit lengths, then the UTF-8 texts; ext length 0: none) in
    one ``bytes``, and two open-addressing tables of record numbers by the hash of the email and of
    the external id (a hash hit is confirmed against the record)."""

    __slots__ = ("ids", "offsets", "blob", "email_slots", "ext_slots")

    def __init__(self, rows: Iterable[Row]) -> None:
        """Hold rows (id, lower-cased email, external id); a later row of an id replaces an earlier."""
        ids, offsets, blob = array("q"), array("q"), bytearray()
        email_hash, ext_hash, has_ext = array("q"), array("q"), bytearray()
        header = _HEADER.pack
        for uid, email, ext in rows:
            e = email.encode("utf-8", "surrogatepass")
            x = ext.encode("utf-8", "surrogatepass") if ext is not None else b""
            n = len(x) + 1 if ext is not None else 0
            if len(e) > _MAX_TEXT or n > _MAX_TEXT:
                raise ValueError(f"user {uid}: email or external id longer than {_MAX_TEXT} bytes")
            ids.append(uid)
            offsets.append(len(blob))
            blob += header(n, len(e)) + e + x
            email_hash.append(hash(email))
            ext_hash.append(hash(ext) if n else 0)
            has_ext.append(n > 0)
        if any(ids[k] >= ids[k + 1] for k in range(len(ids) - 1)):  # not by id (a snapshot with users put)
            last = {uid: k for k, uid in enumerate(ids)}  # the last row of each id wins
            pick = [last[uid] for uid in sorted(last)]
            ids, offsets = array("q", [ids[k] for k in pick]), array("q", [offsets[k] for k in pick])
            email_hash, ext_hash = array("q", [email_hash[k] for k in pick]), array("q", [ext_hash[k] for k in pick])
            has_ext = bytearray(has_ext[k] for k in pick)
        self.ids, self.offsets, self.blob = ids, offsets, bytes(blob)
        self.email_slots = _slots(email_hash)
        self.ext_slots = _slots(ext_hash, has_ext)

    def __len__(self) -> int:
        return len(self.ids)

    def _record(self, k: int) -> tuple[str, str | None]:
        o, blob = self.offsets[k], self.blob
        nx, ne = _HEADER.unpack_from(blob, o)
        email = blob[o + 4 : o + 4 + ne].decode("utf-8", "surrogatepass")
        ext = blob[o + 4 + ne : o + 3 + ne + nx].decode("utf-8", "surrogatepass") if nx else None
        return email, ext

    def _index(self, uid: int) -> int:
        k = bisect_left(self.ids, uid)
        return k if k < len(self.ids) and self.ids[k] == uid else -1

    def __contains__(self, uid: int) -> bool:
        return self._index(uid) >= 0

    def get(self, uid: int) -> tuple[str, str | None] | None:
        """(email, external id) of a user held, else None."""
        k = self._index(uid)
        return self._record(k) if k >= 0 else None

    def find(self, kind: str, value: str) -> int | None:
        """The id whose email (kind "email") or external id (otherwise) is value, else None."""
        slots = self.email_slots if kind == "email" else self.ext_slots
        field = 0 if kind == "email" else 1
        mask = len(slots) - 1
        i = hash(value) & mask
        while k := slots[i]:
            if self._record(k - 1)[field] == value:
                return self.ids[k - 1]
            i = (i + 1) & mask
        return None

    def rows(self) -> Iterator[Row]:
        """Every user, (id, email, external id), by id."""
        for k, uid in enumerate(self.ids):
            yield (uid, *self._record(k))


class Index:
    """Every user of a partition's directory in a few bytes: which ids exist, and who an email or
    external id names (sorted 64-bit hashes beside the ids; built once at load, never changed)."""

    __slots__ = ("_ids", "_emails", "_email_ids", "_externals", "_external_ids")

    def __init__(
        self, ids: array[int], emails: tuple[array[int], array[int]], externals: tuple[array[int], array[int]]
    ) -> None:
        self._ids = ids
        self._emails, self._email_ids = emails
        self._externals, self._external_ids = externals

    @staticmethod
    def _sorted(hashes: array[int], ids: array[int]) -> tuple[array[int], array[int]]:
        order = sorted(range(len(hashes)), key=hashes.__getitem__)
        return array("q", (hashes[i] for i in order)), array("q", (ids[i] for i in order))

    @classmethod
    def build(cls, rows: Iterable[tuple[int, str, str | None]]) -> Index:
        """The index of these users (id, lower-cased email, external id)."""
        eh, ei, xh, xi = array("q"), array("q"), array("q"), array("q")
        for uid, email, ext in rows:
            eh.append(hash(email))
            ei.append(uid)
            if ext is not None:
                xh.append(hash(ext))
                xi.append(uid)
        emails = cls._sorted(eh, ei)
        return cls(array("q", sorted(ei)), emails, cls._sorted(xh, xi))

    def has(self, uid: int) -> bool:
        """True if a user with this id existed at the load."""
        i = bisect_left(self._ids, uid)
        return i < len(self._ids) and self._ids[i] == uid

    def find(self, kind: str, value: str) -> int | None:
        """The id of the user whose email (``email``, lower-cased) or external id (``ext``) this was at the load."""
        hashes, ids = (self._emails, self._email_ids) if kind == "email" else (self._externals, self._external_ids)
        h = hash(value)
        i = bisect_left(hashes, h)
        return ids[i] if i < len(hashes) and hashes[i] == h else None

    def nbytes(self) -> int:
        """The index's size in bytes (buffers only)."""
        arrays = (self._ids, self._emails, self._email_ids, self._externals, self._external_ids)
        return sum(a.itemsize * len(a) for a in arrays)


_VERSIONS = itertools.count(1)


class Directory:
    """Every user (and the catalogs at load), for decisions without a query.

    Written under its own lock (the runtime's sync, and this process's commits); read without
    one: the table never changes, and a user put since is in the dicts (single dict operations).
    """

    __slots__ = (
        "_table",
        "_ids",
        "_emails",
        "_externals",
        "_added",
        "catalogs",
        "pending",
        "_lock",
        "index",
        "version",
    )

    def __init__(self, table: UserTable | None = None) -> None:
        self._lock = threading.Lock()
        self._table = table if table is not None else UserTable(())  # the users held at the load
        self._ids: dict[int, tuple[str, str | None]] = {}  # id → (email, external id): put since the load
        self._emails: dict[str, int] = {}  # lower-cased email → id, of the users put since
        self._externals: dict[str, int] = {}  # external id → id, of the users put since
        self._added = 0  # users put since the load that the table does not hold
        self.catalogs: dict[str, Any] = {}  # workspace slug → parsed AuthZEN catalog ({}: none)
        self.pending: set[int | str] = set()  # user ids and workspace slugs not fetched yet
        # A partition's: every other user, compactly (held users and later changes are in the dicts).
        self.index: Index | None = None
        # The users held, as a number unique across directories: a new one after every put (taken
        # when the put is complete), so answers stamped with it are never served for other users.
        self.version = next(_VERSIONS)

    def __len__(self) -> int:
        return len(self._table) + self._added

    def __contains__(self, uid: object) -> bool:
        return uid in self._ids or (isinstance(uid, int) and uid in self._table)

    def _entry(self, uid: int) -> tuple[str, str | None] | None:
        entry = self._ids.get(uid)
        return entry if entry is not None else self._table.get(uid)

    def email(self, uid: int) -> str | None:
        """The email of user uid if this directory holds the user (None otherwise)."""
        entry = self._entry(uid)
        return entry[0] if entry is not None else None

    def key(self, ref: tuple[str, int | str]) -> str | None:
        """The user key of a reference ("id", n) / ("email", lower-cased) / ("ext", value), or None."""
        kind, value = ref
        index = self.index
        if isinstance(value, int):
            if value in self:
                return f"user:{value}"
            return f"user:{value}" if index is not None and index.has(value) else None
        uid = (self._emails if kind == "email" else self._externals).get(value)
        if uid is None:
            uid = self._table.find(kind, value)
            if uid is not None and uid in self._ids:  # changed since the load: the dicts say who it is
                current = self._ids[uid]
                if current[0 if kind == "email" else 1] != value:
                    return None
            if uid is None and index is not None:
                uid = index.find(kind, value)
                # a user held in full has their current email and external id here: the index's is older
                if uid is not None and uid in self:
                    return None
        return f"user:{uid}" if uid is not None else None

    def lookup(self, value: object) -> str | None:
        """The user key of a raw reference (id, ``user:<id>``, email, external id), or None.

        ``user:<id>`` as held is answered without ``refs.user_ref``: a decision's commonest subject.
        """
        if value.__class__ is str:
            uid = user_number(value)
            if uid is not None and uid in self:
                return value  # ``user:<id>`` as held: the key as asked
        ref = user_ref(value)
        return self.key(ref) if ref is not None else None

    def put(self, uid: int, email: str, external_id: str | None) -> None:
        """Hold (or update) one user: the old email and external id stop naming them."""
        email = email.lower()
        with self._lock:
            old = self._entry(uid)
            self._ids[uid] = (email, external_id)
            self._emails[email] = uid
            if external_id is not None:
                self._externals[external_id] = uid
            if old is None:
                self._added += 1
            else:
                if old[0] != email and self._emails.get(old[0]) == uid:
                    del self._emails[old[0]]
                if old[1] is not None and old[1] != external_id and self._externals.get(old[1]) == uid:
                    del self._externals[old[1]]
            self.version = next(_VERSIONS)

    def rows(self) -> list[Row]:
        """Every user held, (id, lower-cased email, external id): what a snapshot stores."""
        put = dict(self._ids)
        out: list[Row] = [row if row[0] not in put else (row[0], *put[row[0]]) for row in self._table.rows()]
        held = self._table
        out += [(uid, email, ext) for uid, (email, ext) in put.items() if uid not in held]
        return out

    @classmethod
    def from_rows(cls, rows: Iterable[Row], catalogs: Mapping[str, Any]) -> Directory:
        """A directory of these users (as :meth:`rows` gives them) and catalogs (a snapshot's)."""
        d = cls(UserTable(rows))
        d.catalogs = dict(catalogs)
        return d

    def changed(self, uid: int, kind: str, value: str | None) -> None:
        """A committed change of a held user's email (kind "email") or external id ("ext") in this process."""
        old = self._entry(uid)
        if old is None or (kind == "email" and not isinstance(value, str)):
            return
        self.put(uid, value if kind == "email" else old[0], value if kind == "ext" else old[1])  # type: ignore[arg-type]


CATALOG_KEY = "authzen_resources"  # workspace settings: the resources the AuthZEN PDP recognises
Catalog = dict[str, dict[str, Mapping[str, Any]]]


def parse_catalog(settings: object) -> Catalog:
    """A workspace's settings → its catalog, type → id → properties (malformed entries skipped; {} if none)."""
    entries = settings.get(CATALOG_KEY) if isinstance(settings, Mapping) else None
    out: Catalog = {}
    for e in entries if isinstance(entries, list) else []:
        if isinstance(e, Mapping) and isinstance(e.get("type"), str) and isinstance(e.get("id"), str):
            props = e.get("properties")
            out.setdefault(e["type"], {})[e["id"]] = props if isinstance(props, Mapping) else {}
    return out


def user_id(value: str) -> int | None:
    body = value[5:]
    return int(body) if value.startswith("user:") and body.isascii() and body.isdigit() and len(body) < 19 else None


def load(session: Session, held: set[int] | None = None, holds: Callable[[str], bool] | None = None) -> Directory:
    """The directory read through session (the policy's own snapshot, after the facts): every user,
    one sequential read of three columns (PostgreSQL: 100,000 users 0.20 s, beside seconds for the
    facts themselves), and every workspace's catalog.

    A partition's (``held``: the ids of the users its facts name; ``holds``: whether it holds a
    workspace domain): those users in the table, everyone in the :class:`Index`, the held workspaces'
    catalogs.
    """
    query = select(User.id, User.email, User.external_id).order_by(User.id)
    rows = session.execute(query.execution_options(yield_per=FETCH_CHUNK))
    if held is None:
        d = Directory(UserTable((int(uid), str(email).lower(), ext) for uid, email, ext in rows))
    else:
        kept: list[Row] = []

        def everyone() -> Iterator[Row]:
            for uid, email, ext in rows:
                row = (int(uid), str(email).lower(), ext)
                if row[0] in held:
                    kept.append(row)
                yield row

        index = Index.build(everyone())
        d = Directory(UserTable(kept))
        d.index = index
    for slug, settings in session.execute(select(Workspace.slug, Workspace.settings)):
        if holds is None or holds(f"ws:{slug}"):
            d.catalogs[str(slug)] = parse_catalog(settings)
    return d


def wanted(
    d: Directory, revisions: Iterable[tuple[int, str, Sequence[RuleChange]]], messages: Mapping[int, str]
) -> set[int | str]:
    """What to fetch after revisions: ids of users their facts add that d does not hold and of users
    a ``user-change`` names (created or changed), slugs of workspaces given a pack that d does not hold, and
    whatever an earlier fetch could not get."""
    out = set(d.pending)
    for number, kind, changes in revisions:
        note = messages.get(number, "")
        if kind == WORKSPACE_KIND and note.startswith(SETTINGS_OF):
            out.add(note[len(SETTINGS_OF) :])  # a settings change: the catalog again
        if kind == USER_CHANGE:
            uid = user_id(note)
            if uid is not None:
                out.add(uid)
            continue
        for ch in changes:
            if ch.op != "add":
                continue
            if ch.rule[0] in USER_FACTS and ch.rule[1].startswith("user:"):
                uid = user_id(ch.rule[1])
                if uid is not None and uid not in d:
                    out.add(uid)
            elif ch.rule[0] == "g4" and ch.rule[1].startswith("ws:") and ch.rule[1][3:] not in d.catalogs:
                out.add(ch.rule[1][3:])
    return out


def fetch(session: Session, d: Directory, wanted: set[int | str]) -> None:
    """Read users (by id) and workspace catalogs (by slug) into d, a few queries at most; clears
    them from ``pending``."""
    ids = sorted(w for w in wanted if isinstance(w, int))
    slugs = sorted(w for w in wanted if isinstance(w, str))
    for i in range(0, len(ids), FETCH_CHUNK):
        chunk = ids[i : i + FETCH_CHUNK]
        for uid, email, ext in session.execute(select(User.id, User.email, User.external_id).where(User.id.in_(chunk))):
            d.put(int(uid), str(email), ext)
    for i in range(0, len(slugs), FETCH_CHUNK):
        rows = session.execute(
            select(Workspace.slug, Workspace.settings).where(Workspace.slug.in_(slugs[i : i + FETCH_CHUNK]))
        )
        for slug, settings in rows:
            d.catalogs[str(slug)] = parse_catalog(settings)
    d.pending.difference_update(wanted)


def messages(session: Session, numbers: Sequence[int]) -> dict[int, str]:
    """Revision number → message, for the revisions whose message carries what they changed."""
    if not numbers:
        return {}
    rows = session.execute(select(PolicyRevision.id, PolicyRevision.message).where(PolicyRevision.id.in_(numbers)))
    return {int(n): str(m or "") for n, m in rows}


def record_change(session: Session, user: User, actor_id: int | None) -> None:
    """Log the creation of user, or a change of their email or external id, as a revision of the
    caller's transaction, so every process (re)fetches the user when it applies it (``PolicyRuntime.sync``)."""
    policy_store.begin_write(session, USER_CHANGE, actor_id, message=f"user:{user.id}")
