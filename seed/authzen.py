"""AuthZEN interop fixtures, loaded only on request: ``flask seed authzen-todo|authzen-cert|authzen-search``.

* ``authzen-todo``: workspace ``authzen-todo`` (pack ``todo``) with the five users of
  ``authzen/todo-scenario.md``: their emails, names, PIDs as external ids, and roles (Rick Sanchez
  is admin of the workspace and holds the pack's platform role evil_genius).
* ``authzen-cert``: workspace ``authzen-cert`` (pack ``authzen_cert``) with the fixture of
  ``authzen/certification-scenario-1_0.md`` §C.1: subjects ``alice`` and ``bob`` (external ids),
  resources ``record-1`` and ``record-2`` in the workspace's resource catalog.
* ``authzen-search``: workspace ``authzen-search`` (pack ``authzen_search``) with the search interop
  scenario's sample data (also the IdP scenario's): six people known by their scenario ids (external
  ids), each in a department (a group of the workspace; managers manage theirs), and records 101-120
  with their owner and department in the workspace's resource catalog.

An external id names one person across fixtures: the certification fixture's ``alice`` and ``bob``
are the search scenario's (whichever fixture is loaded first gives them their email address).

Same loader and guarantees as ``flask seed``: one transaction, one policy revision, idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.authz.identifiers import PLATFORM_DOMAIN
from app.decisions.authzen import CATALOG_KEY
from app.extensions import authz, db
from app.identity import users
from app.models import User
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

# The search interop scenario's sample data ("User Data", "Record Data"): who works where, in which role,
# and which record belongs to whom and to which department. The scenario's ids are the people's
# external ids (the identity provider's subject), and their addresses are made up from them.
SEARCH_STAFF: dict[str, tuple[str, str]] = {  # id -> (role, department)
    "alice": ("manager", "Sales"),
    "bob": ("employee", "Legal"),
    "carol": ("contractor", "Legal"),
    "dan": ("manager", "Finance"),
    "erin": ("employee", "Finance"),
    "felix": ("contractor", "Accounting"),
}
# record id -> (owner, department, title); ids 101-120 in the scenario's order
SEARCH_RECORDS: dict[str, tuple[str, str, str]] = {
    "101": ("alice", "Legal", "Hamlet"),
    "102": ("bob", "Legal", "Othello"),
    "103": ("carol", "Legal", "Macbeth"),
    "104": ("dan", "Accounting", "King Lear"),
    "105": ("erin", "Legal", "Romeo and Juliet"),
    "106": ("felix", "Accounting", "A Midsummer Night's Dream"),
    "107": ("alice", "Sales", "The Tempest"),
    "108": ("bob", "Legal", "Twelfth Night"),
    "109": ("carol", "Accounting", "Julius Caesar"),
    "110": ("dan", "Sales", "As You Like It"),
    "111": ("erin", "Accounting", "Much Ado About Nothing"),
    "112": ("felix", "Legal", "The Merchant of Venice"),
    "113": ("alice", "Sales", "Henry V"),
    "114": ("bob", "Accounting", "Richard III"),
    "115": ("carol", "Finance", "Coriolanus"),
    "116": ("dan", "Legal", "Taming of the Shrew"),
    "117": ("erin", "Legal", "Antony and Cleopatra"),
    "118": ("felix", "Accounting", "Measure for Measure"),
    "119": ("alice", "Legal", "The Winter's Tale"),
    "120": ("bob", "Accounting", "All's Well That Ends Well"),
}
SEARCH_USERS: list[Person] = [
    (uid.capitalize(), f"{uid}@authzen-search.example", uid, role, []) for uid, (role, _) in SEARCH_STAFF.items()
]
SEARCH_RESOURCES = [
    {"type": "record", "id": rid, "properties": {"owner": owner, "department": dept, "title": title}}
    for rid, (owner, dept, title) in SEARCH_RECORDS.items()
]
# department -> [(external id, relation)]: managers manage their department's group, everyone belongs to it
SEARCH_DEPARTMENTS: dict[str, list[tuple[str, str]]] = {}
for _uid, (_role, _dept) in SEARCH_STAFF.items():
    SEARCH_DEPARTMENTS.setdefault(_dept, []).append((_uid, "learner"))
    if _role == "manager":
        SEARCH_DEPARTMENTS[_dept].append((_uid, "teacher"))


@dataclass(frozen=True)
class Fixture:
    """One fixture: its workspace, pack, people, resource catalog and groups (name -> [(external id, relation)])."""

    slug: str
    pack: str
    title: str
    people: list[Person]
    resources: list[dict[str, Any]] = field(default_factory=list)
    groups: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


FIXTURES: dict[str, Fixture] = {
    "authzen-todo": Fixture("authzen-todo", "todo", "AuthZEN Todo interop", TODO_USERS),
    "authzen-cert": Fixture(
        "authzen-cert", "authzen_cert", "AuthZEN certification fixture", CERT_USERS, CERT_RESOURCES
    ),
    "authzen-search": Fixture(
        "authzen-search",
        "authzen_search",
        "AuthZEN search interop",
        SEARCH_USERS,
        SEARCH_RESOURCES,
        SEARCH_DEPARTMENTS,
    ),
}


def _address(session: Session, email: str, external_id: str) -> str:
    """The address of the person this external id names already, else the fixture's."""
    known = session.scalar(select(User.email).where(User.external_id == external_id))
    return str(known) if known is not None else email


def load_fixture(name: str) -> str:
    """Load one AuthZEN fixture (idempotent); returns a one-line summary."""
    fixture = FIXTURES[name]
    slug, pack_id, title, people, resources = (
        fixture.slug,
        fixture.pack,
        fixture.title,
        fixture.people,
        fixture.resources,
    )
    if pack_id not in authz.engine.packset.packs:
        return f"{name}: pack {pack_id!r} is not loaded; nothing changed"
    session: Session = db.session()
    try:
        loader = _Loader(session)
        changed = 0
        ws = loader.workspace(slug, pack_id, title)
        addresses: dict[str, str] = {}
        for display, email, external_id, role, platform in people:
            email = addresses[external_id] = _address(session, email, external_id)
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
        for group, links in fixture.groups.items():
            loader.unit(ws, "group", group, [(addresses[ext], relation) for ext, relation in links])
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
