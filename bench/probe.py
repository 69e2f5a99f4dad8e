"""One process, one data set: load from PostgreSQL, then time our decision path.

Run as ``python -m bench.probe <database url> <out.json>`` so that load time and RSS belong to a
fresh process holding only the engine. Requests are drawn from the loaded engine itself (random
workspaces, their members, scopes and actions), so the probe never holds a second copy of the
world.
"""

from __future__ import annotations

import gc
import json
import random
import resource
import sys
import time
from typing import Any

from app.authz import AccessRequest, PolicyEngine, ResourceFacts, RuleChange


def rss_mb() -> float:
    """Current resident set size in MB (VmRSS)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def percentiles(ns: list[int]) -> dict[str, float]:
    """p50/p99/max in microseconds from nanosecond samples."""
    s = sorted(ns)
    if not s:
        return {}
    return {
        "n": len(s),
        "p50_us": s[len(s) // 2] / 1000,
        "p99_us": s[min(len(s) - 1, int(len(s) * 0.99))] / 1000,
        "max_us": s[-1] / 1000,
        "mean_us": sum(s) / len(s) / 1000,
    }


class Sampler:
    """Random requests from an engine's own dicts (members, scopes, actions of each workspace)."""

    def __init__(self, engine: PolicyEngine, seed: int = 7) -> None:
        self.engine = engine
        self.rnd = random.Random(seed)
        g4 = engine.g4.links.get("", {})
        self.workspaces = [ws for ws in g4 if ws.startswith("ws:")]
        self.actions = {p.key: [a.id for a in p.actions] for p in engine.packset.packs.values()}
        self.roles = {p.key: [p.role_key(r.id) for r in p.roles] for p in engine.packset.packs.values()}

    def request(self, ws: str | None = None, subject: str | None = None) -> AccessRequest:
        """One request into ws (random if None) by subject (a random member if None)."""
        rnd = self.rnd
        eng = self.engine
        ws = ws or rnd.choice(self.workspaces)
        pack_key = eng.g4.links[""][ws][0]
        members = list(eng.g.links.get(ws, {}))
        subject = subject or (rnd.choice(members) if members and rnd.random() < 0.95 else "user:stranger")
        scopes = sorted({s for rm in (eng.g2, eng.g3) for links in rm.links.get(ws, {}).values() for s in links})
        obj: dict[str, str] = {}
        r = rnd.random()
        if r < 0.3 and members:
            obj = {"type": "member", "member": rnd.choice(members), "new_role": rnd.choice(self.roles[pack_key])}
        elif r < 0.5:
            obj = {"type": "item", "id": f"i{rnd.randrange(1000)}", "assignee": subject, "owner": rnd.choice(members)}
        elif r < 0.7 and scopes:
            name = rnd.choice(scopes).split(":", 1)[1]
            kind = "team" if pack_key == "pack:skills" else "group"
            obj = {kind: f"{kind}:{name}", "member": rnd.choice(members)}
        return AccessRequest(subject, ws, ResourceFacts(**obj), rnd.choice(self.actions[pack_key]))


def measure(engine: PolicyEngine, warm_n: int, first_n: int, change_n: int) -> dict[str, Any]:
    """First decisions, warm decisions and role changes, timed one by one."""
    pc = time.perf_counter_ns
    sampler = Sampler(engine)
    out: dict[str, Any] = {}
    # A user's first decision: right after load, each user asks once (memo cold at first).
    firsts = []
    seen: set[str] = set()
    while len(firsts) < first_n:
        req = sampler.request()
        if req.subject in seen:
            continue
        seen.add(req.subject)
        t = pc()
        engine.check(req)
        firsts.append(pc() - t)
    out["first"] = percentiles(firsts)
    out["first_cold_memo"] = percentiles(firsts[:200])
    reqs = [sampler.request() for _ in range(warm_n)]
    for r in reqs:
        engine.check(r)
    warm = []
    for r in reqs:
        t = pc()
        engine.check(r)
        warm.append(pc() - t)
    out["warm"] = percentiles(warm)
    t0 = time.perf_counter()
    for r in reqs:
        engine.check(r)
    out["warm_decisions_per_s"] = warm_n / (time.perf_counter() - t0)
    out["memo_entries"] = len(engine._memo)
    # Role changes: demote/promote a random member (remove + add in one revision).
    changes = []
    rev = engine.revision
    for _ in range(change_n):
        ws = sampler.rnd.choice(sampler.workspaces)
        members = engine.g.links.get(ws, {})
        if not members:
            continue
        user = sampler.rnd.choice(list(members))
        old = members[user][0]
        new = sampler.rnd.choice(sampler.roles[engine.g4.links[""][ws][0]])
        batch = [RuleChange("remove", ("g", user, old, ws)), RuleChange("add", ("g", user, new, ws))]
        rev += 1
        t = pc()
        engine.apply(batch, rev)
        changes.append(pc() - t)
    out["role_change"] = percentiles(changes)
    # The lock check() takes: cost of one uncontended acquire/release.
    lock = engine._lock
    t = pc()
    for _ in range(100_000):
        with lock:
            pass
    out["lock_ns"] = (pc() - t) / 100_000
    return out


def main() -> None:
    """Load from the database URL in argv[1], measure, write JSON to argv[2]."""
    url, out_path = sys.argv[1], sys.argv[2]
    warm_n = int(sys.argv[3]) if len(sys.argv) > 3 else 100_000
    from app import create_app
    from app.extensions import authz

    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench-" + "x" * 32, "POLICY_SYNC": "off"})
    with app.app_context():
        gc.collect()
        base = rss_mb()
        t0 = time.perf_counter()
        engine = authz.reload()
        load_s = time.perf_counter() - t0
        gc.collect()
        result: dict[str, Any] = {
            "load_s": load_s,
            "rss_mb": rss_mb(),
            "rss_before_load_mb": base,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "revision": engine.revision,
            "memberships": sum(len(b) for d, b in engine.g.links.items() if d.startswith("ws:")),
            "workspaces": len([d for d in engine.g4.links.get("", {}) if d.startswith("ws:")]),
        }
        result.update(measure(engine, warm_n, first_n=2_000, change_n=2_000))
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
