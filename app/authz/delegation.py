"""The escalation verifier: nobody can hand out rights they do not hold.

The rule is Kubernetes RBAC's ("you cannot grant what you do not have"), applied to every pack:

1. **Delegation.** Whoever may grant role T, through any grant-carrying action, in any situation,
   must already hold every permission of T in the same situation or a wider one — unless the
   pack's ``grants:`` lists T under ``may_grant`` for that role, with the seed sentence that says
   so (``why``).
2. **Rank.** The seeds' "never a role equal to or higher than yours": a role grants only roles of
   strictly lower rank, and acts (change, remove, transfer) only on members of strictly lower rank,
   unless ``grants:`` says otherwise (``may_grant`` / ``may_manage``).

Grant-carrying actions are the pack's ``assign_action``, the actions its ``operations:`` maps
``invite``, ``change_role``, ``transfer_ownership`` and ``grant_platform_role`` to, and every action
with a ``rank``-scoped rule; ``remove`` is checked as managing. A rule of any scope on such an
action is analysed, not only ``rank``: the verifier asks Casbin itself.

**How scopes compare.** Permissions are compared by the situations they allow, asked of the real
engine on a probe workspace in which every role has one probe user with the same relations: they
manage ``group:mine`` and ``team:mine``, belong to ``group:joined`` and ``team:joined``, and every
workspace role has a probe target who belongs to ``group:mine`` and ``team:mine``. A permission at
scope ``any`` covers every situation, so it is wider than each other scope; ``group`` and
``into_group`` cover the situations in a group one manages, ``team`` in a team one manages,
``member_of`` a group one teaches or belongs to, ``assignee`` / ``owner`` a resource assigned to or
owned by oneself — these are incomparable with one another; ``rank`` at a higher rank covers rank
at a lower one (the targets and roles one may act on). "T's permission ⊆ R's" is therefore: in
every situation where T's probe user is allowed an action, R's probe user is allowed it too.

Pure: no Flask, no ORM.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .engine import PolicyEngine
from .packs import P_ACT, P_FIELDS, P_SCOPE, Pack, PackSet, Rule, format_rule
from .types import AccessRequest, Decision, ResourceFacts

WS = "ws:verify"
GRANT_OPERATIONS = ("invite", "change_role", "transfer_ownership", "grant_platform_role")
MANAGE_OPERATIONS = ("remove",)
MISSING_LISTED = 5


@dataclass(frozen=True)
class Situation:
    """A resource as seen by one probe subject; ``$sub`` stands for the subject."""

    label: str
    facts: tuple[tuple[str, str], ...]
    target: str = ""  # the probe target's current role id ("" when no member is named)
    new_role: str = ""  # the role id granted ("" when none)

    def obj(self, subject: str) -> ResourceFacts:
        """The facts for a subject."""
        return ResourceFacts(**{k: subject if v == "$sub" else v for k, v in self.facts})


@dataclass(frozen=True)
class Grant:
    """One delegation: ``role`` may grant ``granted`` through ``action`` (rule scopes listed)."""

    role: str
    action: str
    granted: str
    scopes: tuple[str, ...]
    rules: tuple[str, ...]


@dataclass(frozen=True)
class Violation:
    """A counterexample: what a grantee or a managed target gets that the granter lacks."""

    kind: str  # delegation | grant_rank | manage_rank
    role: str
    action: str
    other: str  # the role granted, or the role of the member acted on
    missing: tuple[tuple[str, str, str], ...] = ()  # (action, situation, rule line giving it to `other`)
    missing_total: int = 0
    rules: tuple[str, ...] = ()  # the rule lines that let `role` do it

    def describe(self, pack: Pack) -> str:
        """One line, as validate and ``flask policy verify`` print it."""
        r = pack.role(self.role)
        o = pack.role(self.other)
        rank = r.rank if r else "?"
        via = f" (rule: {'; '.join(self.rules)})" if self.rules else ""
        if self.kind == "grant_rank":
            return (
                f"{pack.id}: escalation: {self.role} (rank {rank}) could {self.action} granting {self.other} "
                f"(rank {o.rank if o else '?'}: equal or higher rank){via}"
            )
        if self.kind == "manage_rank":
            return (
                f"{pack.id}: escalation: {self.role} (rank {rank}) could {self.action} on members holding "
                f"{self.other} (rank {o.rank if o else '?'}: equal or higher rank){via}"
            )
        gains = "; ".join(f"{a} {s} [{line}]" for a, s, line in self.missing)
        extra = self.missing_total - len(self.missing)
        more = f" and {extra} more action{'s' if extra > 1 else ''}" if extra > 0 else ""
        return (
            f"{pack.id}: delegation: {self.role} may grant {self.other} through {self.action}{via}, "
            f"but {self.other} would gain what {self.role} lacks: {gains}{more}"
        )


@dataclass
class Report:
    """The verifier's answer for one pack: the delegation table and the violations."""

    pack: str
    grants: list[Grant] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    checks: int = 0

    @property
    def ok(self) -> bool:
        """True when the pack passes."""
        return not self.violations


def grant_actions(pack: Pack) -> set[str]:
    """Actions that grant roles: the assign action, mapped grant operations, rank-scoped actions."""
    out = {r[P_ACT] for r in pack.rules if r[0] == "p" and len(r) == 1 + len(P_FIELDS) and r[P_SCOPE] == "rank"}
    ops = pack.meta.get("operations") or {}
    ops = ops if isinstance(ops, Mapping) else {}
    declared = {str(ops[k]) for k in GRANT_OPERATIONS if k in ops}
    if isinstance(pack.meta.get("assign_action"), str):
        declared.add(pack.meta["assign_action"])
    # A rank-scoped removal grants nothing (it is checked as managing), unless it also grants.
    out -= {str(ops[k]) for k in MANAGE_OPERATIONS if k in ops} - declared
    return {a for a in out | declared if pack.action(a) is not None}


def manage_actions(pack: Pack) -> set[str]:
    """Actions that act on a member's role or membership: grant actions and the remove operation."""
    ops = pack.meta.get("operations") or {}
    out = grant_actions(pack)
    if isinstance(ops, Mapping):
        out.update(str(ops[k]) for k in MANAGE_OPERATIONS if k in ops and pack.action(str(ops[k])) is not None)
    return out


def _subject(role_id: str) -> str:
    return f"user:verify-{role_id}"


def _target(role_id: str) -> str:
    return f"user:verify-target-{role_id}"


def probe_world(packset: PackSet, pack: Pack) -> PolicyEngine:
    """An engine with one probe subject per role and one probe target per workspace role."""
    facts: list[Rule] = [("g4", WS, pack.key)]
    for role in pack.roles:
        user = _subject(role.id)
        facts.append(("g", user, pack.role_key(role.id), "*" if role.platform else WS))
        facts += [("g2", user, "group:mine", WS), ("g2", user, "team:mine", WS)]
        facts += [("g3", user, "group:joined", WS), ("g3", user, "team:joined", WS)]
    for role in pack.workspace_roles:
        user = _target(role.id)
        facts.append(("g", user, pack.role_key(role.id), WS))
        facts += [("g3", user, "group:mine", WS), ("g3", user, "team:mine", WS)]
    return PolicyEngine(packset, facts)


def situations(pack: Pack, granting: bool) -> list[Situation]:
    """Every situation an action is probed in; with ``granting``, also every role granted."""
    out = [
        Situation("(any resource)", ()),
        Situation("as assignee", (("assignee", "$sub"),)),
        Situation("as owner", (("owner", "$sub"),)),
        Situation("in a group they belong to", (("group", "group:joined"),)),
        Situation("in a team they belong to", (("team", "team:joined"),)),
        Situation("on a group they manage", (("group", "group:mine"),)),
        Situation("on a team they manage", (("team", "team:mine"),)),
    ]
    units: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
        ("", ()),
        (" in a group they manage", (("group", "group:mine"),)),
        (" in a team they manage", (("team", "team:mine"),)),
    )
    targets = [("", "")] + [(r.id, _target(r.id)) for r in pack.workspace_roles]
    for suffix, unit in units:
        for tid, tkey in targets:
            if not tid and not unit:
                continue
            base = ((("member", tkey),) if tkey else ()) + unit
            who = f"on a {tid}" if tid else "on someone new"
            out.append(Situation(f"{who}{suffix}", base, target=tid))
    if granting:
        for role in pack.roles:
            key = pack.role_key(role.id)
            for suffix, unit in units:
                for tid, tkey in targets:
                    base = ((("member", tkey),) if tkey else ()) + unit + (("new_role", key),)
                    who = f"a {tid}" if tid else "someone new"
                    out.append(Situation(f"granting {role.id} to {who}{suffix}", base, target=tid, new_role=role.id))
    return out


def _sorted(lines: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(lines))


def _line(decision: Decision) -> str:
    return format_rule(decision.rule) if decision.rule else ""


def verify_pack(packset: PackSet, pack_id: str) -> Report:
    """The delegation table and every violation of one pack of a policy."""
    pack = packset.packs[pack_id]
    engine = probe_world(packset, pack)
    report = Report(pack.id)
    grants = grant_actions(pack)
    manages = manage_actions(pack)
    rank = {r.id: r.rank for r in pack.roles}
    exceptions_grant: dict[str, set[str]] = {}
    exceptions_manage: dict[str, set[str]] = {}
    for g in pack.grants:
        if g.why.strip():  # an exception counts only with the seed sentence that makes it
            exceptions_grant.setdefault(g.role, set()).update(g.may_grant)
            exceptions_manage.setdefault(g.role, set()).update(g.may_manage)
    plain = situations(pack, granting=False)
    granting = situations(pack, granting=True)
    order = {s.label: n for n, s in enumerate(granting)}

    def ask(role_id: str, action: str, sit: Situation, explain: bool = False) -> Decision:
        report.checks += 1
        subject = _subject(role_id)
        req = AccessRequest(subject, WS, sit.obj(subject), action)
        return engine.explain(req) if explain else engine.check(req)

    # What each role holds: (action, situation label) pairs.
    holds: dict[str, set[tuple[str, str]]] = {}
    for role in pack.roles:
        got = holds.setdefault(role.id, set())
        for act_def in pack.actions:
            for sit in granting if act_def.id in grants else plain:
                if ask(role.id, act_def.id, sit).allowed:
                    got.add((act_def.id, sit.label))

    for role in pack.roles:
        for action in sorted(manages):
            granted: dict[str, tuple[set[str], set[str]]] = {}
            managed: dict[str, set[str]] = {}
            for sit in granting if action in grants else plain:
                if (action, sit.label) not in holds[role.id]:
                    continue
                d = ask(role.id, action, sit, explain=True)
                scope = d.rule[P_SCOPE] if d.rule and len(d.rule) > P_SCOPE else "?"
                if sit.new_role and action in grants:
                    scopes, lines = granted.setdefault(sit.new_role, (set(), set()))
                    scopes.add(scope)
                    lines.add(_line(d))
                if sit.target:
                    managed.setdefault(sit.target, set()).add(_line(d))
            for other, lines in sorted(managed.items()):
                if rank[other] >= rank[role.id] and other not in exceptions_manage.get(role.id, ()):
                    report.violations.append(Violation("manage_rank", role.id, action, other, rules=_sorted(lines)))
            for other, (scopes, lines) in sorted(granted.items()):
                report.grants.append(Grant(role.id, action, other, tuple(sorted(scopes)), tuple(sorted(lines))))
                if other in exceptions_grant.get(role.id, ()):
                    continue
                if rank[other] >= rank[role.id]:
                    report.violations.append(Violation("grant_rank", role.id, action, other, rules=_sorted(lines)))
                # One line per action the grantee would gain, in its first situation (widest first).
                first: dict[str, str] = {}
                for act, label in sorted(holds[other] - holds[role.id], key=lambda x: (x[0], order[x[1]])):
                    first.setdefault(act, label)
                missing = sorted(first.items())
                if missing:
                    shown = []
                    for act, label in missing[:MISSING_LISTED]:
                        sit = next(s for s in (granting if act in grants else plain) if s.label == label)
                        shown.append((act, label, _line(ask(other, act, sit, explain=True))))
                    report.violations.append(
                        Violation(
                            "delegation", role.id, action, other, tuple(shown), len(missing), tuple(sorted(lines))
                        )
                    )
    return report


def verify(packset: PackSet, pack_ids: Iterable[str] | None = None) -> list[Report]:
    """Reports for the given packs (default: every pack), in pack order."""
    wanted = list(pack_ids) if pack_ids is not None else list(packset.packs)
    return [verify_pack(packset, pid) for pid in wanted if pid in packset.packs]


# A pack's verdict depends on the model and that pack alone (the probe world holds no other pack),
# so it is remembered per pack content: reloads and other processes' edits of other packs are free.
_VERDICTS: dict[str, tuple[str, ...]] = {}
_VERDICTS_LIMIT = 256


def _fingerprint(packset: PackSet, pack_id: str) -> str:
    pack = packset.packs[pack_id]
    blob = json.dumps([packset.model_text, dict(pack.document), list(pack.rules)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def problems(packset: PackSet, pack_ids: Iterable[str] | None = None) -> list[str]:
    """Every violation as a validation problem line (verdicts remembered per pack content)."""
    out: list[str] = []
    wanted = list(pack_ids) if pack_ids is not None else list(packset.packs)
    for pid in wanted:
        if pid not in packset.packs:
            continue
        key = _fingerprint(packset, pid)
        verdict = _VERDICTS.get(key)
        if verdict is None:
            report = verify_pack(packset, pid)
            verdict = tuple(v.describe(packset.packs[pid]) for v in report.violations)
            if len(_VERDICTS) >= _VERDICTS_LIMIT:
                _VERDICTS.clear()
            _VERDICTS[key] = verdict
        out.extend(verdict)
    return out


def render(packset: PackSet, reports: Iterable[Report]) -> str:
    """Human-readable verifier output: per pack, the delegation table, then PASS or the counterexamples."""
    lines: list[str] = []
    for report in reports:
        pack = packset.packs[report.pack]
        lines.append(f"== {pack.id}: {len(report.grants)} delegations, {report.checks} decisions asked")
        width = max([len(g.role) for g in report.grants] + [4])
        for g in report.grants:
            exc = " (grants: exception)" if any(
                e.role == g.role and g.granted in e.may_grant and e.why.strip() for e in pack.grants
            ) else ""
            lines.append(f"  {g.role:<{width}}  may grant {g.granted:<16} via {g.action} [{', '.join(g.scopes)}]{exc}")
        if report.ok:
            lines.append(f"  PASS {pack.id}")
        else:
            lines.append(f"  FAIL {pack.id}: {len(report.violations)} counterexample(s)")
            for v in report.violations:
                lines.append("  - " + v.describe(pack))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
