"""The issue-15 bench parts (memory, pack edit, cross-host): their windows, names and Markdown tables."""

from __future__ import annotations

import os

from bench import crosshost, memory, packedit
from bench.netns import Topology


def _mem(pss: float, uss: float) -> dict[str, object]:
    proc = {"rss_mb": pss + 10, "pss_mb": pss, "uss_mb": uss}
    return {"mode": "m", "workers": 2, "ready_s": 1.5, "master": proc, "per_worker": [proc, proc],
            "worker_mean": proc, "total": {k: v * 3 for k, v in proc.items()}}


def test_memory_table_puts_after_beside_before_with_the_ratio() -> None:
    text = "\n".join(memory.lines({"workspaces": 100_000, "workers": 2, "warmup_per_worker": 200,
                                   "before": _mem(400.0, 380.0), "after": _mem(200.0, 40.0)}))
    assert "| total PSS (master + workers) | 1,200 MB | 600 MB | 0.50× |" in text
    assert "| per worker USS (mean) | 380 MB | 40 MB | 0.11× |" in text
    assert "W = 100,000 workspaces" in text
    assert "Not measured: boom" in "\n".join(memory.lines({"error": "boom"}))


def test_smaps_reads_this_process() -> None:
    m = memory.smaps(os.getpid())
    assert m["rss_mb"] > 0 and 0 < m["uss_mb"] <= m["rss_mb"] and m["pss_mb"] <= m["rss_mb"]


def test_packedit_windows_split_at_the_commit_and_the_last_old_decision() -> None:
    ms = 1_000_000
    rows = [(t / 10, 2 * ms, 200, 5) for t in range(0, 100)]  # 0..9.9 s at revision 5
    rows += [(10.0 + t / 10, 50 * ms, 200, 5) for t in range(0, 20)]  # 10..11.9 s: still 5, slow
    rows += [(12.0 + t / 10, 3 * ms, 200, 6) for t in range(0, 60)]  # 12..17.9 s: 6
    rows.append((11.95, 1 * ms, 0, -1))  # an error during the rebuild
    w = packedit.windows(sorted(rows), committed=10.0, old=5)
    assert round(w["all_new_s"], 2) == 1.95  # the last old decision: started 11.9, took 50 ms
    assert w["during"]["requests"] == 22 and w["during"]["errors"] == 1  # until 12.0: at least DURING_MIN_S
    assert w["before"]["requests"] == 50 and w["before"]["p99_ms"] == 2.0
    assert w["after"]["requests"] == 50 and w["after"]["p50_ms"] == 3.0
    v = {**w, "variant": "listen", "loads_before": [1, 1], "loads_after": [1, 3]}
    text = "\n".join(packedit.lines({"workspaces": 1000, "rule": "p, x", "window_s": 5.0, "rebuild_commit": "abc",
                                     "variants": {"listen": v, "rebuild": {"error": "no tree"}}}))
    assert "| in place, `POLICY_SYNC=listen` | during | 22 | 50.0 ms |" in text
    assert "| in place, `POLICY_SYNC=listen` | 2,003 ms | 1,950 ms | 50.0 ms | 0, 2 |" in text
    assert "failed: no tree" in text and "Full rebuild = the code at abc." in text and "≤ 200 ms" in text


def test_crosshost_table_and_skip() -> None:
    res = {"workspaces": 1000, "changes": 4, "workers_per_host": 1,
           "same_host": {"p50_ms": 1.0, "p99_ms": 2.0, "max_ms": 3.0},
           "cross_host": {"p50_ms": 1.5, "p90_ms": 2.0, "p99_ms": 4.25, "max_ms": 5.0, "over_50ms": 0, "topology": "T"}}
    text = "\n".join(crosshost.lines(res))
    assert "| before: same host, two processes | 1.0 ms | — | 2.0 ms | 3.0 ms | — |" in text
    assert "| after: two hosts, PgBouncer, LISTEN via session pool | 1.5 ms | 2.0 ms | 4.2 ms | 5.0 ms | 0 |" in text
    assert "Not measured: not root" in "\n".join(crosshost.lines({"skipped": "not root"}))


def test_topology_names_do_not_collide_with_the_deploy_test() -> None:
    t = Topology(prefix="lzb", subnet="10.231.16", bridge="lzbr1", hosts={"a": 11, "b": 12})
    assert t.ns("a") == "lzb-a" and t.ns("lzb-b") == "lzb-b" and t.ip("lzb-a") == "10.231.16.11"
    assert t.in_ns("b", "true") == ["ip", "netns", "exec", "lzb-b", "true"] and t.gateway == "10.231.16.1"
    assert crosshost.TOPO.bridge != Topology().bridge and crosshost.TOPO.subnet != Topology().subnet


def test_feed_table_has_one_row_per_size() -> None:
    from bench import feed

    size = {"workspaces": 300, "full_load_seconds": 0.5, "whole_state_bytes": 90000,
            "10_workspaces": {"bytes": 4000, "server_seconds_min": 0.01, "follower_load_seconds": 0.2},
            "all_workspaces": {"bytes": 80000, "server_seconds_min": 0.1, "follower_load_seconds": 0.4}}
    text = "\n".join(feed.lines({"sizes": [size]}))
    assert "| 300 | 0.5 s | 90,000 B | 4,000 B / 0.01 s / 0.2 s | 80,000 B / 0.1 s / 0.4 s |" in text
    assert "failed: boom" in "\n".join(feed.lines({"error": "boom"}))


def test_settle_waits_for_a_busy_server_and_not_for_an_idle_one() -> None:
    """``bench.server.settle``: the comparison measures an app only once every server is idle."""
    import subprocess
    import sys

    from bench.server import cpu_ticks, settle

    spin = "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass"
    busy = subprocess.Popen([sys.executable, "-c", spin])
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        waited = settle([busy.pid, idle.pid], timeout=10)
        assert busy.poll() is not None  # it returned only once the spinning process had stopped
        assert 1.0 <= waited < 10
        before = cpu_ticks(idle.pid)
        assert settle([idle.pid], timeout=10) < 2.5  # two quiet windows of 0.5 s, and a little slack
        assert cpu_ticks(idle.pid) - before <= 1
        assert settle([idle.pid], timeout=0.2) >= 0.2  # a timeout bounds the wait
    finally:
        busy.kill()
        idle.kill()
        busy.wait()
        idle.wait()
