"""The peer-comparison part of the bench: its ratios (per round, with their spread, none for a peer
that disagrees with ours) and its Markdown sections, from a results dict."""

from __future__ import annotations

from typing import Any

from bench.peer import _order, _turns, merge_slices, ratios
from bench.report import compare_lines


def _run(app: str, rps: float, rnd: int, path: str = "/v1/check", pin: str = "pinned") -> dict[str, Any]:
    return {
        "app": app,
        "server": "granian",
        "pinning": pin,
        "keepalive": True,
        "path": path,
        "round": rnd,
        "requests_per_s": rps,
        "p50_ms": 1.0,
        "p99_ms": 2.0,
        "errors": 0,
    }


AGREE = {"regorus": {"requests": 7000, "disagree": 0}, "dict": {"requests": 7000, "disagree": 3}}


def test_ratios_are_per_round_with_their_spread_and_none_for_a_peer_that_disagrees() -> None:
    runs = [
        *(_run("ours", 1000.0, 0), _run("noop", 2000.0, 0), _run("regorus", 500.0, 0), _run("dict", 900.0, 0)),
        *(_run("ours", 1200.0, 1), _run("noop", 2000.0, 1), _run("regorus", 800.0, 1), _run("dict", 900.0, 1)),
        *(_run("ours", 900.0, 2), _run("noop", 1000.0, 2), _run("regorus", 1000.0, 2), _run("dict", 900.0, 2)),
    ]
    r = ratios(runs, AGREE)
    noop = r["pinned granian /v1/check ours/noop"]
    assert (noop["min"], noop["median"], noop["max"]) == (0.5, 0.6, 0.9)
    rego = r["pinned granian /v1/check ours/regorus"]
    assert (rego["min"], rego["median"], rego["max"]) == (0.9, 1.5, 2.0)
    assert not any(k.endswith("ours/dict") for k in r)  # it disagrees: no ratio


def test_the_section_prints_agreement_before_the_ratios_and_the_targets_beside_them() -> None:
    runs = [_run("ours", 900.0, 0), _run("noop", 1000.0, 0), _run("regorus", 1000.0, 0)]
    runs += [_run("ours", 610.0, 0, "/v1/check/batch"), _run("noop", 1000.0, 0, "/v1/check/batch")]
    cmp = {
        "workspaces": 100_000,
        "users": 1_000_000,
        "mix": "m",
        "mix_requests": 7000,
        "excluded_actions": {"authzen_cert": ["delete", "write"]},
        "servers": ["granian"],
        "rounds": 1,
        "seconds": 10.0,
        "agreement": AGREE,
        "runs": runs,
        "ratios": ratios(runs, AGREE),
    }
    text = "\n".join(compare_lines({"all": cmp, "default": {"error": "boom"}}))
    assert "1,000,000 users (as many users as memberships)" in text
    assert "| dict | 7,000 | 3 (no ratio) |" in text
    assert "| regorus | 7,000 | 0 |" in text
    assert text.index("differ from ours") < text.index("ratio of throughputs")
    assert "| pinned granian /v1/check ours/noop | 0.90× | 0.90× | 0.90× | ≥ 0.85× (met) |" in text
    assert "| pinned granian /v1/check ours/regorus | 0.90× | 0.90× | 0.90× | ≥ 1.15× (**not met**) |" in text
    assert "| pinned granian /v1/check/batch ours/noop | 0.61× | 0.61× | 0.61× | ≥ 0.60× (met) |" in text
    assert "authzen_cert: delete, write" in text
    assert "Comparison failed: boom" in text


def test_a_former_comparison_without_agreement_prints_no_ratio() -> None:
    former = {"mix": "m", "peers": ["regorus"], "runs": [_run("ours", 1.0, 0)], "ratios": {"x ours/regorus": 2.0}}
    text = "\n".join(compare_lines(former))
    assert "rerun `BENCH_PARTS=compare`" in text
    assert "ours/regorus" not in text


def test_issue25_table_lists_every_target_with_its_run() -> None:
    """One table: the comparison's lowest ratio against each target (after the disagreement
    count), and the parts' figures against theirs, each row naming the run it came from."""
    from bench.report import issue25_lines

    runs = [_run("ours", 900.0, r) for r in range(2)] + [_run("noop", 1000.0, r) for r in range(2)]
    runs += [_run("regorus", 1000.0, r) for r in range(2)]
    one = {
        "users": 20000,
        "rounds": 2,
        "run": "2026-12-07 06:00 UTC",
        "agreement": {"regorus": {"requests": 7000, "disagree": 0}},
        "ratios": ratios(runs, {"regorus": {"requests": 7000, "disagree": 0}}),
    }
    parts = {
        "packedit": {"run": "R2", "variants": {"listen": {"all_new_s": 0.25, "during": {"p99_ms": 1.5}}}},
        "footprint": {"loads": {"this tree": {"engine_b_per_membership": 83.0, "directory_b_per_user": 76.0}}},
    }
    text = "\n".join(issue25_lines({"http": {"compare": {"default": one}}, "parts": parts}))
    assert "| peers' answers differing from ours (20,000 users; regorus) | 0 of 7,000 | 0 | met |" in text
    assert "| pinned granian /v1/check ours/noop (20,000 users; lowest / median of 2 rounds) | 0.90× / 0.90× " in text
    assert "| ≥ 0.85× | met | 2026-12-07 06:00 UTC |" in text
    assert "ours/regorus (20,000 users; lowest / median of 2 rounds) | 0.90× / 0.90× | ≥ 1.15× | **not met** |" in text
    assert "| pack edit: commit → every worker at the new revision | 250 ms | ≤ 200 ms | **not met** | R2 |" in text
    assert "| pack edit: decision p99 during the edit | 1.50 ms | ≤ 5 ms | met | R2 |" in text
    assert "| engine heap per membership | 83.0 B | ≤ 130 B | met | earlier |" in text
    assert "| role change end to end p99 (granian) | — | ≤ 50 ms | not measured | — |" in text


def _slice(requests: int, seconds: float, p50: float, p99: float, errors: int = 0) -> dict[str, Any]:
    return {
        "generator": "wrk",
        "clients": 8,
        "seconds": seconds,
        "requests": requests,
        "errors": errors,
        "requests_per_s": requests / seconds,
        "p50_ms": p50,
        "p99_ms": p99,
        "settled_s": 0.5,
    }


def test_a_rounds_slices_make_one_run_weighed_by_their_length() -> None:
    r = merge_slices([_slice(60_000, 2.0, 0.2, 1.5), _slice(20_000, 2.0, 0.3, 4.0, 1), _slice(10_000, 1.0, 0.1, 1.0)])
    assert r["requests"] == 90_000 and r["seconds"] == 5.0 and r["errors"] == 1
    assert r["requests_per_s"] == 18_000.0  # not the mean of 30,000, 10,000 and 10,000 per second
    assert (r["p50_ms"], r["p99_ms"], r["slices"], r["settled_s"]) == (0.2, 4.0, 3, 1.5)
    assert r["slice_rps"] == [30_000, 10_000, 10_000]


def test_the_apps_take_turns_and_ours_stays_beside_the_no_op() -> None:
    order = _order(["ours", "noop", "dict", "regorus"], 1)
    turns = _turns(order, 4)
    assert turns[:4] == order and turns[4:8] == order[::-1]
    for name in order:
        at = [i % len(order) for i, n in enumerate(turns) if n == name]
        assert len(at) == 4 and sum(at) == 2 * (len(order) - 1)  # first in one slice, last in the next
    for k in range(4):
        one = turns[k * len(order) : (k + 1) * len(order)]
        assert abs(one.index("ours") - one.index("noop")) == 1
