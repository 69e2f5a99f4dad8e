"""The change feed (``GET /v1/snapshot``, ``GET /v1/changes``): least privilege against an oracle.

Random worlds (workspaces of several packs, members, group links, switched-off features, platform
roles) × random feed tokens (workspaces, one pack's platform, every workspace; narrowed by
``workspaces=``): an oracle written from the rows themselves — not calling ``app.policy.feed`` —
says which fact rows, users and tokens a binding may see; the snapshot holds exactly those, and the
changes after it carry exactly the visible rows of every later revision (one event per revision).
Plus: a token without ``feed`` is refused (403), ``since`` outside the log is 410, the connection
bound is 503 with Retry-After.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import msgspec
import pytest
from flask import Flask
from sqlalchemy import select

from app.authz.engine import RuleChange
from app.authz.packs import is_pack_rule
from app.extensions import db
from app.models import CasbinRule
from app.policy import snapshot, tokens
from app.policy import store as policy_store
from app.policy.tokens import hash_token
from tests.factories import create_user, create_workspace

ROOT = Path(__file__).resolve().parent.parent
PACKS = ("classroom", "academy", "todo", "simulations")
ROLES = {"classroom": "teacher", "academy": "trainer", "todo": "member", "simulations": "viewer"}
PLATFORM = {"academy": "operator", "simulations": "admin"}
MODEL = snapshot.model_digest((ROOT / "model.conf").read_text(encoding="utf-8"))


def _write(rules: list[tuple[str, str, tuple[str, ...]]], kind: str = "member") -> int:
    session = db.session()
    handle = policy_store.begin_write(session, kind, None, "feed test")
    policy_store.add_changes(session, handle, [RuleChange(op, rule) for _, op, rule in rules])
    session.commit()
    return handle.number


class WorldRows:
    """The world as built: slug → pack, user ids."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        self.rng = rng
        self.packs: dict[str, str] = {}
        for i in range(6):
            pack = PACKS[i % len(PACKS)]
            slug = f"w{seed}-{i}"
            create_workspace(slug, pack)
            self.packs[slug] = pack
        self.users = [create_user(f"u{seed}-{i}@example.com").id for i in range(10)]
        rules: list[tuple[str, str, tuple[str, ...]]] = []
        for slug, pack in self.packs.items():
            for uid in rng.sample(self.users, 3):
                rules.append(("", "add", ("g", f"user:{uid}", f"role:{pack}:{ROLES[pack]}", f"ws:{slug}")))
            uid = rng.choice(self.users)
            rules.append(("", "add", ("g2", f"user:{uid}", f"group:g{uid}", f"ws:{slug}")))
        for pack, role in PLATFORM.items():
            rules.append(("", "add", ("g", f"user:{rng.choice(self.users)}", f"role:{pack}:{role}", "*")))
        _write(rules)

    def more(self) -> None:
        """A few later revisions: role changes, a removal, a user change."""
        rng = self.rng
        for _ in range(4):
            slug = rng.choice(sorted(self.packs))
            pack = self.packs[slug]
            uid = rng.choice(self.users)
            rule = ("g3", f"user:{uid}", f"group:late{rng.randrange(1000)}", f"ws:{slug}")
            _write([("", "add", rule)])
        row = db.session.execute(select(CasbinRule).where(CasbinRule.ptype == "g2")).scalars().first()
        assert row is not None
        _write([("", "remove", ("g2", row.v0, row.v1, row.v2))])
        pack = "academy"
        fresh = [
            u
            for u in self.users
            if not policy_store.rule_exists(db.session(), ("g", f"user:{u}", "role:academy:operator", "*"))
        ]
        _write([("", "add", ("g", f"user:{fresh[0]}", f"role:{pack}:{PLATFORM[pack]}", "*"))], "platform")


def _token(name: str, feed: bool = True, **binding: Any) -> tuple[str, tokens.TokenIdentity]:
    session = db.session()
    row, secret = tokens.create_token(session, name, feed=feed, **binding)
    session.commit()
    return secret, tokens.TokenIdentity(row.id, name, None, *tokens.parse_binding(row.binding), feed=feed)


# -- the oracle: from the rows, not from app.policy.feed --------------------------------------------------
def oracle_workspaces(world: WorldRows, binding: dict[str, Any], narrow: set[str] | None) -> set[str]:
    if binding.get("all_workspaces"):
        seen = {s for s, p in world.packs.items() if p != "service"}
    elif binding.get("platform"):
        seen = {s for s, p in world.packs.items() if p == binding["platform"]}
    else:
        seen = set(binding["workspaces"])
    return seen & narrow if narrow is not None else seen


def oracle_visible(rule: tuple[str, ...], world: WorldRows, seen: set[str], binding: dict[str, Any]) -> bool:
    if rule[0] in ("g", "g2", "g3") and rule[3] == "*":
        pack = rule[2].split(":")[1]
        packs = {world.packs[s] for s in seen}
        if binding.get("platform"):
            packs.add(binding["platform"])
        if binding.get("all_workspaces"):
            packs |= {p for p in PACKS if p != "service"}
        return pack in packs
    domain = rule[3] if rule[0] in ("g", "g2", "g3") else rule[1]
    return domain.startswith("ws:") and domain[3:] in seen


def _trim(row: Any) -> tuple[str, ...]:
    """A fact row without the empty padding COPY gives two-field types (PostgreSQL)."""
    row = tuple(row)
    while row and row[-1] == "":
        row = row[:-1]
    return row


def _facts() -> list[tuple[str, ...]]:
    rules = policy_store.load_rules(db.session())
    return [tuple(r) for r in rules if not is_pack_rule(r)]


def _users_named(rows: list[tuple[str, ...]]) -> set[int]:
    return {int(r[1][5:]) for r in rows if r[0] in ("g", "g2", "g3") and r[1].startswith("user:")}


BINDINGS = [
    lambda w: {"workspaces": sorted(w.rng.sample(sorted(w.packs), 2))},
    lambda w: {"workspaces": [sorted(w.packs)[0]]},
    lambda w: {"platform": "academy"},
    lambda w: {"platform": "classroom"},
    lambda w: {"all_workspaces": True},
]


@pytest.mark.parametrize("seed", [1, 2])
def test_snapshot_and_changes_hold_exactly_what_the_oracle_allows(app: Flask, seed: int) -> None:
    app.config.update(FEED_MAX_SECONDS=0.3, FEED_HEARTBEAT_SECONDS=0.1, FEED_MAX_CONNECTIONS=8)
    world = WorldRows(seed)
    client = app.test_client()
    made = []
    for i, make in enumerate(BINDINGS):
        binding = make(world)
        secret, ident = _token(f"feed{seed}-{i}", **binding)
        made.append((binding, secret, ident))
    # a decision-only token, bound to one workspace: inside some views, never with feed rights
    _token(f"plain{seed}", feed=False, workspaces=[sorted(world.packs)[0]])
    live = tokens.load_live(db.session())
    for binding, secret, _ in made:
        for narrow in (None, set(world.rng.sample(sorted(world.packs), 3))):
            seen = oracle_workspaces(world, binding, narrow)
            query = {"workspaces": ",".join(sorted(narrow))} if narrow is not None else {}
            resp = client.get("/v1/snapshot", query_string=query, headers={"Authorization": f"Bearer {secret}"})
            assert resp.status_code == 200, resp.get_data(as_text=True)
            snap = snapshot.decode(resp.get_data(), MODEL, "feed")
            assert int(resp.headers["X-Policy-Revision"]) == snap.meta.revision
            facts = _facts()
            expected = sorted(r for r in facts if oracle_visible(r, world, seen, binding))
            got = sorted(_trim(r) for r in snap.state.facts)
            assert got == expected, (binding, narrow)
            assert {u[0] for u in snap.state.users} == _users_named(expected)
            assert set(snap.state.catalogs) == {s for s in seen if s in world.packs}
            pack_rules = sorted(tuple(r) for r in policy_store.load_rules(db.session()) if is_pack_rule(r))
            assert sorted(tuple(r) for r in snap.state.pack_rules) == pack_rules
            # tokens: exactly those whose binding lies inside the follower token's and meets the view
            want_tokens = set()
            authority = oracle_workspaces(world, binding, None)
            for h, t in live.items():
                if t.wide:
                    ok = bool(binding.get("all_workspaces"))
                elif t.platform:
                    ok = bool(binding.get("all_workspaces") or binding.get("platform") == t.platform)
                else:
                    named = {d[3:] for d in t.domains}
                    ok = named <= authority and bool(named & seen)
                if ok:
                    want_tokens.add(h)
            assert {t.hash for t in snap.state.tokens} == want_tokens
            assert hash_token(secret) in want_tokens or not seen

    start = policy_store.current_revision(db.session())
    before = set(_facts())
    world.more()
    head = policy_store.current_revision(db.session())
    log = policy_store.revision_log_after(db.session(), start)
    for binding, secret, _ in made:
        seen = oracle_workspaces(world, binding, None)
        resp = client.get(f"/v1/changes?since={start}", headers={"Authorization": f"Bearer {secret}"})
        assert resp.status_code == 200 and resp.mimetype == "text/event-stream"
        events = _events(resp.get_data(as_text=True))
        assert [e["revision"] for e in events] == list(range(start + 1, head + 1))  # one per revision
        got = [(op, tuple(rule)) for e in events for op, rule in e.get("changes", [])]
        want = [(ch.op, ch.rule) for _, _, chs in log for ch in chs if oracle_visible(ch.rule, world, seen, binding)]
        assert got == want, binding
        named = _users_named([r for op, r in want if op == "add"])
        assert {u[0] for e in events for u in e.get("users", [])} == named
        assert before  # (the world had rows before)


def _events(text: str) -> list[dict[str, Any]]:
    out = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if "id" in lines and "event" not in lines:
            out.append(msgspec.json.decode(lines["data"]))
            assert out[-1]["revision"] == int(lines["id"])
    return out


def test_feed_refusals(app: Flask) -> None:
    app.config.update(FEED_MAX_SECONDS=0.2, FEED_MAX_CONNECTIONS=1, FEED_RETAINED_REVISIONS=1)
    ws = create_workspace("feedref", "classroom")
    plain, _ = _token("plain", feed=False, workspaces=[ws.slug])
    feeder, _ = _token("feeder", workspaces=[ws.slug])
    client = app.test_client()
    auth = {"Authorization": f"Bearer {feeder}"}
    for path in ("/v1/snapshot", "/v1/changes?since=0"):
        resp = client.get(path, headers={"Authorization": f"Bearer {plain}"})
        assert resp.status_code == 403 and resp.mimetype == "application/problem+json"
        assert resp.get_json()["type"].endswith("feed-not-allowed")
        assert client.get(path).status_code == 401
    head = policy_store.current_revision(db.session())
    assert client.get(f"/v1/changes?since={head + 1}", headers=auth).status_code == 410
    assert head >= 2
    gone = client.get(f"/v1/changes?since={head - 2}", headers=auth)
    assert gone.status_code == 410 and gone.get_json()["head"] == head
    assert client.get("/v1/changes", headers=auth).status_code == 422
    assert client.get("/v1/snapshot?partition=9/2", headers=auth).status_code == 422
    # resumable with Last-Event-ID
    resp = client.get("/v1/changes", headers={**auth, "Last-Event-ID": str(head - 1)})
    assert resp.status_code == 200 and [e["revision"] for e in _events(resp.get_data(as_text=True))] == [head]
    held = client.get(f"/v1/changes?since={head}", headers=auth)
    assert held.status_code == 200
    try:
        busy = client.get(f"/v1/changes?since={head}", headers=auth)
        assert busy.status_code == 503 and busy.headers["Retry-After"]
    finally:
        held.close()
    assert client.get(f"/v1/changes?since={head}", headers=auth).status_code == 200  # the slot came back


def test_revocations_reach_only_followers_that_hold_the_token(app: Flask) -> None:
    app.config.update(FEED_MAX_SECONDS=0.2, FEED_MAX_CONNECTIONS=4)
    inside, outside = create_workspace("feedin", "classroom"), create_workspace("feedout", "classroom")
    follower, _ = _token("follower", workspaces=[inside.slug])
    held, _ = _token("held", feed=False, workspaces=[inside.slug])
    other, _ = _token("other", feed=False, workspaces=[outside.slug])
    start = policy_store.current_revision(db.session())
    for name in ("held", "other"):
        tokens.revoke_token(db.session(), name)
        db.session.commit()
    resp = app.test_client().get(f"/v1/changes?since={start}", headers={"Authorization": f"Bearer {follower}"})
    events = _events(resp.get_data(as_text=True))
    assert [e["revision"] for e in events] == [start + 1, start + 2]
    assert events[0].get("revoked") == [hash_token(held)]  # a token bound inside the follower's binding
    assert "revoked" not in events[1]  # another tenant's token: not even its hash
    assert other


def test_creates_reach_only_followers_that_hold_the_token(app: Flask) -> None:
    """A token created after a follower's snapshot comes to it in the feed, as the snapshot would
    hold it (a token bound inside the follower's binding: hash and identity), and to no other."""
    app.config.update(FEED_MAX_SECONDS=0.2, FEED_MAX_CONNECTIONS=4)
    inside, outside = create_workspace("feedin", "classroom"), create_workspace("feedout", "classroom")
    follower, _ = _token("follower", workspaces=[inside.slug])
    start = policy_store.current_revision(db.session())
    made, ident = _token("made", feed=False, workspaces=[inside.slug])
    other, _ = _token("other", feed=False, workspaces=[outside.slug])
    resp = app.test_client().get(f"/v1/changes?since={start}", headers={"Authorization": f"Bearer {follower}"})
    events = _events(resp.get_data(as_text=True))
    assert [e["revision"] for e in events] == [start + 1, start + 2]
    rows = msgspec.convert(events[0].get("created"), list[snapshot.TokenRow])
    # (a token bound to one workspace decides AuthZEN requests naming none there: its default)
    assert snapshot.identities(rows) == {hash_token(made): dataclasses.replace(ident, workspace=inside.slug)}
    assert "created" not in events[1]  # another tenant's token: not even its hash
    assert other
