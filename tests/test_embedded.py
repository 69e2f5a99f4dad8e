"""Casbin's own tooling reads our policy: stock ``casbin.Enforcer("model.conf", sqlalchemy_adapter.Adapter(url,
db_class=CasbinRule))`` plus the service's registered functions loads the live ``casbin_rule`` table and
decides exactly like the service's engine, on the demo data, for random requests (members, strangers,
unknown workspaces, platform domains, every action of every pack, random resource facts), on SQLite and
PostgreSQL, before and after a role change (``refresh``). The adapter's own row class cannot read the
table (the measurement the design rests on): p-rules would lose their effect, g4 rows gain empty fields.
"""

from __future__ import annotations

import random

import casbin
import sqlalchemy_adapter
from flask import Flask
from sqlalchemy import create_engine

from app.authz import AccessRequest, ResourceFacts
from app.embedded import MODEL, EmbeddedEnforcer, stock_enforcer
from app.extensions import authz, db
from app.models import CasbinRule, Membership, User, Workspace
from app.services import members
from seed.demo import load_demo
from tests.factories import fast_password_hashing

REQUESTS = 3000


def _random_requests(e: casbin.Enforcer, n: int, seed: int) -> list[AccessRequest]:
    """Requests over everything the stored policy names, plus strangers and unknowns."""
    rng = random.Random(seed)
    g = e.get_named_grouping_policy("g")
    users = sorted({r[0] for r in g if r[0].startswith("user:")} | {"user:999999", "user:0"})
    domains = sorted({r[2] for r in g if r[2].startswith("ws:")}) + ["ws:nowhere"]
    domains += sorted({r[0] for r in e.get_named_grouping_policy("g4") if r[0].startswith("platform:")})
    groups = sorted({r[1] for r in e.get_named_grouping_policy("g2") + e.get_named_grouping_policy("g3")})
    groups += ["group:nowhere", "team:nowhere"]
    p = e.get_policy()
    actions = sorted({r[3] for r in p}) + ["not_an_action"]
    roles = sorted({r[1] for r in p}) + [""]
    pack_of = {r[0]: r[1] for r in e.get_named_grouping_policy("g4")}
    pack_actions: dict[str, list[str]] = {}
    for r in p:
        pack_actions.setdefault(r[2], []).append(r[3])
    memberships = sorted({(r[0], r[2]) for r in g if r[0].startswith("user:") and r[2].startswith("ws:")})

    def maybe(values: list[str]) -> str:
        return rng.choice(values) if rng.random() < 0.5 else ""

    out = []
    for _ in range(n):
        scope = maybe(groups)
        obj = ResourceFacts(
            type=rng.choice(["", "group", "simulation", "course"]),
            id=rng.choice(["", "1", "7"]),
            assignee=maybe(users),
            owner=maybe(users),
            member=maybe(users),
            group=scope if scope.startswith("group:") else "",
            team=scope if scope.startswith("team:") else "",
            role=maybe(roles),  # forged: both sides must ignore it
            new_role=maybe(roles),
        )
        if rng.random() < 0.7:  # mostly members in their own workspace, on an action of its pack
            sub, dom = rng.choice(memberships)
        else:
            sub, dom = rng.choice(users), rng.choice(domains)
        own = pack_actions.get(pack_of.get(dom, ""), [])
        act = rng.choice(own) if own and rng.random() < 0.85 else rng.choice(actions)
        out.append(AccessRequest(sub, dom, obj, act))
    return out


def _disagreements(emb: EmbeddedEnforcer, reqs: list[AccessRequest]) -> list[str]:
    engine = authz.engine
    bad = []
    for req in reqs:
        service = engine.check(req)
        if emb.enforce(req) != service.allowed:
            bad.append(f"{req}: service {service.allowed} ({service.reason})")
    return bad


def test_stock_enforcer_through_the_adapter_decides_like_the_service(app: Flask, database_url: str) -> None:
    fast_password_hashing()
    load_demo()
    with EmbeddedEnforcer(database_url) as emb:
        _compare(emb)


def _compare(emb: EmbeddedEnforcer) -> None:
    assert emb.revision == authz.engine.revision
    e = emb.enforcer
    assert isinstance(e, casbin.Enforcer) and type(e) is casbin.Enforcer  # stock, not our subclass
    assert len(e.get_policy()) == sum(1 for r in authz.engine.p_rules() if r[0] == "p")
    assert all(len(r) == 7 and r[6] in ("allow", "deny") for r in e.get_policy())
    assert all(len(r) == 2 for r in e.get_named_grouping_policy("g4"))

    reqs = _random_requests(e, REQUESTS, seed=12)
    allowed = sum(authz.engine.check(r).allowed for r in reqs)
    assert allowed > REQUESTS // 10, "the random requests must grant something to be a test"
    assert _disagreements(emb, reqs) == []

    # Every demo member on every action of their workspace (no resource): the permission matrix.
    dense = []
    for m in db.session.query(Membership):
        ws = db.session.get(Workspace, m.workspace_id)
        assert ws is not None
        pack = authz.engine.packset.packs[ws.pack]
        dense += [AccessRequest(f"user:{m.user_id}", f"ws:{ws.slug}", ResourceFacts(), a.id) for a in pack.actions]
    assert _disagreements(emb, dense) == []
    assert sum(authz.engine.check(r).allowed for r in dense) > len(dense) // 4

    # A write moves the revision; refresh builds a new stock enforcer that sees it.
    ws = db.session.query(Workspace).filter_by(slug="classroom-demo").one()
    owner = db.session.query(User).filter_by(email="owner@classroom.example").one()
    learner2 = db.session.query(User).filter_by(email="learner2@classroom.example").one()
    req = AccessRequest(f"user:{learner2.id}", "ws:classroom-demo", ResourceFacts(), "create_groups")
    assert not emb.enforce(req)
    members.change_role(db.session(), owner, ws, learner2.id, "admin")
    assert authz.engine.check(req).allowed
    assert not emb.enforce(req)  # a snapshot until refreshed
    assert emb.refresh() and emb.revision == authz.engine.revision and emb.enforce(req)
    assert not emb.refresh()
    assert _disagreements(emb, _random_requests(emb.enforcer, REQUESTS // 3, seed=13)) == []

    # Read-only: nothing the embedded enforcer does is written back.
    rows = db.session.query(CasbinRule).count()
    emb.enforcer.add_policy("1", "role:classroom:learner", "pack:classroom", "delete_organization", "any", "-", "allow")
    assert db.session.query(CasbinRule).count() == rows


def test_the_adapters_own_row_class_cannot_read_the_table(app: Flask, database_url: str) -> None:
    """Why ``db_class=CasbinRule``: the stock row class knows v0..v5 only and keeps empty trailing values."""
    fast_password_hashing()
    load_demo()
    engine = create_engine(database_url)
    try:
        plain = casbin.Enforcer(str(MODEL), sqlalchemy_adapter.Adapter(engine, create_table=False))
        p = plain.get_policy()
        assert p and all(len(r) == 6 for r in p)  # priority..feature: the effect (v6) is lost
        g4 = plain.get_named_grouping_policy("g4")
        assert g4 and all(r[2:] == ["", "", "", ""] for r in g4)
        ours = stock_enforcer(engine)
        assert {tuple(r[:6]) for r in ours.get_policy()} == {tuple(r) for r in p}
        assert {tuple(r) for r in ours.get_named_grouping_policy("g4")} >= {tuple(r[:2]) for r in g4}
    finally:
        engine.dispose()
