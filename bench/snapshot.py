"""Policy snapshot sizes and times (``POLICY_SNAPSHOT_PATH``): ``python -m bench.snapshot [workspaces] [members]``.

On a private PostgreSQL (``bench.pgcluster``, removed afterwards) with ``bench.outage.build``'s
data set, it times a full load from the database, the snapshot's encode and atomic write (as the
background writer does them), and a start from the file: read + checksum + decode, engine build,
directory and tokens, and the escalation verifier that every load runs (cached here: the load just
ran it on the same packs; a fresh process's first run costs more). One run, printed as JSON.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from bench.outage import build
from bench.pgcluster import Cluster


def main() -> None:
    """Build the data set, load, write, read back; print the figures."""
    workspaces = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    members = int(sys.argv[2]) if len(sys.argv) > 2 else 6
    cluster = Cluster("snapbench")
    try:
        out = _run(cluster.create_database(), workspaces, members)
    finally:
        cluster.stop()
    print(json.dumps(out, indent=1))


def _run(url: str, workspaces: int, members: int) -> dict[str, object]:
    from app import create_app
    from app.authz import PolicyEngine, delegation
    from app.authz.packs import packset_from_documents
    from app.extensions import authz, db
    from app.policy import snapshot
    from app.policy.directory import Directory

    with tempfile.TemporaryDirectory() as tmp:
        t = time.monotonic()
        build(url, workspaces=workspaces, members=members)
        built = time.monotonic() - t
        path = Path(tmp) / "policy.snapshot"
        app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench-" + "x" * 32, "MAIL_BACKEND": "memory",
                          "POLICY_SNAPSHOT_PATH": str(path)})
        with app.app_context():
            t = time.monotonic()
            eng = authz.reload()
            load = time.monotonic() - t
            authz.wait_snapshot()
            written = dict(authz.last_snapshot or {})
            model_text = Path(app.config["MODEL_PATH"]).read_text(encoding="utf-8")
            model, database = snapshot.model_digest(model_text), snapshot.database_identity(url)
            t0 = time.monotonic()
            snap = snapshot.read(path, model, database)
            assert snap is not None
            t1 = time.monotonic()
            packset = packset_from_documents(snap.state.documents, snap.state.pack_rules, model_text)
            restored = PolicyEngine(packset, snap.state.facts, snap.meta.revision)
            t2 = time.monotonic()
            users = Directory.from_rows(snap.state.users, snap.state.catalogs)
            snapshot.identities(snap.state.tokens)
            t3 = time.monotonic()
            delegation.problems(restored.packset)
            t4 = time.monotonic()
            out = {
                "workspaces": workspaces, "members_each": members, "facts": len(snap.state.facts),
                "users": len(users), "revision": eng.revision, "data_set_seconds": round(built, 2),
                "database_load_seconds": round(load, 3), "snapshot_bytes": written.get("bytes"),
                "encode_seconds": written.get("encode_seconds"), "write_seconds": written.get("write_seconds"),
                "read_verify_decode_seconds": round(t1 - t0, 4), "engine_build_seconds": round(t2 - t1, 4),
                "directory_tokens_seconds": round(t3 - t2, 4), "verifier_seconds": round(t4 - t3, 4),
            }
            db.session.remove()
            db.engine.dispose()
    return out


if __name__ == "__main__":
    main()
