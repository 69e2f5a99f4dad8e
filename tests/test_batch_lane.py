"""The batch lanes (``DecisionFastPath._split``, ``_lane``) answer only what the parse would, the same way.

The lane answers a batch whose every check it has answered before at this state without the
parse's per-item proofs: it proves the body I-JSON (no repeated key) by counting its colons against
what the decoded checks certainly hold (``decision.certain_colons``). The class of bug: a body the
parse refuses (a repeated key at any depth, hidden by an escape, a colon inside a string, a default
spelled out beside it) answered by the lane with the last value of a repeated key. The oracle is
independent of both paths: Python's own JSON parser with a hook that sees every key of every
object. Random bodies are built from random checks and random mutations (repeated keys at every
level, spelled-out defaults, escapes, spacing, strings that begin with a colon, ``min_revision``);
after the checks are in the table, the lane must decline every body the oracle finds a repeated
key in, and a body it answers must get, through the real app, the answer the Flask view gives.
The split lane (a body of a known shape cut at its separators, each piece looked up) gets the
same oracle, and byte edits aimed at its separators (a second ``checks`` member ending like the
first, doubled braces, a separator moved) on top of the random bodies.
"""

from __future__ import annotations

import copy
import json
import random
from typing import Any

import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.api import decision_wsgi
from app.api.decision_wsgi import ITEMS, DecisionFastPath
from app.authz import decisionlog
from app.decisions.resolution import CHECKS
from app.extensions import db
from app.policy import tokens
from tests.test_decision_api import World
from tests.test_decision_api import world as world  # noqa: F401 - the fixture

JSON = "application/json"
BODIES = 400


class Repeated(Exception):  # noqa: N818 - the oracle's finding
    """A JSON object with a repeated key."""


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise Repeated(keys)
    return dict(pairs)


def repeats(raw: bytes) -> bool:
    """The oracle: True if raw is not JSON or any object of it repeats a key (Python's parser, every
    pair seen): a body the parse must refuse, 400."""
    try:
        json.loads(raw, object_pairs_hook=_no_repeats)
    except (Repeated, ValueError):
        return True
    return False


def _check(rnd: random.Random, world: World) -> list[tuple[str, Any]]:
    """One check as (key, value) pairs; values with colons, ids as numbers and strings, attributes or not."""
    person = rnd.choice(list(world.users))
    uid = world.uid(person)
    subject = rnd.choice([uid, world.email(person), f"user:{uid}", ":nobody@x.example"])
    pack = person.split(".")[0] if "." in person else "simulations"
    workspace = rnd.choice([f"{pack}-demo", f"ws:{pack}-demo"])
    action = rnd.choice(["view_dashboard", "review_scores", "change_role", "invite_members", "manage_groups"])
    pairs: list[tuple[str, Any]] = [("subject", subject), ("workspace", workspace), ("action", action)]
    if rnd.random() < 0.6:
        resource: list[tuple[str, Any]] = []
        if rnd.random() < 0.8:
            resource.append(("type", rnd.choice(["member", "item:x", ":lead"])))
        if rnd.random() < 0.8:
            resource.append(("id", rnd.choice([7, "7", "a:b", ":"])))
        shape = rnd.random()
        if shape < 0.3:
            resource.append(("attributes", []))  # {}
        elif shape < 0.7:
            other = world.uid(rnd.choice(list(world.users)))
            attributes = [("member", rnd.choice([other, f"user:{other}"]))]
            if rnd.random() < 0.5:
                attributes.append(("group", rnd.choice(["morning", "group:evening", ":x"])))
            resource.append(("attributes", attributes))
        pairs.append(("resource", resource))
    return pairs


def _objects(pairs: list[tuple[str, Any]]) -> list[list[tuple[str, Any]]]:
    """The objects of a check: itself, its resource, its attributes (each a pairs list to mutate in place)."""
    out = [pairs]
    for key, value in pairs:
        if key == "resource":
            out.append(value)
            out.extend(v for k, v in value if k == "attributes")
    return out


def _mutate(rnd: random.Random, checks: list[list[tuple[str, Any]]], top: list[tuple[str, Any]]) -> str:
    """Change the body one way (in place); what it did."""
    kind = rnd.choice(["none", "none", "repeat", "repeat", "repeat", "default", "min_revision", "top", "again"])
    target = rnd.choice(checks)
    objects = [o for o in _objects(target) if o]
    if kind == "repeat":
        obj = rnd.choice(objects)
        key, value = rnd.choice(obj)
        other = rnd.choice(_objects(rnd.choice(checks)))
        replacement = next((v for k, v in other if k == key), value)
        obj.insert(rnd.randrange(len(obj) + 1), (key, replacement))  # the same value or another one
    elif kind == "default":
        spelled = rnd.choice([("type", ""), ("id", ""), ("resource", None), ("properties", None), ("member", None)])
        obj = objects[0] if spelled[0] in ("resource", "properties") else rnd.choice(objects)
        if not any(k == spelled[0] for k, _ in obj):
            obj.append(spelled)
    elif kind == "min_revision":
        top.append(("min_revision", rnd.choice([0, 1, None])))
    elif kind == "top":
        top.append(("checks", []) if rnd.random() < 0.5 else ("min_revision", 1))
        top.append(("min_revision", 1))
    elif kind == "again":  # a second "checks" ending as the first does: the body keeps the split lane's tail
        top.append(("checks", [copy.deepcopy(rnd.choice(checks))]))
    return kind


# Byte edits at the split lane's separators (applied to the written body): each leaves a body that
# starts and ends as a batch of a known shape
EDITS: list[tuple[bytes, bytes]] = [
    (b"},{", b"}},{{"),
    (b"},{", b'}],"checks":[{'),
    (b"},{", b'},"checks":[{'),
    (b"},{", b"}, {"),
    (b"}, {", b"},{"),
    (b'{"checks":[{', b'{"checks":[{{'),
    (b"}]}", b"}}]}"),
    (b'{"checks":[{', b'{"checks":[{"checks":[{'),
]


Style = tuple[str, bool]  # (how a colon is written, whether the key "action" is written with an escape)
STYLES: list[Style] = [(":", False), (": ", False), (" : ", True), ("\t:\n", False), (":", True)]


def _text(value: Any, style: Style) -> str:
    """JSON text of a value whose objects are pairs lists, written in ``style`` (the same text every time)."""
    colon, escaped = style
    if _is_object(value):
        return "{" + ", ".join(_key(k, escaped) + colon + _text(v, style) for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_text(v, style) for v in value) + "]"
    return json.dumps(value)


def _key(key: str, escaped: bool) -> str:
    return '"\\u0061ction"' if escaped and key == "action" else json.dumps(key)


def _body(rnd: random.Random, checks: list[tuple[list[tuple[str, Any]], Style]], top: list[tuple[str, Any]]) -> bytes:
    """The batch: each check in its own style, the top level's colons written at random."""
    colon = rnd.choice([":", ":", ": ", " :\n"])
    between = ", " if colon == ": " else rnd.choice([",", ",", ", "])  # the split lane's shapes, and others
    items = "[" + between.join(_text(pairs, style) for pairs, style in checks) + "]"
    members = [f'"checks"{colon}{items}'] + [json.dumps(k) + colon + _text(v, (colon, False)) for k, v in top]
    return ("{" + between.join(members) + "}").encode()


def _post(client: FlaskClient, token: str, raw: bytes) -> tuple[int, bytes]:
    r = client.post("/v1/check/batch", data=raw, content_type=JSON, headers={"Authorization": f"Bearer {token}"})
    return r.status_code, r.get_data()


@pytest.mark.parametrize("seed", range(2))
def test_the_lane_answers_only_bodies_the_parse_accepts_and_as_the_view_does(
    app: Flask, client: FlaskClient, world: World, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    rnd = random.Random(seed)
    pool = [(_check(rnd, world), rnd.choice(STYLES)) for _ in range(40)]
    warm = _body(rnd, pool, [])
    _post(client, world.token, warm)  # the token is looked up by the view once
    assert _post(client, world.token, warm)[0] == 200  # ... and the checks' texts are in the lane's table now
    lane: list[str] = []  # per lane asked: its name if it answered, "" if it declined

    def spying(name: str) -> Any:
        run = getattr(DecisionFastPath, name)

        def spy(*args: Any) -> Any:
            out = run(*args)
            lane.append(name if out is not None else "")
            if out is not None:
                assert not repeats(args[0]), args[0]  # the mechanism: never a body with a repeated key
            return out

        return staticmethod(spy)

    for name in ("_split", "_lane"):
        monkeypatch.setattr(DecisionFastPath, name, spying(name))
    kinds: dict[str, list[bool]] = {}
    lanes: dict[str, int] = {"_split": 0, "_lane": 0}
    for _ in range(BODIES):
        chosen = copy.deepcopy(rnd.sample(pool, rnd.randint(1, 6)))
        top: list[tuple[str, Any]] = []
        kind = _mutate(rnd, [pairs for pairs, _ in chosen], top)
        raw = _body(rnd, chosen, top)
        if rnd.random() < 0.2:
            old, new = rnd.choice(EDITS)
            kind, raw = "edit", raw.replace(old, new, 1)
        before = len(lane)
        fast = _post(client, world.token, raw)
        by = [x for x in lane[before:] if x]
        answered = bool(by)
        for x in by:
            lanes[x] += 1
        kinds.setdefault(kind, []).append(answered)
        monkeypatch.setattr(app, "decision_fast_path", None)
        assert _post(client, world.token, raw) == fast, raw  # the view, no fast path at all
        monkeypatch.setattr(app, "decision_fast_path", decision_wsgi.DecisionFastPath(app))
        if repeats(raw):
            assert fast[0] == 400 and not answered, raw
    assert all(kinds["none"]) and len(kinds["none"]) > 40  # texts it has seen, however written: a lane answers
    assert not any(kinds["repeat"]) and len(kinds["repeat"]) > 40
    assert not any(kinds["again"]) and len(kinds["again"]) > 10
    assert lanes["_split"] > 20 and lanes["_lane"] > 20, lanes  # both lanes were exercised


def _is_object(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(p, tuple) for p in value)


def test_a_batch_from_the_lane_is_logged_and_counted_like_any(app: Flask, client: FlaskClient, world: World) -> None:
    checks = [
        {"subject": world.uid("simulations.owner"), "workspace": "simulations-demo", "action": "view_dashboard"},
        {"subject": "nobody@x.example", "workspace": "simulations-demo", "action": "view_dashboard"},
        {"subject": world.uid("simulations.learner"), "workspace": "simulations-demo", "action": "review_scores"},
    ]
    raw = orjson.dumps({"checks": checks})
    _post(client, world.token, raw)
    first = _post(client, world.token, raw)
    eng = app.decision_fast_path._served.engine
    users = app.decision_fast_path._served.directory
    stamp = (eng.generation, users.version)
    assert CHECKS.peek(stamp) and len(ITEMS.at(stamp)) >= 3
    decisionlog.LOG.clear()
    again = _post(client, world.token, raw)
    assert again == first and json.loads(first[1])["results"][0]["allowed"] is True
    logged = decisionlog.LOG.recent()  # the unknown subject is decided before the engine: not logged
    assert [ok for _, ok in logged] == [True, False] and len(logged) == 2


def test_all_bound_agrees_with_first_outside_through_pack_changes() -> None:
    """tokens.all_bound remembers, per token and engine generation, the workspaces found bound: it
    must say what first_outside says for every token kind, workspace spelling and unknown name, and
    forget when the engine moves (a workspace given a pack a token is bound to by platform)."""
    from app.authz import PolicyEngine, RuleChange
    from app.policy import tokens
    from bench.world import build_world
    from tests.test_differential import PACKSET

    rnd = random.Random(3)
    world = build_world(PACKSET, 12, members=2, seed=3, extras=False)
    eng = PolicyEngine(PACKSET, world.facts, revision=1)
    domains = list(world.pack_of)
    names = domains + [d[3:] for d in domains] + ["ws:nowhere", "nowhere", "ws:new-one", "new-one"]
    kinds = ["*", "platform:classroom", "platform:skills", " ".join(rnd.sample(domains, 3)), "garbage"]
    ids = [tokens.TokenIdentity(i, f"t{i}", None, *tokens.parse_binding(b)) for i, b in enumerate(kinds)]
    checked = 0
    for step in range(60):
        if step == 30:  # a new workspace appears in the classroom pack: a new generation
            eng.apply([RuleChange("add", ("g4", "ws:new-one", "pack:classroom"))], 2)
        for token in ids:
            asked = rnd.sample(names, rnd.randint(1, 5))
            assert tokens.all_bound(token, asked, eng) == (tokens.first_outside(token, asked, eng) is None), (
                token.name,
                asked,
            )
            checked += 1
    assert checked == 300
    classroom = ids[1]
    assert tokens.all_bound(classroom, ["new-one"], eng)  # after the move: bound through its platform pack
    eng.apply([RuleChange("remove", ("g4", "ws:new-one", "pack:classroom"))], 3)
    assert not tokens.all_bound(classroom, ["new-one"], eng)  # never the older generation's answer


# A batch body as each lane reads it
LIMIT_SHAPES: list[Any] = [
    lambda doc: orjson.dumps(doc),  # compact: the split lane's first shape
    lambda doc: json.dumps(doc).encode(),  # spaced: its second
    lambda doc: json.dumps({**doc, "min_revision": 0}).encode(),  # the decoding lane's
]


@pytest.mark.parametrize("dump", LIMIT_SHAPES, ids=["compact", "spaced", "min_revision"])
def test_every_lane_keeps_the_batch_limit(app: Flask, client: FlaskClient, world: World, dump: Any) -> None:
    """Checks a lane knows, one more than BATCH_MAX_CHECKS: the view's 413, from whichever lane would answer."""
    app.config["BATCH_MAX_CHECKS"] = 3
    check = {"subject": world.uid("academy.trainer"), "workspace": "academy-demo", "action": "take_courses"}
    for _ in range(2):  # the view looks the token up, then the items are in the tables
        assert _post(client, world.token, dump({"checks": [check] * 3}))[0] == 200
    status, body = _post(client, world.token, dump({"checks": [check] * 4}))
    assert status == 413 and json.loads(body)["max_checks"] == 3


@pytest.mark.parametrize("dump", LIMIT_SHAPES, ids=["compact", "spaced", "min_revision"])
def test_every_lane_checks_the_tokens_binding(app: Flask, client: FlaskClient, world: World, dump: Any) -> None:
    """Items the lanes know, asked by a token bound elsewhere: the view's 403, however often (a lane
    that dropped the body it read before the binding refused it would leave the view a 400)."""
    _, bound = tokens.create_token(db.session(), "bound-elsewhere", workspaces=[world.ws["classroom"].key])
    db.session.commit()
    check = {"subject": world.uid("simulations.owner"), "workspace": "simulations-demo", "action": "view_dashboard"}
    raw = dump({"checks": [check, check]})
    for _ in range(2):
        assert _post(client, world.token, raw)[0] == 200
    for _ in range(3):  # the first looks the token up in the view; then the fast path knows it
        status, body = _post(client, bound, raw)
        assert status == 403 and json.loads(body)["type"].endswith("token-not-bound"), body
