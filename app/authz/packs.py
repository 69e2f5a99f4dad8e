"""Policy packs: a role model as data (``policy/<pack>.yaml`` + ``policy/<pack>.csv``).

The YAML file holds what Casbin does not need to decide but everyone else does: roles with
ranks and labels, actions with the seed's row text, grant exceptions, feature switches and the
decisions taken where the seeds contradict each other. The CSV file holds the Casbin rules of
the pack (``p`` permissions, ``g`` role inheritance, and ``g4, pack:<id>, role:<id>:<role>`` for
each role with p-rules: how a workspace's pack reaches its rules), in Casbin's own line format.
Adding a pack is adding two files; no Python changes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .conditions import PREFIX as CONDITION_PREFIX
from .conditions import Condition, ConditionError, compile_condition, flagged
from .identifiers import (
    PLATFORM_DOMAIN,
    InvalidIdentifierError,
    pack_key,
    role_key,
    split_role,
    valid_action,
    valid_pack,
)

Rule = tuple[str, ...]

P_FIELDS = ("priority", "sub", "act", "scope", "feature", "eft")
# Positions in a p-rule tuple ("p", *P_FIELDS): the p-line has six values, the adapter's v0..v5.
P_SUB, P_ACT, P_SCOPE = 2, 3, 4
SCOPES = ("any", "assignee", "owner", "member_of", "group", "into_group", "team", "rank")
# Scopes that limit a cell to the units a person manages print as "✅*" in the matrix.
STARRED_SCOPES = ("group", "into_group", "team")
G_ARITY = {"g": 3, "g2": 3, "g3": 3, "g4": 2, "g5": 2}


class PackError(ValueError):
    """A pack file that cannot be loaded; the message lists every problem."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class RoleDef:
    """A role of a pack: id, label, rank (higher outranks lower), platform-wide or not."""

    id: str
    label: str
    rank: int
    platform: bool = False
    description: str = ""


@dataclass(frozen=True)
class ActionDef:
    """An action: one permission row of the seed, its label the row's text."""

    id: str
    label: str
    section: str = ""
    source: str = ""
    derived_from: str = ""
    feature: str = ""
    rank_mark: str = ""


@dataclass(frozen=True)
class FeatureDef:
    """A per-workspace switch; when off, its actions are denied to every role there."""

    id: str
    label: str
    switched_by: str = ""
    actions: tuple[str, ...] = ()


@dataclass(frozen=True)
class GrantRule:
    """An exception to "grant and manage only strictly lower ranks", with its reason."""

    role: str
    may_grant: tuple[str, ...] = ()
    may_manage: tuple[str, ...] = ()
    why: str = ""


@dataclass(frozen=True)
class Pack:
    """One role model: metadata from YAML plus its Casbin rules from CSV."""

    id: str
    title: str
    roles: tuple[RoleDef, ...]
    actions: tuple[ActionDef, ...]
    rules: tuple[Rule, ...]
    features: tuple[FeatureDef, ...] = ()
    grants: tuple[GrantRule, ...] = ()
    matrix: tuple[str, ...] = ()
    default_role: str = ""
    owner_role: str = ""
    sources: tuple[str, ...] = ()
    decisions: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    document: Mapping[str, Any] = field(default_factory=dict)
    conditions: tuple[Condition, ...] = ()

    def condition(self, cid: str) -> Condition | None:
        """The condition with this id (``when:<id>`` scopes), or None."""
        for c in self.conditions:
            if c.id == cid:
                return c
        return None

    def role(self, role_id: str) -> RoleDef | None:
        """The role with this id, or None."""
        for r in self.roles:
            if r.id == role_id:
                return r
        return None

    def action(self, action_id: str) -> ActionDef | None:
        """The action with this id, or None."""
        for a in self.actions:
            if a.id == action_id:
                return a
        return None

    def role_key(self, role_id: str) -> str:
        """``role:<pack>:<role>``."""
        return role_key(self.id, role_id)

    @property
    def key(self) -> str:
        """``pack:<id>``."""
        return pack_key(self.id)

    @property
    def workspace_roles(self) -> tuple[RoleDef, ...]:
        """Roles held per workspace (not platform-wide), low to high."""
        return tuple(sorted((r for r in self.roles if not r.platform), key=lambda r: r.rank))

    @property
    def platform_roles(self) -> tuple[RoleDef, ...]:
        """Platform-wide roles of this pack."""
        return tuple(r for r in self.roles if r.platform)


def parse_rule_line(line: str) -> Rule | None:
    """One Casbin CSV line → rule tuple (ptype first); None for blanks and comments."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    row = next(csv.reader(io.StringIO(stripped), skipinitialspace=True))
    return tuple(v.strip() for v in row)


def format_rule(rule: Rule) -> str:
    """A rule tuple as a Casbin CSV line."""
    return ", ".join(rule)


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def validate_rule(rule: Rule, problems: list[str], where: str = "") -> None:
    """Append to problems what is wrong with the shape of one rule."""
    ptype = rule[0] if rule else ""
    if ptype == "p":
        if len(rule) != 1 + len(P_FIELDS):
            problems.append(f"{where}p rule needs {len(P_FIELDS)} fields: {format_rule(rule)}")
            return
        prio, sub, act, scope, feature, eft = rule[1:]
        if not prio.isdigit():
            problems.append(f"{where}priority must be a non-negative integer: {format_rule(rule)}")
        try:
            split_role(sub)
        except InvalidIdentifierError:
            problems.append(f"{where}p subject must be a role key: {format_rule(rule)}")
        if not valid_action(act):
            problems.append(f"{where}action must be snake_case: {format_rule(rule)}")
        conditional = scope.startswith(CONDITION_PREFIX) and valid_action(scope[len(CONDITION_PREFIX) :])
        if scope not in SCOPES and not conditional:
            problems.append(f"{where}unknown scope {scope!r}: {format_rule(rule)}")
        if feature != "-" and not valid_action(feature):
            problems.append(f"{where}feature must be '-' or snake_case: {format_rule(rule)}")
        if eft not in ("allow", "deny"):
            problems.append(f"{where}effect must be allow or deny: {format_rule(rule)}")
    elif ptype in G_ARITY:
        if len(rule) != 1 + G_ARITY[ptype]:
            problems.append(f"{where}{ptype} rule needs {G_ARITY[ptype]} fields: {format_rule(rule)}")
            return
        for v in rule[1:]:
            if not v or "," in v or "\n" in v or (v == PLATFORM_DOMAIN and v is not rule[-1]):
                problems.append(f"{where}invalid value {v!r}: {format_rule(rule)}")
    else:
        problems.append(f"{where}unknown rule type {ptype!r}")


def _load_pack(yaml_path: Path, csv_path: Path) -> Pack:
    data = yaml.safe_load(yaml_path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise PackError([f"{yaml_path.name}: not a mapping"])
    problems: list[str] = []
    if str(data.get("pack", "")) != yaml_path.stem:
        problems.append(f"{yaml_path.name}: 'pack' must equal the file name")
    rules: list[Rule] = []
    if csv_path.exists():
        for n, line in enumerate(csv_path.read_text(encoding="utf-8").splitlines(), 1):
            rule = parse_rule_line(line)
            if rule is not None:
                validate_rule(rule, problems, f"{csv_path.name}:{n}: ")
                rules.append(rule)
    if problems:
        raise PackError(problems)
    return build_pack(data, rules)


def build_pack(data: Mapping[str, Any], rules: Iterable[Rule]) -> Pack:
    """A Pack from its metadata document and its rules; raises PackError listing every problem."""
    problems: list[str] = []
    pid = str(data.get("pack", ""))
    if not valid_pack(pid):
        problems.append(f"{pid!r}: 'pack' must be a valid id")
    roles: list[RoleDef] = []
    for r in data.get("roles") or []:
        roles.append(
            RoleDef(str(r["id"]), str(r.get("label", r["id"])), int(r["rank"]), False, str(r.get("description", "")))
        )
    for r in data.get("platform_roles") or []:
        roles.append(
            RoleDef(str(r["id"]), str(r.get("label", r["id"])), int(r["rank"]), True, str(r.get("description", "")))
        )
    seen: set[str] = set()
    for r in roles:
        if not valid_pack(r.id):
            problems.append(f"{pid}: invalid role id {r.id!r}")
        if r.id in seen:
            problems.append(f"{pid}: duplicate role {r.id!r}")
        seen.add(r.id)
    actions: list[ActionDef] = []
    aseen: set[str] = set()
    for a in data.get("actions") or []:
        ad = ActionDef(
            id=str(a["id"]),
            label=str(a.get("label", a["id"])),
            section=str(a.get("section", "")),
            source=str(a.get("source", "")),
            derived_from=str(a.get("derived_from", "")),
            feature=str(a.get("feature", "") or ""),
            rank_mark=str(a.get("rank_mark", "") or ""),
        )
        if not valid_action(ad.id):
            problems.append(f"{pid}: invalid action id {ad.id!r}")
        if ad.id in aseen:
            problems.append(f"{pid}: duplicate action {ad.id!r}")
        aseen.add(ad.id)
        actions.append(ad)
    features = tuple(
        FeatureDef(
            id=str(f["id"]),
            label=str(f.get("label", f["id"])),
            switched_by=str(f.get("switched_by", "")),
            actions=tuple(a.id for a in actions if a.feature == str(f["id"])),
        )
        for f in data.get("features") or []
    )
    grants = tuple(
        GrantRule(
            role=str(g["role"]),
            may_grant=_as_tuple(g.get("may_grant")),
            may_manage=_as_tuple(g.get("may_manage")),
            why=str(g.get("why", "")),
        )
        for g in data.get("grants") or []
    )
    for g in grants:
        for rid in (g.role, *g.may_grant, *g.may_manage):
            if rid not in seen:
                problems.append(f"{pid}: grant exception names unknown role {rid!r}")
    conditions: list[Condition] = []
    raw_conditions = data.get("conditions") or {}
    if not isinstance(raw_conditions, Mapping):
        problems.append(f"{pid}: 'conditions' must map ids to {{when: <CEL>, description: ...}}")
        raw_conditions = {}
    for cid, spec in raw_conditions.items():
        spec = spec if isinstance(spec, Mapping) else {"when": spec}
        try:
            conditions.append(compile_condition(str(cid), spec.get("when", ""), str(spec.get("description", ""))))
        except ConditionError as exc:
            problems.append(f"{pid}: {exc}")
    rules = list(rules)
    for rule in rules:
        validate_rule(rule, problems, f"{pid}: ")
    pack = Pack(
        id=pid,
        title=str(data.get("title", pid)),
        roles=tuple(roles),
        actions=tuple(actions),
        rules=tuple(rules),
        features=features,
        grants=grants,
        matrix=_as_tuple(data.get("matrix")) or tuple(r.id for r in roles if not r.platform),
        default_role=str(data.get("default_role", "") or ""),
        owner_role=str(data.get("owner_role", "") or ""),
        sources=_as_tuple(data.get("sources")),
        decisions=_as_tuple(data.get("decisions")),
        meta={k: v for k, v in data.items() if k not in {"roles", "platform_roles", "actions"}},
        document=dict(data),
        conditions=tuple(conditions),
    )
    problems.extend(check_pack_rules(pack, pack.rules))
    if problems:
        raise PackError(problems)
    return pack


def check_pack_rules(pack: Pack, rules: Iterable[Rule]) -> list[str]:
    """Semantic problems of a pack's rules: unknown roles/actions/features, foreign packs, cycles,
    roles with p-rules that the pack does not reach (``g4, pack:<id>, <role>``)."""
    problems: list[str] = []
    role_keys = {pack.role_key(r.id) for r in pack.roles}
    actions = {a.id for a in pack.actions}
    features = {f.id for f in pack.features}
    edges: dict[str, set[str]] = {}
    reached: set[str] = set()
    ruled: dict[str, Rule] = {}
    for rule in rules:
        if rule[0] == "p" and len(rule) == 1 + len(P_FIELDS):
            _, _, sub, act, _, feature, _ = rule
            if sub not in role_keys:
                problems.append(f"{pack.id}: unknown role {sub} in {format_rule(rule)}")
            ruled.setdefault(sub, rule)
            if act not in actions:
                problems.append(f"{pack.id}: unknown action {act} in {format_rule(rule)}")
            if feature != "-" and feature not in features:
                problems.append(f"{pack.id}: unknown feature {feature} in {format_rule(rule)}")
            scope = rule[4]
            if scope.startswith(CONDITION_PREFIX) and pack.condition(scope[len(CONDITION_PREFIX) :]) is None:
                problems.append(f"{pack.id}: unknown condition {scope} in {format_rule(rule)}")
        elif rule[0] == "g" and len(rule) == 4:
            _, child, parent, dom = rule
            if dom != PLATFORM_DOMAIN or child not in role_keys or parent not in role_keys:
                problems.append(f"{pack.id}: pack g rules link two of its roles in domain '*': {format_rule(rule)}")
            edges.setdefault(child, set()).add(parent)
        elif rule[0] == "g4" and len(rule) == 3:
            if rule[1] != pack.key or rule[2] not in role_keys:
                problems.append(f"{pack.id}: pack g4 rules link {pack.key} to its roles: {format_rule(rule)}")
            reached.add(rule[2])
        else:
            problems.append(
                f"{pack.id}: a pack holds only p rules, g role inheritance and g4 {pack.key} -> its roles: "
                f"{format_rule(rule)}"
            )
    for sub, rule in ruled.items():
        if sub in role_keys and sub not in reached:
            problems.append(
                f"{pack.id}: role {sub} has p rules but no 'g4, {pack.key}, {sub}' line: {format_rule(rule)}"
            )
    cycle = find_cycle(edges)
    if cycle:
        problems.append(f"{pack.id}: inheritance cycle {' -> '.join(cycle)}")
    return problems


def find_cycle(edges: Mapping[str, Iterable[str]]) -> list[str]:
    """A cycle in a directed graph as a list of nodes (first repeated at the end), or []."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return []

    for start in list(edges):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return []


@dataclass(frozen=True)
class PackSet:
    """All packs of a policy directory, with the rank tables the custom functions read."""

    packs: Mapping[str, Pack]
    model_text: str

    def __post_init__(self) -> None:
        # ``when:<id>`` names one condition of the whole policy (the matcher function sees no pack).
        owner: dict[str, str] = {}
        problems = []
        for pack in self.packs.values():
            for c in pack.conditions:
                if c.id in owner:
                    problems.append(f"{pack.id}: condition {c.id!r} is already a condition of {owner[c.id]}")
                owner.setdefault(c.id, pack.id)
        if problems:
            raise PackError(problems)

    def pack(self, pack_id: str) -> Pack | None:
        """The pack with this id, or None."""
        return self.packs.get(pack_id)

    def flagged(self) -> PackSet:
        """The packs with every attribute condition replaced by a flag the caller sets per request
        (``conditions.flagged``): how the verifier and the matrix decide a condition both ways."""
        if not any(p.conditions for p in self.packs.values()):
            return self
        packs = {
            pid: dataclasses.replace(p, conditions=tuple(flagged(c) for c in p.conditions))
            for pid, p in self.packs.items()
        }
        return PackSet(packs, self.model_text)

    def all_rules(self) -> list[Rule]:
        """Every pack's rules, in pack order then file order."""
        return [rule for pack in self.packs.values() for rule in pack.rules]

    def with_pack_rules(self, pack_id: str, rules: Iterable[Rule]) -> PackSet:
        """A copy in which one pack's rules are replaced."""
        packs = dict(self.packs)
        old = packs[pack_id]
        packs[pack_id] = Pack(**{**old.__dict__, "rules": tuple(rules)})
        return PackSet(packs, self.model_text)


def packset_from_documents(
    documents: Mapping[str, Mapping[str, Any]], rules: Iterable[Rule], model_text: str
) -> PackSet:
    """A PackSet from stored documents and a flat rule list (rules go to the pack they name)."""
    per_pack: dict[str, list[Rule]] = {pid: [] for pid in documents}
    problems: list[str] = []
    for rule in rules:
        owner = rule_pack(rule)
        if owner in per_pack:
            per_pack[owner].append(rule)
        else:
            problems.append(f"rule of unknown pack: {format_rule(rule)}")
    packs: dict[str, Pack] = {}
    for pid in sorted(documents):
        try:
            packs[pid] = build_pack(documents[pid], per_pack[pid])
        except PackError as exc:
            problems.extend(exc.problems)
    if problems:
        raise PackError(problems)
    return PackSet(packs, model_text)


def rule_pack(rule: Rule) -> str:
    """The pack a pack-level rule belongs to ("" if it is not a pack rule)."""
    if rule[0] == "p" and len(rule) > P_SUB:
        try:
            return split_role(rule[P_SUB])[0]
        except InvalidIdentifierError:
            return ""
    if rule[0] == "g4" and len(rule) == 3 and rule[1].startswith("pack:"):
        return rule[1][5:]
    if rule[0] == "g" and len(rule) == 4 and rule[3] == PLATFORM_DOMAIN and rule[1].startswith("role:"):
        return rule[1].split(":")[1] if rule[1].count(":") == 2 else ""
    return ""


def is_pack_rule(rule: Rule) -> bool:
    """True for p-rules, role-to-role inheritance and pack → role links; False for facts (memberships, ...)."""
    return rule_pack(rule) != ""


def load_packs(policy_dir: Path | str, model_path: Path | str | None = None) -> PackSet:
    """Load every ``<pack>.yaml`` (+ ``<pack>.csv``) of a policy directory and the model text."""
    pdir = Path(policy_dir)
    mpath = Path(model_path) if model_path else pdir.parent / "model.conf"
    packs: dict[str, Pack] = {}
    problems: list[str] = []
    for yml in sorted(pdir.glob("*.yaml")):
        try:
            pack = _load_pack(yml, yml.with_suffix(".csv"))
        except PackError as exc:
            problems.extend(exc.problems)
            continue
        except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
            problems.append(f"{yml.name}: {exc}")
            continue
        packs[pack.id] = pack
    if problems:
        raise PackError(problems)
    return PackSet(packs, mpath.read_text(encoding="utf-8"))
