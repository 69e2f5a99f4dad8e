"""The rules the decision core accepts: one check, shared by the writers and the engine.

Issue 8 (reproduction 6) found that ``PolicyEngine.apply`` took facts no writer produces and then
answered differently from stock pycasbin: workspace-scoped inheritance was answered from the memo
in another workspace (fail-open), user → user links and cross-pack inheritance were denied by the
"no role of this pack" short-cut although Casbin allows them. There were two ways to close it:
widen the memo key and the short-cuts until they cover every string Casbin could be handed, or
refuse what the writers never write. We refuse, because

* the hot path stays as it is. The memo keys a decision by the subject's *direct* roles of the
  workspace's pack; that decides reachability only while inheritance links two roles of one pack,
  in every workspace at once. Covering workspace-scoped inheritance, links between users, or
  inheritance across packs puts a reachability walk (or the domain) into every key and removes the
  "no role of this pack" short-cut: a walk per check instead of a dict probe;
* those inputs mean nothing in the product: a pack's hierarchy is the same in every workspace, a
  user holds roles rather than other users, a workspace runs one pack;
* refusing fails closed and loud. A change batch with a refused rule raises
  :class:`InvalidRuleError` before anything is applied; at start-up the engine is not built. The
  writers (``app.policy.store.check_rule_shape``, used by every service) call the same
  :func:`rule_problems`, so a committed revision always passes.

Accepted shapes (anything else is refused):

==========  ==============================================================================
``p``       priority, ``role:<pack>:<role>``, action, scope, feature, effect (field rules:
            :func:`app.authz.packs.validate_rule`); the role's pack is the rule's pack
``g``       ``user:<id>`` → ``role:<pack>:<role>`` in ``ws:<slug>`` (membership) or ``*``
            (platform role); ``role:<pack>:<a>`` → ``role:<pack>:<b>`` in ``*`` (inheritance)
``g2 g3``   ``user:<id>`` → ``group:<name>`` or ``team:<name>`` in ``ws:<slug>``
``g4``      ``ws:<slug>`` → ``pack:<pack>``; one pack per workspace (a state check, in the engine);
            ``pack:<pack>`` → ``role:<pack>:<role>`` of the same pack (the pack's CSV: which roles
            a workspace of the pack reaches; that the role is declared is the pack loader's check)
``g5``      ``ws:<slug>`` → a feature id
==========  ==============================================================================

Why the domains are so strict: only ``g`` has a domain-matching function in stock Casbin, and it
is ``key_match``, for which *any* stored domain containing ``*`` is a prefix pattern
(``ws:a*`` grants in every ``ws:a…``); the engine's role manager knows only the exact ``*``, and
for every role type. Why ``g4``/``g5`` name a workspace (or, for ``g4``, a pack and one of its
roles): Casbin follows those links transitively, ``g4(r.dom, p.sub)`` walks ws → pack → role, and a
``ws → role`` link or a role of another pack under ``pack:<pack>`` would open a pack's rules in
workspaces of another pack.
"""

from __future__ import annotations

import re

from .identifiers import _LOCAL, PLATFORM_DOMAIN, is_prefixed, split_role, valid_action, valid_pack
from .packs import G_ARITY, Rule, format_rule, validate_rule

# is_prefixed(value, "user") / (value, "ws") as one regex call each: the loading fast path.
_USER = re.compile("user:" + _LOCAL.pattern)
_WS = re.compile("ws:" + _LOCAL.pattern)


class InvalidRuleError(ValueError):
    """A rule (or change batch) the decision core refuses; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def _role_pack(value: str) -> str:
    """The pack of a role key ("" if value is not one)."""
    try:
        return split_role(value)[0]
    except ValueError:
        return ""


def _link_problem(rule: Rule) -> str:
    """What is wrong with what a g-type rule links, "" for a shape the writers write."""
    ptype, a, b = rule[0], rule[1], rule[2]
    dom = rule[3] if len(rule) > 3 else ""
    if ptype == "g":
        pack = _role_pack(b)
        if not pack:
            return "g links a user or a role to a role (role:<pack>:<role>)"
        if a.startswith("role:"):
            if _role_pack(a) != pack or dom != PLATFORM_DOMAIN:
                return "role inheritance links two roles of one pack, in domain '*'"
        elif not is_prefixed(a, "user"):
            return "g links a user (user:<id>) or a role to a role"
        elif dom != PLATFORM_DOMAIN and not is_prefixed(dom, "ws"):
            return "a user holds a role in a workspace (ws:<slug>) or in '*' (a platform role)"
    elif ptype in ("g2", "g3"):
        if not is_prefixed(a, "user"):
            return f"{ptype} links a user (user:<id>) to a group or team"
        if not (is_prefixed(b, "group") or is_prefixed(b, "team")):
            return f"{ptype} links a user to a group (group:<name>) or team (team:<name>)"
        if not is_prefixed(dom, "ws"):
            return f"{ptype} links hold in one workspace (ws:<slug>)"
    elif ptype == "g4":
        if a.startswith("pack:") and valid_pack(a[5:]):
            if _role_pack(b) != a[5:]:
                return "g4 links a pack (pack:<id>) to one of its roles (role:<id>:<role>)"
        elif not is_prefixed(a, "ws") or not b.startswith("pack:") or not valid_pack(b[5:]):
            return "g4 links a workspace (ws:<slug>) to a pack (pack:<id>)"
    elif ptype == "g5" and (not is_prefixed(a, "ws") or not valid_action(b)):
        return "g5 links a workspace (ws:<slug>) to a feature id"
    return ""


def rule_problems(rule: Rule) -> list[str]:
    """Every reason the decision core refuses this rule (empty: accepted)."""
    problems: list[str] = []
    if not rule or not all(isinstance(v, str) for v in rule) or rule[0] not in ("p", *G_ARITY):
        return [f"unknown rule type: {rule!r}"]
    validate_rule(rule, problems)
    if problems:
        return problems
    if rule[0] == "p":
        return problems
    problem = _link_problem(rule)
    if problem:
        problems.append(f"{problem}: {format_rule(rule)}")
    return problems


class FactCheck:
    """:func:`rule_problems` over a stream of facts, remembering what it accepted (loading).

    A million memberships share a few hundred role keys, scope names, packs and features, and a
    workspace's ``g4`` row comes first: once a target (per type) and a workspace were accepted,
    a row naming both only needs its user (or workspace) matched, which is exactly what
    :func:`rule_problems` would check of it.
    """

    __slots__ = ("_targets", "_packs_features", "_ws")

    def __init__(self) -> None:
        # accepted targets of users' links (g, g2, g3) and of workspaces' links (g4, g5)
        self._targets: dict[str, set[str]] = {"g": set(), "g2": set(), "g3": set()}
        self._packs_features: dict[str, set[str]] = {"g4": set(), "g5": set()}
        self._ws: set[str] = set()

    def check(self, rule: Rule) -> None:
        """Raise InvalidRuleError unless the rule is accepted."""
        n = len(rule)
        if n == 4:
            targets = self._targets.get(rule[0])
            if (
                targets is not None
                and rule[2] in targets
                and (rule[3] in self._ws or (rule[3] == PLATFORM_DOMAIN and rule[0] == "g"))
                and type(rule[1]) is str
                and _USER.fullmatch(rule[1]) is not None
            ):
                return
        elif n == 3:
            targets = self._packs_features.get(rule[0])
            if (
                targets is not None
                and rule[2] in targets
                and (rule[1] in self._ws or (type(rule[1]) is str and _WS.fullmatch(rule[1]) is not None))
            ):
                self._ws.add(rule[1])
                return
        problems = rule_problems(rule)
        if problems:
            raise InvalidRuleError(problems)
        ptype = rule[0]
        if ptype in ("g4", "g5"):
            if not rule[1].startswith("ws:"):
                return  # a pack → role row: its target must never admit a ws → role row
            self._packs_features[ptype].add(rule[2])
            self._ws.add(rule[1])
        elif ptype != "p" and rule[1].startswith("user:"):
            self._targets[ptype].add(rule[2])
            if rule[3] != PLATFORM_DOMAIN:
                self._ws.add(rule[3])
