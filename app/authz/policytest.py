"""Policy tests as data: ``policy/tests/<pack>_test.yaml`` run against the real model and packs.

File shape::

    pack: classroom
    workspaces:                 # slug -> {pack, features_off: [...]}
      cls1: {pack: classroom}
    principals:                 # name -> facts; the user key is user:<name>
      teacher:
        roles: {cls1: teacher}          # workspace role per workspace
        platform: [academy:operator]    # platform roles, pack:role
        manages: {cls1: [group:morning]}   # g2: teacher of a group / manager of a team
        belongs: {cls1: [group:morning]}   # g3: learner in a group / member of a team
    table:                      # the seed's table, cell by cell
      workspace: cls1
      columns: [learner, teacher, admin, owner]   # a principal per column
      rows:
        create_groups: [N, N, Y, Y]
        manage_group_learners:
          cells: [N, S, Y, Y]                     # S: allowed only inside the scope
          resource: {group: group:morning}        # inside the scope
          outside: {group: group:evening}         # outside it (S cells must deny here)
    cases:
      - {name: ..., subject: teacher, workspace: cls1, action: ..., resource: {...},
         expect: allow|deny, reason: outside_group}

In resources, a value naming a principal becomes its user key; ``$subject`` is the subject.

Every ``N`` cell of the table is also asked in every situation (:func:`_situations`): the facts
of synthetic people ``user:situation-<role>`` (one per role the columns hold) and of every column
principal managing ``group:situation`` and ``team:situation`` are added to the suite, so a grant of
any scope on a ❌ cell makes one of those cases fail.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .conditions import NO_PROPS, VARIABLES, Props
from .engine import PolicyEngine
from .packs import PackSet, Rule
from .types import RESOURCE_FIELDS, AccessRequest, ResourceFacts

CELL = {"Y": "allow", "N": "deny", "S": "scoped"}


@dataclass(frozen=True)
class PolicyCase:
    """One expectation: a request and the decision it must get."""

    file: str
    name: str
    subject: str
    workspace: str
    action: str
    resource: Mapping[str, str]
    expect: str
    reason: str = ""
    # subject/resource/action/context properties for the pack's conditions (``when:<id>`` rules)
    properties: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """A readable test id."""
        return f"{Path(self.file).stem}::{self.name}"


@dataclass
class PolicySuite:
    """The facts and cases of one test file."""

    file: str
    facts: list[Rule] = field(default_factory=list)
    cases: list[PolicyCase] = field(default_factory=list)


def _user(name: str) -> str:
    return name if name.startswith("user:") else f"user:{name}"


def _ws(slug: str) -> str:
    return slug if slug.startswith(("ws:", "platform:")) else f"ws:{slug}"


def load_suite(path: Path) -> PolicySuite:
    """Parse one test file into facts (g-rules) and expanded cases."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    suite = PolicySuite(file=str(path))
    pack_of: dict[str, str] = {}
    for slug, spec in (data.get("workspaces") or {}).items():
        pack_of[slug] = spec["pack"]
        suite.facts.append(("g4", _ws(slug), f"pack:{spec['pack']}"))
        for feat in spec.get("features_off") or []:
            suite.facts.append(("g5", _ws(slug), feat))
    principals = data.get("principals") or {}
    for name, spec in principals.items():
        spec = spec or {}
        for slug, role in (spec.get("roles") or {}).items():
            suite.facts.append(("g", _user(name), f"role:{pack_of[slug]}:{role}", _ws(slug)))
        for pr in spec.get("platform") or []:
            pk, role = pr.split(":")
            suite.facts.append(("g", _user(name), f"role:{pk}:{role}", "*"))
        for ptype, keyname in (("g2", "manages"), ("g3", "belongs")):
            for slug, scopes in (spec.get(keyname) or {}).items():
                for scope in scopes:
                    suite.facts.append((ptype, _user(name), scope, _ws(slug)))

    def resource(raw: Mapping[str, Any] | None, subject: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in (raw or {}).items():
            v = str(v)
            if v == "$subject":
                v = _user(subject)
            elif k in ("assignee", "owner", "member", "grantee") and v in principals:
                v = _user(v)
            elif k in ("role", "new_role") and v and not v.startswith("role:"):
                v = f"role:{v}"
            out[k] = v
        return out

    table = data.get("table")
    if table:
        ws = table["workspace"]
        columns = table["columns"]
        # Every situation of a denied cell: a member of each role the columns hold in the table's
        # workspace, in a group and a team every column principal manages (facts added here).
        held = {((principals.get(c) or {}).get("roles") or {}).get(ws) for c in columns} - {None}
        roles = sorted(str(r) for r in held)
        targets = {role: _user(f"{SITUATION}-{role}") for role in roles}
        new_roles = [f"role:{pack_of[ws]}:{role}" for role in roles]
        for role, target in targets.items():
            suite.facts.append(("g", target, f"role:{pack_of[ws]}:{role}", _ws(ws)))
            suite.facts.append(("g3", target, SITUATION_GROUP, _ws(ws)))
            suite.facts.append(("g3", target, SITUATION_TEAM, _ws(ws)))
        for col in columns:
            suite.facts.append(("g2", _user(col), SITUATION_GROUP, _ws(ws)))
            suite.facts.append(("g2", _user(col), SITUATION_TEAM, _ws(ws)))
        for action, row in (table.get("rows") or {}).items():
            if isinstance(row, list):
                row = {"cells": row}
            cells = row["cells"]
            if len(cells) != len(columns):
                raise ValueError(f"{path.name}: row {action} has {len(cells)} cells for {len(columns)} columns")
            # A conditional row (``properties:``) is asked with the properties under which the seed's
            # cell holds (a ✅ "when not in use" cell: in_use false); its denied cells with them too.
            props = _properties(row.get("properties"), f"table {action}")
            for col, cell in zip(columns, cells):
                kind = CELL[str(cell)]
                inside = resource(row.get("resource"), col)
                name = f"table {action} [{col}]"
                if kind == "scoped":
                    suite.cases.append(
                        PolicyCase(str(path), f"{name} inside scope", col, ws, action, inside, "allow", "", props)
                    )
                    outside = resource(row.get("outside"), col)
                    suite.cases.append(
                        PolicyCase(str(path), f"{name} outside scope", col, ws, action, outside, "deny", "", props)
                    )
                else:
                    suite.cases.append(PolicyCase(str(path), name, col, ws, action, inside, kind, "", props))
                    if kind == "deny":
                        suite.cases.extend(
                            PolicyCase(str(path), f"{name} {label}", col, ws, action, res, "deny", "", props)
                            for label, res in _situations(col, inside, targets, new_roles)
                        )
    for c in data.get("cases") or []:
        suite.cases.append(
            PolicyCase(
                file=str(path),
                name=str(c["name"]),
                subject=str(c["subject"]),
                workspace=str(c["workspace"]),
                action=str(c["action"]),
                resource=resource(c.get("resource"), str(c["subject"])),
                expect=str(c["expect"]),
                reason=str(c.get("reason", "") or ""),
                properties=_properties(c.get("properties"), str(c["name"])),
            )
        )
    return suite


def _properties(raw: Any, name: str) -> dict[str, dict[str, Any]]:
    """A case's ``properties`` (maps named subject, resource, action, context); ValueError otherwise."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping) or not all(k in VARIABLES and isinstance(v, Mapping) for k, v in raw.items()):
        raise ValueError(f"case {name!r}: properties must map {', '.join(VARIABLES)} to maps")
    return {str(k): dict(v) for k, v in raw.items()}


SITUATION = "situation"  # the synthetic people of the denied cells' situations: user:situation-<role>
SITUATION_GROUP = "group:situation"
SITUATION_TEAM = "team:situation"


def _situations(
    actor: str, base: Mapping[str, str], targets: Mapping[str, str], new_roles: Sequence[str]
) -> Iterator[tuple[str, dict[str, str]]]:
    """Every situation a denied table cell is asked in, beyond the row's own resource: every scope
    fact at once — the actor manages the resource's group and team and is its assignee and owner —
    with no target member, with the actor as target, or with a member of each role (in that group
    and team), each with no role granted or any role of the pack granted. A scoped grant on a ❌
    cell (``p, 90, role:classroom:teacher, remove_users, group, -, allow``) matches one of them.

    ``grantee``/``target`` are set as a service would (the member receiving the new role; "any"
    when no member is named): they reach the request once the model knows them (RESOURCE_FIELDS).
    """
    me = _user(actor)
    members = [("no member", ""), ("the actor as member", me)]
    members += [(f"a {role} member", user) for role, user in targets.items()]
    for who, member in members:
        for new_role in ["", *new_roles]:
            res = {
                **base,
                "type": base.get("type") or "member",
                "assignee": me,
                "owner": me,
                "group": SITUATION_GROUP,
                "team": SITUATION_TEAM,
                "member": member,
                "new_role": new_role,
            }
            res.pop("role", None)  # the member's current role comes from the policy
            if member and new_role:
                res["grantee"] = member
            elif not member:
                res["target"] = "any"
            granted = f", granting {new_role.split(':')[-1]}" if new_role else ""
            yield f"in every scope, {who}{granted}", res


def build_request(case: PolicyCase) -> AccessRequest:
    """The AccessRequest a case describes (subject and workspace prefixed)."""
    res = {k: v for k, v in case.resource.items() if k in RESOURCE_FIELDS}
    subject = (
        case.subject
        if case.subject.startswith("user:") or ":" in case.subject or case.subject in ("*", "")
        else _user(case.subject)
    )
    props = Props(**case.properties) if case.properties else NO_PROPS
    return AccessRequest(
        subject,
        _ws(case.workspace) if case.workspace and case.workspace != "*" else case.workspace,
        ResourceFacts(**res, props=props),
        case.action,
    )


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one case."""

    case: PolicyCase
    passed: bool
    got: str
    got_reason: str


def run_suite(packset: PackSet, suite: PolicySuite) -> Iterator[CaseResult]:
    """Run one suite on a fresh engine holding the packs and the suite's facts."""
    engine = PolicyEngine(packset, suite.facts)
    for case in suite.cases:
        d = engine.decide(build_request(case))
        got = "allow" if d.allowed else "deny"
        ok = got == case.expect and (not case.reason or case.reason == d.reason)
        yield CaseResult(case, ok, got, d.reason)


def suite_files(policy_dir: Path | str) -> list[Path]:
    """Every ``*_test.yaml`` under ``policy/tests``."""
    return sorted((Path(policy_dir) / "tests").glob("*_test.yaml"))
