"""The HTTP comparison on a realistic mix: ours vs a peer engine vs a plain dict, same gunicorn set-up.

The mix (``mix_items``): members of the workspace, non-members, subjects given by email and unknown
people (about 17% need a users-table lookup on our side), sent as single ``POST /v1/check`` and as
batches. The peers are minimal WSGI apps (``peer_app``) over the same memberships: ``regorus`` (the
Rego engine in Rust, when the PyPI package is installed; the Rego policy is ``REGO``) and a plain
dict (the ceiling of a Python WSGI app). Each is served by gunicorn with the worker class and count
of ``gunicorn.conf.py`` and measured with wrk with keep-alive and with ``Connection: close``,
unpinned and pinned (server on core 0, wrk on core 1) when the machine has 2 cores or more;
the runs are interleaved (ours, peers, ours) so the ratio is from one run.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
from typing import Any

from app.authz.packs import load_packs
from bench.datagen import HTTP_USERS, MEMBERS, SEED
from bench.world import iter_world

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REGO = """package authz
import rego.v1
default allow := false
allow if {
  role := data.members[input.workspace][input.subject]
  data.perms[role][input.action]
}
"""


def mix_items(workspaces: int, n: int, seed: int) -> list[dict[str, Any]]:
    """Requests: 70% members, 13% non-members, 12% by email, 5% unknown people."""
    packs = list(load_packs(os.path.join(ROOT, "policy"), os.path.join(ROOT, "model.conf")).packs.values())
    rnd = random.Random(seed)
    known = min(workspaces, HTTP_USERS // MEMBERS)
    out = []
    for _ in range(n):
        w = rnd.randrange(known)
        pack = packs[w % len(packs)]
        user = w * MEMBERS + rnd.randrange(MEMBERS) + 1
        roll = rnd.random()
        if roll < 0.70:
            subject = f"user:{user}"
        elif roll < 0.83:
            subject = f"user:{((w + 1) % known) * MEMBERS + 1}"  # a member of another workspace
        elif roll < 0.95:
            subject = f"u{user}@bench.example"
        else:
            subject = f"nobody{rnd.randrange(10**6)}@bench.example"
        out.append({"subject": subject, "workspace": f"w{w}", "action": rnd.choice(pack.actions).id})
    return out


def peer_data(workspaces: int) -> dict[str, Any]:
    """The same memberships and role permissions as plain JSON data (for the peers)."""
    packset = load_packs(os.path.join(ROOT, "policy"), os.path.join(ROOT, "model.conf"))
    members: dict[str, dict[str, str]] = {}
    for rule in iter_world(packset, workspaces, MEMBERS, SEED):
        if rule[0] == "g" and len(rule) > 3:
            members.setdefault(rule[3].split(":", 1)[1], {})[rule[1]] = rule[2]
    perms: dict[str, dict[str, bool]] = {}
    for pack in packset.packs.values():
        ids = {a.id for a in pack.actions}
        for r in pack.rules:
            if r[0] == "p":
                acts = [x for x in r[1:] if x in ids]
                if acts:
                    perms.setdefault(r[1] if r[1].startswith("role:") else r[2], {})[acts[0]] = True
    emails = {f"u{uid}@bench.example": f"user:{uid}" for uid in range(1, min(HTTP_USERS, workspaces * MEMBERS) + 1)}
    return {"members": members, "perms": perms, "emails": emails}


def peer_app() -> Any:
    """WSGI app of the peer named by BENCH_PEER (``dict`` or ``regorus``) over BENCH_PEER_DATA."""
    with open(os.environ["BENCH_PEER_DATA"], encoding="utf-8") as fh:
        data = json.load(fh)
    members, perms, emails = data["members"], data["perms"], data.pop("emails")
    kind = os.environ.get("BENCH_PEER", "dict")
    if kind == "regorus":
        import regorus  # type: ignore[import-not-found]

        engine = regorus.Engine()
        engine.add_policy("authz.rego", REGO)
        engine.add_data(data)

        def decide(item: dict[str, Any]) -> bool:
            engine.set_input(item)
            return bool(engine.eval_rule("data.authz.allow"))
    else:

        def decide(item: dict[str, Any]) -> bool:
            role = members.get(item["workspace"], {}).get(item["subject"])
            return bool(role and perms.get(role, {}).get(item["action"]))

    def one(item: dict[str, Any]) -> dict[str, Any]:
        sub = item.get("subject", "")
        if "@" in sub:
            sub = emails.get(sub)
            if sub is None:
                return {"allowed": False, "reason": "unknown_subject"}
        allowed = decide({**item, "subject": sub})
        return {"allowed": allowed, "reason": "allowed" if allowed else "denied"}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        try:
            body = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
            if environ.get("PATH_INFO", "").endswith("/batch"):
                out: Any = {"results": [one(c) for c in body["checks"]]}
            else:
                out = one(body)
            payload, status = json.dumps(out).encode(), "200 OK"
        except Exception:  # noqa: BLE001 - a bad body is a 400, never a crash
            payload, status = b'{"error": "bad request"}', "400 Bad Request"
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    return app


def regorus_available() -> bool:
    """Whether the regorus package can be imported."""
    return subprocess.run([sys.executable, "-c", "import regorus"], capture_output=True).returncode == 0


def compare(url: str, token: str, workspaces: int, seconds: float, log_dir: str) -> dict[str, Any]:
    """Interleaved wrk runs of ours and the peers, keep-alive and close, unpinned and pinned."""
    from bench import http as hb

    wrk = hb.wrk_path()
    if wrk is None:
        return {"error": "wrk not installed (apt-get install -y wrk)"}
    singles = [json.dumps(it).encode() for it in mix_items(workspaces, 5000, 11)]
    batches = [json.dumps({"checks": mix_items(workspaces, 100, 100 + s)}).encode() for s in range(20)]
    data_path = os.path.join(tempfile.gettempdir(), f"bench_peer_data_w{workspaces}_{os.getpid()}.json")
    with open(data_path, "w", encoding="utf-8") as fh:
        json.dump(peer_data(workspaces), fh)
    peers = ["dict"] + (["regorus"] if regorus_available() else [])
    pinnings = ["unpinned"] + (["pinned"] if (os.cpu_count() or 1) >= 2 else [])
    out: dict[str, Any] = {"peers": peers, "regorus": "regorus" in peers, "mix": "70% members, 13% non-members, "
                           "12% by email, 5% unknown (17% need a users lookup)", "runs": []}
    for pin in pinnings:
        server_cpu = "0" if pin == "pinned" else None
        wrk_cpu = "1" if pin == "pinned" else None
        for name in ["ours", *peers, "ours"]:
            env = {"BENCH_PEER": name, "BENCH_PEER_DATA": data_path}
            app = "app:create_app()" if name == "ours" else "bench.peer:peer_app()"
            log = os.path.join(log_dir, f"gunicorn-{name}-{pin}.log")
            with hb.gunicorn(url, app, hb.workers_default(), log, cpu=server_cpu, extra_env=env) as port:
                hb.load_wrk(wrk, port, token, "/v1/check", singles, 4, 1.0, cpu=wrk_cpu)  # warm
                for keep in (True, False):
                    for path, bodies, clients in (("/v1/check", singles, 8), ("/v1/check/batch", batches, 4)):
                        r = hb.load_wrk(wrk, port, token, path, bodies, clients, seconds, keepalive=keep, cpu=wrk_cpu)
                        r.update(server=name, pinning=pin, keepalive=keep, path=path)
                        out["runs"].append(r)
                        print(f"   {pin:8} {name:8} {'keep-alive' if keep else 'close':10} {path:16} "
                              f"{r['requests_per_s']:8.0f}/s p99 {r['p99_ms']:.1f} ms", flush=True)
    out["ratios"] = ratios(out["runs"])
    return out


def ratios(runs: list[dict[str, Any]]) -> dict[str, float]:
    """ours/peer throughput per (pinning, keep-alive, path); ours = mean of its interleaved runs."""
    res: dict[str, float] = {}
    groups: dict[tuple[str, bool, str], dict[str, list[float]]] = {}
    for r in runs:
        groups.setdefault((r["pinning"], r["keepalive"], r["path"]), {}).setdefault(r["server"], []).append(
            r["requests_per_s"])
    for (pin, keep, path), by in groups.items():
        ours = sum(by.get("ours", [0])) / max(1, len(by.get("ours", [])))
        for peer, vals in by.items():
            if peer != "ours" and vals and vals[0]:
                res[f"{pin} {'keep-alive' if keep else 'close'} {path} ours/{peer}"] = ours / vals[0]
    return res
