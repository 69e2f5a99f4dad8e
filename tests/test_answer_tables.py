"""Answers remembered per state (``app.decisions.answers``) are never served at another state.

The class of bug: a cache of decisions that outlives a change — a membership, a pack edit, a user's
email — and answers from the old policy. The mechanism that rules the class out is the stamp
(engine generation, directory version), renewed as the last step of every change and read before
deciding. The tests drive random changes of every kind through one engine and directory and, after
each, compare what ``decide`` answers (tables on, the same questions asked again and again) with the
oracle: the same questions decided without any table, from the references up. Then the fast path's
table of whole single-check bodies, through the real app: a repeated body across a role change,
an email change, a token bound elsewhere, and the decision log.
"""

from __future__ import annotations

import random
from typing import Any

import msgspec
import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.api import decision, decision_wsgi
from app.authz import AccessRequest, Decision, PolicyEngine, RuleChange, decisionlog
from app.decisions import resolution
from app.decisions.answers import Stamped
from app.decisions.resolution import CHECKS, Check, decide
from app.extensions import db
from app.policy import tokens
from app.policy.directory import Directory
from bench.world import build_world
from tests.test_decision_api import World, add_rules, post
from tests.test_decision_api import world as world  # noqa: F401 - the fixture
from tests.test_differential import PACKSET
from tests.test_incremental_packs import _edit, _start

CHECK = msgspec.json.Decoder(Check)
STEPS = 160


def _oracle(items: list[Check], eng: PolicyEngine, users: Directory) -> list[tuple[bool, str, int]]:
    """Each check decided from the references up, no table anywhere."""
    out = []
    for it in items:
        req = resolution._prepared(it, users.lookup, eng)
        d = Decision(False, req, eng.revision) if isinstance(req, str) else eng.decide(req)
        out.append((d.allowed, d.reason, d.revision))
    return out


def _questions(rnd: random.Random, wss: list[str], members: dict[str, dict[str, str]], n: int) -> list[Check]:
    """Checks naming people by id, by email and by key, sometimes nobody, with and without a member."""
    out = []
    for _ in range(n):
        ws = rnd.choice(wss)
        people = [int(k[5:]) for k in members[ws] if k[5:].isdigit()] or [1]
        who = rnd.choice(people)
        subject: Any = rnd.choice([who, f"u{who}@t.example", f"user:{who}", f"nobody{rnd.randrange(3)}@t.example"])
        action = rnd.choice(["view", "change_role", "remove_member", "invite_members", "manage_groups"])
        body: dict[str, Any] = {"subject": subject, "workspace": ws, "action": action}
        if rnd.random() < 0.5:
            target = rnd.choice(people)
            body["resource"] = {"type": "member", "id": str(target), "attributes": {"member": f"u{target}@t.example"}}
        out.append(CHECK.decode(orjson.dumps(body)))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_no_answer_outlives_a_change_of_any_kind(seed: int) -> None:
    rnd = random.Random(seed)
    world = build_world(PACKSET, 10, members=6, seed=seed, extras=False)
    eng = PolicyEngine(PACKSET, world.facts, revision=1)
    users = Directory()
    ids = sorted({int(u[5:]) for ws in world.members.values() for u in ws if u[5:].isdigit()})
    for uid in ids:
        users.put(uid, f"u{uid}@t.example", None)
    wss = list(world.pack_of)
    items = _questions(rnd, wss, world.members, 60)
    policy = _start()
    kinds: dict[str, int] = {}
    served = 0
    for step in range(STEPS):
        kind = rnd.choice(["role", "role", "leave", "email", "newcomer", "pack", "nothing"])
        ws = rnd.choice(wss)
        if kind in ("role", "leave"):
            uid = rnd.choice(ids)
            key = f"user:{uid}"
            old = world.members[ws].pop(key, None)
            pack = PACKSET.packs[world.pack_of[ws]]
            changes = [RuleChange("remove", ("g", key, old, ws))] if old else []
            if kind == "role":
                role = pack.role_key(rnd.choice(pack.workspace_roles).id)
                world.members[ws][key] = role
                changes.append(RuleChange("add", ("g", key, role, ws)))
            eng.apply(changes, eng.revision + 1)
        elif kind == "email":  # two users swap emails: every question by email names someone else
            a, b = rnd.sample(ids, 2)
            users.put(a, f"tmp{step}@t.example", None)
            users.put(b, f"u{a}@t.example", None)
            users.put(a, f"u{b}@t.example", None)
        elif kind == "newcomer":  # a user the questions named as nobody appears
            uid = 10_000 + step
            users.put(uid, f"nobody{rnd.randrange(3)}@t.example", None)
        elif kind == "pack":
            got = _edit(policy, world, rnd)
            if got is None:
                continue
            policy, changes = got
            eng.apply_packs(policy.packset(), changes, eng.revision + 1)
        kinds[kind] = kinds.get(kind, 0) + 1
        for _ in range(2):  # the second round is answered from the table
            asked = rnd.sample(items, 25)
            before = len(CHECKS.peek((eng.generation, users.version)) or {})
            got = [(d.allowed, d.reason, d.revision) for d in decide(asked, eng, False, users)]
            assert got == _oracle(asked, eng, users), f"step {step} after {kind}"
            served += before
    assert served > 0 and set(kinds) >= {"role", "leave", "email", "newcomer", "pack"}, kinds


def test_a_table_of_an_older_stamp_never_answers_at_the_newer_one() -> None:
    table: Stamped[str, int] = Stamped(limit=3)
    old = table.at((1, 1))
    table.remember(old, "q", 1)
    new = table.at((2, 1))  # the state moved: a new table
    assert "q" not in new and table.peek((1, 1)) is None
    table.remember(old, "late", 2)  # a thread still deciding at (1, 1) writes into the old table
    assert "late" not in table.at((2, 1))
    table.at((1, 1))  # ... and may even put the old table back
    assert table.at((2, 1)) == {}  # the newer stamp then starts afresh: never the older answers
    for k in "abcd":
        table.remember(table.at((2, 1)), k, 0)
    assert len(table.at((2, 1))) <= 3  # bounded: cleared when full


def test_every_change_renews_the_stamp() -> None:
    world = build_world(PACKSET, 4, members=3, seed=5, extras=False)
    eng = PolicyEngine(PACKSET, world.facts, revision=1)
    seen = {eng.generation}
    ws = next(iter(world.pack_of))
    eng.apply([RuleChange("add", ("g", "user:77", "role:classroom:learner", ws))], 2)
    seen.add(eng.generation)
    eng.apply([], 3)
    seen.add(eng.generation)
    policy, changes = next(g for g in iter(lambda: _edit(_start(), world, random.Random(1)), 0) if g is not None)
    eng.apply_packs(policy.packset(), changes, 4)
    seen.add(eng.generation)
    other = PolicyEngine(PACKSET, world.facts, revision=1)  # another engine at the same revision
    assert len(seen | {other.generation}) == 5
    users = Directory()
    versions = {users.version}
    users.put(1, "a@t.example", None)
    versions.add(users.version)
    users.changed(1, "email", "b@t.example")
    versions.add(users.version)
    assert len(versions | {Directory().version}) == 4


# -- the fast path's table of whole bodies, through the real app ------------------------------------
VIEW = {"workspace": "simulations-demo", "action": "review_scores"}


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The bodies the fast path parsed (a body answered from the table is not parsed again)."""
    seen: list[bytes] = []
    parse = decision.parse

    def spy(endpoint: str, raw: bytes, limit: int) -> Any:
        seen.append(raw)
        return parse(endpoint, raw, limit)

    monkeypatch.setattr(decision, "parse", spy)
    return seen


def _ask(client: FlaskClient, token: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return post(client, "/v1/check", token, body)


def test_a_repeated_body_is_answered_from_the_table_until_the_policy_moves(
    app: Flask, client: FlaskClient, world: World, parses: list[bytes]
) -> None:
    assert isinstance(app.decision_fast_path, decision_wsgi.DecisionFastPath)
    learner = world.users["simulations.learner"]
    body = {"subject": learner.id, **VIEW}
    _ask(client, world.token, body)  # the token is looked up by the view once
    parses.clear()
    first = _ask(client, world.token, body)
    again = _ask(client, world.token, body)
    assert first == again and first[1]["allowed"] is False
    assert len(parses) == 1  # the second came from the table
    ws = world.ws["simulations"].key
    add_rules(("g", learner.key, "role:simulations:reviewer", ws))  # a revision: the stamp moves
    status, moved = _ask(client, world.token, body)
    assert status == 200 and moved["allowed"] is True and moved["revision"] > first[1]["revision"]
    assert len(parses) == 2
    assert _ask(client, world.token, body) == (200, moved) and len(parses) == 2


def test_a_body_by_email_follows_the_email_to_its_new_owner(
    app: Flask, client: FlaskClient, world: World, parses: list[bytes]
) -> None:
    owner, learner = world.users["simulations.owner"], world.users["simulations.learner"]
    body = {"subject": "someone.new@example.com", "workspace": "simulations-demo", "action": "view_dashboard"}
    assert _ask(client, world.token, body)[1]["reason"] == "unknown_subject"
    assert _ask(client, world.token, body)[1]["reason"] == "unknown_subject"
    owner.email = "someone.new@example.com"  # no policy revision: only the directory moves
    db.session.commit()
    status, got = _ask(client, world.token, body)
    assert status == 200 and got["allowed"] is True, got
    learner.email, owner.email = "owner.before@example.com", "learner.before@example.com"
    db.session.commit()
    assert _ask(client, world.token, body)[1]["reason"] == "unknown_subject"


def test_a_body_from_the_table_still_checks_the_tokens_binding_and_logs_the_decision(
    app: Flask, client: FlaskClient, world: World, parses: list[bytes]
) -> None:
    body = {"subject": world.uid("simulations.owner"), "workspace": "simulations-demo", "action": "view_dashboard"}
    _, bound = tokens.create_token(db.session(), "bound", workspaces=[world.ws["classroom"].key])
    db.session.commit()
    _ask(client, world.token, body)
    assert _ask(client, world.token, body)[1]["allowed"] is True  # in the table now
    status, problem = _ask(client, bound, body)
    assert status == 403 and problem["type"].endswith("token-not-bound"), problem
    status, problem = _ask(client, bound, body)
    assert status == 403, problem  # again, with the token known to the fast path
    decisionlog.LOG.clear()
    for _ in range(3):
        assert _ask(client, world.token, body)[1]["allowed"] is True
    logged = decisionlog.LOG.recent()
    assert len(logged) == 3 and all(isinstance(r, AccessRequest) and ok for r, ok in logged)


def test_a_body_is_answered_from_the_table_only_to_the_identity_it_was_decided_for(
    app: Flask, client: FlaskClient, world: World, parses: list[bytes]
) -> None:
    """The table is per token identity (the binding was checked when the answer went in): another
    token, or another identity object holding a reused ``id``, is decided again on the parse's path."""
    body = {"subject": world.uid("simulations.owner"), "workspace": "simulations-demo", "action": "view_dashboard"}
    _, other = tokens.create_token(db.session(), "other-wide", all_workspaces=True)
    db.session.commit()
    warm = {**body, "action": "manage_billing_and_subscription"}
    _ask(client, world.token, warm)  # both tokens known to the fast path, through another body
    _ask(client, other, warm)
    parses.clear()
    assert _ask(client, world.token, body)[1]["allowed"] is True
    assert len(parses) == 1  # decided for this token, then kept under its identity
    assert _ask(client, world.token, body)[1]["allowed"] is True and len(parses) == 1
    assert _ask(client, other, body)[1]["allowed"] is True and len(parses) == 2  # another token: decided again
    assert _ask(client, other, body)[1]["allowed"] is True and len(parses) == 2
    # An entry under this token's id that holds another identity (a freed identity's id reused): not served
    identity = tokens.cached_identity(app, world.token)
    assert identity is not None
    fast = app.decision_fast_path
    eng, users = fast._served.now(app)
    table = decision_wsgi.BODIES.at((eng.generation, users.version))
    (key,) = [k for k in table if k[0] == id(identity) and orjson.loads(k[1]) == body]
    kept = table[key]
    stranger = tokens.TokenIdentity(identity.id, identity.name, identity.workspace, frozenset({"ws:nowhere"}))
    table[key] = (stranger, kept[1], kept[2])
    assert _ask(client, world.token, body)[1]["allowed"] is True and len(parses) == 3
    assert table[key][0] is identity  # decided again and kept for the right identity
