"""A revision that only changes pack documents reaches other processes too."""

from __future__ import annotations

from flask import Flask

from app.extensions import authz, db
from app.policy import store as policy_store


def test_document_only_revision_triggers_rebuild(app: Flask) -> None:
    """Another process adds a role to a pack (document only, no rule): a stale engine rebuilds."""
    stale = authz.build(db.session())
    session = db.session()
    handle = policy_store.begin_write(session, "policy-edit", None, "add role")
    doc = dict(policy_store.load_documents(session)["classroom"])
    doc["roles"] = [*doc["roles"], {"id": "assistant", "label": "Assistant", "rank": 1}]
    policy_store.save_document(session, "classroom", doc, handle.number)
    session.commit()
    authz._engines[app] = stale  # as if this process had missed the commit
    assert stale.packset.packs["classroom"].role("assistant") is None
    rev = authz.sync()
    assert rev == handle.number
    assert authz.engine.packset.packs["classroom"].role("assistant") is not None
