"""The escalation verifier: nobody can hand out rights they do not hold, in any situation.

The rule is Kubernetes RBAC's ("you cannot grant what you do not have"), applied to every pack:

1. **Delegation.** Whoever may grant role T, through any grant-carrying action, in any situation
   and feature state, must hold every permission of T in every situation and feature state where
   T holds it — unless the pack's ``grants:`` lists T under ``may_grant`` for that role, with the
   seed sentence that says so (``why``).
2. **Rank.** The seeds' "never a role equal to or higher than yours": a role grants only roles of
   strictly lower rank, and acts (change, remove, transfer) only on members of strictly lower rank,
   unless ``grants:`` says otherwise (``may_grant`` / ``may_manage``, again only with ``why``).

Grant-carrying actions are the pack's ``assign_action``, the actions its ``operations:`` maps
``invite``, ``change_role``, ``transfer_ownership`` and ``grant_platform_role`` to, and every action
with a ``rank``-scoped rule; ``remove`` is checked as managing.

**Enumeration, not sampling** (``docs/verifier.md`` has the argument). For each action the
matcher is folded with the action's p-rules (:meth:`MatcherPlan.atoms`): what is left is exactly
what Casbin reads for that action — resource fields compared with the subject or a constant,
``g2``/``g3`` links of the subject or the target to the named group or team, the rank functions
on the target's role and the role granted, and ``g5`` (the features its rules name). The verifier
gives every field it reads every value class that can change an atom (the subject, someone else,
nobody; a member of each role in and out of the unit; a unit the subject manages, belongs to,
both, neither; each role granted), takes the product, and asks the real engine in every feature
state of those features (2^k, k = features of that action's rules: decisions of one action read
only its own rules, so the states of other actions' features cannot change them), in the pack's
workspace and, for packs with platform roles, in its platform domain. An atom it cannot classify,
or too many states, is refused as a problem rather than guessed. Counterexamples name the feature
state and the facts.

Pure: no Flask, no ORM.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .conditions import PREFIX as CONDITION_PREFIX
from .conditions import VERIFY_KEY, Props
from .enforcer import rank_functions
from .engine import PolicyEngine, RuleChange
from .memo import MatcherPlan, UnsupportedMatcherError
from .packs import P_ACT, P_FIELDS, P_SCOPE, Pack, PackSet, Rule, format_rule
from .types import RESOURCE_FIELDS, AccessRequest, Decision, ResourceFacts

WS = "ws:verify"
GRANT_OPERATIONS = ("invite", "change_role", "transfer_ownership", "grant_platform_role")
MANAGE_OPERATIONS = ("remove",)
MISSING_LISTED = 5
FEATURES_LIMIT = 12  # features read by one action: 4,096 states; more is refused, not sampled
COMBOS_LIMIT = 400_000  # situations × feature states of one action; more is refused
KIND_ORDER = {"undecidable": 0, "grant_rank": 1, "manage_rank": 2, "delegation": 3}  # as listed

SUB = "$sub"  # the subject itself, in a situation shared by every probe subject
OTHER = "user:verify-other"  # a person with no relation to anyone (assignee / owner elsewhere)
# How each resource field is enumerated (``types.RESOURCE_FIELDS``): ``user`` compared with the
# subject, ``target`` a person whose current role the core resolves, ``unit`` a group or team,
# ``role`` a role granted, ``derived`` filled by the core. A field read otherwise is refused.
FIELD_KINDS = {
    "assignee": "user",
    "owner": "user",
    "member": "target",
    "grantee": "target",
    "role": "derived",
    "group": "unit",
    "team": "unit",
    "new_role": "role",
}
UNIT_FIELDS = tuple(f for f, k in FIELD_KINDS.items() if k == "unit")
# The subject's relation to the unit a request names (probe subjects manage ``mine`` and ``both``
# and belong to ``joined`` and ``both``).
UNIT_NAMES = ("mine", "joined", "both", "other")
UNIT_WORDS = {
    "mine": "one they manage",
    "joined": "one they belong to",
    "both": "one they manage and belong to",
    "other": "one they neither manage nor belong to",
}


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

    kind: str  # delegation | grant_rank | manage_rank | undecidable
    role: str
    action: str
    other: str  # the role granted, or the role of the member acted on
    missing: tuple[tuple[str, str, str], ...] = ()  # (action, situation, rule line giving it to `other`)
    missing_total: int = 0
    rules: tuple[str, ...] = ()  # the rule lines that let `role` do it
    when: str = ""  # the feature state and facts of the first situation found

    def describe(self, pack: Pack) -> str:
        """One line, as validate and ``flask policy verify`` print it."""
        if self.kind == "undecidable":
            return f"{pack.id}: verifier cannot decide {self.action}: {self.when}"
        r = pack.role(self.role)
        o = pack.role(self.other)
        rank = r.rank if r else "?"
        via = f" (rule: {'; '.join(self.rules)})" if self.rules else ""
        when = f" [{self.when}]" if self.when else ""
        if self.kind == "grant_rank":
            return (
                f"{pack.id}: escalation: {self.role} (rank {rank}) could {self.action} granting {self.other} "
                f"(rank {o.rank if o else '?'}: equal or higher rank){when}{via}"
            )
        if self.kind == "manage_rank":
            return (
                f"{pack.id}: escalation: {self.role} (rank {rank}) could {self.action} on members holding "
                f"{self.other} (rank {o.rank if o else '?'}: equal or higher rank){when}{via}"
            )
        gains = "; ".join(f"{a} [{s}] [{line}]" for a, s, line in self.missing)
        extra = self.missing_total - len(self.missing)
        more = f" and {extra} more action{'s' if extra > 1 else ''}" if extra > 0 else ""
        return (
            f"{pack.id}: delegation: {self.role} may grant {self.other} through {self.action}{when}{via}, "
            f"but {self.other} would gain what {self.role} lacks: {gains}{more}"
        )


@dataclass
class Report:
    """The verifier's answer for one pack: the delegation table and the violations."""

    pack: str
    grants: list[Grant] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    checks: int = 0
    situations: int = 0  # (situation, feature state) pairs enumerated, summed over actions

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


# -- what the matcher reads ---------------------------------------------------------------------------
@dataclass
class Reads:
    """What Casbin reads to decide one action: fields (with how they are used), features, refusals."""

    uses: dict[str, set[str]] = field(default_factory=dict)
    features: set[str] = field(default_factory=set)
    conditions: set[str] = field(default_factory=set)  # ids of ``when:<id>`` rules: each decided both ways
    problems: list[str] = field(default_factory=list)


def _obj_field(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "r_obj":
        return node.attr
    return None


def _is_name(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _classify(atom: ast.expr, reads: Reads) -> None:
    """Record what one atom reads; a shape the enumeration does not cover becomes a problem."""
    use = reads.uses
    if isinstance(atom, ast.Compare) and len(atom.ops) == 1 and isinstance(atom.ops[0], (ast.Eq, ast.NotEq)):
        left, right = atom.left, atom.comparators[0]
        for a, b in ((left, right), (right, left)):
            name = _obj_field(a)
            if name is None:
                continue
            if _is_name(b, "r_sub"):
                use.setdefault(name, set()).add("sub")
                return
            if isinstance(b, ast.Constant) and isinstance(b.value, str):
                use.setdefault(name, set()).add("const:" + b.value)
                return
    elif isinstance(atom, ast.Call) and isinstance(atom.func, ast.Name):
        fn, args = atom.func.id, atom.args
        if fn == "g5" and len(args) == 2 and _is_name(args[0], "r_dom") and isinstance(args[1], ast.Constant):
            reads.features.add(str(args[1].value))
            return
        if (
            fn == "when"
            and len(args) == 2
            and isinstance(args[0], ast.Constant)
            and str(args[0].value).startswith(CONDITION_PREFIX)
            and _is_name(args[1], "r_obj")
        ):
            # An attribute condition: true and false are both enumerated (whatever properties a
            # request carries, the condition can only be one of them), so a condition never widens.
            reads.conditions.add(str(args[0].value)[len(CONDITION_PREFIX) :])
            return
        if fn in ("g2", "g3") and len(args) == 3 and _is_name(args[2], "r_dom"):
            unit = _obj_field(args[1])
            who = _obj_field(args[0])
            if unit in UNIT_FIELDS and _is_name(args[0], "r_sub"):
                use.setdefault(unit, set()).add(fn + ":sub")
                return
            if unit in UNIT_FIELDS and fn == "g3" and who is not None and FIELD_KINDS.get(who) == "target":
                use.setdefault(unit, set()).add("in:" + who)
                use.setdefault(who, set()).add("in:" + unit)
                return
        elif not fn.startswith("g") and all(
            isinstance(a, ast.Constant) or FIELD_KINDS.get(_obj_field(a) or "") in ("role", "derived") for a in args
        ):
            # rankAbove(<rule role>, r.obj.role), mayGrant(<rule role>, r.obj.new_role): pure in their arguments.
            for a in args:
                name = _obj_field(a)
                if name:
                    use.setdefault(name, set()).add("arg")
            return
    reads.problems.append(f"the matcher reads {ast.unparse(atom)}, which the verifier does not enumerate")


def reads_of(plan: MatcherPlan, act: str, rows: Sequence[Sequence[str]]) -> Reads:
    """What the matcher reads for ``act`` with the pack's rules of that action."""
    reads = Reads()
    try:
        atoms = plan.atoms(act, rows)
    except UnsupportedMatcherError as exc:
        reads.problems.append(f"the matcher cannot be folded ({exc})")
        return reads
    for atom in atoms:
        _classify(atom, reads)
    if "role" in reads.uses:  # the core fills the target's role from the person it names
        for name in RESOURCE_FIELDS:
            if FIELD_KINDS.get(name) == "target":
                reads.uses.setdefault(name, set())
    for name, uses in reads.uses.items():
        if name not in RESOURCE_FIELDS:
            reads.problems.append(f"the matcher reads r.obj.{name}, which is not a resource field")
        elif name not in FIELD_KINDS and not all(u == "sub" or u.startswith("const:") for u in uses):
            reads.problems.append(f"the matcher reads r.obj.{name} in a way the verifier does not enumerate")
    if len(reads.features) > FEATURES_LIMIT:
        reads.problems.append(
            f"its rules name {len(reads.features)} features (2^{len(reads.features)} states; limit {FEATURES_LIMIT})"
        )
    return reads


# -- the probe world ----------------------------------------------------------------------------------
def _subject(role_id: str) -> str:
    return f"user:verify-{role_id}"


def _target(role_id: str, member_of: Sequence[bool]) -> str:
    """A person holding role_id ("" for a non-member), in the units flagged (UNIT_FIELDS order)."""
    bits = "".join("1" if b else "0" for b in member_of)
    return f"user:verify-target-{role_id or 'nobody'}-{bits}"


def _variants() -> list[tuple[bool, ...]]:
    return list(itertools.product((False, True), repeat=len(UNIT_FIELDS)))


def _platform_target(role_id: str) -> str:
    return f"user:verify-platform-{role_id}"


def probe_world(packset: PackSet, pack: Pack) -> PolicyEngine:
    """An engine with one probe subject per role and probe targets of every role and unit membership.

    Every subject has the same relations: it manages ``<unit>:mine`` and ``<unit>:both`` and
    belongs to ``<unit>:joined`` and ``<unit>:both``; targets hold one workspace role (or none)
    and belong to every unit of a kind or to none; platform targets hold one platform role.
    """
    facts: list[Rule] = [("g4", WS, pack.key)]
    for role in pack.roles:
        user = _subject(role.id)
        facts.append(("g", user, pack.role_key(role.id), "*" if role.platform else WS))
        for unit in UNIT_FIELDS:
            facts += [("g2", user, f"{unit}:mine", WS), ("g2", user, f"{unit}:both", WS)]
            facts += [("g3", user, f"{unit}:joined", WS), ("g3", user, f"{unit}:both", WS)]
    for role_id in [r.id for r in pack.workspace_roles] + [""]:
        for member_of in _variants():
            user = _target(role_id, member_of)
            if role_id:
                facts.append(("g", user, pack.role_key(role_id), WS))
            for unit, inside in zip(UNIT_FIELDS, member_of):
                if inside:
                    facts += [("g3", user, f"{unit}:{name}", WS) for name in UNIT_NAMES]
    for role in pack.platform_roles:
        facts.append(("g", _platform_target(role.id), pack.role_key(role.id), "*"))
    return PolicyEngine(packset.flagged(), facts)


Facts = tuple[tuple[str, str], ...]


def every_role_read(reads: Reads) -> bool:
    """True if the target's role is read beyond "is there one" (rank functions): then each role counts."""
    return any(u != "const:" for u in reads.uses.get("role", ()))


def _representatives(pack: Pack, every_role: bool) -> tuple[list[str], list[str]]:
    """Workspace and platform roles targets are drawn from: all, or the first (roles not read)."""
    ws = [r.id for r in pack.workspace_roles]
    platform = [r.id for r in pack.platform_roles]
    return (ws, platform) if every_role else (ws[:1], platform[:1])


def _domain(name: str, uses: set[str], pack: Pack, platform: bool, every_role: bool = True) -> list[str]:
    """Every value class of one field that can change an atom reading it."""
    consts = sorted({u[6:] for u in uses if u.startswith("const:")} - {""})
    # Compared with "": "" and the other values no longer fall into one class, so one more value.
    empty_read = "const:" in uses
    kind = FIELD_KINDS.get(name, "user" if "sub" in uses else "const")
    if kind == "user":
        return ["", SUB, *([OTHER] if empty_read else []), *consts]
    if kind == "target":
        inside = {u[3:] for u in uses if u.startswith("in:")}
        variants = [v for v in _variants() if all(not b or u in inside for u, b in zip(UNIT_FIELDS, v))]
        ws_roles, platform_roles = _representatives(pack, every_role)
        if platform:
            people = [_target("", variants[0])] + [_platform_target(r) for r in platform_roles]
        else:
            people = [_target(r, v) for r in [*ws_roles, ""] for v in variants]
        return ["", SUB, *people, *consts]
    if kind == "unit":
        names = ["other"] if platform else list(UNIT_NAMES)
        return [*([""] if empty_read else []), *(f"{name}:{n}" for n in names), *consts]
    if kind == "role":
        return ["", *(pack.role_key(r.id) for r in pack.roles), *consts]
    return ["", *consts, *(["verify"] if empty_read else [])]  # compared with constants: each, "" and one other


def situations(reads: Reads, pack: Pack, platform: bool, every_role: bool = True) -> list[Facts]:
    """The product of every read field's values (unread fields stay empty), simplest first.

    ``every_role``: targets of every role (the rank functions read it, or the action manages
    members); otherwise one member stands for all, the matcher reading only that they are one.
    """
    names = [n for n in RESOURCE_FIELDS if n in reads.uses and FIELD_KINDS.get(n) != "derived"]
    domains = [_domain(n, reads.uses[n], pack, platform, every_role) for n in names]
    for cid in sorted(reads.conditions):  # each condition fails ("") or holds
        names.append(CONDITION_PREFIX + cid)
        domains.append(["", "holds"])
    out = [tuple((n, v) for n, v in zip(names, values) if v) for values in itertools.product(*domains)]
    out.sort(key=len)  # stable: fewer facts first
    return out


def feature_states(features: Iterable[str]) -> list[tuple[str, ...]]:
    """Every subset of features switched off, fewest first."""
    names = sorted(features)
    return [s for k in range(len(names) + 1) for s in itertools.combinations(names, k)]


def _person(value: str, pack: Pack) -> str:
    if value == SUB:
        return "themselves"
    if value == OTHER:
        return "someone else"
    if value.startswith("user:verify-platform-"):
        return f"a holder of {value.removeprefix('user:verify-platform-')}"
    if value.startswith("user:verify-target-"):
        role_id, bits = value.removeprefix("user:verify-target-").rsplit("-", 1)
        who = "a non-member" if role_id == "nobody" else f"a member holding {role_id}"
        units = [u for u, b in zip(UNIT_FIELDS, bits) if b == "1"]
        return who + (f" (in the {' and '.join(units)})" if units else "")
    return repr(value)


def describe_situation(domain: str, off: Sequence[str], facts: Facts, pack: Pack) -> str:
    """The feature state and the facts of a situation, as counterexamples print them."""
    parts = [f"features off: {', '.join(off)}" if off else "every feature on"]
    if domain != WS:
        parts.append(f"in {domain}")
    for name, value in facts:
        kind = FIELD_KINDS.get(name)
        if name.startswith(CONDITION_PREFIX):
            parts.append(f"condition {name[len(CONDITION_PREFIX) :]} holds")
        elif kind in ("user", "target"):
            parts.append(f"{name}: {_person(value, pack)}")
        elif kind == "unit":
            unit = value.split(":", 1)[1] if ":" in value else value
            parts.append(f"{name}: {UNIT_WORDS.get(unit, repr(value))}")
        elif kind == "role":
            parts.append(f"{name}: {value.rsplit(':', 1)[-1]}")
        else:
            parts.append(f"{name}: {value!r}")
    if not facts:
        parts.append("no resource facts")
    return "; ".join(parts)


# -- the verifier ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Combo:
    """One enumerated question: a domain, the features off, the facts (``$sub`` for the subject)."""

    domain: str
    off: tuple[str, ...]
    facts: Facts

    def obj(self, subject: str) -> ResourceFacts:
        """The resource facts for one subject (conditions that hold go to the probe's context)."""
        fields = {k: subject if v == SUB else v for k, v in self.facts if not k.startswith(CONDITION_PREFIX)}
        holding = [k[len(CONDITION_PREFIX) :] for k, _ in self.facts if k.startswith(CONDITION_PREFIX)]
        props = Props(context={VERIFY_KEY: holding}) if holding else Props()
        return ResourceFacts(**fields, props=props)


class _Prober:
    """The probe engine with one feature state at a time, asking and counting."""

    def __init__(self, packset: PackSet, pack: Pack, report: Report) -> None:
        self.engine = probe_world(packset, pack)
        self.report = report
        self.off: tuple[str, ...] = ()
        model = self.engine.enforcer.model
        self.plan = MatcherPlan(
            model["m"]["m"].value,
            [t.removeprefix("r_") for t in model["r"]["r"].tokens],
            [t.removeprefix("p_") for t in model["p"]["p"].tokens],
            rank_functions(packset.packs),  # their ``fold`` hooks: when(<not a condition>, …) is false
            [],
        )

    def switch(self, off: tuple[str, ...]) -> None:
        """Switch exactly ``off`` off in the probe workspace."""
        if off == self.off:
            return
        changes = [RuleChange("remove", ("g5", WS, f)) for f in self.off if f not in off]
        changes += [RuleChange("add", ("g5", WS, f)) for f in off if f not in self.off]
        self.engine.apply(changes, self.engine.revision + 1)
        self.off = off

    def ask(self, subject: str, combo: Combo, action: str, explain: bool = False) -> Decision:
        """Decide one request (explain: with the matched rule)."""
        self.report.checks += 1
        self.switch(combo.off)
        req = AccessRequest(subject, combo.domain, combo.obj(subject), action)
        return self.engine.explain(req) if explain else self.engine.check(req)

    def target_role(self, subject: str, combo: Combo) -> str:
        """The role key the core resolves for the person the request acts on ("" for none)."""
        req = AccessRequest(subject, combo.domain, combo.obj(subject), "")
        return self.engine.resolve(req).obj.role


def role_gated(matcher: str) -> bool:
    """True if ``g(r.sub, p.sub, r.dom)`` is a top-level conjunct: a rule applies only to holders of its role.

    Then a role that reaches no rule of an action is denied it in every situation, unasked.
    """
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(matcher):
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and matcher.startswith("&&", i):
            parts.append(matcher[start:i])
            start = i + 2
    parts.append(matcher[start:])
    return any(re.fullmatch(r"\s*g\(r[._]sub,\s*p[._]sub,\s*r[._]dom\)\s*", p) for p in parts)


def _line(decision: Decision) -> str:
    return format_rule(decision.rule) if decision.rule else ""


def _lowest(bits: int) -> int:
    return (bits & -bits).bit_length() - 1


def verify_pack(packset: PackSet, pack_id: str) -> Report:
    """The delegation table and every violation of one pack of a policy."""
    pack = packset.packs[pack_id]
    report = Report(pack.id)
    prober = _Prober(packset, pack, report)
    grants = grant_actions(pack)
    manages = manage_actions(pack)
    rank = {r.id: r.rank for r in pack.roles}
    role_of = {pack.role_key(r.id): r.id for r in pack.roles}
    exceptions_grant: dict[str, set[str]] = {}
    exceptions_manage: dict[str, set[str]] = {}
    for g in pack.grants:
        if g.why.strip():  # an exception counts only with the seed sentence that makes it
            exceptions_grant.setdefault(g.role, set()).update(g.may_grant)
            exceptions_manage.setdefault(g.role, set()).update(g.may_manage)
    rows: dict[str, list[tuple[str, ...]]] = {}
    for rule in pack.rules:
        if rule[0] == "p" and len(rule) == 1 + len(P_FIELDS):
            rows.setdefault(rule[P_ACT], []).append(tuple(rule[1:]))
    domains = [WS] + ([f"platform:{pack.id}"] if pack.platform_roles else [])
    gated = role_gated(prober.plan.matcher_text)
    reach = {r.id: {pack.role_key(r.id)} | prober.engine.g.reachable(pack.role_key(r.id), WS) for r in pack.roles}

    combos: dict[str, list[Combo]] = {}
    holds: dict[tuple[str, str], int] = {}  # (role, action) -> bit i set: allowed in combos[action][i]
    granted: dict[tuple[str, str, str], tuple[int, set[str], set[str]]] = {}  # first combo, scopes, lines
    managed: dict[tuple[str, str, str], tuple[int, set[str]]] = {}
    every: dict[str, bool] = {}  # action -> targets of every role enumerated
    for act_def in pack.actions:
        act = act_def.id
        reads = reads_of(prober.plan, act, rows.get(act, []))
        if reads.problems:
            report.violations.append(Violation("undecidable", "", act, "", when="; ".join(reads.problems)))
            continue
        states = feature_states(reads.features)
        every[act] = every_role_read(reads) or act in manages
        todo = [
            Combo(dom, off, facts)
            for off in states
            for dom in domains
            if dom == WS or not off  # g5 links only workspaces: the platform domain has every feature on
            for facts in situations(reads, pack, dom != WS, every[act])
        ]
        if len(todo) > COMBOS_LIMIT:
            report.violations.append(
                Violation("undecidable", "", act, "", when=f"{len(todo)} situations (limit {COMBOS_LIMIT})")
            )
            continue
        combos[act] = todo
        report.situations += len(todo)
        for role in pack.roles:
            if gated and not any(row[1] in reach[role.id] for row in rows.get(act, ())):
                holds[(role.id, act)] = 0  # no rule of this action applies to the role
                continue
            subject = _subject(role.id)
            flags = bytearray((len(todo) + 7) // 8)
            for i, combo in enumerate(todo):
                if not prober.ask(subject, combo, act).allowed:
                    continue
                flags[i >> 3] |= 1 << (i & 7)
                if act in manages:
                    target = role_of.get(prober.target_role(subject, combo), "")
                    if target and (role.id, act, target) not in managed:
                        managed[(role.id, act, target)] = (i, set())
                new_role = role_of.get(dict(combo.facts).get("new_role", ""), "")
                if act in grants and new_role:
                    d = prober.ask(subject, combo, act, explain=True)
                    first, scopes, lines = granted.setdefault((role.id, act, new_role), (i, set(), set()))
                    if d.rule and len(d.rule) > P_SCOPE:
                        scopes.add(d.rule[P_SCOPE])
                    lines.add(_line(d))
            holds[(role.id, act)] = int.from_bytes(flags, "little")

    index = {act: {c: i for i, c in enumerate(todo)} for act, todo in combos.items()}
    platform_ids = {r.id for r in pack.platform_roles}

    def seen_by_granter(other: str, act: str) -> tuple[int, dict[int, int]]:
        """``other``'s holdings with "on themselves" read as "on a member holding other" (same units).

        What a grantee may do to themselves, the granter must be able to do to the grantee; the
        granter's own "on themselves" is about another person and is not compared.
        """
        bits = holds[(other, act)]
        origin: dict[int, int] = {}
        for i, c in enumerate(combos[act]):
            if not (bits >> i) & 1 or not any(v == SUB and FIELD_KINDS.get(k) == "target" for k, v in c.facts):
                continue
            units = dict(c.facts)
            member_of = [units.get(u, "").split(":", 1)[-1] in ("joined", "both") for u in UNIT_FIELDS]
            j = None
            ws_roles, platform_roles = _representatives(pack, every[act])
            for keep in itertools.product((True, False), repeat=len(UNIT_FIELDS)):
                flags = [b and k for b, k in zip(member_of, keep)]
                if c.domain != WS:
                    person = _platform_target(platform_roles[0] if not every[act] else other)
                    if other not in platform_ids:
                        person = _target("", flags)
                elif other in platform_ids:
                    person = _target("", flags)
                else:
                    person = _target(other if every[act] else ws_roles[0], flags)
                facts = tuple((k, person if v == SUB and FIELD_KINDS.get(k) == "target" else v) for k, v in c.facts)
                j = index[act].get(Combo(c.domain, c.off, facts))
                if j is not None:
                    break
            if j is not None:
                bits = (bits & ~(1 << i)) | (1 << j)
                origin.setdefault(j, i)
        return bits, origin

    def when(act: str, i: int) -> str:
        c = combos[act][i]
        return describe_situation(c.domain, c.off, c.facts, pack)

    def rule_of(role_id: str, act: str, i: int) -> str:
        return _line(prober.ask(_subject(role_id), combos[act][i], act, explain=True))

    for (role_id, act, target), (i, _) in sorted(managed.items()):
        if rank[target] >= rank[role_id] and target not in exceptions_manage.get(role_id, ()):
            line = rule_of(role_id, act, i)
            report.violations.append(
                Violation("manage_rank", role_id, act, target, rules=(line,) if line else (), when=when(act, i))
            )
    missing_of: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for (role_id, act, other), (i, scopes, lines) in sorted(granted.items()):
        report.grants.append(Grant(role_id, act, other, tuple(sorted(scopes)), tuple(sorted(lines))))
        if other in exceptions_grant.get(role_id, ()):
            continue
        rules = tuple(sorted(x for x in lines if x))
        if rank[other] >= rank[role_id]:
            report.violations.append(Violation("grant_rank", role_id, act, other, rules=rules, when=when(act, i)))
        missing = missing_of.get((role_id, other))
        if missing is None:
            missing = []
            for b in sorted(combos):
                theirs, origin = seen_by_granter(other, b)
                gained = theirs & ~holds[(role_id, b)]
                if gained:
                    j = _lowest(gained)
                    missing.append((b, "", str(origin.get(j, j))))
            missing_of[(role_id, other)] = missing
        if missing:
            shown = tuple((b, when(b, int(j)), rule_of(other, b, int(j))) for b, _, j in missing[:MISSING_LISTED])
            report.violations.append(
                Violation("delegation", role_id, act, other, shown, len(missing), rules, when=when(act, i))
            )
    report.violations.sort(key=lambda v: KIND_ORDER.get(v.kind, len(KIND_ORDER)))
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
        lines.append(
            f"== {pack.id}: {len(report.grants)} delegations, {report.checks} decisions asked "
            f"over {report.situations} situations x feature states"
        )
        width = max([len(g.role) for g in report.grants] + [4])
        for g in report.grants:
            exc = (
                " (grants: exception)"
                if any(e.role == g.role and g.granted in e.may_grant and e.why.strip() for e in pack.grants)
                else ""
            )
            lines.append(f"  {g.role:<{width}}  may grant {g.granted:<16} via {g.action} [{', '.join(g.scopes)}]{exc}")
        if report.ok:
            lines.append(f"  PASS {pack.id}")
        else:
            lines.append(f"  FAIL {pack.id}: {len(report.violations)} counterexample(s)")
            for v in report.violations:
                lines.append("  - " + v.describe(pack))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
