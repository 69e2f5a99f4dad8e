"""The peer-comparison part of the bench: its ratios and its Markdown table, from a results dict."""

from __future__ import annotations

from bench.peer import ratios
from bench.report import compare_lines


def _run(server: str, rps: float, keep: bool = True) -> dict[str, object]:
    return {"server": server, "pinning": "pinned", "keepalive": keep, "path": "/v1/check",
            "requests_per_s": rps, "p50_ms": 1.0, "p99_ms": 2.0, "errors": 0}


def test_ratio_is_ours_mean_over_peer_and_the_table_shows_it() -> None:
    runs = [_run("ours", 900.0), _run("regorus", 1000.0), _run("ours", 1100.0)]
    r = ratios(runs)
    assert r == {"pinned keep-alive /v1/check ours/regorus": 1.0}
    text = "\n".join(compare_lines({"mix": "m", "peers": ["regorus"], "regorus": True, "runs": runs, "ratios": r}))
    assert "| pinned keep-alive /v1/check ours/regorus | 1.00× |" in text
    assert text.count("| pinned | keep-alive | `/v1/check` |") == 3
    assert "Comparison failed: boom" in "\n".join(compare_lines({"error": "boom"}))
