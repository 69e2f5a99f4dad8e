"""Answers remembered for the state they were decided in.

A decision is a function of the question and of two states: the engine's (its ``generation``, a
number unique across engines, renewed as the last step of every change) and the user directory's
(its ``version``, likewise renewed after every put). A :class:`Stamped` table holds answers for one
such ``(generation, version)`` stamp. The stamp is read *before* deciding, so an answer decided
while a change landed carries the older stamp and is never served at the newer state; a new stamp
replaces the table instead of clearing it, so a thread still finishing at the old stamp writes into
a table nobody reads any more. The tables are cleared when full, as the engine's memo is: an LRU's
bookkeeping on every hit cost more than the misses it would save (the repeated question is the
common one).

Two tables use it: whole checks (``app.decisions.resolution.decide``: a parsed, hashable check →
its request and decision) and whole single-check bodies (``app.api.decision_wsgi``: the body's bytes
→ its answer), which skip the parse, the references' resolution and the memo key of a repeated
question. Tests: ``tests/test_answer_tables.py`` (random changes against a table-free engine).
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

Stamp = tuple[int, int]  # (engine generation, directory version)


class Stamped(Generic[K, V]):
    """One table of answers per stamp: :meth:`at` gives the current stamp's (a new one when it moved)."""

    __slots__ = ("limit", "held")  # held: (stamp, table), read without a call by the decision fast path

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held: tuple[Stamp, dict[K, V]] = ((0, 0), {})

    def at(self, stamp: Stamp) -> dict[K, V]:
        """The table of ``stamp``, read before deciding. A thread at an older stamp may put its older
        table back: the answers are then decided again, never mixed."""
        held = self.held
        if held[0] != stamp:
            held = self.held = (stamp, {})
        return held[1]

    def peek(self, stamp: Stamp) -> dict[K, V] | None:
        """The table of ``stamp`` if it is the current one, else None (never replaces it)."""
        held = self.held
        return held[1] if held[0] == stamp else None

    def remember(self, table: dict[K, V], key: K, value: V) -> None:
        """Keep ``value`` for ``key`` in ``table`` (one :meth:`at` gave), clearing it when full."""
        if len(table) >= self.limit:
            table.clear()
        table[key] = value
