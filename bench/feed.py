"""The change feed's snapshot per workspace count: ``python -m bench.feed [W …]`` (part ``feed`` of ``make bench``).

On a private PostgreSQL (``bench.pgcluster``, removed afterwards) with ``bench.outage.build``'s data
set at each W, it times ``GET /v1/snapshot`` in-process (the app's test client: the server's read,
filter and encode, no network) for a feed token bound to 10 workspaces and for one bound to every
workspace, and the follower's side (``snapshot.decode`` + ``PolicyRuntime.adopt``: engine, directory,
tokens, the verifier). Baseline of the same run: the full load from the database (``authz.reload``)
and the size of the whole-state snapshot a central process writes (``POLICY_SNAPSHOT_PATH``'s format).
Role-change latency through the feed needs real servers: ``tests/test_sidecar.py`` and
``tests/deploy/test_sidecars.py`` print it.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.outage import build
from bench.pgcluster import Cluster

SIZES = (300, 3000)
SECRET = "bench-" + "x" * 32


def _one(url: str, workspaces: int) -> dict[str, Any]:
    from flask import Flask

    from app import create_app
    from app.extensions import authz, db
    from app.policy import feed, snapshot, tokens

    build(url, workspaces=workspaces, members=6)
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": SECRET, "MAIL_BACKEND": "memory", "POLICY_SYNC": "off"}
    )
    out: dict[str, Any] = {"workspaces": workspaces}
    with app.app_context():
        t = time.monotonic()
        authz.reload()
        out["full_load_seconds"] = round(time.monotonic() - t, 3)
        with db.session() as session:
            revision, state = feed.snapshot_state(session, feed.View(tokens.TokenIdentity(0, "x", wide=True)))
        model = Path(app.config["MODEL_PATH"]).read_text(encoding="utf-8")
        slugs = [f"o{i}" for i in range(1, 20, 2)]  # 10 workspaces of the other packs
        session = db.session()
        _, few = tokens.create_token(session, "bench-feed-few", workspaces=slugs, feed=True)
        _, wide = tokens.create_token(session, "bench-feed-all", all_workspaces=True, feed=True)
        session.commit()
    client = app.test_client()
    for name, secret in (("10_workspaces", few), ("all_workspaces", wide)):
        times, data = [], b""
        for _ in range(3):
            t = time.monotonic()
            resp = client.get("/v1/snapshot", headers={"Authorization": f"Bearer {secret}"})
            data = resp.get_data()
            times.append(time.monotonic() - t)
            assert resp.status_code == 200, resp.status_code
        follower = Flask("bench-follower")
        follower.config.update(app.config)
        t = time.monotonic()
        snap = snapshot.decode(data, snapshot.model_digest(model), feed.DATABASE)
        with follower.app_context():
            authz.adopt(follower, snap.state, snap.meta.revision, {"source": "bench"})
        out[name] = {
            "bytes": len(data),
            "server_seconds_min": round(min(times), 4),
            "follower_load_seconds": round(time.monotonic() - t, 4),
            "facts": len(snap.state.facts),
            "users": len(snap.state.users),
        }
    out["whole_state_bytes"] = len(snapshot.encode(state, revision, time.time(), snapshot.model_digest(model), "x"))
    return out


def run(results: Any = None, sizes: tuple[int, ...] = SIZES) -> dict[str, Any]:
    """Each size on a fresh private database; the figures by size."""
    out: dict[str, Any] = {"sizes": []}
    for w in sizes:
        cluster = Cluster(f"feedbench{w}")
        try:
            out["sizes"].append(_one(cluster.create_database(), w))
        finally:
            cluster.stop()
    return out


def lines(result: dict[str, Any]) -> list[str]:
    """The report's section."""
    if "error" in result:
        return ["## Change feed snapshot", "", f"failed: {result['error']}"]
    rows = [
        "## Change feed snapshot (`GET /v1/snapshot`, in-process; baseline: the full load, same run)",
        "",
        "| W | full load | whole state | 10 ws: bytes / server / follower load | all: bytes / server / follower load |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in result["sizes"]:
        few, every = s["10_workspaces"], s["all_workspaces"]
        rows.append(
            f"| {s['workspaces']:,} | {s['full_load_seconds']} s | {s['whole_state_bytes']:,} B | "
            f"{few['bytes']:,} B / {few['server_seconds_min']} s / {few['follower_load_seconds']} s | "
            f"{every['bytes']:,} B / {every['server_seconds_min']} s / {every['follower_load_seconds']} s |"
        )
    return rows


if __name__ == "__main__":
    sizes = tuple(int(a) for a in sys.argv[1:]) or SIZES
    print(json.dumps(run(None, sizes), indent=1))
