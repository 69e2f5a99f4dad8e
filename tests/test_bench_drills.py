"""The outage drill, cold cost and role change parts of the bench: summaries and Markdown, from results dicts."""

from __future__ import annotations

from bench import coldcost, outage, rolechange
from bench.outage import Answer


def test_outage_counts_only_right_200s_as_answered_and_reports_writes_by_status() -> None:
    answers = [
        Answer("before", "check", 200, 0.002),
        Answer("frozen", "check", 200, 0.002),
        Answer("frozen", "batch", 200, 0.002, right=False, detail="unknown_subject"),
        Answer("frozen", "authzen", 503, 0.001, retry_after="1", detail="503"),
        Answer("frozen", "write", 503, 0.5, retry_after="1", target=("o0", 7)),
        Answer("frozen", "write", 503, 0.5, target=("o2", 8)),
        Answer("frozen", "readyz", 503, 0.004),
    ]
    s = outage._summarise(answers)
    assert s["decisions"]["before"]["answered_pct"] == 100.0
    frozen = s["decisions"]["frozen"]
    assert (frozen["requests"], frozen["answered_right"], frozen["wrong"]) == (3, 1, 1)
    assert s["writes"]["frozen"]["statuses"] == {"503": 2}
    assert s["writes"]["frozen"]["retry_after_on_503"] == 1
    assert s["answers"]["frozen"]["authzen"] == {"503": 1}
    assert s["decisions"]["killed"]["answered_pct"] is None  # no request in that phase
    result = {**s, "data": {"workspaces": 3}, "phases_s": {"normal": 6, "freeze": 10, "kill": 10},
              "acknowledged": 5, "acknowledged_lost": 0, "acknowledged_not_decided": 0, "head": 9,
              "refused": 2, "refused_but_applied": 0, "recovered_s": 0.3, "total_s": 50}
    text = "\n".join(outage.lines(result))
    assert "| frozen | 33.3% of 3 | 1 |" in text
    assert "| 1 of 2 |" in text  # Retry-After on one of two 503s
    assert "lost (not in the database): **0**" in text
    assert "Not measured: boom" in "\n".join(outage.lines({"error": "boom"}))


def test_coldcost_and_rolechange_tables() -> None:
    st = {"n": 200, "p50_ms": 1.0, "p99_ms": 11.0, "max_ms": 23.0}
    edit = {"revision": 3, "edit": "remove", "first_new_s": 22.5, "all_new_s": 22.6, "cold": st, "meanwhile": st}
    cold = {"workspaces": 1000, "n": 200, "workers": 2, "edited_rule": "p, 90", "ready_s": 2.0,
            "after_start": st, "warm": {**st, "n": 2000}, "after_edit": edit, "after_restore": edit, "errors": 0}
    text = "\n".join(coldcost.lines(cold))
    assert "| first 200 after start (policy just loaded) | 1.00 / 11.00 ms (max 23 ms, n=200) |" in text
    assert "every worker there after 22.60 s" in text
    q = {"p50_ms": 1.0, "p99_ms": 2.0}
    w = {"p50_ms": 1.5, "p99_ms": 3.0}
    variant = {"p50_quiet_ms": 1.0, "p99_quiet_ms": 2.0, "p50_writes_ms": 1.5, "p99_writes_ms": 3.0, "p99_ratio": 1.5,
               "quiet": [q, q], "writes": [w, w], "patch_alone": st, "patch": st, "end_to_end": st,
               "visible_after_answer": st, "failed": 0, "invisible": 0, "min_revision_wrong": 0}
    rc = {"workspaces": 1000, "rounds": 2, "window_s": 8.0, "load_rate": 400, "clients": 4, "change_rate": 20,
          "confirm": 3, "before_commit": "143b41d",
          "variants": {"granian": variant, "before-granian": {"error": "boom"}}}
    text = "\n".join(rolechange.lines(rc))
    assert "| granian | 1.00 / 2.00 ms | 1.50 / 3.00 ms | 1.50× (2.0→3.0, 2.0→3.0 ms) |" in text
    assert "| before-granian | not measured: boom |" in text and "granian: 0, 0, 0" in text
    for mod in (coldcost, rolechange):
        assert "Not measured: boom" in "\n".join(mod.lines({"error": "boom"}))
