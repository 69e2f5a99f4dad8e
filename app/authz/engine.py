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
* stable reason codes for denials, and the role path for ``explain``.

Pure: no Flask, no HTTP, no ORM session.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .enforcer import IndexedEnforcer
from .identifiers import PLATFORM_DOMAIN, is_prefixed, split_role, valid_action, valid_local, valid_pack
from .packs import Pack, PackSet, Rule
from .types import RESOURCE_FIELDS, AccessRequest, Decision, Reason, ResourceFacts

log = logging.getLogger("authz")

MEMO_LIMIT = 200_000
_SCOPE_REASON = {
    "assignee": Reason.NOT_ASSIGNEE,
    "owner": Reason.NOT_OWNER,
    "member_of": Reason.OUTSIDE_GROUP,
    "group": Reason.OUTSIDE_GROUP,
    "team": Reason.OUTSIDE_TEAM,
    "rank": Reason.RANK_LIMIT,
}
_USER_FIELDS = ("assignee", "owner", "member")


@dataclass(frozen=True, slots=True)
class RuleChange:
    """One rule added (``op='add'``) or removed (``op='remove'``)."""

    op: str
    rule: Rule


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
    return None


class PolicyEngine:
    """A loaded policy (packs + facts) and the decisions it gives."""

    def __init__(self, packset: PackSet, facts: Iterable[Rule] = (), revision: int = 0) -> None:
        self.packset = packset
        self.revision = revision
        self._lock = threading.RLock()
        self.enforcer = IndexedEnforcer(packset.model_text, packset.packs)
        self._p_rules: list[Rule] = []
        self._memo: dict[tuple[Any, ...], tuple[bool, tuple[str, ...] | None, str]] = {}
        self._pack_of_key = {p.key: p for p in packset.packs.values()}
        self.ready = False
        for rule in packset.all_rules():
            self._apply_one(RuleChange("add", rule), rebuild=False)
        for rule in facts:
            self._apply_one(RuleChange("add", rule), rebuild=False)
        self._rebuild_p()
        for pack in packset.packs.values():
            self.g4.add_link(f"platform:{pack.id}", pack.key)
        self.ready = True

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
        """workspace → pack."""
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
        return ptype == "g" and rule[1].startswith("role:")

    def _rebuild_p(self) -> None:
        self.enforcer.set_p_rules(self._p_rules)
        self._memo = {}

    def apply(self, changes: Sequence[RuleChange], revision: int) -> None:
        """Apply committed changes incrementally and move to ``revision``."""
        with self._lock:
            structural = False
            for change in changes:
                structural = self._apply_one(change) or structural
            if structural:
                self._rebuild_p()
            self.revision = max(self.revision, revision)

    def p_rules(self) -> list[Rule]:
        """Every p-rule, in priority order."""
        return [("p", *row) for row in self.enforcer.p_rules()]

    # -- facts ----------------------------------------------------------------------------
    def pack_of(self, domain: str) -> Pack | None:
        """The pack of a workspace (or platform domain), None if unknown."""
        parents = self.g4.direct(domain, "")
        for key in parents:
            pack = self._pack_of_key.get(key)
            if pack is not None:
                return pack
        return None

    def roles_of(self, subject: str, domain: str) -> tuple[str, ...]:
        """The subject's direct roles in domain: its workspace role(s) and platform roles."""
        direct = self.g.direct(subject, domain)
        platform = self.g.direct(subject, PLATFORM_DOMAIN) if domain != PLATFORM_DOMAIN else ()
        return tuple(sorted({*direct, *platform}))

    def workspace_role(self, subject: str, domain: str) -> str:
        """The subject's workspace role key in domain ("" if not a member)."""
        direct = self.g.direct(subject, domain)
        return min(direct) if direct else ""

    def features_off(self, domain: str) -> frozenset[str]:
        """Features switched off in a workspace."""
        return frozenset(self.g5.direct(domain, ""))

    def _resolve(self, req: AccessRequest) -> AccessRequest:
        """The request with facts the core owns filled in (target member's current role)."""
        obj = req.obj
        if obj.member:
            role = self.workspace_role(obj.member, req.domain)
            if role != obj.role:
                obj = ResourceFacts(**{**{f: getattr(obj, f) for f in RESOURCE_FIELDS}, "role": role})
                return AccessRequest(req.subject, req.domain, obj, req.action)
        elif obj.role:
            obj = ResourceFacts(**{**{f: getattr(obj, f) for f in RESOURCE_FIELDS}, "role": ""})
            return AccessRequest(req.subject, req.domain, obj, req.action)
        return req

    def _key(self, req: AccessRequest, pack: Pack, roles: tuple[str, ...]) -> tuple[Any, ...]:
        sub, dom, obj = req.subject, req.domain, req.obj
        g2, g3 = self.g2, self.g3
        return (
            pack.id,
            roles,
            self.features_off(dom),
            req.action,
            obj.assignee == sub,
            obj.owner == sub,
            obj.member == sub,
            obj.member == "",
            g2.has_link(sub, obj.group, dom) if obj.group else False,
            g3.has_link(sub, obj.group, dom) if obj.group else False,
            g3.has_link(obj.member, obj.group, dom) if obj.group and obj.member else False,
            g2.has_link(sub, obj.team, dom) if obj.team else False,
            g3.has_link(obj.member, obj.team, dom) if obj.team and obj.member else False,
            obj.role,
            obj.new_role,
        )

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

    def batch(self, reqs: Iterable[AccessRequest]) -> list[Decision]:
        """Decide many requests, in order."""
        return [self.check(r) for r in reqs]

    def _check(self, req: AccessRequest, explain: bool) -> Decision:
        revision = self.revision
        problem = validate_request(req)
        if problem is not None:
            return Decision(False, Reason.INVALID_REQUEST.value, revision)
        pack = self.pack_of(req.domain)
        if pack is None:
            return Decision(False, Reason.UNKNOWN_WORKSPACE.value, revision)
        if pack.action(req.action) is None:
            return Decision(False, Reason.UNKNOWN_ACTION.value, revision)
        req = self._resolve(req)
        prefix = f"role:{pack.id}:"
        roles = tuple(r for r in self.roles_of(req.subject, req.domain) if r.startswith(prefix))
        if not roles:
            return Decision(False, Reason.NO_ROLE.value, revision)
        key = self._key(req, pack, roles)
        hit = self._memo.get(key)
        if hit is None:
            allowed, rule = self.enforcer.enforce_indexed(req.subject, req.domain, req.obj, req.action)
            matched = tuple(rule) if rule else None
            reason = Reason.GRANTED.value if allowed else self._diagnose(req, roles, matched)
            hit = (allowed, matched, reason)
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = hit
        allowed, matched, reason = hit
        if not explain:
            return Decision(allowed, reason, revision)
        path = self.role_path(req.subject, req.domain, matched[1]) if matched else ()
        return Decision(allowed, reason, revision, ("p", *matched) if matched else None, path)

    def _diagnose(self, req: AccessRequest, roles: tuple[str, ...], matched: tuple[str, ...] | None) -> str:
        """Why Casbin denied: an explicit deny, a feature off, no rule, or a failed scope."""
        reachable = set(roles)
        for r in roles:
            reachable |= self.g.reachable(r, req.domain)
        candidates = [row for row in self.enforcer.p_rules(req.action) if row[1] in reachable]
        pack = self.pack_of(req.domain)
        candidates = [row for row in candidates if pack is not None and row[2] == pack.key]
        if not candidates:
            return Reason.NOT_PERMITTED.value
        off = self.features_off(req.domain)
        if all(row[5] != "-" and row[5] in off for row in candidates):
            return Reason.FEATURE_OFF.value
        live = [row for row in candidates if row[5] == "-" or row[5] not in off]
        if matched is not None:
            # An explicit deny decided; an allow checked before it that failed its scope explains more.
            live = [row for row in live if int(row[0]) < int(matched[0])]
            if not any(row[6] == "allow" and row[4] != "any" for row in live):
                return Reason.DENIED_BY_POLICY.value
        for row in live:
            if row[6] == "allow" and row[4] != "any":
                if row[4] == "rank" and req.obj.member == req.subject:
                    return Reason.SELF_CHANGE.value
                return _SCOPE_REASON.get(row[4], Reason.NOT_PERMITTED).value
        return Reason.NOT_PERMITTED.value

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
    def permissions(self, subject: str, domain: str, obj: ResourceFacts | None = None) -> dict[str, Decision]:
        """Every action of the workspace's pack, decided for subject (unscoped resource)."""
        pack = self.pack_of(domain)
        if pack is None:
            return {}
        res = obj or ResourceFacts()
        return {a.id: self.check(AccessRequest(subject, domain, res, a.id)) for a in pack.actions}

    def assignable_roles(self, subject: str, domain: str, target: str = "") -> list[str]:
        """Role ids the subject may grant in domain (to target, if given) per the rank rules."""
        pack = self.pack_of(domain)
        if pack is None:
            return []
        action = pack.meta.get("assign_action")
        if not isinstance(action, str):
            return []
        out = []
        for role in pack.roles:
            obj = ResourceFacts(type="member", member=target, new_role=pack.role_key(role.id))
            if self.check(AccessRequest(subject, domain, obj, action)).allowed:
                out.append(role.id)
        return out

    def members_of(self, domain: str) -> dict[str, str]:
        """user key → workspace role key, for every member of a workspace."""
        bucket = self.g.links.get(domain, {})
        return {user: min(roles) for user, roles in bucket.items() if roles}

    def workspaces(self) -> Mapping[str, str]:
        """workspace key → pack id, for every known workspace."""
        out = {}
        for dom, parents in self.g4.links.get("", {}).items():
            for key in parents:
                pack = self._pack_of_key.get(key)
                if pack is not None and dom.startswith("ws:"):
                    out[dom] = pack.id
        return out
