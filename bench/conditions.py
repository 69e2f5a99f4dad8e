"""What an attribute condition costs a decision: the engine with and without a ``when:<id>`` rule,
beside stock pycasbin on the same request in the same run (issue 24).

In process, on the real ``model.conf`` and packs: W workspaces of the certification pack
(``authzen_cert``: alice a writer and bob a reader in each). Timed, per request, over rounds:

- ``read``: alice reads a record — a rule without a condition (what every decision paid before);
- ``write`` with properties: alice writes an active record — ``when:not_archived`` evaluated (CEL);
- ``delete`` with properties: a soft delete — ``when:soft_delete`` evaluated;
- each of them through a stock ``casbin.Enforcer`` with the same functions (the baseline).

Run alone: ``python -m bench.conditions [W] [out.json]`` (no database needed).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

from app.authz import AccessRequest, PolicyEngine
from app.authz.conditions import Props
from app.authz.enforcer import build_plain_enforcer
from app.authz.packs import load_packs
from app.authz.types import ResourceFacts

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 5
PER_ROUND = 20_000


def _cases() -> dict[str, tuple[str, ResourceFacts]]:
    active = Props(resource={"status": "active"})
    soft = Props(action={"soft": True})
    return {
        "read (no condition)": ("read", ResourceFacts(type="record", id="record-1")),
        "write (when:not_archived)": ("write", ResourceFacts(type="record", id="record-1", props=active)),
        "delete (when:soft_delete)": ("delete", ResourceFacts(type="record", id="record-1", props=soft)),
    }


def _time(fn: Any, n: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(n):
        fn()
    return (time.perf_counter_ns() - start) / n / 1000


def run(url: str = "", token: str = "", workspaces: int = 1000, log_dir: str = "") -> dict[str, Any]:
    """µs per decision (median of rounds) for each case, engine and stock pycasbin."""
    packset = load_packs(ROOT / "policy", ROOT / "model.conf")
    facts: list[tuple[str, ...]] = []
    for i in range(workspaces):
        ws = f"ws:cert{i}"
        facts += [("g4", ws, "pack:authzen_cert"), ("g", f"user:{2 * i}", "role:authzen_cert:writer", ws)]
        facts.append(("g", f"user:{2 * i + 1}", "role:authzen_cert:reader", ws))
    engine = PolicyEngine(packset, facts)
    plain: Any
    plain = build_plain_enforcer(packset.model_text, packset.packs, [*packset.all_rules(), *facts])
    out: dict[str, Any] = {"workspaces": workspaces, "rounds": ROUNDS, "per_round": PER_ROUND, "cases": {}}
    for name, (action, obj) in _cases().items():
        req = AccessRequest("user:0", "ws:cert0", obj, action)
        assert engine.check(req).allowed, name
        assert plain.enforce("user:0", "ws:cert0", obj, action), name
        ours = [_time(lambda r=req: engine.check(r), PER_ROUND) for _ in range(ROUNDS)]
        stock = [
            _time(lambda o=obj, a=action: plain.enforce("user:0", "ws:cert0", o, a), PER_ROUND // 10)
            for _ in range(ROUNDS)
        ]
        out["cases"][name] = {"engine_us": statistics.median(ours), "pycasbin_us": statistics.median(stock)}
    base = out["cases"]["read (no condition)"]["engine_us"]
    for case in out["cases"].values():
        case["vs_pycasbin"] = case["engine_us"] / case["pycasbin_us"]
        case["vs_no_condition"] = case["engine_us"] / base
    return out


def lines(result: dict[str, Any]) -> list[str]:
    """The conditions table as Markdown lines."""
    head = ["## Attribute conditions: cost per decision (in process)", ""]
    if "error" in result:
        return [*head, f"Not measured: {result['error']}"]
    head.append(
        f"{result['workspaces']:,} workspaces of the certification pack; median of {result['rounds']} rounds. "
        "Ratios against stock pycasbin on the same request and against the same engine on a rule without a condition."
    )
    rows = [
        f"| {name} | {c['engine_us']:.2f} | {c['pycasbin_us']:.1f} | {c['vs_pycasbin']:.3f}× "
        f"| {c['vs_no_condition']:.2f}× |"
        for name, c in result["cases"].items()
    ]
    header = "| request | engine µs | pycasbin µs | engine / pycasbin | / no condition |"
    return [*head, "", header, "|---|---|---|---|---|", *rows]


if __name__ == "__main__":
    import json

    w = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    result = run(workspaces=w)
    if len(sys.argv) > 2:
        Path(sys.argv[2]).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print("\n".join(lines(result)))
