"""Which partition of a partitioned decision tier holds a workspace, computed as the service and
HAProxy compute it (the service's ``app.authz.selection``, repeated here: this package does not
import the service): slot = CRC-32 of the slug (without ``ws:``) & 1023, partition = Lamping and
Veach's jump consistent hash of the slot among N."""

from __future__ import annotations

import zlib

SLOTS = 1024
#: The header HAProxy routes a decision by (deploy/haproxy-partitions.cfg): the workspace's slug.
WORKSPACE_HEADER = "X-Authz-Workspace"


def slot_of(workspace: str) -> int:
    """The slot of a workspace slug or ``ws:<slug>``."""
    slug = workspace[3:] if workspace.startswith("ws:") else workspace
    return zlib.crc32(slug.encode("utf-8")) & (SLOTS - 1)


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash of ``key`` into ``buckets`` (≥ 1) buckets."""
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    b, j = -1, 0
    key &= 0xFFFFFFFFFFFFFFFF
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


def partition_of(workspace: str, count: int) -> int:
    """The partition (0 ≤ p < count) holding a workspace."""
    return jump_hash(slot_of(workspace), count)
