"""The decision core: ``check``, ``explain``, ``batch`` over one Casbin enforcer.

Casbin decides every request. What this module adds around it:

* validation of identifiers before anything reaches Casbin (fail closed, ``invalid_request``);
* fact resolution: the target member's current role comes from the policy, never the caller;
* a decision memo keyed by everything the matcher reads, abstracted from the user: the pack,
  the subject's direct roles, the workspace's switched-off features, the action and the
  truth of each scope test. Two requests with equal keys get the same answer from Casbin by
  construction, so the memo returns Casbin's answer without asking again. A role or group
  change changes the key, not the memo; a change to p-rules or inheritance clears it.
  ``tests/test_differential.py`` checks this against stock pycasbin on random requests;
* refusal of every rule the writers refuse (``shapes.rule_problems``, raising ``InvalidRuleError``
  from ``apply`` and at load): the memo key and the short-cuts are exact for the rule shapes the
  writers write, and the engine holds no others, so it never answers differently from Casbin
  (``shapes`` says why refusing beats a wider memo key);
* stable reason codes for denials, and the role path for ``explain``.

Pure: no Flask, no HTTP, no ORM session.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .conditions import PREFIX as CONDITION_PREFIX
from .conditions import Condition, Props
from .enforcer import IndexedEnforcer, rank_functions
from .identifiers import (
    PLATFORM_DOMAIN,
    is_prefixed,
    pack_key,
    split_role,
    valid_action,
    valid_local,
    valid_pack,
)
from .memo import MatcherPlan
from .packs import Pack, PackSet, Rule, is_pack_rule, rule_pack
from .shapes import FactCheck, InvalidRuleError, rule_problems
from .types import ANY_TARGET, NEWCOMER, RESOURCE_FIELDS, AccessRequest, Decision, Reason, ResourceFacts

log = logging.getLogger("authz")

MEMO_LIMIT = 200_000
PACKS_KNOWN_LIMIT = 200_000
# Engine generations: one number per state an engine decides from, unique across engines (a new
# number after every change, taken when the change is complete), so a cache of answers stamped with
# the generation read before deciding can never serve an answer of another state.
_GENERATIONS = itertools.count(1)
VALID_CACHE_LIMIT = 100_000
_SCOPE_REASON = {
    "assignee": Reason.NOT_ASSIGNEE,
    "owner": Reason.NOT_OWNER,
    "member_of": Reason.OUTSIDE_GROUP,
    "group": Reason.OUTSIDE_GROUP,
    "into_group": Reason.OUTSIDE_GROUP,
    "team": Reason.OUTSIDE_TEAM,
    "rank": Reason.RANK_LIMIT,
}
_USER_FIELDS = ("assignee", "owner", "member")


@dataclass(frozen=True, slots=True)
class RuleChange:
    """One rule added (``op='add'``) or removed (``op='remove'``)."""

    op: str
    rule: Rule


@dataclass(frozen=True, slots=True)
class _PackDerived:
    """What the engine derives from a pack set alone (never from facts)."""

    pack_of_key: dict[str, Pack]
    actions: dict[str, frozenset[str]]
    prefix: dict[str, str]
    rank_fns: dict[str, Any]
    conditions: dict[str, Condition]

    @classmethod
    def of(cls, packset: PackSet) -> _PackDerived:
        packs = packset.packs.values()
        return cls(
            pack_of_key={p.key: p for p in packs},
            actions={p.id: frozenset(a.id for a in p.actions) for p in packs},
            prefix={p.id: f"role:{p.id}:" for p in packs},
            rank_fns=rank_functions(packset.packs),
            conditions={c.id: c for p in packs for c in p.conditions},
        )


def _valid_domain(dom: object) -> bool:
    return is_prefixed(dom, "ws") or (
        isinstance(dom, str) and dom.startswith("platform:") and valid_pack(dom[len("platform:") :])
    )


def validate_request(req: AccessRequest) -> str | None:
    """A short description of what is wrong with a request, or None."""
    if not is_prefixed(req.subject, "user"):
        return "subject must be user:<id>"
    if not _valid_domain(req.domain):
        return "workspace must be ws:<slug>"
    if not valid_action(req.action):
        return "action must be snake_case"
    obj = req.obj
    if not isinstance(obj, ResourceFacts):
        return "resource must be ResourceFacts"
    for name in RESOURCE_FIELDS:
        value = getattr(obj, name)
        if not isinstance(value, str):
            return f"resource.{name} must be a string"
        if value == "":
            continue
        if name in _USER_FIELDS and not is_prefixed(value, "user"):
            return f"resource.{name} must be user:<id>"
        if name == "group" and not is_prefixed(value, "group"):
            return "resource.group must be group:<name>"
        if name == "team" and not is_prefixed(value, "team"):
            return "resource.team must be team:<name>"
        if name in ("role", "new_role"):
            try:
                split_role(value)
            except ValueError:
                return f"resource.{name} must be role:<pack>:<role>"
        if name in ("type", "id") and not valid_local(value):
            return f"resource.{name} is not a valid identifier"
        if name == "grantee" and value != NEWCOMER and not is_prefixed(value, "user"):
            return f"resource.grantee must be user:<id> or {NEWCOMER!r}"
        if name == "target" and value != ANY_TARGET:
            return f"resource.target must be {ANY_TARGET!r} or empty"
    return None


class _ValidCache:
    """Identifiers already validated, per kind: a dict probe instead of a regex per call.

    Only valid values are remembered, and the cache is bounded, so bad input cannot grow it.
    """

    __slots__ = ("user", "domain", "action", "local", "group", "team", "role")

    def __init__(self) -> None:
        self.user: set[str] = set()
        self.domain: set[str] = set()
        self.action: set[str] = set()
        self.local: set[str] = set()
        self.group: set[str] = set()
        self.team: set[str] = set()
        self.role: set[str] = set()

    def remember(self, kind: set[str], value: str) -> None:
        if len(kind) >= VALID_CACHE_LIMIT:
            kind.clear()
        kind.add(value)


def _role_ok(value: str) -> bool:
    try:
        split_role(value)
    except ValueError:
        return False
    return True


def _fast_valid(req: AccessRequest, cache: _ValidCache) -> bool:
    """True if every identifier of the request is valid (what validate_request accepts)."""
    if type(req) is not AccessRequest:
        return validate_request(req) is None
    sub = req.subject
    if sub not in cache.user:
        if type(sub) is not str or not is_prefixed(sub, "user"):
            return False
        cache.remember(cache.user, sub)
    dom = req.domain
    if dom not in cache.domain:
        if type(dom) is not str or not _valid_domain(dom):
            return False
        cache.remember(cache.domain, dom)
    act = req.action
    if act not in cache.action:
        if type(act) is not str or not valid_action(act):
            return False
        cache.remember(cache.action, act)
    obj = req.obj
    if type(obj) is not ResourceFacts:
        return validate_request(req) is None
    users = cache.user
    for value in (obj.assignee, obj.owner, obj.member):
        if value and value not in users:
            if type(value) is not str or not is_prefixed(value, "user"):
                return False
            cache.remember(users, value)
    value = obj.group
    if value and value not in cache.group:
        if type(value) is not str or not is_prefixed(value, "group"):
            return False
        cache.remember(cache.group, value)
    value = obj.team
    if value and value not in cache.team:
        if type(value) is not str or not is_prefixed(value, "team"):
            return False
        cache.remember(cache.team, value)
    for value in (obj.role, obj.new_role):
        if value and value not in cache.role:
            if type(value) is not str or not _role_ok(value):
                return False
            cache.remember(cache.role, value)
    for value in (obj.type, obj.id):
        if value and value not in cache.local:
            if type(value) is not str or not valid_local(value):
                return False
            cache.remember(cache.local, value)
    value = obj.grantee
    if value and value != NEWCOMER and value not in users:
        if type(value) is not str or not is_prefixed(value, "user"):
            return False
        cache.remember(users, value)
    if obj.target and obj.target != ANY_TARGET:
        return False
    if type(obj.props) is not Props:
        return False
    # Falsy non-strings (0, None, b"") slipped past the probes above: reject them.
    for value in (
        obj.assignee,
        obj.owner,
        obj.member,
        obj.group,
        obj.team,
        obj.role,
        obj.new_role,
        obj.type,
        obj.id,
        obj.grantee,
        obj.target,
    ):
        if type(value) is not str:
            return False
    return True


_NONE: tuple[str, ...] = ()
_INVALID_REQUEST = Reason.INVALID_REQUEST.value
_UNKNOWN_WORKSPACE = Reason.UNKNOWN_WORKSPACE.value
_UNKNOWN_ACTION = Reason.UNKNOWN_ACTION.value
_NO_ROLE = Reason.NO_ROLE.value
_GRANTED = Reason.GRANTED.value


def _with_role(obj: ResourceFacts, role: str) -> ResourceFacts:
    return ResourceFacts(
        obj.type,
        obj.id,
        obj.assignee,
        obj.owner,
        obj.member,
        obj.group,
        obj.team,
        role,
        obj.new_role,
        obj.grantee,
        obj.target,
        obj.props,
    )


class PolicyEngine:
    """A loaded policy (packs + facts) and the decisions it gives."""

    def __init__(self, packset: PackSet, facts: Iterable[Rule] = (), revision: int = 0) -> None:
        self.packset = packset
        self.revision = revision
        self.generation = next(_GENERATIONS)  # the state decided from: see _GENERATIONS
        self._packs_known: dict[str, Pack | None] = {}  # domain → pack at this generation (pack_of)
        self._lock = threading.RLock()
        self.enforcer = IndexedEnforcer(packset.model_text, packset.packs)
        self._p_rules: list[Rule] = []
        self._memo: dict[tuple[Any, ...], list[Any]] = {}
        self._plan: MatcherPlan | None = None
        derived = _PackDerived.of(packset)
        self._pack_of_key = derived.pack_of_key
        self._actions = derived.actions
        self._prefix = derived.prefix
        self._rank_fns = derived.rank_fns
        self._conditions = derived.conditions
        self._valid = _ValidCache()
        self._fixed_decisions: dict[str, Decision] = {}
        self._rms = {ptype: self.enforcer.rm(ptype) for ptype in ("g", "g2", "g3", "g4", "g5")}
        self.ready = False
        for rule in packset.all_rules():
            self._apply_one(RuleChange("add", rule), rebuild=False)
        self.load_facts(facts)
        for rm in self._rms.values():
            rm.seal()
        self._rebuild_p()
        for pack in packset.packs.values():
            self.g4.add_link(f"platform:{pack.id}", pack.key)
        self.ready = True
        self._moved()

    def _moved(self) -> None:
        """The last step of every change: a new generation, and what was remembered per generation
        forgotten (replaced, not cleared: a reader still holding the old table only writes there)."""
        self._packs_known = {}
        self.generation = next(_GENERATIONS)

    def load_facts(self, facts: Iterable[Rule]) -> int:
        """Bulk-add facts (memberships, scopes, workspaces, features) while loading; returns the count.

        Rows may carry an empty third value for two-field types (``g4``/``g5`` as read by COPY).
        p-rules and role inheritance go through the normal path (they change the memo plan).
        Raises InvalidRuleError on the first rule the writers would refuse (see ``shapes``).
        """
        links = {ptype: rm.link for ptype, rm in self._rms.items()}
        g_link = links["g"]
        check = FactCheck().check
        n = 0
        structural = False
        g4 = self._rms["g4"]
        for rule in facts:
            n += 1
            ptype = rule[0]
            if ptype == "g":
                check(rule)
                if rule[1].startswith("role:"):
                    structural = self._apply_one(RuleChange("add", rule), rebuild=False) or structural
                else:
                    g_link(rule[1], rule[2], rule[3])
            elif ptype == "p":
                check(rule)
                structural = self._apply_one(RuleChange("add", rule), rebuild=False) or structural
            else:
                if len(rule) == 4 and ptype in ("g4", "g5") and rule[3] == "":
                    rule = rule[:3]
                check(rule)
                if ptype == "g4" and rule[1].startswith("pack:"):
                    structural = True  # a pack → role link (normally a pack rule, loaded with the packs)
                if ptype == "g4" and rule[1].startswith("ws:"):
                    packs = g4.direct(rule[1], "")
                    if packs and rule[2] not in packs:
                        self._one_pack(rule[1], rule[2], {})  # raises: a second pack
                links[ptype](rule[1], rule[2], rule[3] if len(rule) > 3 else "")
        if structural and self.ready:
            self._rebuild_p()
        self._moved()
        return n

    # -- role managers --------------------------------------------------------------------
    @property
    def g(self) -> Any:
        """user→role per workspace, role inheritance and platform roles in ``*``."""
        return self.enforcer.rm("g")

    @property
    def g2(self) -> Any:
        """user manages scope (teacher of a group, manager of a team)."""
        return self.enforcer.rm("g2")

    @property
    def g3(self) -> Any:
        """user belongs to scope (learner in a group, member of a team)."""
        return self.enforcer.rm("g3")

    @property
    def g4(self) -> Any:
        """workspace → pack, platform domain → pack, pack → its roles with p-rules."""
        return self.enforcer.rm("g4")

    @property
    def g5(self) -> Any:
        """workspace → switched-off feature."""
        return self.enforcer.rm("g5")

    # -- changes --------------------------------------------------------------------------
    def _apply_one(self, change: RuleChange, rebuild: bool = True) -> bool:
        """Apply one change; True if it touched p-rules or inheritance (memo must go)."""
        rule = change.rule
        ptype = rule[0]
        if ptype == "p":
            if change.op == "add":
                if rule not in self._p_rules:
                    self._p_rules.append(rule)
            else:
                if rule in self._p_rules:
                    self._p_rules.remove(rule)
            return True
        rm = self.enforcer.rm(ptype)
        if change.op == "add":
            rm.add_link(*rule[1:])
        else:
            rm.delete_link(*rule[1:])
        # Only role inheritance changes what direct roles reach (shapes: g holds no other links), and
        # only pack → role links what a workspace's pack reaches (the memo keys by both, see memo).
        return (ptype == "g" and rule[1].startswith("role:")) or (ptype == "g4" and rule[1].startswith("pack:"))

    def _rebuild_p(self) -> None:
        self.enforcer.set_p_rules(self._p_rules)
        self._plan = self._matcher_plan(self.enforcer.p_rules(), self._rank_fns)
        self._memo = {}

    def _matcher_plan(self, rows: list[list[str]], rank_fns: Mapping[str, Any]) -> MatcherPlan:
        """The memo plan of these p-rule rows (priority order) and custom functions."""
        functions: dict[str, Any] = {ptype: rm.has_link for ptype, rm in self._rms.items()}
        functions.update(rank_fns)
        model = self.enforcer.model
        return MatcherPlan(
            model["m"]["m"].value,
            [t.removeprefix("r_") for t in model["r"]["r"].tokens],
            [t.removeprefix("p_") for t in model["p"]["p"].tokens],
            functions,
            rows,
        )

    def apply(self, changes: Sequence[RuleChange], revision: int) -> None:
        """Apply committed changes incrementally and move to ``revision``.

        Raises InvalidRuleError, before changing anything, if one change is a rule the writers
        refuse or would give a workspace a second pack.
        """
        with self._lock:
            self._refuse(changes)
            structural = False
            for change in changes:
                structural = self._apply_one(change) or structural
            if structural:
                self._rebuild_p()
            self.revision = max(self.revision, revision)
            self._moved()

    def apply_packs(self, packset: PackSet, changes: Sequence[RuleChange], revision: int) -> None:
        """Move to ``packset`` (a pack edit: rules and documents) with the revision's ``changes``,
        without re-reading or re-adding a single fact.

        What derives from the packs (ranks, grant exceptions, actions, conditions, the p-rules and
        the memo plan) is built beside the serving state; then, under the lock every decision
        holds, the few pack links (inheritance in ``*``, ``pack:`` → role) change, the fact changes
        of the batch apply, and the new state replaces the old in one step with an empty memo. A
        decision therefore sees the whole old policy or the whole new one, never a mix.

        Raises InvalidRuleError, before changing anything, for what only a rebuild can do: another
        model (``model.conf``), a pack removed, pack-rule changes that do not lead from the
        engine's pack rules to ``packset``'s, or a change :meth:`apply` refuses.
        """
        problems: list[str] = []
        if packset.model_text != self.packset.model_text:
            problems.append("the model changed: a rebuild loads it")
        gone = sorted(set(self.packset.packs) - set(packset.packs))
        if gone:
            problems.append(f"packs removed ({', '.join(gone)}): a rebuild drops them")
        facts = [c for c in changes if not is_pack_rule(c.rule)]
        keys = {*self.packset.packs, *packset.packs}
        links = self._pack_links(keys)
        held = links | {r for r in self._p_rules if rule_pack(r) in keys}
        for change in changes:
            if is_pack_rule(change.rule):
                (held.add if change.op == "add" else held.discard)(change.rule)
        new_rules = packset.all_rules()
        if held != set(new_rules):
            problems.append("the revision's pack-rule changes do not lead to the new packs' rules")
        problems.extend(p for rule in new_rules for p in rule_problems(rule))
        if problems:
            raise InvalidRuleError(problems)
        with self._lock:
            self._refuse(facts)
        # Off to the side: nothing below is seen by a decision until the swap.
        derived = _PackDerived.of(packset)
        p_rules = [r for r in new_rules if r[0] == "p"]
        p_rules += [r for r in self._p_rules if r[0] == "p" and rule_pack(r) not in keys]  # not of any pack
        rows = sorted((list(r[1:]) for r in p_rules), key=lambda row: int(row[0]))
        plan = self._matcher_plan(rows, derived.rank_fns)
        new_links = [r for r in new_rules if r[0] != "p"]
        with self._lock:
            for rule in links.difference(new_links):
                self.enforcer.rm(rule[0]).delete_link(*rule[1:])
            for rule in new_links:
                if rule not in links:
                    self.enforcer.rm(rule[0]).add_link(*rule[1:])
            for pid in packset.packs.keys() - self.packset.packs.keys():
                self.g4.add_link(f"platform:{pid}", pack_key(pid))
            for change in facts:
                self._apply_one(change, rebuild=False)
            self._p_rules = p_rules
            self.enforcer.set_p_rules(p_rules)
            for fname, fn in derived.rank_fns.items():
                self.enforcer.add_function(fname, fn)
            self.packset = packset
            self._pack_of_key = derived.pack_of_key
            self._actions = derived.actions
            self._prefix = derived.prefix
            self._rank_fns = derived.rank_fns
            self._conditions = derived.conditions
            self._plan = plan
            self._memo = {}
            self.revision = max(self.revision, revision)
            self._moved()

    def _pack_links(self, pack_ids: set[str]) -> set[Rule]:
        """The inheritance (``g`` role → role in ``*``) and ``pack:`` → role links the engine holds for
        these packs, read from its role managers: ``*`` holds the roles and the few platform-role
        holders, never the workspaces' memberships."""
        star: Mapping[str, Any] = self._rms["g"].links.get(PLATFORM_DOMAIN, {})
        out: set[Rule] = {
            ("g", child, parent, PLATFORM_DOMAIN)
            for child, parents in star.items()
            if child.startswith("role:")
            for parent in parents
            if rule_pack(("g", child, parent, PLATFORM_DOMAIN)) in pack_ids
        }
        packs: Mapping[str, Any] = self._rms["g4"].links.get("", {})
        for pid in pack_ids:
            out.update(("g4", pack_key(pid), role) for role in packs.get(pack_key(pid), ()))
        return out

    def _refuse(self, changes: Sequence[RuleChange]) -> None:
        """Raise InvalidRuleError listing every change of the batch the engine does not accept."""
        problems: list[str] = []
        packs: dict[str, set[str]] = {}
        for change in changes:
            rule = change.rule
            if change.op not in ("add", "remove"):
                problems.append(f"unknown operation {change.op!r}")
                continue
            found = rule_problems(rule)
            problems.extend(found)
            if not found and rule[0] == "g4" and rule[1].startswith("ws:"):
                try:
                    self._one_pack(rule[1], rule[2], packs, change.op == "remove")
                except InvalidRuleError as exc:
                    problems.extend(exc.problems)
        if problems:
            raise InvalidRuleError(problems)

    def _one_pack(self, ws: str, pack: str, pending: dict[str, set[str]], remove: bool = False) -> None:
        """Track ws's packs (this batch's changes in pending); InvalidRuleError if it gets two."""
        packs = pending.get(ws)
        if packs is None:
            packs = pending[ws] = set(self._rms["g4"].direct(ws, ""))
        if remove:
            packs.discard(pack)
            return
        packs.add(pack)
        if len(packs) > 1:
            raise InvalidRuleError([f"a workspace has one pack: {ws} -> {', '.join(sorted(packs))}"])

    def p_rules(self) -> list[Rule]:
        """Every p-rule, in priority order."""
        return [("p", *row) for row in self.enforcer.p_rules()]

    # -- facts ----------------------------------------------------------------------------
    def pack_of(self, domain: str) -> Pack | None:
        """The pack of a workspace (or platform domain), None if unknown; remembered per generation
        (a batch's binding check asks it for every item: ~2 µs a lookup in the role manager)."""
        known = self._packs_known  # before reading the state: see _moved
        if domain in known:
            return known[domain]
        found = None
        for key in self.g4.direct(domain, ""):
            pack = self._pack_of_key.get(key)
            if pack is not None:
                found = pack
                break
        if len(known) >= PACKS_KNOWN_LIMIT:
            known.clear()
        known[domain] = found
        return found

    def roles_of(self, subject: str, domain: str) -> tuple[str, ...]:
        """The subject's direct roles in domain: its workspace role(s) and platform roles."""
        direct = self.g.direct(subject, domain)
        platform = self.g.direct(subject, PLATFORM_DOMAIN) if domain != PLATFORM_DOMAIN else ()
        return tuple(sorted({*direct, *platform}))

    def workspace_role(self, subject: str, domain: str) -> str:
        """The subject's workspace role key in domain ("" if not a member)."""
        direct = self.g.direct(subject, domain)
        return direct[0] if direct else ""

    def features_off(self, domain: str) -> frozenset[str]:
        """Features switched off in a workspace."""
        return frozenset(self.g5.direct(domain, ""))

    def resolve(self, req: AccessRequest) -> AccessRequest:
        """The request with facts the core owns filled in (target member's current role)."""
        role = self._current_role(req.obj, req.domain)
        if role == req.obj.role:
            return req
        return AccessRequest(req.subject, req.domain, _with_role(req.obj, role), req.action)

    # -- decisions --------------------------------------------------------------------------
    def check(self, req: AccessRequest) -> Decision:
        """Decide one request. Never raises: any error is a denial with reason ``error``."""
        try:
            return self._check(req, explain=False)
        except Exception:  # noqa: BLE001 - fail closed, log the cause
            log.exception("authz error on %r", req)
            return Decision(False, Reason.ERROR.value, self.revision)

    def explain(self, req: AccessRequest) -> Decision:
        """Decide one request and say why: the matched rule and the role path to it."""
        try:
            return self._check(req, explain=True)
        except Exception:  # noqa: BLE001
            log.exception("authz error on %r", req)
            return Decision(False, Reason.ERROR.value, self.revision)

    def decide(self, req: AccessRequest, explain: bool = False) -> Decision:
        """Decide one request of a decision surface: :meth:`check` (or :meth:`explain`), with the
        group or team the caller left out derived from the stored relationships.

        A denied request that names a member but no group (team) is asked again once per group
        (team) that the subject manages and the member belongs to (g2 ∩ g3 in the workspace), each a
        complete Casbin question; the first allow answers, else the first denial stands. A fact the
        caller passes is never replaced (it must match what is stored, as before), so deriving
        answers exactly what passing a stored fact would — it never widens a grant.
        """
        first = self.explain(req) if explain else self.check(req)
        if first.allowed:
            return first
        for scoped in self.derived(req):
            again = self.explain(scoped) if explain else self.check(scoped)
            if again.allowed:
                return again
        return first

    def derived(self, req: AccessRequest) -> list[AccessRequest]:
        """``req`` with each omitted group or team filled in from the stored relationships: the
        scopes the subject manages that the request's member belongs to (none without a member)."""
        obj = req.obj
        if not obj.member.startswith("user:") or (obj.group and obj.team):
            return []
        with self._lock:
            managed = self._rms["g2"].direct(req.subject, req.domain)
            if not managed:
                return []
            g3 = self._rms["g3"]
            shared = [s for s in managed if g3.has_link(obj.member, s, req.domain)]
        out = []
        for scope in shared:
            if scope.startswith("group:") and not obj.group:
                out.append(AccessRequest(req.subject, req.domain, dataclasses.replace(obj, group=scope), req.action))
            elif scope.startswith("team:") and not obj.team:
                out.append(AccessRequest(req.subject, req.domain, dataclasses.replace(obj, team=scope), req.action))
        return out

    def batch(self, reqs: Iterable[AccessRequest]) -> list[Decision]:
        """Decide many requests, in order."""
        return [self.check(r) for r in reqs]

    def _check(self, req: AccessRequest, explain: bool) -> Decision:
        with self._lock:
            revision = self.revision
            if not _fast_valid(req, self._valid):
                return self._fixed(_INVALID_REQUEST, revision)
            sub = req.subject
            dom = req.domain
            act = req.action
            rms = self._rms
            packs = rms["g4"].direct(dom, "")
            pack = None
            if packs:
                for key in packs:
                    pack = self._pack_of_key.get(key)
                    if pack is not None:
                        break
            if pack is None:
                return self._fixed(_UNKNOWN_WORKSPACE, revision)
            if act not in self._actions[pack.id]:
                return self._fixed(_UNKNOWN_ACTION, revision)
            # The subject's direct roles of this pack: in the workspace, and platform roles.
            direct, platform = rms["g"].direct_and_platform(sub, dom)
            prefix = self._prefix[pack.id]
            if platform:
                roles = tuple(sorted({r for r in (*direct, *platform) if r.startswith(prefix)}))
            elif len(direct) == 1:
                roles = direct if direct[0].startswith(prefix) else _NONE
            else:
                roles = tuple(r for r in direct if r.startswith(prefix))
            if not roles:
                return self._fixed(_NO_ROLE, revision)
            obj = req.obj
            role = self._current_role(obj, dom)
            if role != obj.role:
                obj = _with_role(obj, role)
                req = AccessRequest(sub, dom, obj, act)
            plan = self._plan
            key_fn = plan.key_fn(act) if plan is not None else None
            if key_fn is None:
                hit = self._decide(req, roles, revision)
            else:
                all_roles = (*direct, *platform) if platform else direct
                memo_key = (act, key_fn(sub, dom, obj, all_roles, packs or _NONE))
                memo = self._memo
                cached = memo.get(memo_key)
                if cached is not None:
                    hit = cached
                else:
                    hit = self._decide(req, roles, revision)
                    if len(memo) >= MEMO_LIMIT:
                        memo.clear()
                    memo[memo_key] = hit
            if not explain:
                decision: Decision = hit[3]
                if decision.revision != revision:
                    decision = hit[3] = Decision(hit[0], hit[2], revision)
                return decision
            allowed, matched, reason = hit[0], hit[1], hit[2]
            path = self.role_path(sub, dom, matched[1]) if matched else ()
            condition = None
            if matched and matched[3].startswith(CONDITION_PREFIX):
                cond = self._conditions.get(matched[3][len(CONDITION_PREFIX) :])
                condition = (cond.id, cond.source) if cond is not None else None
            return Decision(allowed, reason, revision, ("p", *matched) if matched else None, path, condition)

    def _decide(self, req: AccessRequest, roles: tuple[str, ...], revision: int) -> list[Any]:
        """Ask Casbin (the memo's miss path): [allowed, matched rule, reason, decision]."""
        allowed, rule = self.enforcer.enforce_indexed(req.subject, req.domain, req.obj, req.action)
        matched = tuple(rule) if rule else None
        reason = _GRANTED if allowed else self._diagnose(req, roles, matched)
        return [allowed, matched, reason, Decision(allowed, reason, revision)]

    def _fixed(self, reason: str, revision: int) -> Decision:
        """A shared denial without a rule (one object per reason and revision)."""
        decision = self._fixed_decisions.get(reason)
        if decision is None or decision.revision != revision:
            decision = self._fixed_decisions[reason] = Decision(False, reason, revision)
        return decision

    def _current_role(self, obj: ResourceFacts, dom: str) -> str:
        """The target's current role, from the policy ("" if none): the member's, else the grantee's
        (an invitee who is a member already is rank-checked against the role they hold).

        In a workspace: their workspace role. In a platform domain (``platform:<pack>``): the
        platform role of that pack they hold in ``*`` (platform roles live there).
        """
        who = obj.member or (obj.grantee if obj.grantee != NEWCOMER else "")
        if not who:
            return ""
        g = self._rms["g"]
        if dom.startswith("platform:"):
            prefix = f"role:{dom[9:]}:"
            held = sorted(r for r in g.direct(who, PLATFORM_DOMAIN) if r.startswith(prefix))
            return held[0] if held else ""
        direct = g.direct(who, dom)
        return direct[0] if direct else ""

    def _diagnose(self, req: AccessRequest, roles: tuple[str, ...], matched: tuple[str, ...] | None) -> str:
        """Why Casbin denied: an explicit deny, a feature off, no rule, or a failed scope."""
        reachable = set(roles)
        for r in roles:
            reachable |= self.g.reachable(r, req.domain)
        # Rows without the ptype: priority, sub, act, scope, feature, eft (model.conf).
        g4 = self._rms["g4"]
        candidates = [
            row
            for row in self.enforcer.p_rules(req.action)
            if row[1] in reachable and g4.has_link(req.domain, row[1])  # g4(r.dom, p.sub)
        ]
        if not candidates:
            return Reason.NOT_PERMITTED.value
        off = self.features_off(req.domain)
        if all(row[4] != "-" and row[4] in off for row in candidates):
            return Reason.FEATURE_OFF.value
        if req.obj.member and not req.obj.role:
            # model.conf: a target member with no current role names nobody.
            return Reason.UNKNOWN_MEMBER.value
        if req.obj.grantee == req.subject:
            # model.conf: nobody grants themselves anything, whatever the scope.
            return Reason.SELF_CHANGE.value
        live = [row for row in candidates if row[4] == "-" or row[4] not in off]
        if matched is not None:
            # An explicit deny decided; an allow checked before it that failed its scope explains more.
            live = [row for row in live if int(row[0]) < int(matched[0])]
            if not any(row[5] == "allow" and row[3] != "any" for row in live):
                return Reason.DENIED_BY_POLICY.value
        for row in live:
            if row[5] == "allow" and row[3] != "any":
                if row[3] == "rank" and req.obj.member == req.subject:
                    return Reason.SELF_CHANGE.value
                if row[3] == "rank" and not (req.obj.member or req.obj.grantee or req.obj.target == ANY_TARGET):
                    return Reason.TARGET_REQUIRED.value
                if row[3] in ("group", "into_group") and self._outranked_in_group(req, row[3]):
                    return Reason.RANK_LIMIT.value
                if row[3].startswith(CONDITION_PREFIX):
                    return Reason.CONDITION_NOT_MET.value
                return _SCOPE_REASON.get(row[3], Reason.NOT_PERMITTED).value
        return Reason.NOT_PERMITTED.value

    def _outranked_in_group(self, req: AccessRequest, scope: str) -> bool:
        """The subject manages the group (and the member is in it) but the member's rank is too high."""
        obj, dom = req.obj, req.domain
        if not obj.member or not self.g2.has_link(req.subject, obj.group, dom):
            return False
        return scope == "into_group" or bool(self.g3.has_link(obj.member, obj.group, dom))

    def role_path(self, subject: str, domain: str, target_role: str) -> tuple[str, ...]:
        """The chain subject → direct role → ... → target_role (shortest)."""
        start = self.roles_of(subject, domain)
        prev: dict[str, str] = {}
        frontier = [r for r in start]
        seen = set(frontier)
        while frontier:
            nxt = []
            for node in frontier:
                if node == target_role:
                    chain = [node]
                    while chain[-1] in prev:
                        chain.append(prev[chain[-1]])
                    return (subject, *reversed(chain))
                for parent in self.g.get_roles(node, domain):
                    if parent not in seen:
                        seen.add(parent)
                        prev[parent] = node
                        nxt.append(parent)
            frontier = nxt
        return (subject,)

    # -- queries for UIs --------------------------------------------------------------------
    def permissions(
        self, subject: str, domain: str, obj: ResourceFacts | None = None, any_target: bool = False
    ) -> dict[str, Decision]:
        """Every action of the workspace's pack, decided for subject (unscoped resource).

        Rank-scoped actions need a target: without one they are ``target_required``; ``any_target``
        asks explicitly "to anyone at all?" (what pages need to show a button).
        """
        pack = self.pack_of(domain)
        if pack is None:
            return {}
        res = obj or ResourceFacts()
        if any_target:
            res = dataclasses.replace(res, target=ANY_TARGET)
        return {a.id: self.check(AccessRequest(subject, domain, res, a.id)) for a in pack.actions}

    def assignable_roles(self, subject: str, domain: str, target: str = "", any_target: bool = False) -> list[str]:
        """Role ids the subject may grant in domain to target (a member), per the rank rules.

        Without a target nothing is assignable, unless ``any_target`` asks "to anyone at all?".
        """
        pack = self.pack_of(domain)
        if pack is None:
            return []
        action = pack.meta.get("assign_action")
        if not isinstance(action, str):
            return []
        out = []
        scope = ANY_TARGET if any_target and not target else ""
        for role in pack.roles:
            obj = ResourceFacts(type="member", member=target, new_role=pack.role_key(role.id), target=scope)
            if self.check(AccessRequest(subject, domain, obj, action)).allowed:
                out.append(role.id)
        return out

    def members_of(self, domain: str) -> dict[str, str]:
        """user key → workspace role key, for every member of a workspace."""
        with self._lock:  # the listener thread (and other request threads) apply changes
            bucket = self.g.links.get(domain, {})
            return {user: roles[0] for user, roles in bucket.items() if roles}  # roles are sorted

    def workspaces(self) -> Mapping[str, str]:
        """workspace key → pack id, for every known workspace."""
        out = {}
        for dom, parents in self.g4.links.get("", {}).items():
            for key in parents:
                pack = self._pack_of_key.get(key)
                if pack is not None and dom.startswith("ws:"):
                    out[dom] = pack.id
        return out
