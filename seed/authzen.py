"""AuthZEN interop fixtures, loaded only on request: ``flask seed authzen-todo`` and ``flask seed authzen-cert``.

* ``authzen-todo``: workspace ``authzen-todo`` (pack ``todo``) with the five users of
  ``authzen/todo-scenario.md``: their emails, names, PIDs as external ids, and roles (Rick Sanchez
  is admin of the workspace and holds the pack's platform role evil_genius).
* ``authzen-cert``: workspace ``authzen-cert`` (pack ``authzen_cert``) with the fixture of
  ``authzen/certification-scenario-1_0.md`` §C.1: subjects ``alice`` and ``bob`` (external ids),
  resources ``record-1`` and ``record-2`` in the workspace's resource catalog.

Same loader and guarantees as ``flask seed``: one transaction, one policy revision, idempotent.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.authz.identifiers import PLATFORM_DOMAIN
from app.decisions.authzen import CATALOG_KEY
from app.extensions import authz, db
from app.identity import users
from seed.demo import PASSWORD, _Loader

# (name, email, PID = external id, workspace role, platform roles) — todo-scenario.md "Subjects"
Person = tuple[str, str, str, str, list[str]]
TODO_USERS: list[Person] = [
    (
        "Rick Sanchez",
        "rick@the-citadel.com",
        "CiRmZDA2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
        "admin",
        ["evil_genius"],
    ),
    (
        "Morty Smith",
        "morty@the-citadel.com",
        "CiRmZDE2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
        "editor",
        [],
    ),
    (
        "Summer Smith",
        "summer@the-smiths.com",
        "CiRmZDI2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
        "editor",
        [],
    ),
    ("Beth Smith", "beth@the-smiths.com", "CiRmZDM2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs", "viewer", []),
    (
        "Jerry Smith",
        "jerry@the-smiths.com",
        "CiRmZDQ2MTRkMy1jMzlhLTQ3ODEtYjdiZC04Yjk2ZjVhNTEwMGQSBWxvY2Fs",
        "viewer",
        [],
    ),
]
CERT_USERS: list[Person] = [
    ("Alice", "alice@authzen-cert.example", "alice", "writer", []),
    ("Bob", "bob@authzen-cert.example", "bob", "reader", []),
]
CERT_RESOURCES = [
    {"type": "record", "id": "record-1", "properties": {"status": "active"}},
    {"type": "record", "id": "record-2", "properties": {"status": "archived"}},
    # §C.1.1: bob's subject properties (what the pack's conditions read when a request carries none)
    {"type": "user", "id": "bob", "properties": {"role": "admin"}},
]
FIXTURES: dict[str, tuple[str, str, str, list[Person], list[dict[str, Any]]]] = {
    # name: (workspace slug, pack, workspace name, users, resource catalog)
    "authzen-todo": ("authzen-todo", "todo", "AuthZEN Todo interop", TODO_USERS, []),
    "authzen-cert": ("authzen-cert", "authzen_cert", "AuthZEN certification fixture", CERT_USERS, CERT_RESOURCES),
}


def load_fixture(name: str) -> str:
    """Load one AuthZEN fixture (idempotent); returns a one-line summary."""
    slug, pack_id, title, people, resources = FIXTURES[name]
    if pack_id not in authz.engine.packset.packs:
        return f"{name}: pack {pack_id!r} is not loaded; nothing changed"
    session: Session = db.session()
    try:
        loader = _Loader(session)
        changed = 0
        ws = loader.workspace(slug, pack_id, title)
        for display, email, external_id, role, platform in people:
            loader.member(ws, email, role)
            user = loader.user(email)
            if user.display_name != display:
                user.display_name = display
                changed += 1
            if user.external_id != external_id:
                users.set_external_id(session, user, external_id)
                changed += 1
            for prole in platform:
                loader.rule("g", user.key, f"role:{pack_id}:{prole}", PLATFORM_DOMAIN)
        if resources and (ws.settings or {}).get(CATALOG_KEY) != resources:
            ws.settings = {**(ws.settings or {}), CATALOG_KEY: resources}
            changed += 1
        if not loader.changes and not any(loader.created.values()) and not changed:
            session.rollback()
            return f"{name}: already loaded; nothing changed"
        if loader.changes:
            from app.policy import store as policy_store

            policy_store.add_changes(session, loader.handle, loader.changes)
        session.commit()
    except Exception:
        session.rollback()
        raise
    counts = ", ".join(f"{v} {k}" for k, v in loader.created.items() if v)
    return (
        f"{name}: workspace {slug} ({pack_id}) loaded: {counts or 'no new rows'}, {len(loader.changes)} rules, "
        f"{changed} updates. Every password is {PASSWORD!r}; change it."
    )
