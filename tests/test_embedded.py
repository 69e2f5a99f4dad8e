"""Casbin's own tooling reads our policy: stock ``casbin.Enforcer("model.conf", sqlalchemy_adapter.Adapter(url))``
(the adapter's own row class, no ``db_class``) plus the two rank functions (and the ``*`` domain pattern of
``g`` and the platform domains' packs) loads the live ``casbin_rule`` table and decides exactly like the
service's engine, on the demo data, for random requests (members, strangers, unknown workspaces, platform
domains, every action of every pack, random resource facts), on SQLite and PostgreSQL, before and after a
role change (``refresh``).
"""

from __future__ import annotations

import random

import casbin
import sqlalchemy_adapter
from casbin.util import key_match
from flask import Flask
from sqlalchemy import create_engine

from app.authz import AccessRequest, ResourceFacts
from app.authz.enforcer import rank_functions
from app.authz.identifiers import split_role
from app.embedded import MODEL, EmbeddedEnforcer, live_packs, stock_enforcer
from app.extensions import authz, db
from app.membership import members
from app.models import CasbinRule, Membership, User, Workspace
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
    p = e.get_policy()  # priority, sub, act, scope, feature, eft
    actions = sorted({r[2] for r in p}) + ["not_an_action"]
    roles = sorted({r[1] for r in p}) + [""]
    pack_of = {r[0]: r[1] for r in e.get_named_grouping_policy("g4") if not r[0].startswith("pack:")}
    pack_actions: dict[str, list[str]] = {}
    for r in p:
        pack_actions.setdefault(f"pack:{split_role(r[1])[0]}", []).append(r[2])
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


def _ask_plain(e: casbin.Enforcer, req: AccessRequest) -> bool:
    """The request as the service gives it to Casbin: valid identifiers, the member's current role filled in."""
    service = authz.engine
    if service.check(req).reason == "invalid_request":
        return False
    resolved = service.resolve(req).obj
    return bool(e.enforce(req.subject, req.domain, {n: getattr(resolved, n) for n in resolved.__slots__}, req.action))


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
    assert all(len(r) == 6 and r[5] in ("allow", "deny") for r in e.get_policy())  # priority .. eft: v0..v5
    g4 = {tuple(r[:2]) for r in e.get_named_grouping_policy("g4")}
    assert ("pack:classroom", "role:classroom:admin") in g4 and ("ws:classroom-demo", "pack:classroom") in g4
    assert e.rm_map["g4"].has_link("ws:classroom-demo", "role:classroom:admin")  # ws -> pack -> role
    assert not e.rm_map["g4"].has_link("ws:classroom-demo", "role:simulations:owner")

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
    emb.enforcer.add_policy("1", "role:classroom:learner", "delete_organization", "any", "-", "allow")
    assert db.session.query(CasbinRule).count() == rows


def test_the_plainest_stock_enforcer_decides_like_the_service(app: Flask, database_url: str) -> None:
    """The README's lines, literally: ``casbin.Enforcer("model.conf", sqlalchemy_adapter.Adapter(url))`` with the
    adapter's unfiltered ``load_policy`` and its own row class, plus rankAbove/mayGrant, the ``*`` domain
    pattern of ``g`` and the platform domains' packs."""
    fast_password_hashing()
    load_demo()
    adapter = sqlalchemy_adapter.Adapter(database_url)
    try:
        e = casbin.Enforcer(str(MODEL), adapter)
        e.enable_auto_save(False)
        for name, fn in rank_functions(live_packs(database_url)).items():
            e.add_function(name, fn)
        e.add_named_domain_matching_func("g", key_match)
        for pack in authz.engine.packset.packs.values():
            e.add_named_grouping_policy("g4", f"platform:{pack.id}", pack.key)
        assert type(e) is casbin.Enforcer
        assert len(e.get_policy()) == sum(1 for r in authz.engine.p_rules() if r[0] == "p")
        reqs = _random_requests(e, REQUESTS, seed=21)
        bad = [r for r in reqs if _ask_plain(e, r) != authz.engine.check(r).allowed]
        assert bad == [], bad[:5]
        assert sum(authz.engine.check(r).allowed for r in reqs) > REQUESTS // 10
        assert db.session.query(CasbinRule).filter(CasbinRule.v0.like("platform:%")).count() == 0  # nothing written
    finally:
        adapter._engine.dispose()

    # The same table, read through the embedded helper's filtered (id-ordered) load: the same rules.
    engine = create_engine(database_url)
    try:
        ours = stock_enforcer(engine)
        assert sorted(map(tuple, ours.get_policy())) == sorted(map(tuple, e.get_policy()))
    finally:
        engine.dispose()
