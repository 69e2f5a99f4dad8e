"""The benchmark's peers (``bench.peer``) give our answers: on a small generated world, every
peer's ``allowed`` equals what ``/v1/check`` decides (``resolution.decide`` over
``PolicyEngine``) for every request of the mix, and a peer that drops role inheritance, the scopes'
facts or the feature switches disagrees (so agreement is not an accident of the mix)."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from typing import Any

import msgspec
import pytest

from app.authz import PolicyEngine
from app.authz.packs import load_packs
from app.decisions.resolution import Check, decide
from app.policy.directory import Directory
from bench.peer import (
    REGORUS,
    UserDirectory,
    condition_actions,
    facts_data,
    make_peer,
    mix_items,
    model_data,
    peer_answers,
)
from bench.world import build_world, random_request

ROOT = Path(__file__).resolve().parent.parent
PACKSET = load_packs(ROOT / "policy", ROOT / "model.conf")
WORKSPACES = 40
N = 3000


def _requests(world: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """The world's random requests as API JSON: workspaces only (no platform domains), no
    attribute conditions (what the peers do not express)."""
    excluded = condition_actions(PACKSET)
    rnd = random.Random(seed)
    out: list[dict[str, Any]] = []
    while len(out) < n:
        req = random_request(world, rnd)
        pack = world.pack_of.get(req.domain)
        if req.domain.startswith("platform:") or (pack and req.action in excluded[pack]):
            continue
        attrs = {
            k: getattr(req.obj, k)
            for k in ("assignee", "owner", "member", "group", "team", "new_role")
            if getattr(req.obj, k)
        }
        subject: int | str = req.subject
        if rnd.random() < 0.15 and req.subject[5:].isdigit():
            subject = f"u{req.subject[5:]}@bench.example"  # by email
        item: dict[str, Any] = {"subject": subject, "workspace": req.domain[3:], "action": req.action}
        if attrs or rnd.random() < 0.2:
            item["resource"] = {"type": req.obj.type or "x", "attributes": attrs}
            if rnd.random() < 0.1:
                item["resource"]["attributes"]["target"] = "any"
        out.append(item)
    return out


@pytest.fixture(scope="module")
def world() -> Any:
    """A small world with, in every workspace of a pack with features, three switched off
    (``iter_world`` switches features off only where ``w % 10 == 3``, never a skills workspace)."""
    w = build_world(PACKSET, WORKSPACES, seed=5)
    rnd = random.Random(9)
    for ws, pack_id in w.pack_of.items():
        features = PACKSET.packs[pack_id].features
        for f in rnd.sample(features, min(3, len(features))):
            w.facts.append(("g5", ws, f.id))
    return w


@pytest.fixture(scope="module")
def user_ids(world: Any) -> list[int]:
    ids = {int(r[1][5:]) for r in world.facts if r[0] in ("g", "g2", "g3") and r[1][5:].isdigit()}
    return sorted(ids)


def _switched_off(world: Any) -> list[dict[str, Any]]:
    """Every member of a workspace with a feature switched off, asking each action of that feature."""
    out = []
    for _, ws, feature in (r for r in world.facts if r[0] == "g5"):
        pack = PACKSET.packs[world.pack_of[ws]]
        actions = sorted({r[3] for r in pack.rules if r[0] == "p" and r[5] == feature})
        out += [{"subject": user, "workspace": ws[3:], "action": a} for user in world.members[ws] for a in actions]
    return out


@pytest.fixture(scope="module")
def items(world: Any) -> list[dict[str, Any]]:
    return _requests(world, N, 17) + _switched_off(world)


@pytest.fixture(scope="module")
def ours(world: Any, user_ids: list[int], items: list[dict[str, Any]]) -> list[bool]:
    """What /v1/check answers: the directory of the world's users, then the engine."""
    engine = PolicyEngine(PACKSET, world.facts)
    directory = Directory()
    for uid in user_ids:
        directory.put(uid, f"u{uid}@bench.example", None)
    checks = [msgspec.convert(it, Check) for it in items]
    return [d.allowed for d in decide(checks, engine, directory=directory)]


def _answers(kind: str, data: dict[str, Any], user_ids: list[int], items: list[dict[str, Any]]) -> list[bool]:
    return peer_answers(make_peer(kind, data), UserDirectory(user_ids), data["pack_of"], items)


def _data(world: Any, packset: Any = PACKSET, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    return {**model_data(packset), **facts_data(r for r in world.facts if r[0] not in drop)}


def test_the_mix_is_not_trivial(ours: list[bool], items: list[dict[str, Any]]) -> None:
    allowed = sum(ours)
    assert 0.1 * len(items) < allowed < 0.9 * len(items)
    assert sum("resource" in it for it in items) > len(items) // 3


PEERS = ["dict", *(name for name, mod in REGORUS.items() if importlib.util.find_spec(mod) is not None)]


@pytest.mark.parametrize("kind", PEERS)
def test_every_peer_answers_as_ours(
    kind: str, world: Any, user_ids: list[int], items: list[dict[str, Any]], ours: list[bool]
) -> None:
    answers = _answers(kind, _data(world), user_ids, items)
    wrong = [(it, a, b) for it, a, b in zip(items, answers, ours) if a != b]
    assert not wrong, f"{len(wrong)} of {len(items)} differ, first: {wrong[:3]}"


@pytest.mark.parametrize(
    "broken",
    [
        pytest.param(
            lambda world: _data(
                world,
                PACKSET.with_pack_rules("classroom", [r for r in PACKSET.packs["classroom"].rules if r[0] != "g"]),
            ),
            id="no-inheritance",
        ),
        pytest.param(lambda world: _data(world, drop=("g2", "g3")), id="no-scope-facts"),
        pytest.param(lambda world: _data(world, drop=("g5",)), id="no-feature-switches"),
        pytest.param(lambda world: _data(world, drop=("g",)) | {"members": {}}, id="no-members"),
    ],
)
def test_a_peer_that_drops_part_of_the_model_disagrees(
    broken: Any, world: Any, user_ids: list[int], items: list[dict[str, Any]], ours: list[bool]
) -> None:
    answers = _answers("dict", broken(world), user_ids, items)
    assert sum(a != b for a, b in zip(answers, ours)) > 0


def test_a_peer_without_platform_roles_disagrees(
    world: Any, user_ids: list[int], items: list[dict[str, Any]], ours: list[bool]
) -> None:
    data = _data(world) | {"platform": {}}
    answers = _answers("dict", data, user_ids, items)
    assert sum(a != b for a, b in zip(answers, ours)) > 0


def test_the_benchmark_mix_leaves_out_attribute_conditions() -> None:
    excluded = condition_actions(PACKSET)
    assert any(excluded.values())
    packs = list(PACKSET.packs)
    for it in mix_items(200, 2000, 3):
        pack = packs[int(it["workspace"][1:]) % len(packs)]
        assert it["action"] not in excluded[pack]
