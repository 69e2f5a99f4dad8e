"""A process holding one partition of the workspaces (POLICY_PARTITION, POLICY_WORKSPACES) on real
PostgreSQL: it loads only its workspaces' facts and the users they name, decides exactly as a process
holding everything (allowed and reason, references by id, email and external id alike), follows the
revision log skipping foreign changes, and answers 421 for a workspace it does not hold at every
decision surface."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from app.authz import RuleChange
from app.authz.packs import load_packs
from app.authz.selection import Selection, partition_of
from app.config import ConfigError
from app.decisions.resolution import Check, CheckAttributes, CheckResource, decide
from bench.world import World, build_world, random_request
from tests.conftest import ROOT, fresh_pg_database, make_app

pytestmark = pytest.mark.postgres

W = 36
PACKSET = load_packs(str(ROOT / "policy"), str(ROOT / "model.conf"))
WORLD: World = build_world(PACKSET, W, seed=5)


def _uid(key: str) -> int | None:
    return int(key[5:]) if key.startswith("user:") and key[5:].isdigit() else None


@pytest.fixture(scope="module")
def setup() -> Iterator[dict[str, Any]]:
    """A database holding the world (one revision), its users (every third with an external id, some
    in no workspace at all) and a service token; a full app and a partition app on it."""
    from app.extensions import authz, db
    from app.policy import store as policy_store
    from app.policy import tokens

    with fresh_pg_database("i27p_unit") as url:
        writer = make_app(url)
        ids = sorted({u for r in WORLD.facts for u in [_uid(r[1])] if u is not None} | {7001, 7002, 7003})
        with writer.app_context():
            session = db.session()
            session.execute(
                text(
                    "INSERT INTO users (id, email, display_name, password_hash, active, created_at, external_id) "
                    "VALUES (:id, :email, 'U', '!', true, now(), :ext)"
                ),
                [{"id": i, "email": f"u{i}@x.example", "ext": f"ext-{i}" if i % 3 == 0 else None} for i in ids],
            )
            handle = policy_store.begin_write(session, "seed", None, "world")
            policy_store.add_changes(session, handle, [RuleChange("add", r) for r in WORLD.facts])
            _, secret = tokens.create_token(session, "pep", all_workspaces=True)
            session.commit()
            db.session.remove()
        full = make_app(url)
        part = make_app(url, POLICY_PARTITION="1/3")
        yield {"url": url, "writer": writer, "full": full, "part": part, "token": secret, "users": ids}
        for app in (writer, full, part):
            with app.app_context():
                listener = authz._listeners.get(app)
                if listener is not None:
                    listener.stop(timeout=2)
                db.session.remove()
                db.engine.dispose()


def _held_wss() -> list[str]:
    return [ws for ws in WORLD.pack_of if partition_of(ws, 3) == 1]


def _person(rnd: random.Random, key: str, ids: list[int]) -> object:
    """A reference to the same person, as an id, user:<id>, email or external id (or a stranger)."""
    uid = _uid(key)
    if uid is None:
        return key or None
    form = rnd.random()
    if form < 0.3:
        return f"U{uid}@X.example"  # emails are matched lower-cased
    if form < 0.4 and uid % 3 == 0:
        return f"ext-{uid}"
    if form < 0.5:
        return uid
    return key


def _checks(n: int, ids: list[int], seed: int = 3) -> list[Check]:
    rnd = random.Random(seed)
    out = []
    held = _held_wss()
    for _ in range(n):
        req = random_request(WORLD, rnd, held)
        obj = req.obj
        grantee: object = None
        if rnd.random() < 0.3:
            # someone from anywhere, invited by email: most are in no workspace of the partition
            grantee = f"u{rnd.choice(ids)}@x.example" if rnd.random() < 0.9 else "nobody@x.example"
        attrs = CheckAttributes(
            assignee=_person(rnd, obj.assignee, ids),  # type: ignore[arg-type]
            owner=_person(rnd, obj.owner, ids),  # type: ignore[arg-type]
            member=_person(rnd, obj.member, ids),  # type: ignore[arg-type]
            group=obj.group or None,
            team=obj.team or None,
            new_role=obj.new_role or None,
            grantee=grantee,  # type: ignore[arg-type]
        )
        resource = CheckResource(type=obj.type, id=obj.id, attributes=attrs)
        out.append(Check(subject=_person(rnd, req.subject, ids), workspace=req.domain, action=req.action,  # type: ignore[arg-type]
                         resource=resource))
    return out


def _decide(app: Flask, checks: list[Check]) -> list[tuple[bool, str]]:
    from app.extensions import authz

    with app.app_context():
        eng = authz.engine
        return [(d.allowed, d.reason) for d in decide(checks, eng)]


def test_partition_loads_its_workspaces_and_decides_exactly(setup: dict[str, Any]) -> None:
    from app.extensions import authz

    full, part = setup["full"], setup["part"]
    checks = _checks(1500, setup["users"])
    assert {c.workspace for c in checks} <= set(_held_wss()) | {"platform:" + p for p in PACKSET.packs} | {
        f"ws:unknown{i}" for i in range(5)
    }
    expected, got = _decide(full, checks), _decide(part, checks)
    assert got == expected
    assert sum(a for a, _ in got) > 100 and len({r for _, r in got}) > 5  # a real mix, not all denials
    with full.app_context():
        full_members = sum(len(authz.engine.members_of(ws)) for ws in WORLD.pack_of)
        full_users = len(authz.directory or ())
    with part.app_context():
        assert authz.selection == Selection.parse("1/3", also=frozenset({"ws:service"}))
        held_members = sum(len(authz.engine.members_of(ws)) for ws in WORLD.pack_of)
        foreign = [ws for ws in WORLD.pack_of if ws not in _held_wss()]
        assert all(not authz.engine.members_of(ws) for ws in foreign)
        assert authz.engine.pack_of(foreign[0]) is None  # (an unknown workspace there)
        directory = authz.directory
        assert directory is not None and directory.index is not None
        assert 0 < len(directory) < full_users / 2
        # anyone resolves, held in full or not: by id, user:<id>, email and external id
        outside = next(i for i in setup["users"] if i not in directory and i % 3 == 0)
        forms = (outside, f"user:{outside}", f"u{outside}@x.example", f"ext-{outside}")
        assert {directory.lookup(v) for v in forms} == {f"user:{outside}"}
        assert directory.lookup("nobody@x.example") is None and directory.lookup(99_999) is None
    assert 0 < held_members < full_members / 2


def test_postgresql_sends_only_the_held_workspaces_facts(setup: dict[str, Any]) -> None:
    from sqlalchemy.orm import Session

    from app.extensions import db
    from app.policy import store as policy_store

    part = Selection.parse("1/3")
    with setup["full"].app_context(), Session(db.engine) as session:
        rows = list(policy_store.read_policy(session, part.holds)[3])
    with setup["full"].app_context(), Session(db.engine) as session:
        everything = list(policy_store.read_policy(session)[3])
    assert rows == [r for r in everything if part.keeps(tuple(r))]
    assert 0 < len(rows) < len(everything) / 2


def test_a_foreign_workspace_is_421_at_every_surface(setup: dict[str, Any]) -> None:
    part, token = setup["part"], setup["token"]
    held, foreign = _held_wss()[0], next(ws for ws in WORLD.pack_of if partition_of(ws, 3) == 2)
    other = next(ws for ws in WORLD.pack_of if partition_of(ws, 3) == 0)
    client = part.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    check = {"subject": "user:1", "workspace": foreign[3:], "action": "view_member"}

    def problem(resp: Any, *workspaces: str) -> dict[str, Any]:
        assert resp.status_code == 421, resp.get_data(as_text=True)
        assert resp.mimetype == "application/problem+json"
        body: dict[str, Any] = resp.get_json()
        assert body["type"].endswith("/workspace-not-held")
        assert body["workspace"] == workspaces[0] and body["held"] == "partition 1/3"
        assert body["partition"] == f"{partition_of(workspaces[0], 3)}/3"
        assert [w["workspace"] for w in body["workspaces"]] == list(workspaces)
        return body

    for _ in range(2):  # the second time the token is known: the fast path hands it to the view
        problem(client.post("/v1/check", json=check, headers=auth), foreign)
    ok = client.post("/v1/check", json={**check, "workspace": held}, headers=auth)
    assert ok.status_code == 200 and "allowed" in ok.get_json()
    batch = {"checks": [{**check, "workspace": held}, check, {**check, "workspace": other}, check]}
    problem(client.post("/v1/check/batch", json=batch, headers=auth), foreign, other)  # nothing decided
    problem(client.post("/v1/check?explain=true", json=check, headers=auth), foreign)
    problem(client.get(f"/v1/permissions?subject=user:1&workspace={foreign[3:]}", headers=auth), foreign)
    problem(client.get(f"/v1/who-can?action=view_member&workspace={foreign[3:]}", headers=auth), foreign)
    ev = {
        "subject": {"type": "user", "id": "u1@x.example"},
        "action": {"name": "view_member"},
        "resource": {"type": "member", "id": "1"},
        "context": {"workspace": foreign[3:]},
    }
    problem(client.post("/access/v1/evaluation", json=ev, headers=auth), foreign)
    evs = {"evaluations": [{**ev, "context": {"workspace": held[3:]}}, ev]}
    problem(client.post("/access/v1/evaluations", json=evs, headers=auth), foreign)
    search = {"subject": {"type": "user"}, "action": ev["action"], "resource": ev["resource"], "context": ev["context"]}
    problem(client.post("/access/v1/search/subject", json=search, headers=auth), foreign)
    assert client.get("/readyz").get_json()["held"] == "partition 1/3"
    # platform domains and the service meta-pack's workspace are held by every partition
    for ws in ("platform:classroom", "service"):
        resp = client.post("/v1/check", json={**check, "workspace": ws}, headers=auth)
        assert resp.status_code == 200, resp.get_data(as_text=True)


def test_sync_applies_held_changes_and_skips_foreign_ones(setup: dict[str, Any]) -> None:
    from app.extensions import authz, db
    from app.policy import store as policy_store

    writer, part = setup["writer"], setup["part"]
    held, foreign = _held_wss()[1], next(ws for ws in WORLD.pack_of if partition_of(ws, 3) != 1)
    role_held = PACKSET.packs[WORLD.pack_of[held]].role_key(PACKSET.packs[WORLD.pack_of[held]].workspace_roles[0].id)
    pack_f = PACKSET.packs[WORLD.pack_of[foreign]]
    with writer.app_context():
        session = db.session()
        session.execute(text("INSERT INTO users (id, email, display_name, password_hash, active, created_at) "
                             "VALUES (7100, 'new@x.example', 'N', '!', true, now())"))
        handle = policy_store.begin_write(session, "member", None, "t")
        policy_store.add_changes(session, handle, [
            RuleChange("add", ("g", "user:7100", role_held, held)),
            RuleChange("add", ("g", "user:7001", pack_f.role_key(pack_f.workspace_roles[0].id), foreign)),
        ])
        number = handle.number
        handle2 = policy_store.begin_write(session, "member", None, "t2")
        policy_store.add_changes(session, handle2, [
            RuleChange("add", ("g", "user:7002", pack_f.role_key(pack_f.workspace_roles[0].id), foreign))
        ])
        last = handle2.number
        session.commit()
        db.session.remove()
    assert last == number + 1
    with part.app_context():
        assert authz.sync() == last  # a revision with nothing held still moves the engine to it
        eng = authz.engine
        assert eng.roles_of("user:7100", held) and not eng.roles_of("user:7001", foreign)
        assert authz.directory is not None and 7100 in authz.directory  # newly named: fetched in full
        assert 7001 not in authz.directory and authz.directory.lookup("u7001@x.example") == "user:7001"


def test_listed_workspaces_and_bad_settings() -> None:
    held = sorted(WORLD.pack_of)[:2]
    sel = Selection.parse(workspaces=",".join(w[3:] for w in held))
    assert all(sel.holds(w) for w in held) and not sel.holds(sorted(WORLD.pack_of)[2])
    with pytest.raises(ConfigError, match="POLICY_PARTITION"):
        make_app("sqlite://", POLICY_PARTITION="3/3")
