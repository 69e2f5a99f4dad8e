"""Building Casbin enforcers from ``model.conf`` and rule tuples.

``build_plain_enforcer`` is stock pycasbin (DomainManager with a ``*`` domain pattern): the
reference every fast path is compared with. ``IndexedEnforcer`` is the same ``casbin.Enforcer``
with three changes that keep its answers and remove its costs at scale:

* role managers are :class:`IndexedRoleManager` (packed arrays of name codes, one name table);
* the matcher is parsed once, not on every call;
* each call scans only the p-rules of the requested action, in priority order (the matcher
  starts with ``r.act == p.act``, so no other rule can match).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import casbin
from casbin.model import Model
from casbin.util import key_match
from casbin.util.log import disabled_logging

from .conditions import when_function
from .identifiers import PLATFORM_DOMAIN, split_role
from .packs import P_ACT, Pack, Rule
from .rolemanager import IndexedRoleManager, Names


def rank_functions(packs: Mapping[str, Pack]) -> dict[str, Callable[..., bool]]:
    """The custom matcher functions: ``rankAbove`` and ``mayGrant`` (closed over pack ranks) and
    ``when`` (the packs' attribute conditions, compiled with the packs)."""
    rank: dict[str, int] = {}
    grant_extra: dict[str, frozenset[str]] = {}
    manage_extra: dict[str, frozenset[str]] = {}
    for pack in packs.values():
        for role in pack.roles:
            rank[pack.role_key(role.id)] = role.rank
        for g in pack.grants:
            key = pack.role_key(g.role)
            grant_extra[key] = grant_extra.get(key, frozenset()) | {pack.role_key(r) for r in g.may_grant}
            manage_extra[key] = manage_extra.get(key, frozenset()) | {pack.role_key(r) for r in g.may_manage}

    seen: dict[tuple[object, object, int], bool] = {}

    def _compare(actor: object, target: object, extra: Mapping[str, frozenset[str]]) -> bool:
        # Pure in (actor, target): remembered (bounded; only hashable strings are remembered).
        if type(actor) is str and type(target) is str:
            key = (actor, target, id(extra))
            hit = seen.get(key)
            if hit is None:
                if len(seen) >= 50_000:
                    seen.clear()
                hit = seen[key] = _decide(actor, target, extra)
            return hit
        return _decide(actor, target, extra)

    def _decide(actor: object, target: object, extra: Mapping[str, frozenset[str]]) -> bool:
        if target == "":
            return True
        if not isinstance(actor, str) or not isinstance(target, str):
            return False
        a = rank.get(actor)
        t = rank.get(target)
        if a is None or t is None or split_role(actor)[0] != split_role(target)[0]:
            return False
        return a > t or target in extra.get(actor, ())

    def rank_above(actor_role: object, target_role: object) -> bool:
        """The actor's role outranks the member's current role (or the pack allows it)."""
        return _compare(actor_role, target_role, manage_extra)

    def may_grant(actor_role: object, new_role: object) -> bool:
        """The actor's role may grant new_role: strictly lower, or a pack exception."""
        return _compare(actor_role, new_role, grant_extra)

    conditions = {c.id: c for pack in packs.values() for c in pack.conditions}
    return {"rankAbove": rank_above, "mayGrant": may_grant, "when": when_function(conditions)}


def _model(model_text: str) -> Model:
    disabled_logging()  # pycasbin logs every denial at WARNING otherwise
    m = Model()
    m.load_model_from_text(model_text)
    return m


def build_plain_enforcer(model_text: str, packs: Mapping[str, Pack], rules: Iterable[Rule]) -> casbin.Enforcer:
    """Stock pycasbin with the same model, rules and custom functions: the reference."""
    e = casbin.Enforcer(_model(model_text))
    for fname, fn in rank_functions(packs).items():
        e.add_function(fname, fn)
    e.add_named_domain_matching_func("g", key_match)
    by_type: dict[str, dict[tuple[str, ...], None]] = {}
    for rule in rules:
        by_type.setdefault(rule[0], {})[tuple(rule[1:])] = None
    # What Model.add_policies stores, without its linear duplicate scan per rule (quadratic:
    # minutes at 100,000 memberships): distinct rules in order, and the rule → index map.
    for ptype, distinct in by_type.items():
        sec = "p" if ptype.startswith("p") else "g"
        assertion = e.model[sec][ptype]
        assertion.policy = [list(r) for r in distinct]
        assertion.policy_map = {",".join(r): i for i, r in enumerate(assertion.policy)}
    e.model.sort_policies_by_priority()
    e.build_role_links()
    return e


class IndexedEnforcer(casbin.Enforcer):  # type: ignore[misc]
    """casbin.Enforcer with indexed role managers, a parsed-once matcher and per-action rules."""

    def __init__(self, model_text: str, packs: Mapping[str, Pack]) -> None:
        super().__init__(_model(model_text))
        self._expr_cache: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._rms: dict[str, IndexedRoleManager] = {}
        self.names = Names()  # one table for every role manager: a workspace's name is held once
        for ptype, assertion in self.model["g"].items():
            rm = IndexedRoleManager(10, self.names)
            assertion.rm = rm
            self.rm_map[ptype] = rm
            self._rms[ptype] = rm
        for fname, fn in rank_functions(packs).items():
            self.add_function(fname, fn)
        self._by_act: dict[str, list[list[str]]] = {}
        self._all_p: list[list[str]] = []

    def rm(self, ptype: str) -> IndexedRoleManager:
        """The role manager of a role definition (g, g2, ...)."""
        return self._rms[ptype]

    def _get_expression(self, expr: str, functions: Any = None) -> Any:
        cached = self._expr_cache.get(expr)
        if cached is None:
            cached = casbin.Enforcer._get_expression(expr, functions)
            self._expr_cache[expr] = cached
        cached.functions = functions
        return cached

    def set_p_rules(self, rules: Iterable[Rule]) -> None:
        """Replace every p-rule; sorted by priority (stable), indexed by action."""
        rows = [list(r[1:]) for r in rules if r[0] == "p"]
        rows.sort(key=lambda row: int(row[0]))
        by_act: dict[str, list[list[str]]] = {}
        for row in rows:
            by_act.setdefault(row[P_ACT - 1], []).append(row)
        with self._lock:
            self._all_p = rows
            self._by_act = by_act
            self.model["p"]["p"].policy = rows

    def p_rules(self, act: str | None = None) -> list[list[str]]:
        """The p-rules (of one action), in priority order."""
        if act is None:
            return self._all_p
        return self._by_act.get(act, [])

    def enforce_indexed(self, sub: str, dom: str, obj: Any, act: str) -> tuple[bool, list[str]]:
        """``enforce_ex`` over the rules of this action only (thread-safe)."""
        with self._lock:
            assertion = self.model["p"]["p"]
            assertion.policy = self._by_act.get(act, [])
            try:
                result, rule = self.enforce_ex(sub, dom, obj, act)
            finally:
                assertion.policy = self._all_p
        return bool(result), list(rule)


__all__ = [
    "IndexedEnforcer",
    "PLATFORM_DOMAIN",
    "build_plain_enforcer",
    "rank_functions",
]
