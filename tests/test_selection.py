"""app.authz.selection: slots as HAProxy computes them, jump consistent hashing, and parsing."""

from __future__ import annotations

import zlib
from collections import Counter

import pytest

from app.authz.selection import SLOTS, Selection, jump_hash, partition_of, slot_map, slot_of


def test_slot_is_crc32_of_the_slug_masked() -> None:
    # CRC-32/ISO-HDLC check value ("123456789" → 0xCBF43926), then a slug's slot.
    assert zlib.crc32(b"123456789") == 0xCBF43926
    assert slot_of("ws:acme") == slot_of("acme") == zlib.crc32(b"acme") & 1023 == 0x23E


def test_jump_hash_is_in_range_and_refuses_no_buckets() -> None:
    assert [jump_hash(k, 1) for k in range(5)] == [0] * 5
    assert all(0 <= jump_hash(k, n) < n for k in range(300) for n in (2, 3, 7, 64))
    with pytest.raises(ValueError):
        jump_hash(1, 0)


def test_growing_moves_only_to_the_new_partition() -> None:
    for n in range(1, 9):
        before = [jump_hash(s, n) for s in range(SLOTS)]
        after = [jump_hash(s, n + 1) for s in range(SLOTS)]
        moved = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
        assert all(b == n for _, b in moved)
        assert abs(len(moved) - SLOTS / (n + 1)) < 0.35 * SLOTS / (n + 1)


def test_partitions_are_balanced_and_the_map_agrees() -> None:
    counts = Counter(partition_of(f"ws:w{i}", 4) for i in range(20_000))
    assert set(counts) == {0, 1, 2, 3}
    assert max(counts.values()) < 1.15 * min(counts.values())
    table = dict(line.split() for line in slot_map(4).splitlines())
    assert len(table) == SLOTS
    assert all(int(table[str(slot_of(f"w{i}"))]) == partition_of(f"w{i}", 4) for i in range(500))


def test_selection_holds() -> None:
    every = Selection()
    assert every.everything and every.holds("ws:x") and every.describe() == "all"
    part = Selection.parse(partition="1/4")
    held = [f"ws:w{i}" for i in range(200) if part.holds(f"ws:w{i}")]
    assert held and all(partition_of(d, 4) == 1 for d in held)
    assert part.holds("*") and part.holds("platform:classroom")
    listed = Selection.parse(workspaces="acme, ws:beta")
    assert listed.workspaces == frozenset({"ws:acme", "ws:beta"})
    assert listed.holds("ws:acme") and not listed.holds("ws:gamma")
    assert Selection.parse(partition="0/2", workspaces="a,b").describe() == "partition 0/2, 2 workspaces"


@pytest.mark.parametrize("bad", ["4/4", "1/0", "-1/2", "a/b", "1/2/3", "0/2000", " "])
def test_bad_partitions_are_refused(bad: str) -> None:
    if not bad.strip():
        assert Selection.parse(partition=bad).everything
        return
    with pytest.raises(ValueError, match="partition"):
        Selection.parse(partition=bad)
