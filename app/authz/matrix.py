"""The role × action table of a pack, computed by the engine (not read from the files)."""

from __future__ import annotations

from .conditions import PREFIX as CONDITION_PREFIX
from .conditions import VERIFY_KEY, Props
from .engine import PolicyEngine
from .packs import P_ACT, P_FIELDS, P_SCOPE, P_SUB, STARRED_SCOPES, Pack, PackSet, Rule
from .types import AccessRequest, ResourceFacts

_WS = "ws:matrix-probe"


def probe_engine(packset: PackSet, pack: Pack) -> PolicyEngine:
    """An engine holding one probe user per role of the pack, and scope fixtures."""
    facts: list[Rule] = [("g4", _WS, pack.key)]
    for role in pack.roles:
        user = f"user:probe-{role.id}"
        dom = "*" if role.platform else _WS
        facts.append(("g", user, pack.role_key(role.id), dom))
        facts.append(("g2", user, "group:probe", _WS))
        facts.append(("g2", user, "team:probe", _WS))
    # conditions are flags here: a cell allowed only when one holds prints ✅ᶜ (conditional)
    for role in pack.workspace_roles:
        facts.append(("g", f"user:probe-target-{role.id}", pack.role_key(role.id), _WS))
    facts.append(("g3", "user:probe-target", "group:probe", _WS))
    facts.append(("g3", "user:probe-target", "team:probe", _WS))
    return PolicyEngine(packset.flagged(), facts)


def conditions_of(engine: PolicyEngine, action: str) -> list[str]:
    """Ids of the conditions the action's rules carry (``when:<id>`` scopes)."""
    scopes = {r[P_SCOPE - 1] for r in engine.enforcer.p_rules(action)}
    return sorted(s[len(CONDITION_PREFIX) :] for s in scopes if s.startswith(CONDITION_PREFIX))


def cell(engine: PolicyEngine, pack: Pack, role_id: str, action: str) -> str:
    """``✅`` if allowed unscoped, ``✅*`` if allowed only within a managed scope, ``✅ᶜ`` if allowed
    only when one of the action's attribute conditions holds, else ``—``."""
    user = f"user:probe-{role_id}"
    if any(r[P_SCOPE - 1] == "rank" for r in engine.enforcer.p_rules(action)):
        # Rank-limited actions: compare what each column may do to whom (an empty probe
        # would pass the rank functions trivially).
        mine = rank_pairs(engine, pack, role_id, action)
        if not mine:
            return "—"
        others = [rank_pairs(engine, pack, c, action) for c in pack.matrix if c != role_id]
        restricted = any(mine < other for other in others)
        act = pack.action(action)
        return "✅" + (act.rank_mark if act and restricted else "")
    plain = [
        ResourceFacts(),
        ResourceFacts(assignee=user, owner=user),
        ResourceFacts(group="group:nowhere"),
    ]
    # A person who is allowed "in general" is allowed without being manager of the scope.
    for obj in plain:
        if engine.check(AccessRequest(user, _WS, obj, action)).allowed:
            return "✅"
    scoped = [
        ResourceFacts(group="group:probe", member="user:probe-target"),
        ResourceFacts(team="team:probe", member="user:probe-target"),
        ResourceFacts(group="group:probe"),
    ]
    for obj in scoped:
        if engine.check(AccessRequest(user, _WS, obj, action)).allowed:
            rows = [r for r in engine.enforcer.p_rules(action) if r[P_SCOPE - 1] in STARRED_SCOPES]
            return "✅*" if rows else "✅"
    held = conditions_of(engine, action)
    if held:
        holding = Props(context={VERIFY_KEY: held})
        for obj in plain:
            conditional = ResourceFacts(obj.type, obj.id, obj.assignee, obj.owner, props=holding)
            if engine.check(AccessRequest(user, _WS, conditional, action)).allowed:
                return "✅ᶜ"
    return "—"


def rank_pairs(engine: PolicyEngine, pack: Pack, role_id: str, action: str) -> frozenset[tuple[str, str]]:
    """(target's current role, role granted) pairs a role may act on under the rank rules."""
    user = f"user:probe-{role_id}"
    out = set()
    targets = ["", *(r.id for r in pack.workspace_roles)]
    news = ["", *(r.id for r in pack.roles)]
    for t in targets:
        member = f"user:probe-target-{t}" if t else "user:probe-target"
        for n in news:
            obj = ResourceFacts(type="member", member=member, new_role=pack.role_key(n) if n else "")
            if engine.check(AccessRequest(user, _WS, obj, action)).allowed:
                out.add((t, n))
    return frozenset(out)


def matrix_markdown(packset: PackSet, pack_id: str, columns: list[str] | None = None) -> str:
    """The pack's table as Markdown: the seed's row label, then one column per role."""
    pack = packset.packs[pack_id]
    engine = probe_engine(packset, pack)
    cols = columns or list(pack.matrix)
    labels = [pack.role(c).label if pack.role(c) else c for c in cols]  # type: ignore[union-attr]
    lines = ["| " + " | ".join(["Capability", *labels]) + " |", "|" + "---|" * (len(cols) + 1)]
    for action in pack.actions:
        if pack.meta.get("matrix_rows") and action.id not in pack.meta["matrix_rows"]:
            continue
        cells = [cell(engine, pack, c, action.id) for c in cols]
        lines.append("| " + " | ".join([action.label, *cells]) + " |")
    return "\n".join(lines)


def matrix_rows(packset: PackSet, pack_id: str) -> list[dict[str, object]]:
    """Every action of a pack with its cell per role (workspace and platform roles) and direct rules."""
    pack = packset.packs[pack_id]
    engine = probe_engine(packset, pack)
    direct: dict[tuple[str, str], list[str]] = {}
    for rule in pack.rules:
        if rule[0] == "p" and len(rule) == 1 + len(P_FIELDS):
            direct.setdefault((rule[P_SUB], rule[P_ACT]), []).append(", ".join(rule))
    rows: list[dict[str, object]] = []
    for action in pack.actions:
        rows.append(
            {
                "action": action.id,
                "label": action.label,
                "section": action.section,
                "source": action.source or action.derived_from,
                "feature": action.feature or None,
                "cells": {r.id: cell(engine, pack, r.id, action.id) for r in pack.roles},
                "rules": {r.id: direct.get((pack.role_key(r.id), action.id), []) for r in pack.roles},
            }
        )
    return rows
