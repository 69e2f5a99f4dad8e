"""The HTTP comparison on a realistic mix: ours vs regorus vs a plain dict, behind the same servers.

The mix (``mix_items``): members of the workspace, non-members, subjects given by email and unknown
people, sent as single ``POST /v1/check`` and as batches. The peers are minimal WSGI apps
(``peer_app``) over the same memberships, JSON by orjson: ``regorus`` (microsoft/regorus, the Rego
engine in Rust, through its Python binding as built on PyPI by ``hobofan-regorus`` 0.2.5: ~6 µs an
evaluation here), ``regorus-0.13`` (the newer ``gordon-to-regorus`` fork: ~35 µs), both from the
``bench`` extra, with the Rego policy ``REGO``, and a plain dict (the ceiling of a Python WSGI app).
Each peer builds its engine in the thread that serves (a regorus engine is "unsendable": used from
another thread it panics). They have no authentication, metrics, request ids or security headers.

Every app is measured behind each server of ``BENCH_SERVERS`` (default: gunicorn sync with
``Connection: close``, the issue's set-up; gunicorn gthread with keep-alive; granian, ``app.serve``
for ours, with keep-alive and with close), with the worker count of ``bench.http.workers_default``,
unpinned and pinned (server on core 0, wrk on core 1) when the machine has 2 cores or more. Per
server the runs are interleaved (ours, peers, ours) so each ratio is from one run. Each server and
app also answers single checks paced at ``BENCH_PACED_RATE`` (default 2,000/s in all, below every
saturation measured) for latency at one offered load.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
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


# peer name → the module of its regorus build
REGORUS = {"regorus": "hobofan_regorus", "regorus-0.13": "regorus"}


def _engine(kind: str, data: dict[str, Any]) -> Any:
    import importlib

    engine = importlib.import_module(REGORUS[kind]).Engine()
    engine.add_policy("authz.rego", REGO)
    engine.add_data(data)
    return engine


def peer_app() -> Any:
    """WSGI app of the peer named by BENCH_PEER (``dict`` or a ``REGORUS`` name) over BENCH_PEER_DATA."""
    import orjson

    with open(os.environ["BENCH_PEER_DATA"], encoding="utf-8") as fh:
        data = json.load(fh)
    members, perms, emails = data["members"], data["perms"], data.pop("emails")
    kind = os.environ.get("BENCH_PEER", "dict")
    engines = threading.local()  # an engine per serving thread: regorus engines are unsendable (pyo3)

    if kind in REGORUS:

        def decide(item: dict[str, Any]) -> bool:
            engine = getattr(engines, "engine", None)
            if engine is None:
                engine = engines.engine = _engine(kind, data)
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
            body = orjson.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
            if environ.get("PATH_INFO", "").endswith("/batch"):
                out: Any = {"results": [one(c) for c in body["checks"]]}
            else:
                out = one(body)
            payload, status = orjson.dumps(out), "200 OK"
        except Exception:  # noqa: BLE001 - a bad body is a 400, never a crash
            payload, status = b'{"error": "bad request"}', "400 Bad Request"
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
        return [payload]

    return app


def peers_available() -> list[str]:
    """The regorus peers whose module imports here."""
    found = []
    for name, module in REGORUS.items():
        if subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0:
            found.append(name)
    return found


# (server, keep-alive) cases: sync gunicorn closes every connection, so it is measured with close only.
CASES = {
    "gunicorn-sync": (False,),
    "gunicorn-gthread": (True,),
    "granian": (True, False),
}
MIX = "70% members, 13% non-members, 12% by email, 5% unknown"


def compare(url: str, token: str, workspaces: int, seconds: float, log_dir: str) -> dict[str, Any]:
    """Interleaved wrk runs of ours and the peers behind each server, unpinned and pinned."""
    from bench import http as hb

    wrk = hb.wrk_path()
    if wrk is None:
        return {"error": "wrk not installed (apt-get install -y wrk)"}
    singles = [json.dumps(it).encode() for it in mix_items(workspaces, 5000, 11)]
    batches = [json.dumps({"checks": mix_items(workspaces, 100, 100 + s)}).encode() for s in range(20)]
    data_path = os.path.join(tempfile.gettempdir(), f"bench_peer_data_w{workspaces}_{os.getpid()}.json")
    with open(data_path, "w", encoding="utf-8") as fh:
        json.dump(peer_data(workspaces), fh)
    peers = ["dict", *peers_available()]
    servers = [x for x in os.environ.get("BENCH_SERVERS", ",".join(CASES)).split(",") if x]
    pinnings = ["unpinned"] + (["pinned"] if (os.cpu_count() or 1) >= 2 else [])
    rate = float(os.environ.get("BENCH_PACED_RATE", "2000"))
    out: dict[str, Any] = {
        "workspaces": workspaces,
        "peers": peers,
        "regorus": any(p in REGORUS for p in peers),
        "mix": MIX,
        "servers": servers,
        "workers": hb.workers_default(),
        "runs": [],
        "paced": [],
        "paced_rate": rate,
    }
    for pin in pinnings:
        server_cpu = "0" if pin == "pinned" else None
        wrk_cpu = "1" if pin == "pinned" else None
        for server in servers:
            for name in ["ours", *peers, "ours"]:
                env = {"BENCH_PEER": name, "BENCH_PEER_DATA": data_path}
                app = "app:create_app()" if name == "ours" else "bench.peer:peer_app()"
                log = os.path.join(log_dir, f"server-{server}-{name}-{pin}.log")
                with hb.app_server(
                    url, app, hb.workers_default(), log, cpu=server_cpu, extra_env=env, server=server
                ) as port:
                    for path, bodies in (("/v1/check", singles), ("/v1/check/batch", batches)):
                        hb.load_wrk(wrk, port, token, path, bodies, 4, 2.0, cpu=wrk_cpu)  # warm every worker
                    for keep in CASES.get(server, (True, False)):
                        for path, bodies, clients in (("/v1/check", singles, 8), ("/v1/check/batch", batches, 4)):
                            r = hb.load_wrk(
                                wrk, port, token, path, bodies, clients, seconds, keepalive=keep, cpu=wrk_cpu
                            )
                            r.update(app=name, server=server, pinning=pin, keepalive=keep, path=path)
                            out["runs"].append(r)
                            _show(r)
                    # latency at one offered load for every server and app (below every saturation)
                    keep = CASES.get(server, (True, False))[0]
                    r = hb.load_wrk(
                        wrk, port, token, "/v1/check", singles, 8, seconds, keepalive=keep, cpu=wrk_cpu, rate=rate
                    )
                    r.update(app=name, server=server, pinning=pin, keepalive=keep, path="/v1/check", paced=rate)
                    out["paced"].append(r)
                    _show(r)
    out["ratios"] = ratios(out["runs"])
    return out


def _show(r: dict[str, Any]) -> None:
    paced = f" paced at {r['paced']:.0f}/s" if r.get("paced") else ""
    print(
        f"   {r['pinning']:8} {r['server']:16} {r['app']:12} {'keep-alive' if r['keepalive'] else 'close':10} "
        f"{r['path']:16} {r['requests_per_s']:8.0f}/s p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms{paced}",
        flush=True,
    )


def ratios(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Throughput ratios, ours = the mean of its interleaved runs: ours/peer behind the same server
    (per pinning, connection and path), and ours behind each server over each peer behind gunicorn
    (the issue's baseline: regorus behind gunicorn)."""
    mean: dict[tuple[str, str, str, bool, str], float] = {}
    groups: dict[tuple[str, str, str, bool, str], list[float]] = {}
    for r in runs:
        key = (r["app"], r["server"], r["pinning"], r["keepalive"], r["path"])
        groups.setdefault(key, []).append(r["requests_per_s"])
    mean = {k: sum(v) / len(v) for k, v in groups.items()}
    res: dict[str, float] = {}
    for (name, via, pin, keep, path), value in mean.items():
        if name == "ours":
            continue
        conn = "keep-alive" if keep else "close"
        ours = mean.get(("ours", via, pin, keep, path))
        if ours and value:
            res[f"{pin} {via} {conn} {path} ours/{name}"] = ours / value
        if via.startswith("gunicorn") and value:
            for (o_name, o_via, o_pin, o_keep, o_path), o_value in mean.items():
                if o_name == "ours" and o_via == "granian" and (o_pin, o_keep, o_path) == (pin, True, path):
                    res[f"{pin} {path} ours@granian keep-alive / {name}@{via} {conn}"] = o_value / value
    return res
