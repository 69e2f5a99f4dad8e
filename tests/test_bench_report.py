"""The peer-comparison part of the bench: its ratios and its Markdown table, from a results dict."""

from __future__ import annotations

from bench.peer import ratios
from bench.report import compare_lines


def _run(app: str, rps: float, server: str = "gunicorn-gthread", keep: bool = True) -> dict[str, object]:
    return {"app": app, "server": server, "pinning": "pinned", "keepalive": keep, "path": "/v1/check",
            "requests_per_s": rps, "p50_ms": 1.0, "p99_ms": 2.0, "errors": 0}


def test_ratio_is_ours_mean_over_peer_and_the_table_shows_it() -> None:
    runs = [_run("ours", 900.0), _run("regorus", 1000.0), _run("ours", 1100.0)]
    r = ratios(runs)
    assert r == {"pinned gunicorn-gthread keep-alive /v1/check ours/regorus": 1.0}
    text = "\n".join(compare_lines({"mix": "m", "peers": ["regorus"], "regorus": True, "runs": runs, "ratios": r}))
    assert "| pinned gunicorn-gthread keep-alive /v1/check ours/regorus | 1.00× |" in text
    assert text.count("| pinned | gunicorn-gthread | keep-alive | `/v1/check` |") == 3


def test_ours_behind_granian_is_also_set_against_each_peer_behind_gunicorn() -> None:
    runs = [
        _run("ours", 3000.0, "granian"), _run("regorus", 2000.0, "granian"), _run("ours", 3000.0, "granian"),
        _run("ours", 900.0, "gunicorn-sync", keep=False), _run("regorus", 1200.0, "gunicorn-sync", keep=False),
        _run("ours", 900.0, "gunicorn-sync", keep=False),
    ]
    r = ratios(runs)
    assert r["pinned granian keep-alive /v1/check ours/regorus"] == 1.5
    assert r["pinned gunicorn-sync close /v1/check ours/regorus"] == 0.75
    assert r["pinned /v1/check ours@granian keep-alive / regorus@gunicorn-sync close"] == 2.5
    assert not any("@granian keep-alive / regorus@granian" in k for k in r)
    assert "Comparison failed: boom" in "\n".join(compare_lines({"error": "boom"}))


def test_paced_runs_get_their_own_latency_table() -> None:
    paced = [{**_run("ours", 1990.0, "granian"), "paced": 2000.0}, {**_run("regorus", 1995.0), "paced": 2000.0}]
    text = "\n".join(compare_lines({"mix": "m", "peers": ["regorus"], "runs": [], "paced": paced, "paced_rate": 2000}))
    assert "Latency at one offered load (2,000 single checks/s in all, wrk paced):" in text
    assert "| pinned | granian | keep-alive | ours | 1,990 | 1.00 ms | 2.00 ms | 0 |" in text
