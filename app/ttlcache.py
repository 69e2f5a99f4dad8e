"""A per-process cache of positive lookups with a time-to-live and a generation guard.

Used for service tokens and for user references of the decision API. Only answers that name
something are stored; an invalidation bumps ``generation`` so that a lookup which started before
it never stores its (possibly stale) answer afterwards. An expired entry stays until replaced,
discarded or the cache starts over, so a caller whose source is unreachable can still use the
last answer (``get_stale``). Bounded: a full cache starts over.

Not ``cachetools.TTLCache``: it evicts an expired entry on access, so the last known answer
would be gone exactly when the database is unreachable, and it has no generation guard against a
lookup racing an invalidation; both would have to be written around it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Mapping
from typing import Any, Generic, TypeVar

from flask import current_app, has_app_context

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_clock = time.monotonic  # tests replace it to expire entries


class TTLCache(Generic[K, V]):
    """key → (expiry, value); thread-safe, positive entries only, at most ``max_entries``."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}
        self._lock = threading.Lock()
        self.generation = 0
        self.resets = 0  # times it started over (cleared, or full): what it held may be gone

    def get(self, key: K) -> V | None:
        """The live value for key, or None (an expired entry is kept for :meth:`get_stale`)."""
        entry = self._entries.get(key)
        if entry is None or entry[0] <= _clock():
            return None
        return entry[1]

    def get_stale(self, key: K) -> V | None:
        """The last value stored for key, expired or not (for when the source cannot be asked)."""
        entry = self._entries.get(key)
        return entry[1] if entry is not None else None

    def put_many(self, found: Mapping[K, V], generation: int) -> bool:
        """Store answers looked up at ``generation``; False when dropped (anything invalidated since)."""
        if self.ttl <= 0 or not found:
            return True
        with self._lock:
            if generation != self.generation:
                return False
            if len(self._entries) + len(found) > self.max_entries:
                self._entries.clear()
                self.resets += 1
            expires = _clock() + self.ttl
            for key, value in found.items():
                self._entries[key] = (expires, value)
            return True

    def put(self, key: K, value: V, generation: int) -> None:
        """Store one answer looked up at ``generation``."""
        self.put_many({key: value}, generation)

    def discard(self, *keys: K) -> None:
        """Forget keys now; lookups already under way will not store their answers."""
        with self._lock:
            self.generation += 1
            for key in keys:
                self._entries.pop(key, None)

    def discard_values(self, predicate: Callable[[V], bool]) -> None:
        """Forget every entry whose value satisfies predicate."""
        with self._lock:
            self.generation += 1
            for key in [k for k, (_, v) in self._entries.items() if predicate(v)]:
                del self._entries[key]

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self.generation += 1
            self.resets += 1
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def app_cache(
    ext_key: str,
    ttl_config: str,
    default_ttl: float,
    max_entries: int,
    factory: Callable[[float, int], TTLCache[Any, Any]] = TTLCache,
) -> TTLCache[K, V] | None:
    """The current app's cache under ``app.extensions[ext_key]`` (None outside an app context),
    made by ``factory(ttl, max_entries)`` the first time."""
    if not has_app_context():
        return None
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    found = app.extensions.get(ext_key)
    if found is None:
        ttl = float(app.config.get(ttl_config, default_ttl))
        found = app.extensions.setdefault(ext_key, factory(ttl, max_entries))
    return found  # type: ignore[no-any-return]
