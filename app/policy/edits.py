"""Policy edits: validate, preview, apply (as one revision), roll back.

An edit is a list of :class:`Edit` (add/remove/replace a pack rule, add a role or an action to a
pack). :func:`draft` applies it to copies of the stored documents and pack rules and lists every
problem: rule shape, unknown roles/actions/features, inheritance cycles (the pack loader's own
checks), the escalation verifier's counterexamples (:mod:`app.authz.delegation`: a role that may
grant a role holding rights it lacks, or grant or act on a role of equal or higher rank, beyond the
pack's grant exceptions), and policy tests of ``policy/tests`` that passed before the edit and fail
after it. A rollback's target state goes through the same checks. :func:`preview` adds the role × action decisions that
flip, computed by two probe engines (before/after), and how many users in how many workspaces
gain or lose each permission, from the live engine's memberships.

Only pack rules are edited here (p rules, role-to-role inheritance in ``*``, and the ``g4`` links from a
pack to its roles that give a role's p rules effect in the pack's workspaces); memberships,
groups and features are facts that the member services own.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.authz import AccessRequest, PolicyEngine, decisionlog, delegation
from app.authz.engine import RuleChange
from app.authz.identifiers import PLATFORM_DOMAIN, valid_action, valid_pack
from app.authz.matrix import cell, probe_engine, rank_pairs
from app.authz.packs import (
    Pack,
    PackError,
    PackSet,
    Rule,
    format_rule,
    is_pack_rule,
    packset_from_documents,
    parse_rule_line,
    rule_pack,
)
from app.authz.policytest import PolicySuite, load_suite, run_suite, suite_files
from app.database import in_transaction
from app.errors import ConflictError, ValidationError
from app.models import AuditEvent, PolicyPack
from app.policy import store as policy_store
from app.policy.runtime import PolicyRuntime

MAX_TEST_FAILURES_LISTED = 50
SAMPLE = 5


@dataclass(frozen=True)
class Edit:
    """One change of a proposal."""

    op: str  # add | remove | replace | add_role | add_action
    rule: Sequence[str] | str | None = None
    with_: Sequence[str] | str | None = None
    pack: str | None = None
    role: Mapping[str, Any] | None = None
    action: Mapping[str, Any] | None = None


@dataclass
class Draft:
    """The policy as it would be after an edit, and what is wrong with it."""

    revision: int
    documents_before: dict[str, dict[str, Any]]
    documents: dict[str, dict[str, Any]]
    rules_before: list[Rule]
    rules: list[Rule]
    changes: list[RuleChange] = field(default_factory=list)
    touched_documents: set[str] = field(default_factory=set)
    packs: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    before: PackSet | None = None
    after: PackSet | None = None

    @property
    def valid(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


@dataclass(frozen=True)
class Flip:
    """One role × action cell of a pack whose decision changes."""

    pack: str
    role: str
    action: str
    before: str
    after: str
    change: str  # gain | lose | scope
    users: int = 0
    workspaces: int = 0
    sample: tuple[str, ...] = ()  # up to SAMPLE user keys of the people affected


@dataclass(frozen=True)
class Impact:
    """Per pack and action: users and workspaces that gain or lose the permission."""

    pack: str
    action: str
    gain_users: int
    gain_workspaces: int
    lose_users: int
    lose_workspaces: int


@dataclass
class Preview:
    """A validated draft with its flips and impact."""

    draft: Draft
    flips: list[Flip]
    impact: list[Impact]


# -- drafting --------------------------------------------------------------------------------------
def parse_rule(raw: Sequence[str] | str | None, where: str, problems: list[str]) -> Rule | None:
    """A rule from a list of fields or a CSV line; None (and a problem) if unusable."""
    if raw is None:
        problems.append(f"{where}: a rule is required")
        return None
    if isinstance(raw, str):
        if "\n" in raw:
            problems.append(f"{where}: one rule per change")
            return None
        rule = parse_rule_line(raw)
        if rule is None:
            problems.append(f"{where}: empty rule")
        return rule
    return tuple(str(v).strip() for v in raw)


def _pack_rule_problems(rule: Rule, where: str) -> list[str]:
    problems = [f"{where}: {p}" for p in policy_store.check_rule_shape(rule)]
    if not problems and not is_pack_rule(rule):
        problems.append(
            f"{where}: only pack rules can be edited here (p rules, g between two roles of a pack in '*', "
            f"g4 from a pack to one of its roles): "
            f"{format_rule(rule)}"
        )
    return problems


def _add_document_entry(docs: dict[str, dict[str, Any]], edit: Edit, where: str, problems: list[str]) -> str | None:
    pid = edit.pack or ""
    doc = docs.get(pid)
    if doc is None:
        problems.append(f"{where}: unknown pack {pid!r}")
        return None
    if edit.op == "add_role":
        spec = dict(edit.role or {})
        rid = spec.get("id")
        if not valid_pack(rid):
            problems.append(f"{where}: role id must be snake_case: {rid!r}")
            return None
        existing = {str(r.get("id")) for r in [*(doc.get("roles") or []), *(doc.get("platform_roles") or [])]}
        if rid in existing:
            problems.append(f"{where}: role {rid!r} already exists in {pid}")
            return None
        if not isinstance(spec.get("rank"), int) or isinstance(spec.get("rank"), bool):
            problems.append(f"{where}: role rank must be an integer")
            return None
        entry = {"id": rid, "label": spec.get("label") or rid, "rank": spec["rank"]}
        if spec.get("description"):
            entry["description"] = spec["description"]
        key = "platform_roles" if spec.get("platform") else "roles"
        doc[key] = [*(doc.get(key) or []), entry]
        return pid
    spec = dict(edit.action or {})
    aid = spec.get("id")
    if not valid_action(aid):
        problems.append(f"{where}: action id must be snake_case: {aid!r}")
        return None
    if aid in {str(a.get("id")) for a in doc.get("actions") or []}:
        problems.append(f"{where}: action {aid!r} already exists in {pid}")
        return None
    entry = {"id": aid, "label": spec.get("label") or aid}
    for k in ("section", "source", "feature"):
        if spec.get(k):
            entry[k] = spec[k]
    doc["actions"] = [*(doc.get("actions") or []), entry]
    return pid


def current_state(session: Session) -> tuple[int, dict[str, dict[str, Any]], list[Rule]]:
    """(revision, documents, pack rules) as stored."""
    revision = policy_store.current_revision(session)
    documents = policy_store.load_documents(session)
    rules = [r for r in policy_store.load_rules(session, ("p", "g", "g4")) if is_pack_rule(r)]
    return revision, documents, rules


def draft(session: Session, edits: Sequence[Edit], model_text: str, policy_dir: Path | str | None = None) -> Draft:
    """The stored policy with edits applied, and every problem with it."""
    revision, documents, rules = current_state(session)
    d = Draft(revision, documents, copy.deepcopy(documents), rules, list(rules))
    present = set(rules)
    for n, edit in enumerate(edits, 1):
        where = f"change {n} ({edit.op})"
        if edit.op in ("add_role", "add_action"):
            pid = _add_document_entry(d.documents, edit, where, d.problems)
            if pid:
                d.touched_documents.add(pid)
                d.packs.add(pid)
            continue
        if edit.op not in ("add", "remove", "replace"):
            d.problems.append(f"{where}: unknown operation")
            continue
        old = parse_rule(edit.rule, where, d.problems)
        new = parse_rule(edit.with_, where + " with", d.problems) if edit.op == "replace" else None
        if old is None or (edit.op == "replace" and new is None):
            continue
        targets = [old] if new is None else [old, new]
        shape = [p for r in targets for p in _pack_rule_problems(r, where)]
        if shape:
            d.problems.extend(shape)
            continue
        if edit.op in ("remove", "replace"):
            if old not in present:
                d.problems.append(f"{where}: no such rule: {format_rule(old)}")
                continue
            present.discard(old)
            d.rules.remove(old)
            d.changes.append(RuleChange("remove", old))
            d.packs.add(rule_pack(old))
        added = old if edit.op == "add" else new
        if added is not None:
            if added in present:
                d.problems.append(f"{where}: rule already exists: {format_rule(added)}")
                continue
            present.add(added)
            d.rules.append(added)
            d.changes.append(RuleChange("add", added))
            d.packs.add(rule_pack(added))
    d.changes = _net(d.changes)
    try:
        d.before = packset_from_documents(d.documents_before, d.rules_before, model_text)
    except PackError as exc:
        d.problems.extend(f"stored policy: {p}" for p in exc.problems)
    try:
        d.after = packset_from_documents(d.documents, d.rules, model_text)
    except PackError as exc:
        d.problems.extend(exc.problems)
    _verify(d, policy_dir)
    if not d.changes and not d.touched_documents and not d.problems:
        d.problems.append("the change changes nothing")
    return d


def _net(changes: list[RuleChange]) -> list[RuleChange]:
    """Drop add/remove pairs of the same rule within one edit (order of the rest kept)."""
    out: list[RuleChange] = []
    for ch in changes:
        opposite = RuleChange("add" if ch.op == "remove" else "remove", ch.rule)
        if opposite in out:
            out.remove(opposite)
        else:
            out.append(ch)
    return out


# -- checks ------------------------------------------------------------------------------------------
def _verify(d: Draft, policy_dir: Path | str | None) -> None:
    """The checks every target state passes (edit or rollback): the escalation verifier and the policy
    tests, both reported (an editor sees every reason at once, e.g. an escalation and the seed cell it breaks)."""
    if d.before is None or d.after is None or d.problems:
        return
    d.problems.extend(delegation.problems(d.after, sorted(p for p in d.packs if p in d.after.packs)))
    if policy_dir is not None:
        d.problems.extend(broken_tests(d.before, d.after, Path(policy_dir), d.packs))


def _suites(policy_dir: Path, packs: set[str]) -> list[PolicySuite]:
    """Suites that use a workspace of one of packs (the others cannot change)."""
    out = []
    for path in suite_files(policy_dir):
        suite = load_suite(path)
        used = {f[2][5:] for f in suite.facts if f[0] == "g4"}
        if used & packs:
            out.append(suite)
    return out


def _test_results(packset: PackSet, suites: Sequence[PolicySuite]) -> dict[str, tuple[bool, str]]:
    out: dict[str, tuple[bool, str]] = {}
    for suite in suites:
        if any(f[0] == "g4" and f[2][5:] not in packset.packs for f in suite.facts):
            continue
        for res in run_suite(packset, suite):
            got = f"expected {res.case.expect} {res.case.reason}".rstrip() + f", got {res.got} ({res.got_reason})"
            out[res.case.id] = (res.passed, got)
    return out


# The stored policy's results are the same for every proposal until the packs change.
_BEFORE_CACHE: dict[tuple[str, str, frozenset[str]], dict[str, tuple[bool, str]]] = {}


def _fingerprint(packset: PackSet) -> str:
    blob = json.dumps(
        [[pid, p.document, list(p.rules)] for pid, p in sorted(packset.packs.items())], sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def broken_tests(before: PackSet, after: PackSet, policy_dir: Path, packs: set[str]) -> list[str]:
    """Policy test cases (of suites using the edited packs) that pass before the edit and fail after it."""
    suites = _suites(policy_dir, packs)
    stamp = ",".join(f"{p.name}:{p.stat().st_mtime_ns}" for p in suite_files(policy_dir))
    key = (_fingerprint(before), stamp, frozenset(packs))
    old = _BEFORE_CACHE.get(key)
    if old is None:
        old = _test_results(before, suites)
        if len(_BEFORE_CACHE) > 16:
            _BEFORE_CACHE.clear()
        _BEFORE_CACHE[key] = old
    new = _test_results(after, suites)
    broken = [
        f"policy test fails: {cid}: {new[cid][1]}" for cid in new if not new[cid][0] and old.get(cid, (False,))[0]
    ]
    if len(broken) > MAX_TEST_FAILURES_LISTED:
        extra = len(broken) - MAX_TEST_FAILURES_LISTED
        broken = broken[:MAX_TEST_FAILURES_LISTED] + [f"... and {extra} more policy test failures"]
    return broken


# -- preview ----------------------------------------------------------------------------------------
def _cells(packset: PackSet, pack: Pack, roles: Iterable[str], actions: Iterable[str]) -> dict[tuple[str, str], str]:
    engine = probe_engine(packset, pack)
    grants = delegation.grant_actions(pack)
    out: dict[tuple[str, str], str] = {}
    for role in roles:
        for action in actions:
            if pack.role(role) is None or pack.action(action) is None:
                out[(role, action)] = "—"
                continue
            value = cell(engine, pack, role, action)
            if action in grants and value != "—":
                pairs = rank_pairs(engine, pack, role, action)
                new_roles = sorted({n for _, n in pairs if n})
                targets = sorted({t for t, _ in pairs if t})
                value += f" (grants: {', '.join(new_roles) or '-'}; on: {', '.join(targets) or '-'})"
            out[(role, action)] = value
    return out


def holders(live: PolicyEngine, pack_id: str) -> dict[str, tuple[set[str], set[str]]]:
    """role id → (users, workspaces) holding it directly in the live policy (platform roles: every workspace)."""
    out: dict[str, tuple[set[str], set[str]]] = {}
    spaces = [dom for dom, pid in live.workspaces().items() if pid == pack_id]
    prefix = f"role:{pack_id}:"
    for dom in spaces:
        for user, role in live.members_of(dom).items():
            if role.startswith(prefix):
                users, wss = out.setdefault(role[len(prefix) :], (set(), set()))
                users.add(user)
                wss.add(dom)
    for user, roles in live.g.links.get(PLATFORM_DOMAIN, {}).items():
        if not user.startswith("user:"):
            continue
        for role in roles:
            if role.startswith(prefix):
                users, wss = out.setdefault(role[len(prefix) :], (set(), set()))
                users.add(user)
                wss.update(spaces)
    return out


def preview(d: Draft, live: PolicyEngine) -> Preview:
    """Flips (role × action × pack) between the stored and the edited policy, and who is affected."""
    if d.before is None or d.after is None:
        return Preview(d, [], [])
    flips: list[Flip] = []
    impact: list[Impact] = []
    for pid in sorted(d.packs):
        pack_a = d.after.packs.get(pid)
        pack_b = d.before.packs.get(pid)
        if pack_a is None or pack_b is None:
            continue
        roles = list(dict.fromkeys([*(r.id for r in pack_b.roles), *(r.id for r in pack_a.roles)]))
        actions = list(dict.fromkeys([*(a.id for a in pack_b.actions), *(a.id for a in pack_a.actions)]))
        was = _cells(d.before, pack_b, roles, actions)
        now = _cells(d.after, pack_a, roles, actions)
        who = holders(live, pid)
        per_action: dict[str, dict[str, tuple[set[str], set[str]]]] = {}
        for role in roles:
            for action in actions:
                b, a = was[(role, action)], now[(role, action)]
                if a == b:
                    continue
                change = "gain" if b == "—" else "lose" if a == "—" else "scope"
                users, wss = who.get(role, (set(), set()))
                sample = tuple(sorted(users, key=lambda k: (len(k), k))[:SAMPLE])
                flips.append(Flip(pid, role, action, b, a, change, len(users), len(wss), sample))
                if change in ("gain", "lose"):
                    bucket = per_action.setdefault(action, {"gain": (set(), set()), "lose": (set(), set())})
                    bucket[change][0].update(users)
                    bucket[change][1].update(wss)
        for action, buckets in per_action.items():
            impact.append(
                Impact(
                    pid,
                    action,
                    len(buckets["gain"][0]),
                    len(buckets["gain"][1]),
                    len(buckets["lose"][0]),
                    len(buckets["lose"][1]),
                )
            )
    return Preview(d, flips, impact)


def draft_engine(after: PackSet, live: PolicyEngine, domain: str) -> PolicyEngine:
    """An engine of drafted packs holding the live facts of one workspace and every platform role.

    For the playground: how the draft would decide for the real people of that workspace.
    """
    g = live.g.links
    facts: list[Rule] = []
    for ptype in ("g4", "g5"):
        facts += [(ptype, domain, v) for v in live.enforcer.rm(ptype).direct(domain, "")]
    for dom in (domain, PLATFORM_DOMAIN):
        facts += [("g", u, r, dom) for u, roles in g.get(dom, {}).items() if u.startswith("user:") for r in roles]
    for ptype in ("g2", "g3"):
        facts += [
            (ptype, u, unit, domain)
            for u, units in live.enforcer.rm(ptype).links.get(domain, {}).items()
            for unit in units
        ]
    return PolicyEngine(after, facts, live.revision)


PROBE = "user:probe"  # the principal of a role probe: holds one role, in no group or team


def role_engine(packs: PackSet, live: PolicyEngine, domain: str, role: str) -> PolicyEngine | None:
    """An engine holding one workspace (its pack link and feature switches) and a single principal,
    :data:`PROBE`, holding ``role`` there (or on the platform, for a platform role): how the policy
    decides for a role, with no person's facts in it. None if the role is not of the workspace's pack."""
    facts: list[Rule] = []
    for ptype in ("g4", "g5"):
        facts += [(ptype, domain, v) for v in live.enforcer.rm(ptype).direct(domain, "")]
    probe = PolicyEngine(packs, facts, live.revision)
    pack = probe.pack_of(domain)
    found = next((r for r in pack.roles if pack.role_key(r.id) == role), None) if pack is not None else None
    if pack is None or found is None:
        return None
    facts.append(("g", PROBE, role, PLATFORM_DOMAIN if found.platform else domain))
    return PolicyEngine(packs, facts, live.revision)


def rollback_draft(session: Session, to_revision: int, model_text: str, policy_dir: Path | str | None) -> Draft:
    """What rolling back to ``to_revision`` would do, verified; nothing is written (caller rolls back).

    Raises ValidationError like :func:`rollback` when the target is out of range.
    """
    try:
        return rollback(session, to_revision, model_text, None, "preview", policy_dir, dry_run=True)
    finally:
        session.rollback()


# -- writes ------------------------------------------------------------------------------------------
def apply(
    session: Session,
    edits: Sequence[Edit],
    model_text: str,
    policy_dir: Path | str | None,
    actor_id: int | None = None,
    message: str = "",
    expected_revision: int | None = None,
) -> Draft:
    """Validate and write an edit as one new revision, with an audit row (caller commits).

    Raises ConflictError (expected_revision is stale), ValidationError (problems listed).
    """
    handle = policy_store.begin_write(session, "policy-edit", actor_id, message or "policy edit")
    head = handle.number - 1
    if expected_revision is not None and expected_revision != head:
        raise ConflictError(f"the policy moved on: at revision {head}, not {expected_revision}", revision=head)
    d = draft(session, edits, model_text, policy_dir)
    d.revision = handle.number
    if d.problems:
        raise ValidationError("the change is invalid", problems=d.problems)
    _write(
        session,
        handle,
        d,
        actor_id,
        "policy.edit",
        "policy:" + ",".join(sorted(d.packs)),
        d.documents_before,
        {"message": message},
    )
    return d


def rollback(
    session: Session,
    to_revision: int,
    model_text: str,
    actor_id: int | None = None,
    message: str = "",
    policy_dir: Path | str | None = None,
    dry_run: bool = False,
) -> Draft:
    """Return pack rules and documents to their state at ``to_revision``, as one new revision.

    With ``dry_run`` the verified draft is returned with its problems and nothing is written.

    Facts (memberships, groups, features) are not touched. The target state is verified like any
    edit (escalation verifier, policy tests). Raises ValidationError (revision out of range, a
    document changed without a recorded before-state, the result does not load or fails a check).
    """
    handle = policy_store.begin_write(session, "policy-rollback", actor_id, message or f"roll back to {to_revision}")
    head = handle.number - 1
    if to_revision >= head:
        raise ValidationError(f"to_revision must be lower than the current revision {head}")
    _, documents, rules = current_state(session)
    target = list(rules)
    present = set(rules)
    later = [(n, chs) for n, _, chs in policy_store.revision_log_after(session, to_revision, None) if n < handle.number]
    for _, changes in reversed(later):
        for ch in reversed(changes):
            if not is_pack_rule(ch.rule):
                continue
            if ch.op == "add" and ch.rule in present:
                present.discard(ch.rule)
                target.remove(ch.rule)
            elif ch.op == "remove" and ch.rule not in present:
                present.add(ch.rule)
                target.append(ch.rule)
    d = Draft(handle.number, documents, copy.deepcopy(documents), rules, target)
    current = set(rules)
    d.changes = [RuleChange("remove", r) for r in rules if r not in present]
    d.changes += [RuleChange("add", r) for r in target if r not in current]
    d.packs = {rule_pack(c.rule) for c in d.changes}
    # Documents: the before-state recorded by the earliest edit after to_revision wins.
    events = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.action.in_(["policy.edit", "policy.rollback"]), AuditEvent.revision > to_revision)
        .order_by(AuditEvent.revision.desc())
    )
    restored: set[str] = set()
    for ev in events:
        for pid, doc in ((ev.before or {}).get("documents") or {}).items():
            d.documents[pid] = copy.deepcopy(doc)
            restored.add(pid)
    for row in session.scalars(select(PolicyPack).where(PolicyPack.revision > to_revision)):
        if row.pack not in restored:
            d.problems.append(
                f"document of pack {row.pack} changed at revision {row.revision} without a recorded before-state "
                "(an import); restore it with `flask policy import` from the matching files"
            )
    d.touched_documents = {pid for pid in restored if d.documents[pid] != documents.get(pid)}
    d.packs |= d.touched_documents
    try:
        d.before = packset_from_documents(documents, rules, model_text)
        d.after = packset_from_documents(d.documents, d.rules, model_text)
    except PackError as exc:
        d.problems.extend(exc.problems)
    _verify(d, policy_dir)
    if not d.changes and not d.touched_documents and not d.problems:
        d.problems.append(f"nothing to roll back: pack rules and documents already equal revision {to_revision}")
    if dry_run:
        return d
    if d.problems:
        raise ValidationError("cannot roll back", problems=d.problems)
    _write(
        session,
        handle,
        d,
        actor_id,
        "policy.rollback",
        f"revision:{to_revision}",
        documents,
        {"to_revision": to_revision},
    )
    return d


def _write(
    session: Session,
    handle: policy_store.WriteHandle,
    d: Draft,
    actor_id: int | None,
    action: str,
    target: str,
    documents_before: Mapping[str, Any],
    after_extra: Mapping[str, Any],
) -> None:
    """Write a validated draft under its revision: rules, touched documents, and the audit row."""
    policy_store.add_changes(session, handle, d.changes)
    touched = sorted(d.touched_documents)
    for pid in touched:
        policy_store.save_document(session, pid, d.documents[pid], handle.number)
    session.add(
        AuditEvent(
            actor_id=actor_id,
            action=action,
            target=target,
            before={
                "revision": handle.number - 1,
                "removed": [list(c.rule) for c in d.changes if c.op == "remove"],
                "documents": {pid: documents_before[pid] for pid in touched},
            },
            after={
                **after_extra,
                "added": [list(c.rule) for c in d.changes if c.op == "add"],
                "documents": {pid: d.documents[pid] for pid in touched},
            },
            revision=handle.number,
        )
    )
    session.flush()


# -- committed writes (the policy API's) ---------------------------------------------------------------
def commit(session: Session, runtime: PolicyRuntime, write: Callable[[Session], Draft]) -> Draft:
    """Run one policy write (:func:`apply` or :func:`rollback`) as its own transaction, then bring
    this process's engine to the new revision: the after-commit path applied it in place (rules and
    documents, ``PolicyRuntime._advance``); the sync catches up whatever it could not."""
    with in_transaction(session):
        d = write(session)
    runtime.sync()
    return d


# -- impact replay ---------------------------------------------------------------------------------------
REPLAY_WORKSPACES = 200  # at most this many workspaces' draft engines per replay (the most recent first)
REPLAY_SAMPLE = 5


@dataclass(frozen=True)
class Replay:
    """Recent real decisions replayed on the stored and the drafted policy (same facts, so only the edit
    can flip them)."""

    logged: int  # decisions in the log
    replayed: int  # of them, in a workspace of an edited pack (the others cannot change)
    flipped: int
    skipped: int  # in workspaces beyond REPLAY_WORKSPACES
    sample: tuple[tuple[str, str, str, str, bool], ...] = ()  # (subject, workspace, action, type, allowed after)


def replay(d: Draft, live: PolicyEngine, log: Sequence[decisionlog.Logged]) -> Replay:
    """Of the logged decisions, how many the draft would answer differently from the stored policy."""
    if d.before is None or d.after is None:
        return Replay(len(log), 0, 0, 0)
    packs = live.workspaces()
    by_domain: dict[str, list[AccessRequest]] = {}
    for request, _ in reversed(log):  # newest first: the workspaces seen most recently are replayed first
        if packs.get(request.domain) in d.packs:
            by_domain.setdefault(request.domain, []).append(request)
    replayed = flipped = skipped = 0
    sample: list[tuple[str, str, str, str, bool]] = []
    for n, (domain, requests) in enumerate(by_domain.items()):
        if n >= REPLAY_WORKSPACES:
            skipped += len(requests)
            continue
        before = draft_engine(d.before, live, domain)
        after = draft_engine(d.after, live, domain)
        answers: dict[AccessRequest, tuple[bool, bool]] = {}  # traffic repeats itself: each question once
        for r in requests:
            replayed += 1
            got = answers.get(r)
            if got is None:
                got = answers[r] = (before.check(r).allowed, after.check(r).allowed)
            if got[0] != got[1]:
                flipped += 1
                if len(sample) < REPLAY_SAMPLE:
                    sample.append((r.subject, domain, r.action, r.obj.type, got[1]))
    return Replay(len(log), replayed, flipped, skipped, tuple(sample))
