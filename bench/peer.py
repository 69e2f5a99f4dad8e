"""The HTTP comparison on a realistic mix: ours vs answer-equivalent peers, behind the same server.

The peers decide **the same model on the same data** and do **the same per-request work** as our
fast path (``app.api.decision_wsgi``): the bearer token's SHA-256 looked up in a dict of known
token hashes (401 otherwise), the subject (and every person in the resource's attributes) resolved
by id, ``user:<id>`` or email through a directory of the data set's users, JSON in and out (orjson),
and the same headers (``app.security.HEADERS``, ``Vary: Cookie``, ``X-Request-ID`` from
``app.observability.request_id_of``). What they decide is generated from the loaded packs
(:func:`model_data`: p-rules → data), not written per pack:

* ``dict``: a precomputed closure, (role, action) → the p-rules any role reaching it through the
  pack's inheritance (``g`` lines) may use, with their priority, scope, feature and effect; the
  first matching rule in priority order decides (priority effect, as ``model.conf``); scopes
  (assignee, owner, member_of, group, into_group, team, rank with the packs' rank tables and
  grant exceptions) evaluated from the g2/g3 facts, switched-off features (g5), platform roles
  (``g`` in ``*``), the target member's current role, and the group or team a request leaves out
  derived from the stored facts as ``PolicyEngine.decide`` does.
* ``regorus`` (microsoft/regorus, Rego in Rust, the ``hobofan-regorus`` 0.2.5 binding) and
  ``regorus-0.13`` (``gordon-to-regorus``): :data:`REGO`, one policy for every pack, over the
  same data; an engine per serving thread (regorus engines are unsendable).
* ``noop``: the token check, the body parsed, the headers and a fixed answer per check — the server's
  ceiling for that work.

Attribute conditions (``when:<id>`` scopes, CEL) are not expressed by the peers: actions with such
a rule are left out of the mix for every app (:func:`mix_items`), and so are workspaces of the
service pack (``META_PACK``: the benchmark's wide token may not ask about them; ours answers 403). The requests
(``mix_items``): 70% members of the workspace, 13% members of another one, 12% by email, 5%
unknown people; half of them name a resource with people (member, assignee, owner), a group or a
team (sometimes of the wrong kind or unknown), a role to grant, or ``target: any``.

Before any ratio, :func:`compare` sends the whole mix (singles and batches) to every app over HTTP
and counts the answers (``allowed``) that differ from ours; a peer that disagrees gets no ratio.
Then, per pinning (unpinned; pinned: servers on core 0, wrk on core 1), every app is started
behind the same server (granian: ``app.serve`` for ours, ``granian --interface wsgi`` for the
peers; 2 workers) and measured in ``BENCH_ROUNDS`` (default 3) rotated rounds (ours and the no-op
back to back in each: :func:`_order`; each app's share of a round in slices of ``SLICE_S``, the apps
taking turns: :func:`merge_slices`), single checks
(8 connections) and batches of 100 (4 connections), keep-alive; each ratio is reported with its
spread (min / median / max over the rounds).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable
from typing import Any

from app.authz.packs import P_SCOPE, PackSet, Rule, load_packs
from app.observability import request_id_of
from app.policy.tokens import META_PACK
from app.security import HEADERS
from bench.datagen import MEMBERS, SEED, user_count
from bench.server import settle
from bench.world import GROUPS_PER_WS, iter_world

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NEWCOMER = "newcomer"
NOBODY = "user:unknown"  # a person the directory does not know (app.decisions.resolution.NOBODY)
CONDITION = "when:"
EMAIL = "u{}@bench.example"

# One policy for every pack: the data (model_data + facts_data) says who may do what.
REGO = """package authz
import rego.v1

default allow := false

pack := data.pack_of[input.ws]

prefix := concat("", ["role:", pack, ":"])

roles contains r if {
  some r in data.members[input.ws][input.sub]
  startswith(r, prefix)
}

roles contains r if {
  some r in data.platform[input.sub]
  startswith(r, prefix)
}

default who := ""

who := input.obj.member if input.obj.member != ""

who := input.obj.grantee if {
  input.obj.member == ""
  input.obj.grantee != "newcomer"
}

default current := ""

current := data.members[input.ws][who][0] if who != ""

member_ok if input.obj.member == ""

member_ok if current != ""

decision(grp, tm) if {
  member_ok
  input.obj.grantee != input.sub
  data.actions[pack][input.act]
  allows := {c.k | some r in roles; some c in data.rules[r][input.act]; c.e == "allow"; applies(c, grp, tm)}
  denies := {c.k | some r in roles; some c in data.rules[r][input.act]; c.e == "deny"; applies(c, grp, tm)}
  some k in allows
  count({d | some d in denies; d < k}) == 0
}

applies(c, grp, tm) if {
  feature_on(c.f)
  scope(c, grp, tm)
}

feature_on(f) if f == "-"

feature_on(f) if {
  f != "-"
  not data.off[input.ws][f]
}

scope(c, grp, tm) if c.s == "any"

scope(c, grp, tm) if {
  c.s == "assignee"
  input.obj.assignee == input.sub
}

scope(c, grp, tm) if {
  c.s == "owner"
  input.obj.owner == input.sub
}

scope(c, grp, tm) if {
  c.s == "member_of"
  g2(input.sub, grp)
}

scope(c, grp, tm) if {
  c.s == "member_of"
  g3(input.sub, grp)
}

scope(c, grp, tm) if {
  c.s == "group"
  g2(input.sub, grp)
  input.obj.member == ""
}

scope(c, grp, tm) if {
  c.s == "group"
  g2(input.sub, grp)
  g3(input.obj.member, grp)
  outranks(c.r, current)
}

scope(c, grp, tm) if {
  c.s == "into_group"
  g2(input.sub, grp)
  outranks(c.r, current)
}

scope(c, grp, tm) if {
  c.s == "team"
  g2(input.sub, tm)
  input.obj.member == ""
}

scope(c, grp, tm) if {
  c.s == "team"
  g2(input.sub, tm)
  g3(input.obj.member, tm)
}

scope(c, grp, tm) if {
  c.s == "rank"
  input.obj.member != input.sub
  has_target
  outranks(c.r, current)
  may_grant(c.r, input.obj.new_role)
}

has_target if input.obj.member != ""

has_target if input.obj.grantee != ""

has_target if input.obj.target == "any"

g2(u, s) if data.g2[input.ws][u][s]

g3(u, s) if data.g3[input.ws][u][s]

same_pack(a, t) if split(a, ":")[1] == split(t, ":")[1]

outranks(a, t) if t == ""

outranks(a, t) if {
  same_pack(a, t)
  data.rank[a] > data.rank[t]
}

outranks(a, t) if {
  data.rank[t]
  data.manage_extra[a][t]
}

may_grant(a, t) if t == ""

may_grant(a, t) if {
  same_pack(a, t)
  data.rank[a] > data.rank[t]
}

may_grant(a, t) if {
  data.rank[t]
  data.grant_extra[a][t]
}

derive if {
  startswith(input.obj.member, "user:")
  not both_scopes
}

both_scopes if {
  input.obj.group != ""
  input.obj.team != ""
}

shared contains s if {
  some s
  data.g2[input.ws][input.sub][s]
  data.g3[input.ws][input.obj.member][s]
}

allow if decision(input.obj.group, input.obj.team)

allow if {
  derive
  input.obj.group == ""
  some s in shared
  startswith(s, "group:")
  decision(s, input.obj.team)
}

allow if {
  derive
  input.obj.team == ""
  some s in shared
  startswith(s, "team:")
  decision(input.obj.group, s)
}
"""


# -- the model as data, generated from the packs -----------------------------------------------------
def model_data(packset: PackSet) -> dict[str, Any]:
    """The packs' rules as data: per role, per action, the p-rules the role may use (its own and
    every inherited role's), each ``{k, s, f, e, r}`` (order key = priority then file order, scope,
    feature, effect, the rule's role); the rank tables and grant exceptions; each pack's actions."""
    order: dict[Rule, int] = {}
    for i, rule in enumerate(packset.all_rules()):
        order.setdefault(rule, i)
    rules: dict[str, dict[str, list[dict[str, Any]]]] = {}
    rank: dict[str, int] = {}
    grant_extra: dict[str, dict[str, bool]] = {}
    manage_extra: dict[str, dict[str, bool]] = {}
    actions: dict[str, dict[str, bool]] = {}
    for pack in packset.packs.values():
        actions[pack.id] = {a.id: True for a in pack.actions}
        for role in pack.roles:
            rank[pack.role_key(role.id)] = role.rank
        for g in pack.grants:
            key = pack.role_key(g.role)
            grant_extra.setdefault(key, {}).update({pack.role_key(r): True for r in g.may_grant})
            manage_extra.setdefault(key, {}).update({pack.role_key(r): True for r in g.may_manage})
        parents: dict[str, set[str]] = {}
        for r in pack.rules:
            if r[0] == "g" and len(r) > 3 and r[3] == "*":
                parents.setdefault(r[1], set()).add(r[2])
        reached_by_pack = {r[2] for r in pack.rules if r[0] == "g4" and r[1] == pack.key}  # g4(dom, p.sub)
        for role in pack.roles:
            key = pack.role_key(role.id)
            reach, todo = {key}, [key]
            while todo:
                for parent in parents.get(todo.pop(), ()):
                    if parent not in reach:
                        reach.add(parent)
                        todo.append(parent)
            mine: dict[str, list[dict[str, Any]]] = {}
            for r in pack.rules:
                if r[0] == "p" and r[2] in reach and r[2] in reached_by_pack:
                    k = int(r[1]) * 1_000_000 + order[r]
                    mine.setdefault(r[3], []).append({"k": k, "s": r[P_SCOPE], "f": r[5], "e": r[6], "r": r[2]})
            for found in mine.values():
                found.sort(key=lambda c: c["k"])
            rules[key] = mine
    return {"rules": rules, "rank": rank, "grant_extra": grant_extra, "manage_extra": manage_extra, "actions": actions}


def facts_data(facts: Iterable[Rule]) -> dict[str, Any]:
    """The facts as data: workspace → pack, memberships (roles sorted, as the engine's), platform
    roles, g2 / g3 links, switched-off features."""
    pack_of: dict[str, str] = {}
    members: dict[str, dict[str, list[str]]] = {}
    platform: dict[str, list[str]] = {}
    links: dict[str, dict[str, dict[str, dict[str, bool]]]] = {"g2": {}, "g3": {}}
    off: dict[str, dict[str, bool]] = {}
    for rule in facts:
        kind = rule[0]
        if kind == "g4":
            pack_of[rule[1]] = rule[2].split(":", 1)[1]
        elif kind == "g" and rule[1].startswith("user:"):
            if rule[3] == "*":
                platform.setdefault(rule[1], []).append(rule[2])
            else:
                members.setdefault(rule[3], {}).setdefault(rule[1], []).append(rule[2])
        elif kind in links:
            links[kind].setdefault(rule[3], {}).setdefault(rule[1], {})[rule[2]] = True
        elif kind == "g5":
            off.setdefault(rule[1], {})[rule[2]] = True
    for held in (*platform.values(), *(r for ws in members.values() for r in ws.values())):
        held.sort()
    return {"pack_of": pack_of, "members": members, "platform": platform, **links, "off": off}


def bench_data(packset: PackSet, workspaces: int, users: int, token: str) -> dict[str, Any]:
    """Everything a peer serves for a benchmark data set (``bench.datagen``): model, facts, users
    1..``users`` (their emails ``u<id>@bench.example``), the service token's hash."""
    return {
        **model_data(packset),
        **facts_data(iter_world(packset, workspaces, MEMBERS, SEED)),
        "users": users,
        "token_hashes": [hashlib.sha256(token.encode()).hexdigest()],
    }


def condition_actions(packset: PackSet) -> dict[str, set[str]]:
    """pack → actions with an attribute-condition rule (``when:``): not expressed by the peers."""
    out: dict[str, set[str]] = {}
    for pack in packset.packs.values():
        out[pack.id] = {r[3] for r in pack.rules if r[0] == "p" and r[P_SCOPE].startswith(CONDITION)}
    return out


# -- the mix ----------------------------------------------------------------------------------------
MIX = (
    "70% members, 13% members of another workspace, 12% by email, 5% unknown people; half with a "
    "resource (member, assignee, owner, group, team, new_role, target any); actions with an "
    "attribute condition left out, and workspaces of the service pack (no wide token may ask about them)"
)


def mix_items(workspaces: int, n: int, seed: int, users: int | None = None) -> list[dict[str, Any]]:
    """``n`` check requests (API JSON) on the benchmark world of W workspaces (users 1..``users``,
    default the data set's default), over the workspaces whose members all exist as users."""
    packset = load_packs(os.path.join(ROOT, "policy"), os.path.join(ROOT, "model.conf"))
    packs = list(packset.packs.values())
    excluded = condition_actions(packset)
    rnd = random.Random(seed)
    known = max(1, min(workspaces, user_count(workspaces, users) // MEMBERS))
    out = []
    while len(out) < n:
        w = rnd.randrange(known)
        pack = packs[w % len(packs)]
        if pack.id == META_PACK:
            continue  # the policy's own pack: a wide service token may not ask (403 from every app's view)
        members = [w * MEMBERS + m + 1 for m in range(MEMBERS)]
        user = rnd.choice(members)
        roll = rnd.random()
        subject: int | str
        if roll < 0.70:
            subject = f"user:{user}"
        elif roll < 0.83:
            subject = f"user:{((w + 1) % known) * MEMBERS + 1 + rnd.randrange(MEMBERS)}"  # another workspace's
        elif roll < 0.95:
            subject = EMAIL.format(user)
        else:
            subject = f"nobody{rnd.randrange(10**6)}@bench.example"
        actions = [a.id for a in pack.actions if a.id not in excluded[pack.id]]
        item: dict[str, Any] = {"subject": subject, "workspace": f"w{w}", "action": rnd.choice(actions)}
        if rnd.random() < 0.5:
            item["resource"] = {
                "type": "item",
                "id": str(rnd.randrange(100)),
                "attributes": _attributes(rnd, pack, members, subject),
            }
        out.append(item)
    return out


def _attributes(rnd: random.Random, pack: Any, members: list[int], subject: int | str) -> dict[str, Any]:
    def someone() -> int | str:
        r = rnd.random()
        if r < 0.3:
            return subject
        if r < 0.85:
            return f"user:{rnd.choice(members)}"
        return EMAIL.format(rnd.choice(members)) if r < 0.95 else "user:999999999"

    attrs: dict[str, Any] = {}
    for name in ("member", "assignee", "owner"):
        if rnd.random() < 0.4:
            attrs[name] = someone()
    scopes = [f"s{i}" for i in range(GROUPS_PER_WS)] + ["nowhere"]
    if rnd.random() < 0.4:
        attrs["group"] = rnd.choice(scopes)
    if rnd.random() < 0.3:
        attrs["team"] = rnd.choice(scopes)
    if rnd.random() < 0.3:
        attrs["new_role"] = rnd.choice(pack.workspace_roles).id
    if rnd.random() < 0.1:
        attrs["target"] = "any"
    return attrs


# -- the peers --------------------------------------------------------------------------------------
class UserDirectory:
    """The data set's users by ``user:<id>``, id and email (as ``app.policy.directory``)."""

    def __init__(self, users: int | list[int]) -> None:
        ids = range(1, users + 1) if isinstance(users, int) else users
        self.keys = {f"user:{i}": f"user:{i}" for i in ids}
        self.ids = {i: f"user:{i}" for i in ids}
        self.emails = {EMAIL.format(i): f"user:{i}" for i in ids}

    def lookup(self, value: object) -> str | None:
        """The user key of a reference, or None."""
        if isinstance(value, str):
            return self.keys.get(value) or (self.emails.get(value.lower()) if "@" in value else None)
        return self.ids.get(value) if isinstance(value, int) and not isinstance(value, bool) else None


def resolve(item: dict[str, Any], person_of: Any, pack_of: dict[str, str]) -> dict[str, Any] | None:
    """A check (API JSON) → the decision input ``{sub, ws, act, obj}``, or None when the subject is
    unknown or an attribute cannot be a fact (denied before any rule, as ``prepare``)."""
    sub = person_of(item["subject"])
    if sub is None:
        return None
    ws = item["workspace"] if item["workspace"].startswith("ws:") else "ws:" + item["workspace"]
    attrs = (item.get("resource") or {}).get("attributes") or {}

    def person(name: str) -> str:
        value = attrs.get(name)
        return "" if value is None else (person_of(value) or NOBODY)

    def scope(kind: str) -> str:
        value = attrs.get(kind) or ""
        return value if not value or value.startswith(kind + ":") else f"{kind}:{value}"

    grantee = ""
    if attrs.get("grantee") is not None:
        grantee = NEWCOMER if attrs["grantee"] == NEWCOMER else (person_of(attrs["grantee"]) or "")
        if not grantee:
            return None
    new_role = attrs.get("new_role") or ""
    if new_role and not new_role.startswith("role:"):
        pack = pack_of.get(ws)
        new_role = f"role:{pack}:{new_role}" if pack else ""
    obj = {
        "assignee": person("assignee"),
        "owner": person("owner"),
        "member": person("member"),
        "group": scope("group"),
        "team": scope("team"),
        "new_role": new_role,
        "grantee": grantee,
        "target": attrs.get("target") or "",
    }
    return {"sub": sub, "ws": ws, "act": item["action"], "obj": obj}


class DictPeer:
    """The model decided by plain dicts over :func:`model_data` and :func:`facts_data`."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.rules = data["rules"]
        self.rank, self.grant_extra, self.manage_extra = data["rank"], data["grant_extra"], data["manage_extra"]
        self.actions, self.pack_of, self.members = data["actions"], data["pack_of"], data["members"]
        self.platform, self.g2, self.g3, self.off = data["platform"], data["g2"], data["g3"], data["off"]

    def allowed(self, q: dict[str, Any]) -> bool:
        """The answer for one resolved input, with the group or team a request leaves out derived."""
        obj = q["obj"]
        if self._decide(q, obj["group"], obj["team"]):
            return True
        member = obj["member"]
        if not member.startswith("user:") or (obj["group"] and obj["team"]):
            return False
        managed = self.g2.get(q["ws"], {}).get(q["sub"], {})
        belongs = self.g3.get(q["ws"], {}).get(member, {})
        for s in managed:
            if s in belongs:
                if s.startswith("group:") and not obj["group"] and self._decide(q, s, obj["team"]):
                    return True
                if s.startswith("team:") and not obj["team"] and self._decide(q, obj["group"], s):
                    return True
        return False

    def _decide(self, q: dict[str, Any], grp: str, tm: str) -> bool:
        sub, ws, act, obj = q["sub"], q["ws"], q["act"], q["obj"]
        pack = self.pack_of.get(ws)
        if pack is None or act not in self.actions[pack]:
            return False
        prefix = f"role:{pack}:"
        ws_members = self.members.get(ws, {})
        roles = [r for r in (*ws_members.get(sub, ()), *self.platform.get(sub, ())) if r.startswith(prefix)]
        if not roles:
            return False
        who = obj["member"] or (obj["grantee"] if obj["grantee"] != NEWCOMER else "")
        held = ws_members.get(who) if who else None
        current = held[0] if held else ""
        if (obj["member"] and not current) or obj["grantee"] == sub:
            return False
        found = [c for r in roles for c in self.rules.get(r, {}).get(act, ())]
        if len(roles) > 1:
            found.sort(key=lambda c: c["k"])
        off = self.off.get(ws, {})
        for c in found:
            if (c["f"] == "-" or c["f"] not in off) and self._scope(c, sub, ws, obj, current, grp, tm):
                return bool(c["e"] == "allow")
        return False

    def _scope(
        self, c: dict[str, Any], sub: str, ws: str, obj: dict[str, str], current: str, grp: str, tm: str
    ) -> bool:
        s = c["s"]
        if s == "any":
            return True
        if s == "assignee":
            return obj["assignee"] == sub
        if s == "owner":
            return obj["owner"] == sub
        g2, g3 = self.g2.get(ws, {}), self.g3.get(ws, {})
        member = obj["member"]
        if s == "member_of":
            return grp in g2.get(sub, {}) or grp in g3.get(sub, {})
        if s == "group":
            return grp in g2.get(sub, {}) and (
                not member or (grp in g3.get(member, {}) and self._above(c["r"], current, self.manage_extra))
            )
        if s == "into_group":
            return grp in g2.get(sub, {}) and self._above(c["r"], current, self.manage_extra)
        if s == "team":
            return tm in g2.get(sub, {}) and (not member or tm in g3.get(member, {}))
        if s == "rank":
            return (
                member != sub
                and bool(member or obj["grantee"] or obj["target"] == "any")
                and self._above(c["r"], current, self.manage_extra)
                and self._above(c["r"], obj["new_role"], self.grant_extra)
            )
        return False  # an attribute condition: not expressed (left out of the mix)

    def _above(self, actor: str, target: str, extra: dict[str, dict[str, bool]]) -> bool:
        if target == "":
            return True
        a, t = self.rank.get(actor), self.rank.get(target)
        if a is None or t is None or actor.split(":")[1] != target.split(":")[1]:
            return False
        return a > t or target in extra.get(actor, {})


# peer name → the module of its regorus build
REGORUS = {"regorus": "hobofan_regorus", "regorus-0.13": "regorus"}
# One app's share of a round is measured in slices of about this many seconds, the apps taking
# turns (every other slice in reverse order); its figure sums them. Which granian worker each of
# wrk's connections lands on, and which core the scheduler gives whom, is drawn anew at every wrk
# start: in one 10 s run the no-op alone read 32,814, 37,053 and 33,546/s in three rounds of one
# run (7 Dec, 1M users, unpinned), so one draw decided a round's ratio.
SLICE_S = 2.0
DECISION_DATA = (
    "rules",
    "rank",
    "grant_extra",
    "manage_extra",
    "actions",
    "pack_of",
    "members",
    "platform",
    "g2",
    "g3",
    "off",
)


class RegoPeer:
    """The model decided by regorus over the same data; an engine per thread (engines are unsendable)."""

    def __init__(self, kind: str, data: dict[str, Any]) -> None:
        import importlib

        self.module = importlib.import_module(REGORUS[kind])
        self.data = {k: data[k] for k in DECISION_DATA}
        self.local = threading.local()

    def allowed(self, q: dict[str, Any]) -> bool:
        """The policy's ``allow`` for one resolved input."""
        engine = getattr(self.local, "engine", None)
        if engine is None:
            engine = self.module.Engine()
            engine.add_policy("authz.rego", REGO)
            engine.add_data(self.data)
            self.local.engine = engine
        engine.set_input(q)
        return bool(engine.eval_rule("data.authz.allow"))


def make_peer(kind: str, data: dict[str, Any]) -> DictPeer | RegoPeer:
    """The deciding peer named ``kind`` (``dict`` or a :data:`REGORUS` name)."""
    return DictPeer(data) if kind == "dict" else RegoPeer(kind, data)


def peer_answers(
    peer: DictPeer | RegoPeer, directory: UserDirectory, pack_of: dict[str, str], items: list[dict[str, Any]]
) -> list[bool]:
    """The peer's ``allowed`` for each check (API JSON), in-process."""
    out = []
    for it in items:
        q = resolve(it, directory.lookup, pack_of)
        out.append(q is not None and peer.allowed(q))
    return out


_UNAUTHORIZED = b'{"type":"about:blank","title":"Unauthorized","status":401}'
_BAD = b'{"type":"about:blank","title":"Bad Request","status":400}'


def peer_app() -> Any:
    """WSGI app of the peer named by BENCH_PEER (``noop``, ``dict`` or a ``REGORUS`` name) over BENCH_PEER_DATA."""
    import orjson

    with open(os.environ["BENCH_PEER_DATA"], encoding="utf-8") as fh:
        data = json.load(fh)
    kind = os.environ.get("BENCH_PEER", "dict")
    hashes = set(data["token_hashes"])
    fixed = [("Content-Type", "application/json"), *HEADERS.items(), ("Vary", "Cookie")]
    if kind == "noop":
        one_answer = {"allowed": False, "reason": "not_permitted", "revision": 1}
        single = orjson.dumps(one_answer)
        del data
    else:
        directory = UserDirectory(data["users"])
        peer = make_peer(kind, data)
        pack_of = data["pack_of"]
        del data

    def one(item: dict[str, Any]) -> dict[str, Any]:
        q = resolve(item, directory.lookup, pack_of)
        if q is None:
            return {"allowed": False, "reason": "unknown_subject", "revision": 1}
        allowed = peer.allowed(q)
        return {"allowed": allowed, "reason": "allowed" if allowed else "denied", "revision": 1}

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raw = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        scheme, _, secret = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
        is_batch = environ.get("PATH_INFO", "").endswith("/batch")
        if scheme.lower() != "bearer" or hashlib.sha256(secret.strip().encode()).hexdigest() not in hashes:
            payload, status = _UNAUTHORIZED, "401 Unauthorized"
        elif kind == "noop":
            # The body parsed and one fixed answer per check: the per-request and per-item work but
            # the decision (without the parse a batch cost a no-op what a single did: 0.02× ours).
            try:
                body = orjson.loads(raw)
                if is_batch:
                    payload = orjson.dumps({"results": [one_answer] * len(body["checks"]), "revision": 1})
                else:
                    payload = single
                status = "200 OK"
            except Exception:  # noqa: BLE001 - a bad body is a 400, never a crash
                payload, status = _BAD, "400 Bad Request"
        else:
            try:
                body = orjson.loads(raw)
                if is_batch:
                    out: Any = {"results": [one(c) for c in body["checks"]], "revision": 1}
                else:
                    out = one(body)
                payload, status = orjson.dumps(out), "200 OK"
            except Exception:  # noqa: BLE001 - a bad body is a 400, never a crash
                payload, status = _BAD, "400 Bad Request"
        start_response(
            status, [*fixed, ("Content-Length", str(len(payload))), ("X-Request-ID", request_id_of(environ))]
        )
        return [payload]

    return app


def peers_available() -> list[str]:
    """The regorus peers whose module imports here."""
    found = []
    for name, module in REGORUS.items():
        if subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0:
            found.append(name)
    return found


# -- the comparison ---------------------------------------------------------------------------------
def http_answers(port: int, token: str, singles: list[bytes], batches: list[bytes]) -> list[bool]:
    """``allowed`` of every single check, then of every batch's checks, over one keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    out: list[bool] = []
    try:
        for body in singles:
            conn.request("POST", "/v1/check", body=body, headers=headers)
            r = conn.getresponse()
            doc = json.loads(r.read())
            if r.status != 200:
                raise RuntimeError(f"port {port}: check answered {r.status}: {doc}")
            out.append(bool(doc["allowed"]))
        for body in batches:
            conn.request("POST", "/v1/check/batch", body=body, headers=headers)
            r = conn.getresponse()
            doc = json.loads(r.read())
            if r.status != 200:
                raise RuntimeError(f"port {port}: batch answered {r.status}: {doc}")
            out.extend(bool(x.get("allowed")) for x in doc["results"])
    finally:
        conn.close()
    return out


def spread(values: list[float]) -> dict[str, float]:
    """min / median / max."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def compare(
    url: str, token: str, workspaces: int, seconds: float, log_dir: str, users: int | None = None
) -> dict[str, Any]:
    """The agreement check, then rotated rounds of every app behind each server, unpinned and pinned."""
    from bench import http as hb

    wrk = hb.wrk_path()
    if wrk is None:
        return {"error": "wrk not installed (apt-get install -y wrk)"}
    packset = load_packs(os.path.join(ROOT, "policy"), os.path.join(ROOT, "model.conf"))
    n_users = user_count(workspaces, users)
    singles_items = mix_items(workspaces, 5000, 11, users)
    batch_items = [
        mix_items(workspaces, 100, 100 + s, users) for s in range(int(os.environ.get("BENCH_MIX_BATCHES", "20")))
    ]
    singles = [json.dumps(it).encode() for it in singles_items]
    batches = [json.dumps({"checks": b}).encode() for b in batch_items]
    data_path = os.path.join(tempfile.gettempdir(), f"bench_peer_data_w{workspaces}_u{n_users}_{os.getpid()}.json")
    with open(data_path, "w", encoding="utf-8") as fh:
        json.dump(bench_data(packset, workspaces, n_users, token), fh)
    wanted = os.environ.get("BENCH_PEERS", "")
    peers = ["dict", *peers_available()]
    if wanted:
        peers = [p for p in peers if p in wanted.split(",")]
    apps = ["ours", "noop", *peers]
    servers = [x for x in os.environ.get("BENCH_SERVERS", "granian").split(",") if x]
    pinnings = ["unpinned"] + (["pinned"] if (os.cpu_count() or 1) >= 2 else [])
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    slices = max(1, round(seconds / SLICE_S))
    out: dict[str, Any] = {
        "workspaces": workspaces,
        "users": n_users,
        "peers": peers,
        "mix": MIX,
        "mix_requests": len(singles_items) + sum(map(len, batch_items)),
        "excluded_actions": {p: sorted(a) for p, a in condition_actions(packset).items() if a},
        "servers": servers,
        "workers": hb.workers_default(),
        "rounds": rounds,
        "seconds": seconds,
        "slices": slices,
        "agreement": {},
        "runs": [],
    }
    answers: dict[str, list[bool]] = {}
    try:
        for pin in pinnings:
            server_cpu, wrk_cpu = ("0", "1") if pin == "pinned" else (None, None)
            for server in servers:
                ports: dict[str, int] = {}
                with _servers(hb, url, apps, server, pin, server_cpu, data_path, log_dir, ports):
                    for name in apps:
                        if name not in answers and name != "noop":
                            answers[name] = http_answers(ports[name], token, singles, batches)
                            if name != "ours":
                                diff = sum(a != b for a, b in zip(answers[name], answers["ours"]))
                                out["agreement"][name] = {"requests": len(answers[name]), "disagree": diff}
                                print(f"   {name}: {diff} of {len(answers[name])} answers differ from ours", flush=True)
                    pids = [hb.SERVER_PIDS[p] for p in ports.values()]
                    for port in ports.values():
                        # Warm every worker and every connection's thread (a regorus peer builds an
                        # engine per thread on its first request): the clients of the measured runs.
                        for path, bodies, clients in (("/v1/check", singles, 8), ("/v1/check/batch", batches, 4)):
                            hb.load_wrk(wrk, port, token, path, bodies, clients, 2.0, cpu=wrk_cpu)
                    for rnd in range(rounds):
                        for path, bodies, clients in (("/v1/check", singles, 8), ("/v1/check/batch", batches, 4)):
                            order = _order(apps, rnd)
                            taken: dict[str, list[dict[str, Any]]] = {name: [] for name in order}
                            for name in _turns(order, slices):
                                waited = settle(pids, window=0.25)  # every server idle: none takes the next one's core
                                r = hb.load_wrk(
                                    wrk, ports[name], token, path, bodies, clients, seconds / slices, cpu=wrk_cpu
                                )
                                r["settled_s"] = waited
                                taken[name].append(r)
                            for name in order:
                                r = merge_slices(taken[name])
                                r.update(app=name, server=server, pinning=pin, keepalive=True, path=path, round=rnd)
                                out["runs"].append(r)
                                _show(r)
    finally:
        os.unlink(data_path)
    out["ratios"] = ratios(out["runs"], out["agreement"])
    return out


def _order(apps: list[str], rnd: int) -> list[str]:
    """Round ``rnd``'s order: the peers rotated, ours and the no-op always back to back (ours first in
    even rounds, the no-op first in odd ones), so the ratio to the ceiling compares two runs a few
    seconds apart, not minutes (the no-op alone moved 27,400–36,100/s between rounds of one run)."""
    pair = ["ours", "noop"] if rnd % 2 == 0 else ["noop", "ours"]
    units: list[list[str]] = [pair, *([name] for name in apps if name not in pair)]
    shift = rnd % len(units)
    return [name for unit in units[shift:] + units[:shift] for name in unit if name in apps]


def _turns(order: list[str], slices: int) -> list[str]:
    """The apps' turns in a round of ``slices`` slices: ``order``, then reversed, and so on (an app
    measured first in one slice is measured last in the next, so a drift over the round favours none)."""
    return [name for k in range(slices) for name in (order if k % 2 == 0 else order[::-1])]


class _servers:
    """Every app behind ``server`` at once (idle ones cost nothing), their ports in ``ports``."""

    def __init__(
        self,
        hb: Any,
        url: str,
        apps: list[str],
        server: str,
        pin: str,
        cpu: str | None,
        data: str,
        log_dir: str,
        ports: dict[str, int],
    ) -> None:
        self.hb, self.url, self.apps, self.server, self.pin, self.cpu = hb, url, apps, server, pin, cpu
        self.data, self.log_dir, self.ports = data, log_dir, ports
        self.stack: list[Any] = []

    def __enter__(self) -> _servers:
        try:
            for name in self.apps:
                env = {"BENCH_PEER": name, "BENCH_PEER_DATA": self.data}
                if name == "ours" and self.server == "granian" and os.environ.get("BENCH_OURS_LISTENER") != "main":
                    # ours as its decision listener, where decisions are routed (BENCH_OURS_LISTENER=main:
                    # the main listener, 4 threads, writes and pages beside the decisions)
                    env.update(self.hb.decision_listener_env())
                app = "app:create_app()" if name == "ours" else "bench.peer:peer_app()"
                log = os.path.join(self.log_dir, f"server-{self.server}-{name}-{self.pin}.log")
                cm = self.hb.app_server(
                    self.url, app, self.hb.workers_default(), log, cpu=self.cpu, extra_env=env, server=self.server
                )
                self.ports[name] = cm.__enter__()
                self.stack.append(cm)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        while self.stack:
            self.stack.pop().__exit__(None, None, None)


def merge_slices(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One app's slices of a round as one run: requests and seconds summed (so requests/s weighs
    every slice by its length), p50 the slices' median, p99 their worst; each slice's requests/s kept."""
    took = sum(r["seconds"] for r in runs)
    requests = sum(r["requests"] for r in runs)
    return {
        "generator": runs[0]["generator"],
        "clients": runs[0]["clients"],
        "seconds": took,
        "requests": requests,
        "errors": sum(r["errors"] for r in runs),
        "requests_per_s": requests / took,
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": max(r["p99_ms"] for r in runs),
        "slices": len(runs),
        "slice_rps": [round(r["requests_per_s"]) for r in runs],
        "settled_s": round(sum(r["settled_s"] for r in runs), 2),
    }


def _show(r: dict[str, Any]) -> None:
    print(
        f"   {r['pinning']:8} {r['server']:16} round {r['round']} {r['app']:12} {r['path']:16} "
        f"{r['requests_per_s']:8.0f}/s p50 {r['p50_ms']:.2f} p99 {r['p99_ms']:.2f} ms",
        flush=True,
    )


def ratios(runs: list[dict[str, Any]], agreement: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Per (pinning, server, path): ours/noop and ours/peer per round, with their spread; none for
    a peer that disagrees with ours on the mix."""
    by: dict[tuple[str, str, str, int], dict[str, float]] = {}
    for r in runs:
        by.setdefault((r["pinning"], r["server"], r["path"], r["round"]), {})[r["app"]] = r["requests_per_s"]
    per: dict[str, list[float]] = {}
    for (pin, server, path, _rnd), rps in sorted(by.items()):
        ours = rps.get("ours")
        for name, value in rps.items():
            if name == "ours" or not ours or not value:
                continue
            if name != "noop" and agreement.get(name, {}).get("disagree", 1) != 0:
                continue
            per.setdefault(f"{pin} {server} {path} ours/{name}", []).append(ours / value)
    return {k: {**spread(v), "rounds": v} for k, v in per.items()}
