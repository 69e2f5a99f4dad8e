"""An independent brute-force oracle for the escalation verifier, and a differential test against it.

The oracle shares no code with ``app.authz.delegation`` (nor with the engine, the memo planner or
the rank functions): it builds stock ``casbin.Enforcer``s from the real ``model.conf`` (one per
action, the matcher expression parsed once), with ``rankAbove``/``mayGrant`` written here from the
pack's ranks and ``grants:``; it seeds a small workspace (one subject per role, all with the same
relations: managing ``m`` and ``b``, belonging to ``j`` and ``b``; members of every role in and out
of the groups and teams; strangers; platform-role holders) and asks every feature state of the
features the pack's rules mention and every value of every resource field the matcher can read for
the action (fields per scope are read off ``model.conf``'s text). The property it decides, by brute
force, is the one ``docs/verifier.md`` states:

* ``grant_rank``: a role may grant (any grant-carrying action, any situation, any state) a role of
  equal or higher rank that its exceptions (with ``why``) do not list;
* ``manage_rank``: a role may act through a managing action on a member whose role is of equal or
  higher rank (themselves included) beyond its ``may_manage`` exceptions (with ``why``);
* ``delegation``: a role may grant T (not excepted) and T is allowed something, in some feature
  state and situation, that the role is not (what T may do to themselves compared with what the
  granter may do to a member holding T).

The differential test draws random edits of a small pack (new roles with ranks, inheritance,
allow/deny rules with feature switches and priorities at every scope on grant-carrying actions,
exceptions with and without ``why``) and requires the verifier's counterexamples (kind, role,
action, other) to equal the oracle's. ``VERIFIER_ORACLE_EDITS`` sets the number of edits (default 14;
3 when every request names two people, whose product the brute force pays; the seed is fixed,
``VERIFIER_ORACLE_SEED`` changes it).
"""

from __future__ import annotations

import itertools
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import casbin
import pytest
from casbin.model import Model
from casbin.util import key_match
from casbin.util.log import disabled_logging

from app.authz import delegation
from app.authz.packs import SCOPES, Pack, PackError, PackSet, load_packs, packset_from_documents

ROOT = Path(__file__).resolve().parent.parent
MODEL = (ROOT / "model.conf").read_text(encoding="utf-8")
DEFAULT_EDITS = 14  # ~50 s on 2 shared cores with this branch's model.conf
SEED = int(os.environ.get("VERIFIER_ORACLE_SEED", "2026"))
WS = "ws:oracle"
GROUPS = ("m", "j", "b", "n")  # the subjects manage m and b, belong to j and b; n: neither
OTHER = "user:o-someone"


# -- reading the model's text -----------------------------------------------------------------------
def _matcher(model_text: str) -> str:
    lines, on = [], False
    for raw in model_text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if line.strip() == "[matchers]":
            on = True
            continue
        if on and line.strip().startswith("["):
            break
        if on and line.strip():
            lines.append(line.rstrip("\\").strip())
    text = " ".join(lines)
    return text.split("=", 1)[1].strip() if text.startswith("m") else text


def fields_by_scope(model_text: str) -> tuple[set[str], dict[str, set[str]]]:
    """(fields every rule reads, fields each scope adds), read from the matcher's text."""
    m = _matcher(model_text)
    first = m.index("p.scope ==")
    depth, start = 0, first
    for i in range(first, -1, -1):  # the parenthesis that opens the disjunction of scopes
        if m[i] == ")":
            depth += 1
        elif m[i] == "(":
            if depth == 0:
                start = i
                break
            depth -= 1
    depth, end = 0, len(m)
    for i in range(start, len(m)):
        depth += m[i] == "("
        depth -= m[i] == ")"
        if depth == 0:
            end = i
            break
    common = set(re.findall(r"r\.obj\.(\w+)", m[:start] + m[end + 1 :]))
    per: dict[str, set[str]] = {}
    for chunk in m[start + 1 : end].split('p.scope == "')[1:]:
        scope, rest = chunk.split('"', 1)
        per.setdefault(scope, set()).update(re.findall(r"r\.obj\.(\w+)", rest))
    return common, per


COMMON, PER_SCOPE = fields_by_scope(MODEL)
MATCHER = _matcher(MODEL)
# Every request of a model whose common part reads two people (the target contract's member and
# grantee) costs the brute force their product: fewer edits by default, the same depth on request.
PEOPLE_READ = len(COMMON & {"member", "grantee"})
EDITS = int(os.environ.get("VERIFIER_ORACLE_EDITS", str(DEFAULT_EDITS if PEOPLE_READ < 2 else 3)))


# -- the oracle -----------------------------------------------------------------------------------------
class _OnceParsed(casbin.Enforcer):  # type: ignore[misc]
    """Stock Enforcer whose matcher expression is parsed once (pycasbin re-parses it on every call)."""

    def _get_expression(self, expr: str, functions: Any = None) -> Any:
        cache = self.__dict__.setdefault("_parsed", {})
        if expr not in cache:
            cache[expr] = casbin.Enforcer._get_expression(expr, functions)
        cache[expr].functions = functions
        return cache[expr]


@dataclass
class OracleWorld:
    """The small workspace: who holds what, and the people a resource can name."""

    pack: Pack
    subjects: dict[str, str] = field(default_factory=dict)  # role id -> user
    role_in_ws: dict[str, str] = field(default_factory=dict)  # user -> role key in WS
    platform: dict[str, str] = field(default_factory=dict)  # user -> platform role key
    in_unit: dict[tuple[str, str], bool] = field(default_factory=dict)  # (user, "group"/"team") -> member of units
    facts: list[tuple[str, ...]] = field(default_factory=list)


def build_world(pack: Pack) -> OracleWorld:
    w = OracleWorld(pack)
    w.facts.append(("g4", WS, f"pack:{pack.id}"))
    w.facts.append(("g4", f"platform:{pack.id}", f"pack:{pack.id}"))
    for role in pack.roles:
        user = f"user:o-sub-{role.id}"
        key = f"role:{pack.id}:{role.id}"
        w.subjects[role.id] = user
        if role.platform:
            w.platform[user] = key
            w.facts.append(("g", user, key, "*"))
        else:
            w.role_in_ws[user] = key
            w.facts.append(("g", user, key, WS))
        for unit in ("group", "team"):
            w.facts += [("g2", user, f"{unit}:m", WS), ("g2", user, f"{unit}:b", WS)]
            w.facts += [("g3", user, f"{unit}:j", WS), ("g3", user, f"{unit}:b", WS)]
    for role_id in [r.id for r in pack.roles if not r.platform] + ["stranger"]:
        for ig, it in itertools.product((0, 1), repeat=2):
            user = f"user:o-{role_id}-{ig}{it}"
            if role_id != "stranger":
                w.role_in_ws[user] = f"role:{pack.id}:{role_id}"
                w.facts.append(("g", user, f"role:{pack.id}:{role_id}", WS))
            w.in_unit[(user, "group")], w.in_unit[(user, "team")] = bool(ig), bool(it)
            for unit, inside in (("group", ig), ("team", it)):
                if inside:
                    w.facts += [("g3", user, f"{unit}:{g}", WS) for g in GROUPS]
    for role in pack.roles:
        if role.platform:
            user = f"user:o-holder-{role.id}"
            w.platform[user] = f"role:{pack.id}:{role.id}"
            w.facts.append(("g", user, f"role:{pack.id}:{role.id}", "*"))
    return w


def _people(w: OracleWorld, name: str, read: set[str]) -> list[str]:
    """Everyone but the subjects; group or team membership varied only where the matcher's text tests
    this field's person in that unit (``g3(r.obj.<name>, r.obj.<unit>``) and the action reads the unit."""
    tests = {u for u in ("group", "team") if re.search(rf"g\d\(r\.obj\.{name},\s*r\.obj\.{u}\b", MATCHER)}
    tested = tests & read
    everyone = sorted({*w.role_in_ws, *w.platform, *(u for u, _ in w.in_unit)} - set(w.subjects.values()))
    return [p for p in everyone if not any(w.in_unit.get((p, u)) for u in ("group", "team") if u not in tested)]


def _values(name: str, w: OracleWorld, subject: str, read: set[str]) -> list[str]:
    roles = [f"role:{w.pack.id}:{r.id}" for r in w.pack.roles]
    if name in ("assignee", "owner"):
        return ["", subject, OTHER]
    if name in ("member", "grantee"):
        return ["", subject, *_people(w, name, read)]
    if name in ("group", "team"):
        return ["", *(f"{name}:{g}" for g in GROUPS)]
    if name == "new_role":
        return ["", *roles]
    if name == "role":
        return [""]  # filled from the person acted on, as the service does
    # Another field: "" and every constant the matcher compares it with.
    return ["", *sorted(set(re.findall(rf'r\.obj\.{name}\s*[!=]=\s*"([^"]+)"', MATCHER)))]


def _current(w: OracleWorld, person: str, dom: str) -> str:
    if not person.startswith("user:"):
        return ""
    if dom == WS:
        return w.role_in_ws.get(person, "")
    return w.platform.get(person, "")


class Oracle:
    """Brute force over the small workspace for one pack; ``verdict()`` is the set of counterexamples."""

    def __init__(self, packset: PackSet, pack_id: str) -> None:
        disabled_logging()
        self.pack = pack = packset.packs[pack_id]
        self.w = build_world(pack)
        self.rank = {f"role:{pack.id}:{r.id}": r.rank for r in pack.roles}
        self.rank_id = {r.id: r.rank for r in pack.roles}
        grant_x: dict[str, set[str]] = {}
        manage_x: dict[str, set[str]] = {}
        self.exc_grant: dict[str, set[str]] = {}
        self.exc_manage: dict[str, set[str]] = {}
        for g in pack.grants:  # Casbin applies every exception; the property counts only those with why
            grant_x.setdefault(f"role:{pack.id}:{g.role}", set()).update(f"role:{pack.id}:{x}" for x in g.may_grant)
            manage_x.setdefault(f"role:{pack.id}:{g.role}", set()).update(f"role:{pack.id}:{x}" for x in g.may_manage)
            if g.why.strip():
                self.exc_grant.setdefault(g.role, set()).update(g.may_grant)
                self.exc_manage.setdefault(g.role, set()).update(g.may_manage)

        def above(extra: dict[str, set[str]]) -> Any:
            def fn(actor: str, target: str) -> bool:
                if target == "":
                    return True
                if actor not in self.rank or target not in self.rank:
                    return False
                return self.rank[actor] > self.rank[target] or target in extra.get(actor, set())

            return fn

        def when(scope: str, obj: Any) -> bool:
            # an attribute condition holds exactly when the situation says so (both are enumerated)
            return scope.startswith("when:") and scope[5:] in getattr(obj, "holding", "").split(",")

        self.functions = {"rankAbove": above(manage_x), "mayGrant": above(grant_x), "when": when}
        ops = pack.meta.get("operations") or {}
        rank_scoped = {r[3] for r in pack.rules if r[0] == "p" and r[4] == "rank"}
        declared = {ops[k] for k in ("invite", "change_role", "transfer_ownership", "grant_platform_role") if k in ops}
        if pack.meta.get("assign_action"):
            declared.add(pack.meta["assign_action"])
        removal = {ops["remove"]} if "remove" in ops else set()
        actions = {a.id for a in pack.actions}
        self.grants = ((rank_scoped - (removal - declared)) | declared) & actions
        self.manages = self.grants | (removal & actions)
        self.features = sorted({r[5] for r in pack.rules if r[0] == "p" and r[5] != "-"})
        self.domains = [WS] + ([f"platform:{pack.id}"] if any(r.platform for r in pack.roles) else [])
        self.asked = 0
        self.combos = 0

    def _enforcer(self, action: str) -> casbin.Enforcer:
        model = Model()
        model.load_model_from_text(MODEL)
        e = _OnceParsed(model)
        for name, fn in self.functions.items():
            e.add_function(name, fn)
        e.add_named_domain_matching_func("g", key_match)
        for rule in self.pack.rules:
            if rule[0] == "p" and rule[3] == action:
                e.model["p"]["p"].policy.append(list(rule[1:]))
            elif rule[0] != "p":
                e.model["g"][rule[0]].policy.append(list(rule[1:]))
        for fact in self.w.facts:
            e.model["g"][fact[0]].policy.append(list(fact[1:]))
        e.model.sort_policies_by_priority()
        e.build_role_links()
        return e

    def _read(self, action: str) -> set[str]:
        """The fields the matcher's text reads for the scopes of the action's rules (all if a scope is unknown)."""
        scopes = {r[4] for r in self.pack.rules if r[0] == "p" and r[3] == action}
        names = set(COMMON)
        for s in scopes:
            if not s.startswith("when:"):  # a condition reads properties only (enumerated as `holding`)
                names |= PER_SCOPE.get(s, set(re.findall(r"r\.obj\.(\w+)", MATCHER)))
        return names - {"role"}

    def _conditions(self, action: str) -> list[str]:
        scopes = {r[4] for r in self.pack.rules if r[0] == "p" and r[3] == action}
        return sorted(s[5:] for s in scopes if s.startswith("when:"))

    def _resources(self, action: str, subject: str, dom: str) -> list[dict[str, str]]:
        read = self._read(action)
        names = sorted(read)
        out = []
        for values in itertools.product(*(_values(n, self.w, subject, read) for n in names)):
            facts = dict(zip(names, values))
            units = (facts.get("group", ""), facts.get("team", ""))
            if dom != WS and any(u not in ("", "group:n", "team:n") for u in units):
                continue  # this world has no group or team links in the platform domain: every unit is n
            person = facts.get("member") or facts.get("grantee", "")
            facts["role"] = _current(self.w, person, dom)
            conds = self._conditions(action)
            for k in range(len(conds) + 1):
                for holding in itertools.combinations(conds, k):
                    out.append({**facts, "holding": ",".join(holding)} if conds else facts)
        return out

    def decide(self) -> set[tuple[str, str, str, str]]:
        """Every (kind, role, action, other) counterexample, by brute force."""
        pack, w = self.pack, self.w
        held: dict[tuple[str, str], set[tuple[Any, ...]]] = {}  # (role, action) -> situations allowed
        granted: dict[tuple[str, str, str], bool] = {}
        managed: set[tuple[str, str, str]] = set()
        role_id = {f"role:{pack.id}:{r.id}": r.id for r in pack.roles}
        states = [s for k in range(len(self.features) + 1) for s in itertools.combinations(self.features, k)]
        for act in pack.actions:
            e = self._enforcer(act.id)
            for state in states:
                for f in self.features:
                    e.remove_named_grouping_policy("g5", WS, f)
                for f in state:
                    e.add_named_grouping_policy("g5", WS, f)
                for dom in self.domains:
                    if dom != WS and state:
                        continue  # features are switched per workspace only
                    for role in pack.roles:
                        subject = w.subjects[role.id]
                        got = held.setdefault((role.id, act.id), set())
                        for facts in self._resources(act.id, subject, dom):
                            self.asked += 1
                            if not e.enforce(subject, dom, SimpleNamespace(**facts), act.id):
                                continue
                            seen = ((k, "SELF" if v == subject else v) for k, v in facts.items() if k != "role")
                            key = tuple(sorted(seen))
                            got.add((state, dom, key))
                            if act.id in self.manages and facts["role"] in role_id:
                                managed.add((role.id, act.id, role_id[facts["role"]]))
                            if act.id in self.grants and facts.get("new_role") in role_id:
                                granted[(role.id, act.id, role_id[facts["new_role"]])] = True
            self.combos += len(states) * len(self._resources(act.id, "user:x", WS))
        out: set[tuple[str, str, str, str]] = set()
        for r, a, t in managed:
            if self.rank_id[t] >= self.rank_id[r] and t not in self.exc_manage.get(r, set()):
                out.add(("manage_rank", r, a, t))
        for r, a, t in granted:
            if t in self.exc_grant.get(r, set()):
                continue
            if self.rank_id[t] >= self.rank_id[r]:
                out.add(("grant_rank", r, a, t))
            if self._gains(held, r, t):
                out.add(("delegation", r, a, t))
        return out

    def _gains(self, held: dict[tuple[str, str], set[tuple[Any, ...]]], r: str, t: str) -> bool:
        """T allowed something R is not (T on themselves read as R on a member holding T)."""
        t_platform = self.pack.role(t).platform  # type: ignore[union-attr]
        for act in self.pack.actions:
            mine = held[(r, act.id)]
            for state, dom, key in held[(t, act.id)]:
                facts = dict(key)
                for k, v in list(facts.items()):
                    if v != "SELF" or k not in ("member", "grantee"):
                        continue
                    people = set(_people(self.w, k, self._read(act.id)))
                    ig = int(facts.get("group", "")[6:] in ("j", "b"))
                    it = int(facts.get("team", "")[5:] in ("j", "b"))
                    who = "stranger" if t_platform else t
                    if dom != WS:
                        who = f"holder-{t}" if t_platform else "stranger"
                    for person in (f"user:o-{who}-{ig}{it}", f"user:o-{who}-{ig}0", f"user:o-{who}-0{it}"):
                        if person in people or who.startswith("holder-"):
                            break
                    else:
                        person = f"user:o-{who}-00"
                    facts[k] = f"user:o-{who}" if who.startswith("holder-") else person
                if (state, dom, tuple(sorted(facts.items()))) not in mine:
                    return True
        return False


def verifier_verdict(packset: PackSet, pack_id: str) -> set[tuple[str, str, str, str]]:
    report = delegation.verify_pack(packset, pack_id)
    return {(v.kind, v.role, v.action, v.other) for v in report.violations}


# -- a small pack and random edits of it ---------------------------------------------------------------
MINI_DOC: dict[str, Any] = {
    "pack": "mini",
    "title": "A small pack for the differential test",
    "roles": [{"id": "low", "rank": 0}, {"id": "mid", "rank": 1}, {"id": "high", "rank": 2}],
    "platform_roles": [],
    "assign_action": "assign",
    "operations": {"invite": "invite", "change_role": "assign", "remove": "remove"},
    "features": [{"id": "fa", "label": "A"}, {"id": "fb", "label": "B"}],
    "actions": [
        {"id": "assign"},
        {"id": "invite"},
        {"id": "remove"},
        {"id": "view_a", "feature": "fa"},
        {"id": "view_b", "feature": "fb"},
        {"id": "edit_c"},
    ],
    "grants": [],
    # attribute conditions (their CEL never runs here: verifier and oracle decide each both ways)
    "conditions": {"ca": {"when": "context.a == true"}, "cb": {"when": "resource.b == 1"}},
}
MINI_RULES = [
    ("g4", "pack:mini", "role:mini:low"),
    ("g4", "pack:mini", "role:mini:mid"),
    ("g4", "pack:mini", "role:mini:high"),
    ("g", "role:mini:mid", "role:mini:low", "*"),
    ("g", "role:mini:high", "role:mini:mid", "*"),
    ("p", "100", "role:mini:low", "view_a", "any", "fa", "allow"),
    ("p", "100", "role:mini:low", "edit_c", "assignee", "-", "allow"),
    ("p", "90", "role:mini:mid", "view_b", "team", "fb", "allow"),
    ("p", "90", "role:mini:mid", "edit_c", "group", "-", "allow"),
    ("p", "80", "role:mini:high", "assign", "rank", "-", "allow"),
    ("p", "80", "role:mini:high", "invite", "rank", "-", "allow"),
    ("p", "80", "role:mini:high", "remove", "rank", "-", "allow"),
    ("p", "80", "role:mini:high", "edit_c", "any", "-", "allow"),
]


def mini(doc: dict[str, Any] | None = None, rules: list[tuple[str, ...]] | None = None) -> PackSet:
    return packset_from_documents({"mini": doc or MINI_DOC}, rules or MINI_RULES, MODEL)


def random_edit(rng: random.Random) -> tuple[str, PackSet] | None:
    """One random edit of the small pack (None if the pack loader refuses it)."""
    doc = {k: (list(v) if isinstance(v, list) else v) for k, v in MINI_DOC.items()}
    rules = list(MINI_RULES)
    roles = ["low", "mid", "high"]
    notes = []
    if rng.random() < 0.6:
        platform = rng.random() < 0.25
        rank = rng.randint(0, 3)
        entry = {"id": "extra", "rank": rank}
        doc["platform_roles" if platform else "roles"] = [*doc["platform_roles" if platform else "roles"], entry]
        rules.append(("g4", "pack:mini", "role:mini:extra"))
        parent = rng.choice([None, *roles])
        if parent:
            rules.append(("g", "role:mini:extra", f"role:mini:{parent}", "*"))
        roles.append("extra")
        notes.append(f"extra{'(platform)' if platform else ''} rank {rank} <- {parent}")
    actions = [a["id"] for a in MINI_DOC["actions"]]
    for _ in range(rng.randint(1, 4)):
        act = rng.choice(["assign", "invite", "remove"]) if rng.random() < 0.6 else rng.choice(actions)
        rule = (
            "p",
            str(rng.choice([1, 50, 75, 85, 95, 110])),
            f"role:mini:{rng.choice(roles)}",
            act,
            rng.choice([*SCOPES, "when:ca", "when:cb"]),
            rng.choice(["-", "-", "fa", "fb"]),
            rng.choice(["allow", "allow", "deny"]),
        )
        if rule not in rules:
            rules.append(rule)
            notes.append(", ".join(rule))
    if rng.random() < 0.3:
        rules.remove(rng.choice([r for r in MINI_RULES if r[0] == "p"]))
    if rng.random() < 0.35:
        who = rng.choice(roles)
        exc = {
            "role": who,
            "may_grant": rng.sample(roles, rng.randint(0, 2)),
            "may_manage": rng.sample(roles, rng.randint(0, 2)),
            "why": rng.choice(["", "the seed says so"]),
        }
        doc["grants"] = [exc]
        notes.append(f"grants {exc}")
    try:
        return "; ".join(notes), mini(doc, rules)
    except PackError:
        return None


@dataclass
class Counts:
    edits: int = 0
    refused_by_loader: int = 0
    feature_states: int = 0
    combos: int = 0
    asked: int = 0
    failing: int = 0
    disagreements: list[str] = field(default_factory=list)


COUNTS = Counts()


def test_fields_by_scope_read_from_model_conf() -> None:
    """The oracle's scope table comes from the matcher's text (no table written by hand)."""
    assert {"member", "role"} <= COMMON
    assert {"assignee"} <= PER_SCOPE["assignee"] and {"owner"} <= PER_SCOPE["owner"]
    assert {"group", "member", "role"} <= PER_SCOPE["group"] and {"team", "member"} <= PER_SCOPE["team"]
    assert {"member", "role", "new_role"} <= PER_SCOPE["rank"]
    assert set(SCOPES) == set(PER_SCOPE), "every scope of the pack loader has a disjunct in model.conf"


def test_oracle_agrees_on_the_small_pack_and_has_teeth() -> None:
    assert Oracle(mini(), "mini").decide() == set() == verifier_verdict(mini(), "mini")
    bad = mini(rules=[*MINI_RULES, ("p", "1", "role:mini:mid", "assign", "any", "fa", "allow")])
    found = Oracle(bad, "mini").decide()
    assert ("grant_rank", "mid", "assign", "high") in found and ("manage_rank", "mid", "assign", "high") in found
    assert found == verifier_verdict(bad, "mini")


def test_oracle_passes_the_shipped_classroom_and_todo_packs() -> None:
    packs = load_packs(ROOT / "policy", ROOT / "model.conf")
    for pid in ("todo", "classroom"):
        assert Oracle(packs, pid).decide() == set() == verifier_verdict(packs, pid), pid


def test_verifier_agrees_with_brute_force_on_random_edits() -> None:
    rng = random.Random(SEED)
    while COUNTS.edits < EDITS:
        drawn = random_edit(rng)
        if drawn is None:
            COUNTS.refused_by_loader += 1
            continue
        note, packset = drawn
        COUNTS.edits += 1
        oracle = Oracle(packset, "mini")
        expected = oracle.decide()
        got = verifier_verdict(packset, "mini")
        COUNTS.feature_states += 2 ** len(oracle.features)
        COUNTS.combos += oracle.combos
        COUNTS.asked += oracle.asked
        COUNTS.failing += bool(expected)
        if got != expected:
            COUNTS.disagreements.append(f"{note}: verifier-only {got - expected}, oracle-only {expected - got}")
    print(
        f"\nverifier vs brute force: {COUNTS.edits} edits ({COUNTS.refused_by_loader} more refused by the loader), "
        f"{COUNTS.failing} with counterexamples, {COUNTS.feature_states} feature states, "
        f"{COUNTS.combos} fact combinations x states, {COUNTS.asked} Casbin decisions, "
        f"{len(COUNTS.disagreements)} disagreements"
    )
    assert not COUNTS.disagreements, "\n".join(COUNTS.disagreements[:5])
    assert COUNTS.failing and COUNTS.failing < COUNTS.edits, "the edits must produce both verdicts"


@pytest.mark.parametrize("scope", ["assignee", "owner", "when:ca"])
def test_every_scope_on_a_grant_action_is_decided_alike(scope: str) -> None:
    """A rank-0 role with a grant rule at each scope: both find the escalation (reproduction 2's family)."""
    doc = {**MINI_DOC, "roles": [*MINI_DOC["roles"], {"id": "helper", "rank": 0}]}
    helper = ("p", "85", "role:mini:helper", "assign", scope, "-", "allow")
    rules = [*MINI_RULES, ("g4", "pack:mini", "role:mini:helper"), helper]
    packset = mini(doc, rules)
    expected = Oracle(packset, "mini").decide()
    assert ("grant_rank", "helper", "assign", "high") in expected, expected
    assert verifier_verdict(packset, "mini") == expected
