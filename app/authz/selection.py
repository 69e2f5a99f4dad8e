"""Which workspaces a process holds: all of them, a listed set, or one partition of N.

A workspace's partition is found in two steps, the way HAProxy can repeat it:

1. its **slot**: CRC-32 (zlib's, the same as HAProxy's ``crc32`` converter) of the slug — the
   domain without ``ws:`` — masked to :data:`SLOTS` (1,024) slots: ``crc32 & 1023``;
2. the slot's **partition** among ``count``: Lamping and Veach's jump consistent hash of the slot, so
   going from N to N+1 partitions moves about 1/(N+1) of the slots and no slot moves between two
   partitions that both stay. :func:`slot_map` writes the slot → partition table for HAProxy's
   ``map_int`` converter.

Domains that are not a workspace (``*``, ``platform:<pack>``) are held by every selection: they are
few and every replica needs them (platform roles decide inside workspaces too). So are the
workspaces named in ``also`` (the runtime puts the ``service`` meta-pack's workspace there).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

SLOTS = 1024
_PARTITION = re.compile(r"(\d{1,4})/(\d{1,4})")


def slot_of(domain: str) -> int:
    """The slot of a workspace domain (``ws:<slug>``) or slug: ``crc32(slug) & (SLOTS - 1)``."""
    slug = domain[3:] if domain.startswith("ws:") else domain
    return zlib.crc32(slug.encode("utf-8")) & (SLOTS - 1)


def jump_hash(key: int, buckets: int) -> int:
    """Lamping and Veach's jump consistent hash of ``key`` into ``buckets`` (≥ 1) buckets."""
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    b, j = -1, 0
    key &= 0xFFFFFFFFFFFFFFFF
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


def partition_of(domain: str, count: int) -> int:
    """The partition (0 ≤ p < count) holding a workspace domain or slug."""
    return jump_hash(slot_of(domain), count)


def fact_domain(rule: tuple[str, ...]) -> str:
    """The domain a fact belongs to: the third field of ``g``/``g2``/``g3`` (user, role or scope,
    domain), the first of ``g4``/``g5`` (workspace → pack or feature); ``*`` for anything else."""
    ptype = rule[0]
    if ptype in ("g", "g2", "g3"):
        return rule[3] if len(rule) > 3 else "*"
    if ptype in ("g4", "g5"):
        return rule[1]
    return "*"


def slot_map(count: int) -> str:
    """The slot → partition table for HAProxy's ``map_int``: one ``<slot> <partition>`` line per slot."""
    return "".join(f"{slot} {jump_hash(slot, count)}\n" for slot in range(SLOTS))


@dataclass(frozen=True)
class Selection:
    """The workspaces a process holds: every one (both fields None), a listed set, or a partition."""

    workspaces: frozenset[str] | None = None  # domains, ws:<slug>
    partition: tuple[int, int] | None = None  # (index, count)
    also: frozenset[str] = frozenset()  # workspace domains held whatever the rest says

    def __post_init__(self) -> None:
        # The slots of the partition, computed once: holds() is one CRC-32 and one index after that.
        slots = None
        if self.partition is not None:
            k, n = self.partition
            slots = bytes(jump_hash(s, n) == k for s in range(SLOTS))
        object.__setattr__(self, "_slots", slots)

    @classmethod
    def parse(
        cls, partition: str | None = None, workspaces: str | None = None, also: frozenset[str] = frozenset()
    ) -> Selection:
        """From settings: ``partition`` as ``"k/N"`` (0 ≤ k < N ≤ 1024), ``workspaces`` a comma list of
        slugs or domains. ValueError, naming the value, for anything else."""
        part: tuple[int, int] | None = None
        if partition and partition.strip():
            m = _PARTITION.fullmatch(partition.strip())
            if not m or not 0 <= int(m[1]) < int(m[2]) <= SLOTS:
                raise ValueError(f"partition must be k/N with 0 <= k < N <= {SLOTS}: {partition!r}")
            part = (int(m[1]), int(m[2]))
        listed: frozenset[str] | None = None
        if workspaces:
            names = [w.strip() for w in workspaces.split(",") if w.strip()]
            listed = frozenset(w if w.startswith("ws:") else f"ws:{w}" for w in names)
        return cls(listed, part, also)

    @property
    def everything(self) -> bool:
        """True if every workspace is held."""
        return self.workspaces is None and self.partition is None

    def holds(self, domain: str) -> bool:
        """True if the process holds the domain (every non-workspace domain is held)."""
        if not domain.startswith("ws:") or domain in self.also:
            return True
        if self.workspaces is not None and domain not in self.workspaces:
            return False
        slots: bytes | None = self._slots  # type: ignore[attr-defined]
        return slots is None or slots[zlib.crc32(domain[3:].encode("utf-8")) & (SLOTS - 1)] == 1

    def keeps(self, rule: tuple[str, ...]) -> bool:
        """True if the fact belongs to a domain the process holds."""
        return self.holds(fact_domain(rule))

    def partition_label(self, domain: str) -> str | None:
        """The partition of a workspace domain as ``"k/N"`` among this selection's N (None without one)."""
        if self.partition is None:
            return None
        return f"{partition_of(domain, self.partition[1])}/{self.partition[1]}"

    def describe(self) -> str:
        """A short text for problems, readiness and logs: ``all``, ``partition 1/4``, ``3 workspaces``."""
        parts = []
        if self.partition is not None:
            parts.append(f"partition {self.partition[0]}/{self.partition[1]}")
        if self.workspaces is not None:
            parts.append(f"{len(self.workspaces)} workspaces")
        return ", ".join(parts) or "all"
