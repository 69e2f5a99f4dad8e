"""Stock pycasbin on the same world: plain ``Enforcer`` and ``FastEnforcer``, few samples.

Run as ``python -m bench.reference <W> <out.json> <samples>``. Both enforcers load the same model,
pack rules and facts as our engine (``build_plain_enforcer``; the FastEnforcer indexes p-rules by
action, the request and policy position 3). They are slow (milliseconds per decision, tens of ms for
the first decision into a workspace at 100,000 workspaces), so only ``samples`` requests are timed,
and the same requests are timed on our engine built in this process for a like-for-like ratio.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from typing import Any

import casbin
from casbin.model import FastModel
from casbin.model.policy_fast import FastPolicy
from casbin.util import key_match

from app.authz import PolicyEngine
from app.authz.enforcer import _model, build_plain_enforcer, rank_functions
from app.authz.packs import load_packs
from bench.probe import percentiles, rss_mb
from bench.world import build_world, random_request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_fast_enforcer(model_text: str, packs: Any, rules: list[tuple[str, ...]]) -> casbin.FastEnforcer:
    """pycasbin's FastEnforcer (p-rules filtered by action before evaluation), same rules."""
    _model(model_text)  # silences pycasbin's per-denial logging, as for the plain enforcer
    # The policy is keyed by p's act (index 2), each request by r's act (index 3): FastModel and
    # FastEnforcer take their key orders separately. FastPolicy needs two key levels, hence
    # [2, 2] / [3, 3]. FastPolicy keeps rules in sets: priority order is lost, so answers may differ.
    # FastModel.add_def returns None, so FastModel's loader stops after the first role
    # definition (pycasbin 2.8.0 bug: g2..g5 missing): load a plain Model and move it over.
    plain = _model(model_text)
    m = FastModel([2, 2])
    m.model = plain.model
    m.model["p"]["p"].policy = FastPolicy([2, 2])
    e = casbin.FastEnforcer(m, cache_key_order=[3, 3])
    for fname, fn in rank_functions(packs).items():
        e.add_function(fname, fn)
    e.add_named_domain_matching_func("g", key_match)
    by_type: dict[str, dict[tuple[str, ...], None]] = {}
    for rule in rules:
        by_type.setdefault(rule[0], {})[tuple(rule[1:])] = None
    for ptype, distinct in by_type.items():
        sec = "p" if ptype.startswith("p") else "g"
        if sec == "p":
            ordered = sorted(distinct, key=lambda r: int(r[0]))
            e.model.add_policies(sec, ptype, [list(r) for r in ordered])
        else:
            assertion = e.model[sec][ptype]
            assertion.policy = [list(r) for r in distinct]
            assertion.policy_map = {",".join(r): i for i, r in enumerate(assertion.policy)}
    e.build_role_links()
    return e


def time_enforcer(enforce: Any, reqs: list[Any], answers: list[bool] | None = None) -> list[int]:
    """Nanoseconds per call (answers collected if a list is given)."""
    out = []
    pc = time.perf_counter_ns
    for r in reqs:
        t = pc()
        got = enforce(r.subject, r.domain, r.obj, r.action)
        out.append(pc() - t)
        if answers is not None:
            answers.append(bool(got))
    return out


def main() -> None:
    """Build the world of argv[1] workspaces, time plain, fast and ours on argv[3] requests."""
    workspaces, out_path, samples = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    packset = load_packs(os.path.join(ROOT, "policy"), os.path.join(ROOT, "model.conf"))
    world = build_world(packset, workspaces, seed=1, extras=False)
    rules = packset.all_rules() + world.facts + [("g4", f"platform:{p.id}", p.key) for p in packset.packs.values()]
    rnd = random.Random(11)
    wss = list(world.pack_of)
    # requests into distinct workspaces: each is a "first decision" in its workspace
    first_reqs = [random_request(world, rnd, [ws]) for ws in rnd.sample(wss, min(samples, len(wss)))]
    warm_reqs = [random_request(world, rnd, wss[:20]) for _ in range(samples)]
    # Every enforcer gets the facts the core owns filled in (the target member's current role), as
    # the service gives them to Casbin; a forged `role` would otherwise differ by construction.
    resolver = PolicyEngine(packset, world.facts)
    first_reqs = [resolver.resolve(r) for r in first_reqs]
    warm_reqs = [resolver.resolve(r) for r in warm_reqs]
    del resolver
    result: dict[str, Any] = {"workspaces": workspaces, "samples": samples}
    reference: list[bool] = []
    for name, build in (("plain", build_plain_enforcer), ("fast", build_fast_enforcer)):
        base = rss_mb()
        t0 = time.perf_counter()
        e = build(packset.model_text, packset.packs, rules)
        built = time.perf_counter() - t0
        answers: list[bool] = []
        first = time_enforcer(e.enforce, first_reqs)
        time_enforcer(e.enforce, warm_reqs)  # warm the role managers of these workspaces
        warm = time_enforcer(e.enforce, warm_reqs, answers)
        result[name] = {
            "build_s": built,
            "rss_mb": rss_mb() - base,
            "first": percentiles(first),
            "warm": percentiles(warm),
        }
        if name == "plain":
            reference = answers
        else:
            result[name]["disagreements_with_plain"] = sum(a != b for a, b in zip(answers, reference))
        del e
    engine = PolicyEngine(packset, world.facts)
    first = time_enforcer(lambda s, d, o, a: engine.check(_req(s, d, o, a)), first_reqs)
    time_enforcer(lambda s, d, o, a: engine.check(_req(s, d, o, a)), warm_reqs)
    warm: list[int] = []
    pc = time.perf_counter_ns
    built_reqs = [_req(r.subject, r.domain, r.obj, r.action) for r in warm_reqs]
    ours = []
    for r in built_reqs:
        t = pc()
        d = engine.check(r)
        warm.append(pc() - t)
        ours.append(d.allowed)
    result["ours"] = {
        "first": percentiles(first),
        "warm": percentiles(warm),
        "disagreements_with_plain": sum(a != b for a, b in zip(ours, reference)),
    }
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=2)


def _req(s: str, d: str, o: Any, a: str) -> Any:
    from app.authz import AccessRequest

    return AccessRequest(s, d, o, a)


if __name__ == "__main__":
    main()
