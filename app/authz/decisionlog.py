"""The decision log: the most recent real decisions of this process, for impact replay.

A ring buffer in memory (``collections.deque`` with ``maxlen``): appending is one C call under the
GIL (no lock, no I/O on the decision path), the oldest entry falls out, and a restart empties it.
Each process keeps its own recent traffic; a change request's impact replays what the process
answering the preview has seen (see ``app.policy.edits.replay``). A table would survive restarts
and merge processes, but would put a write on every decision, which the decision API avoids.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from .types import AccessRequest

SIZE = 10_000

# One decision as it was asked and answered: (request, allowed). A plain tuple: the cheapest thing to
# build on the decision path (a frozen dataclass cost ~0.5 µs per decision, a tuple ~0.1 µs).
Logged = tuple[AccessRequest, bool]


class DecisionLog:
    """A bounded log of recent decisions (oldest first)."""

    def __init__(self, size: int = SIZE) -> None:
        self._entries: deque[Logged] = deque(maxlen=size)
        # Keep one entry already built as a Logged tuple: the deque's own append (one C call, no
        # Python frame: the decision fast path's cached answers carry their entry)
        self.keep = self._entries.append

    @property
    def size(self) -> int:
        """How many decisions it keeps at most."""
        return self._entries.maxlen or 0

    def record(self, request: AccessRequest, allowed: bool) -> None:
        """Keep one decision (the oldest falls out when full)."""
        self._entries.append((request, allowed))

    def record_all(self, entries: Iterable[Logged]) -> None:
        """Keep each of ``entries`` in order (one C call: ``deque.extend``)."""
        self._entries.extend(entries)

    def recent(self) -> tuple[Logged, ...]:
        """A snapshot of the kept decisions, oldest first."""
        return tuple(self._entries)

    def clear(self) -> None:
        """Forget every decision (tests)."""
        self._entries.clear()


LOG = DecisionLog()
