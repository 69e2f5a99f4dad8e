"""The Markdown report and the latency plot, from ``results.json``."""

from __future__ import annotations

import os
from typing import Any

TARGETS = {
    "warm_p50_us": 15,
    "warm_p99_us": 50,
    "first_p99_us": 1000,
    "role_change_us": 1000,
    "load_s": 10,
    "rss_mb": 600,
    "http_single_rps": 3000,
    "http_single_p99_ms": 10,
    "batch_decisions_per_s": 100_000,
    "propagation_p99_ms": 100,
}


def _g(d: dict[str, Any], *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if v >= 100:
            return f"{v:,.0f}{unit}"
        if v >= 10:
            return f"{v:.1f}{unit}"
        return f"{v:.2f}{unit}"
    return f"{v:,}{unit}" if isinstance(v, int) else f"{v}{unit}"


def _ratio(a: Any, b: Any) -> str:
    if not a or not b:
        return "—"
    return f"{a / b:,.0f}×"


def _ok(v: Any, limit: float, higher_is_better: bool = False) -> str:
    if v is None:
        return "not measured"
    good = v >= limit if higher_is_better else v <= limit
    return "met" if good else "**not met**"


def write_report(results: dict[str, Any], out_dir: str, extra: list[str] | None = None) -> str:
    """Write report.md and latency.png; returns the Markdown."""
    sizes = results["sizes"]
    lines = ["# Benchmark report", ""]
    meta = results["meta"]
    lines.append(
        f"Run {meta['started']} on {meta['cpus']} CPUs, Python {meta['python']}"
        f"{' (quick mode)' if meta['quick'] else ''}; total {meta.get('total_s', 0):.0f} s. "
        "Latencies are per decision, in-process, measured one call at a time (`perf_counter_ns`)."
    )
    summary = issue25_lines(results)
    if len(summary) > 4:
        lines += ["", *summary]
    lines += ["", "## Decision latency: ours vs stock pycasbin (same model, rules and requests)", ""]
    lines.append(
        "| W (memberships) | ours warm p50 / p99 | plain Enforcer warm p50 / p99 | FastEnforcer warm p50 / p99 "
        "| ratio plain/ours (p50) | ours first p50 / p99 | plain first p50 / p99 | ratio plain/ours first (p50) |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for w, s in sizes.items():
        ref = s["reference"]
        ours_ref = ref.get("ours", {})
        lines.append(
            f"| {int(w):,} ({_fmt(_g(s, 'ours', 'memberships'))}) "
            f"| {_fmt(_g(ours_ref, 'warm', 'p50_us'), ' µs')} / {_fmt(_g(ours_ref, 'warm', 'p99_us'), ' µs')} "
            f"| {_fmt(_g(ref, 'plain', 'warm', 'p50_us'), ' µs')} / {_fmt(_g(ref, 'plain', 'warm', 'p99_us'), ' µs')} "
            f"| {_fmt(_g(ref, 'fast', 'warm', 'p50_us'), ' µs')} / {_fmt(_g(ref, 'fast', 'warm', 'p99_us'), ' µs')} "
            f"| {_ratio(_g(ref, 'plain', 'warm', 'p50_us'), _g(ours_ref, 'warm', 'p50_us'))} "
            f"| {_fmt(_g(ours_ref, 'first', 'p50_us'), ' µs')} / {_fmt(_g(ours_ref, 'first', 'p99_us'), ' µs')} "
            f"| {_fmt(_g(ref, 'plain', 'first', 'p50_us'), ' µs')} / "
            f"{_fmt(_g(ref, 'plain', 'first', 'p99_us'), ' µs')} "
            f"| {_ratio(_g(ref, 'plain', 'first', 'p50_us'), _g(ours_ref, 'first', 'p50_us'))} |"
        )
    lines += [
        "",
        "Reference samples per size: "
        + ", ".join(f"W={int(w):,}: {_g(s, 'reference', 'samples') or '—'}" for w, s in sizes.items())
        + " requests (stock pycasbin is too slow for more; the same requests are timed on ours). "
        '"First" = the first request into a workspace after the enforcer was built (pycasbin builds a role '
        "manager per domain on first use). Disagreements with the plain Enforcer on the sampled requests: ours "
        + ", ".join(str(_g(s, "reference", "ours", "disagreements_with_plain")) for s in sizes.values())
        + "; FastEnforcer "
        + ", ".join(str(_g(s, "reference", "fast", "disagreements_with_plain")) for s in sizes.values())
        + " (FastEnforcer keeps p-rules in sets, losing the priority order our model depends on).",
        "",
        "## Our engine loaded from PostgreSQL (one process)",
        "",
        "| W | memberships | load | RSS | warm p50 / p99 | first decision p50 / p99 "
        "| role change p50 / p99 / max | memo entries |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w, s in sizes.items():
        o = s["ours"]
        lines.append(
            f"| {int(w):,} | {_fmt(o.get('memberships'))} | {_fmt(o.get('load_s'), ' s')} "
            f"| {_fmt(o.get('rss_mb'), ' MB')} "
            f"| {_fmt(_g(o, 'warm', 'p50_us'), ' µs')} / {_fmt(_g(o, 'warm', 'p99_us'), ' µs')} "
            f"| {_fmt(_g(o, 'first', 'p50_us'), ' µs')} / {_fmt(_g(o, 'first', 'p99_us'), ' µs')} "
            f"| {_fmt(_g(o, 'role_change', 'p50_us'), ' µs')} / {_fmt(_g(o, 'role_change', 'p99_us'), ' µs')} / "
            f"{_fmt(_g(o, 'role_change', 'max_us'), ' µs')} | {_fmt(o.get('memo_entries'))} |"
        )
    http = results.get("http", {})
    prop = results.get("propagation", {})
    lines += ["", "## HTTP (gunicorn -w 2, load generator on the same 2 cores) and propagation", ""]
    rerun = results.get("meta", {}).get("http_rerun")
    if rerun:
        lines.append(
            f"This section alone was rerun on {rerun.get('started')} (`BENCH_HTTP_ONLY=1`); the sections above are "
            "from the run named at the top."
        )
        lines.append("")
    if http.get("generator"):
        lines.append(
            f"Load generator: {http['generator']} "
            + ("(C, one thread, keep-alive)." if http["generator"] == "wrk" else "(Python processes, keep-alive).")
        )
        lines.append("")
    if "error" in http:
        lines.append(f"HTTP benchmark failed: {http['error']}")
    else:
        lines.append(
            f"- `POST /v1/check`: {_fmt(_g(http, 'single', 'requests_per_s'))} req/s, "
            f"p50 {_fmt(_g(http, 'single', 'p50_ms'), ' ms')}, p99 {_fmt(_g(http, 'single', 'p99_ms'), ' ms')} "
            f"({_g(http, 'single', 'clients')} clients, {_g(http, 'single', 'errors')} errors)"
        )
        lines.append(
            f"- `POST /v1/check/batch` ({_g(http, 'batch', 'checks_per_request')} checks each): "
            f"{_fmt(_g(http, 'batch', 'decisions_per_s'))} decisions/s, "
            f"p99 {_fmt(_g(http, 'batch', 'p99_ms'), ' ms')} per request"
        )
    bd = http.get("breakdown") or {}
    if bd and "error" not in bd:
        lines.append(
            f"- one `/v1/check` in-process (Flask test client): {_fmt(bd.get('request_ms'), ' ms')}; of which the "
            f"service-token lookup {_fmt(bd.get('token_lookup_ms'), ' ms')} and the subject lookup "
            f"{_fmt(bd.get('subject_lookup_ms'), ' ms')} (both served from in-process caches / the engine when warm; "
            "a database round-trip each on a miss), the decision "
            f"{_fmt((bd.get('engine_check_ms') or 0) * 1000, ' µs')}"
        )
    if "error" in prop:
        lines.append(f"- propagation failed: {prop['error']}")
    else:
        lines.append(
            "- role change committed in process A → decision flips in process B: "
            f"p50 {_fmt(prop.get('p50_ms'), ' ms')}, p99 {_fmt(prop.get('p99_ms'), ' ms')}, "
            f"max {_fmt(prop.get('max_ms'), ' ms')} over {prop.get('changes')} changes"
        )
    if http.get("compare"):
        lines += ["", *compare_lines(http["compare"])]
    big = sizes[str(max(int(w) for w in sizes))]["ours"]
    lines += [
        "",
        "## Targets (issue 5) at the largest size measured",
        "",
        "| target | measured | status |",
        "|---|---|---|",
    ]
    checks = [
        ("warm p50 ≤ 15 µs", _g(big, "warm", "p50_us"), TARGETS["warm_p50_us"], False, " µs"),
        ("warm p99 ≤ 50 µs", _g(big, "warm", "p99_us"), TARGETS["warm_p99_us"], False, " µs"),
        ("first decision p99 ≤ 1 ms", _g(big, "first", "p99_us"), TARGETS["first_p99_us"], False, " µs"),
        (
            "role change in memory ≤ 1 ms (p99)",
            _g(big, "role_change", "p99_us"),
            TARGETS["role_change_us"],
            False,
            " µs",
        ),
        ("load from PostgreSQL ≤ 10 s", big.get("load_s"), TARGETS["load_s"], False, " s"),
        ("RSS ≤ 600 MB", big.get("rss_mb"), TARGETS["rss_mb"], False, " MB"),
        ("HTTP single ≥ 3,000 checks/s", _g(http, "single", "requests_per_s"), TARGETS["http_single_rps"], True, "/s"),
        ("HTTP single p99 ≤ 10 ms", _g(http, "single", "p99_ms"), TARGETS["http_single_p99_ms"], False, " ms"),
        (
            "batch ≥ 100,000 decisions/s",
            _g(http, "batch", "decisions_per_s"),
            TARGETS["batch_decisions_per_s"],
            True,
            "/s",
        ),
        ("propagation p99 ≤ 100 ms", prop.get("p99_ms"), TARGETS["propagation_p99_ms"], False, " ms"),
    ]
    for name, v, limit, higher, unit in checks:
        lines.append(f"| {name} | {_fmt(v, unit)} | {_ok(v, limit, higher)} |")
    lock = _g(big, "lock_ns")
    lines += [
        "",
        f"`check()` holds the engine lock: an uncontended acquire/release costs {_fmt(lock, ' ns')} "
        "(included in every latency above).",
        "",
        "![latency vs workspaces](latency.png)",
        "",
        *(extra or []),
    ]
    text = "\n".join(lines)
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as fh:
        fh.write(text)
    _plot(sizes, os.path.join(out_dir, "latency.png"))
    return text


# Targets of issue 25 behind granian (ours over the app named), pinned and unpinned.
COMPARE_TARGETS = {("/v1/check", "noop"): 0.85, ("/v1/check/batch", "noop"): 0.6}
REGORUS_TARGET = 1.15


def compare_lines(cmp: dict[str, Any]) -> list[str]:
    """The ours-vs-peers sections (from ``bench.run.run_compare``: one per data set) as Markdown lines."""
    if "error" in cmp or "runs" in cmp:  # one data set (an older results.json)
        cmp = {"default": cmp}
    lines = ["## HTTP on the realistic mix: ours vs a no-op app and answer-equivalent peers, same server, same run"]
    for kind, one in cmp.items():
        lines += ["", *_compare_set(kind, one)]
    return lines


def _compare_set(kind: str, cmp: dict[str, Any]) -> list[str]:
    title = "the default" if kind == "default" else "as many users as memberships"
    if "error" in cmp:
        return [f"### Data set: {title}", "", f"Comparison failed: {cmp['error']}"]
    if "agreement" not in cmp:
        return [
            f"### Data set: {title}",
            "",
            "Results of the former comparison (no agreement count): rerun `BENCH_PARTS=compare`.",
        ]
    lines = [
        f"### W = {cmp['workspaces']:,} workspaces × 10 members, {cmp['users']:,} users ({title})",
        "",
        f"Mix: {cmp.get('mix')}. Left out (attribute conditions): "
        + ", ".join(f"{p}: {', '.join(a)}" for p, a in cmp.get("excluded_actions", {}).items())
        + f". Servers: {', '.join(cmp.get('servers', []))}, {cmp.get('workers', 2)} workers each; "
        f"{cmp.get('rounds')} rotated rounds of {cmp.get('seconds'):.0f} s per app and path"
        + (f" (in {cmp['slices']} slices, the apps taking turns)" if cmp.get("slices", 1) > 1 else "")
        + ", keep-alive.",
        "",
        f"Agreement with ours on the {cmp.get('mix_requests', 0):,} requests of the mix (must be 0):",
        "",
        "| peer | answers | differ from ours |",
        "|---|---|---|",
    ]
    for name, a in cmp.get("agreement", {}).items():
        lines.append(f"| {name} | {a['requests']:,} | {a['disagree']}{'' if a['disagree'] == 0 else ' (no ratio)'} |")
    lines += [
        "",
        "| ratio of throughputs | min | median | max | target |",
        "|---|---|---|---|---|",
    ]
    for key, v in cmp.get("ratios", {}).items():
        path, other = key.split(" ")[2], key.rsplit("/", 1)[1]
        limit = COMPARE_TARGETS.get((path, other), REGORUS_TARGET if other == "regorus" else None)
        target = "—" if limit is None else f"≥ {limit:.2f}× ({'met' if v['min'] >= limit else '**not met**'})"
        lines.append(f"| {key} | {v['min']:.2f}× | {v['median']:.2f}× | {v['max']:.2f}× | {target} |")
    lines += ["", "| pinning | server | round | path | app | req/s | p50 | p99 | errors |", "|---" * 9 + "|"]
    for r in cmp.get("runs", []):
        lines.append(
            f"| {r['pinning']} | {r['server']} | {r.get('round', 0)} | `{r['path']}` | {r['app']} "
            f"| {_fmt(r['requests_per_s'])} | {_fmt(r['p50_ms'], ' ms')} | {_fmt(r['p99_ms'], ' ms')} | {r['errors']} |"
        )
    return lines


def _plot(sizes: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = sorted(int(w) for w in sizes)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series = [
        ("ours warm p50", lambda s: _g(s, "ours", "warm", "p50_us"), "-o"),
        ("ours warm p99", lambda s: _g(s, "ours", "warm", "p99_us"), "--o"),
        ("ours first p99", lambda s: _g(s, "ours", "first", "p99_us"), ":o"),
        ("plain Enforcer warm p50", lambda s: _g(s, "reference", "plain", "warm", "p50_us"), "-s"),
        ("plain Enforcer first p50", lambda s: _g(s, "reference", "plain", "first", "p50_us"), ":s"),
        ("FastEnforcer warm p50", lambda s: _g(s, "reference", "fast", "warm", "p50_us"), "-^"),
    ]
    for label, get, style in series:
        pts = [(w, get(sizes[str(w)])) for w in ws]
        pts = [(w, v) for w, v in pts if v]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("workspaces (× 10 members)")
    ax.set_ylabel("latency per decision (µs, log)")
    ax.set_title("Decision latency vs workspace count")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# Issue 25's targets outside the comparison: (part, label, path in the part's result, limit, unit).
ISSUE25_LIMITS = (
    ("packedit", "pack edit: commit → every worker at the new revision", ("variants", "listen", "all_new_s"), 0.2, "s"),
    ("packedit", "pack edit: decision p99 during the edit", ("variants", "listen", "during", "p99_ms"), 5.0, "ms"),
    ("rolechange", "20 role changes/s: decision p99 / quiet p99", ("variants", "granian", "p99_ratio"), 2.0, "×"),
    ("rolechange", "role change end to end p99 (granian)", ("variants", "granian", "end_to_end", "p99_ms"), 50.0, "ms"),
    (
        "rolechange",
        "role change end to end p99 (gunicorn)",
        ("variants", "gunicorn", "end_to_end", "p99_ms"),
        50.0,
        "ms",
    ),
    ("footprint", "engine heap per membership", ("loads", "this tree", "engine_b_per_membership"), 130.0, "B"),
    ("footprint", "directory heap per user", ("loads", "this tree", "directory_b_per_user"), 150.0, "B"),
)


def issue25_lines(results: dict[str, Any]) -> list[str]:
    """Every target of issue 25 in one table: the comparison's ratios (lowest round; pinned and
    unpinned, each data set, after the disagreement count) and the parts' figures, each with the
    run it came from (``run`` stamp of the part; "earlier" when the part carries none)."""
    parts = results.get("parts", {})
    cmp = _g(results, "http", "compare") or {}
    if "runs" in cmp or "error" in cmp:
        cmp = {"default": cmp}
    lines = [
        "## Targets of issue 25",
        "",
        "| target | measured | limit | status | run |",
        "|---|---|---|---|---|",
    ]
    for one in cmp.values():
        if not isinstance(one, dict) or "ratios" not in one:
            continue
        users = f"{one.get('users', 0):,} users"
        stamp = one.get("run", "earlier")
        agree = one.get("agreement", {})
        differ = sum(a.get("disagree", 0) for a in agree.values())
        lines.append(
            f"| peers' answers differing from ours ({users}; {', '.join(agree) or 'no peer'}) "
            f"| {differ:,} of {sum(a.get('requests', 0) for a in agree.values()):,} | 0 "
            f"| {'met' if agree and differ == 0 else '**not met**'} | {stamp} |"
        )
        for key, v in one["ratios"].items():
            path, other = key.split(" ")[2], key.rsplit("/", 1)[1]
            limit = COMPARE_TARGETS.get((path, other), REGORUS_TARGET if other == "regorus" else None)
            if limit is None:
                continue
            status = "met" if v["min"] >= limit else "**not met**"
            lines.append(
                f"| {key} ({users}; lowest / median of {one.get('rounds', '?')} rounds) "
                f"| {v['min']:.2f}× / {v['median']:.2f}× | ≥ {limit:.2f}× | {status} | {stamp} |"
            )
    for part, label, path, limit, unit in ISSUE25_LIMITS:
        res = parts.get(part)
        value = _g(res, *path) if isinstance(res, dict) else None
        if unit == "s" and value is not None:
            value, unit, limit = value * 1000, "ms", limit * 1000
        stamp = res.get("run", "earlier") if isinstance(res, dict) else "—"
        shown = "—" if value is None else (f"{value:.2f}×" if unit == "×" else _fmt(float(value), f" {unit}"))
        bound = f"≤ {limit:g}{'×' if unit == '×' else ' ' + unit}"
        lines.append(f"| {label} | {shown} | {bound} | {_ok(value, limit)} | {stamp} |")
    return lines
