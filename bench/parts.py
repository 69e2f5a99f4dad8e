"""What the extra bench parts (``bench.run.EXTRA_PARTS``) share: running one alone, their Markdown tables."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from bench.probe import percentiles

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")

Result = dict[str, Any]


def main(name: str, run: Callable[[str, str, int, str], Result], lines: Callable[[Result], list[str]]) -> None:
    """``python -m bench.<name> [W] [out.json]``: ``run(url, token, W, log_dir)`` on the W data set
    (``bench.datagen.ensure_database``, default W = 1,000); write the result to out.json (default
    ``bench/results/<name>_w<W>.json``, the logs beside it) and print ``lines(result)``."""
    from bench.datagen import ensure_database

    w = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(RESULTS, f"{name}_w{w}.json")
    log_dir = os.path.dirname(os.path.abspath(path))
    os.makedirs(log_dir, exist_ok=True)
    url, meta = ensure_database(w)
    result = run(url, meta["token"], w, log_dir)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)
    print("\n".join(lines(result)))


def table(header: Sequence[str], rows: Iterable[str] = ()) -> list[str]:
    """A Markdown table after a blank line: the header cells (an empty one stays ``| |``), the rule, the rows."""
    return ["", "|" + "".join(f" {c} |" if c else " |" for c in header), "|" + "---|" * len(header), *rows]


def stats_ms(ns: list[int]) -> Result:
    """``n``, ``p50_ms``, ``p99_ms`` and ``max_ms`` of latencies in ns (:func:`bench.probe.percentiles`);
    ``{"n": 0}`` for none."""
    s = percentiles(ns)
    if not s:
        return {"n": 0}
    return {"n": s["n"], "p50_ms": s["p50_us"] / 1000, "p99_ms": s["p99_us"] / 1000, "max_ms": s["max_us"] / 1000}


def p50_p99(s: Result | None, digits: int = 1, count: bool = False) -> str:
    """A :func:`stats_ms` figure as ``p50 / p99 ms (max …)``, with ``n=…`` if ``count``; ``—`` for none."""
    if not s or not s.get("n"):
        return "—"
    n = f", n={s['n']}" if count else ""
    return f"{s['p50_ms']:.{digits}f} / {s['p99_ms']:.{digits}f} ms (max {s['max_ms']:.0f} ms{n})"
