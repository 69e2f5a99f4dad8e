"""The decision metrics' tallies (``HotMetrics.answered``, queued and added up in bulk) lose nothing.

Four threads answer requests as the decision path does while a fifth scrapes over and over: each
counter only grew from scrape to scrape, and at the end the totals equal an independent count the
test kept of what it asked to record (decisions by result and reason, and both histograms' counts).
"""

from __future__ import annotations

import random
import threading
from collections import Counter

from app.authz.types import Decision
from app.observability import DECISION_SECONDS, DECISIONS, LATENCY_BUCKETS, REQUEST_SECONDS, TALLY_EVERY, HotMetrics

REASONS = ("allowed", "not_permitted", "unknown_subject", "rank_too_low")
THREADS = 4
REQUESTS = 3 * TALLY_EVERY + 17  # each thread tallies itself three times; the rest waits for a scrape


def _hot() -> HotMetrics:
    return HotMetrics(
        {DECISIONS: ("decisions", ("result", "reason"))},
        {DECISION_SECONDS: ("decision", ("endpoint",)), REQUEST_SECONDS: ("request", ("endpoint", "status"))},
        LATENCY_BUCKETS,
        DECISIONS,
    )


def _scrape(hot: HotMetrics) -> tuple[Counter[tuple[str, str]], dict[tuple[str, ...], float]]:
    """authz_decisions by (result, reason), and each histogram's count by labels."""
    decided: Counter[tuple[str, str]] = Counter()
    counts: dict[tuple[str, ...], float] = {}
    for family in hot.collect():
        for sample in family.samples:
            if sample.name == f"{DECISIONS}_total":
                decided[(sample.labels["result"], sample.labels["reason"])] = int(sample.value)
            elif sample.name.endswith("_count"):
                counts[(family.name, *sample.labels.values())] = sample.value
    return decided, counts


def test_every_answered_request_is_counted_once_across_threads_and_scrapes() -> None:
    hot = _hot()
    expected: Counter[tuple[str, str]] = Counter()
    decision_key, request_key = (DECISION_SECONDS, "batch"), (REQUEST_SECONDS, "decision.check_batch", "200")
    plans = []
    for seed in range(THREADS):
        rnd = random.Random(seed)
        plan = []
        for _ in range(REQUESTS):
            ds = tuple(Decision(rnd.random() < 0.4, rnd.choice(REASONS), 1) for _ in range(rnd.randrange(0, 5)))
            expected.update(("allow" if d.allowed else "deny", d.reason) for d in ds)
            plan.append(ds)
        plans.append(plan)
    done = threading.Event()
    seen: list[Counter[tuple[str, str]]] = []

    def scraper() -> None:
        while not done.is_set():
            seen.append(_scrape(hot)[0])

    def answer(plan: list[tuple[Decision, ...]]) -> None:
        for ds in plan:
            hot.answered(ds, decision_key, 1e-5, request_key, 2e-5)

    watcher = threading.Thread(target=scraper)
    watcher.start()
    workers = [threading.Thread(target=answer, args=(plan,)) for plan in plans]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    done.set()
    watcher.join()

    decided, counts = _scrape(hot)
    assert decided == expected
    assert counts[(REQUEST_SECONDS, "decision.check_batch", "200")] == THREADS * REQUESTS
    assert counts[(DECISION_SECONDS, "batch")] == expected.total()
    assert seen, "the scraper ran"
    for before, after in zip(seen, [*seen[1:], decided]):
        assert all(after[key] >= n for key, n in before.items())  # counters only grow
