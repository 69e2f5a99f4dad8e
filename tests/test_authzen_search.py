"""The AuthZEN search and IdP interop scenarios (issue 24) in-process: ``flask seed authzen-search`` and
the authzen_search pack answer every Subject, Resource and Action Search of the scenario as its six
rules say. The expected answers come from the rules themselves (an oracle written here from the
scenario document), checked against a few answers the document spells out."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app.extensions import db
from app.models import User
from app.policy import tokens
from seed.authzen import SEARCH_RECORDS, SEARCH_STAFF, load_fixture
from tests.test_authzen import call

SUBJECTS = "/access/v1/search/subject"
RESOURCES = "/access/v1/search/resource"
ACTIONS = "/access/v1/search/action"
EVAL = "/access/v1/evaluation"
VERBS = ("view", "edit", "delete")


def may(user: str, action: str, record: str) -> bool:
    """The scenario's six authorization rules, as written in its document."""
    role, dept = SEARCH_STAFF[user]
    owner, rdept, _ = SEARCH_RECORDS[record]
    if action == "view":
        return owner == user or rdept == dept or role == "manager"
    if action == "edit":
        return owner == user or (role == "manager" and rdept == dept)
    return action == "delete" and owner == user


@pytest.fixture
def search(app: Flask) -> str:
    """The authzen-search fixture (after the certification one: alice and bob are the same people) and a token."""
    load_fixture("authzen-cert")
    load_fixture("authzen-search")
    _, secret = tokens.create_token(db.session(), "search-pep", workspace="authzen-search")
    db.session.commit()
    return secret


def ids(out: dict[str, Any], key: str = "id") -> list[str]:
    return sorted(str(r[key]) for r in out["results"])


def test_the_documents_own_answers(client: FlaskClient, search: str) -> None:
    """Answers the scenario documents spell out, and the oracle agrees with them."""
    who = {"subject": {"type": "user"}, "action": {"name": "view"}, "resource": {"type": "record", "id": "105"}}
    assert ids(call(client, SUBJECTS, search, who)[1]) == ["alice", "bob", "carol", "dan", "erin"]
    erin = {"subject": {"type": "user", "id": "erin"}, "action": {"name": "view"}, "resource": {"type": "record"}}
    assert ids(call(client, RESOURCES, search, erin)[1]) == ["105", "111", "115", "117"]
    on = {"subject": {"type": "user", "id": "erin"}, "resource": {"type": "record", "id": "117"}}
    assert ids(call(client, ACTIONS, search, on)[1], "name") == ["delete", "edit", "view"]
    on["resource"]["id"] = "118"
    assert call(client, ACTIONS, search, on)[1]["results"] == []
    # the IdP scenario: the records alice may delete become her token's claims
    idp = {"subject": {"type": "user", "id": "alice"}, "action": {"name": "delete"}, "resource": {"type": "record"}}
    assert ids(call(client, RESOURCES, search, idp)[1]) == ["101", "107", "113", "119"]
    assert [r for r in SEARCH_RECORDS if may("alice", "delete", r)] == ["101", "107", "113", "119"]
    assert [u for u in SEARCH_STAFF if may(u, "edit", "115")] == ["carol", "dan"]


def test_subject_search_every_record_and_action(client: FlaskClient, search: str) -> None:
    for record in SEARCH_RECORDS:
        for action in VERBS:
            body = {
                "subject": {"type": "user"},
                "action": {"name": action},
                "resource": {"type": "record", "id": record},
            }
            status, out = call(client, SUBJECTS, search, body)
            assert status == 200 and out["page"]["next_token"] == ""
            assert ids(out) == sorted(u for u in SEARCH_STAFF if may(u, action, record)), (record, action)
            assert all(r["type"] == "user" for r in out["results"])


def test_resource_search_every_user_and_action(client: FlaskClient, search: str) -> None:
    """Every (user, action): the records, as the scenario's resource search and the IdP's claims."""
    for user in SEARCH_STAFF:
        for action in VERBS:
            body = {"subject": {"type": "user", "id": user}, "action": {"name": action}, "resource": {"type": "record"}}
            out = call(client, RESOURCES, search, body)[1]
            assert ids(out) == sorted(r for r in SEARCH_RECORDS if may(user, action, r)), (user, action)


def test_action_search_every_user_and_record(client: FlaskClient, search: str) -> None:
    for user in SEARCH_STAFF:
        for record in SEARCH_RECORDS:
            body = {"subject": {"type": "user", "id": user}, "resource": {"type": "record", "id": record}}
            out = call(client, ACTIONS, search, body)[1]
            assert ids(out, "name") == sorted(a for a in VERBS if may(user, a, record)), (user, record)


def test_unknown_entities_find_nothing(client: FlaskClient, search: str) -> None:
    """Any other record, action or user: a valid, empty answer (as the scenario asks)."""
    view, record = {"name": "view"}, {"type": "record"}
    cases = [
        (SUBJECTS, {"subject": {"type": "user"}, "action": view, "resource": {**record, "id": "99"}}),
        (SUBJECTS, {"subject": {"type": "user"}, "action": {"name": "approve"}, "resource": {**record, "id": "101"}}),
        (RESOURCES, {"subject": {"type": "user", "id": "zed"}, "action": view, "resource": record}),
        (RESOURCES, {"subject": {"type": "user", "id": "alice"}, "action": {"name": "archive"}, "resource": record}),
        (ACTIONS, {"subject": {"type": "user", "id": "alice"}, "resource": {"type": "record", "id": "121"}}),
        (ACTIONS, {"subject": {"type": "user", "id": "zed"}, "resource": {"type": "record", "id": "101"}}),
    ]  # fmt: skip
    for url, body in cases:
        status, out = call(client, url, search, body)
        assert status == 200 and out["results"] == [], (url, body, out)


def test_evaluations_use_the_catalog_facts(client: FlaskClient, search: str) -> None:
    """The PEP sends neither owner nor department: the catalog holds them; a caller's facts win for properties."""
    ask = {
        "subject": {"type": "user", "id": "bob"},
        "action": {"name": "view"},
        "resource": {"type": "record", "id": "116"},
    }
    _, out = call(client, EVAL, search, ask)
    assert out["decision"] is True  # 116 is a Legal record, bob works in Legal
    ask["subject"]["id"] = "erin"
    _, out = call(client, EVAL, search, ask)
    assert out["decision"] is False and out["context"]["reason"] == "not_owner"  # erin works in Finance
    # the caller's facts win over the catalog's: "this record is in Finance" (the PEP's claim) lets erin view it
    ask["resource"]["properties"] = {"department": "Finance"}
    assert call(client, EVAL, search, ask)[1]["decision"] is True


def test_the_fixture_is_idempotent_and_shares_people(app: Flask, search: str) -> None:
    assert load_fixture("authzen-search").endswith("nothing changed")
    emails = dict(
        db.session.execute(select(User.external_id, User.email).where(User.external_id.in_(SEARCH_STAFF))).all()
    )
    assert emails["alice"] == "alice@authzen-cert.example"  # the certification fixture's alice
    assert emails["erin"] == "erin@authzen-search.example" and len(emails) == 6
