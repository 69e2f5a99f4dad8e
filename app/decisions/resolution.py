"""Reference resolution and fact preparation for every decision surface (decision API, AuthZEN).

A surface parses its own wire format into :class:`Check` values (or anything shaped like them)
and hands them to :func:`decide`. Everything between the wire and the engine happens here, once:
user references (ids, emails, ``user:<id>``) become user keys in at most one query per request,
unknown people in resource attributes name nobody, scope names become prefixed keys, and the
decisions come from the engine. Blueprints never resolve users themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from msgspec import Meta, Struct
from sqlalchemy import inspect, or_, select
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError, TimeoutError
from sqlalchemy.orm import Session, object_session

from app import database
from app.authz import NEWCOMER, AccessRequest, Decision, PolicyEngine, Reason, ResourceFacts, decisionlog
from app.authz.conditions import NO_PROPS, Props
from app.authz.identifiers import InvalidIdentifierError, group_key, is_prefixed, team_key, valid_pack
from app.authz.identifiers import domain_of as domain_of
from app.authz.selection import Selection
from app.decisions.answers import Stamped
from app.errors import WorkspaceNotHeldError
from app.extensions import authz, db
from app.models import User
from app.policy.directory import Directory
from app.policy.refs import EXTERNAL_ID as EXTERNAL_ID
from app.policy.refs import MAX_USER_ID as MAX_USER_ID
from app.policy.refs import Ref as Ref
from app.policy.refs import user_ref as user_ref

# A user reference that never names a real user (real keys are user:<digits>): unknown people
# in resource attributes simply match nothing.
NOBODY = "user:unknown"
NO_FACTS = ResourceFacts()  # the resource of a check that names none (frozen: shared)


# -- what a surface hands over ---------------------------------------------------------------------
# The wire types of the decision API: the one schema of a check, decoded by msgspec
# (``app.api.decision``: exact types, bool is not an int, names at most 254 characters, no unknown
# fields) and described from these structs in /openapi.json. Other surfaces (AuthZEN, the policy
# playground) construct them directly.
Name = Annotated[str, Meta(max_length=254)]
Person = int | str  # a user id, an email, or user:<id>


def _doc(text: str) -> Meta:
    return Meta(description=text)


class CheckAttributes(Struct, frozen=True, forbid_unknown_fields=True):
    """Resource facts the policy reads; people are user ids or emails, scopes are names."""

    assignee: Annotated[Person | None, _doc("who the resource is assigned to")] = None
    owner: Annotated[Person | None, _doc("who owns the resource")] = None
    member: Annotated[Person | None, _doc("the member acted upon (role changes, removals, moves)")] = None
    group: Annotated[Name | None, _doc("group name (or group:<name>)")] = None
    team: Annotated[Name | None, _doc("team name (or team:<name>)")] = None
    new_role: Annotated[Name | None, _doc("role id of the workspace's pack being granted")] = None
    role: Annotated[
        Name | None, _doc("ignored: the member's current role always comes from the policy, never the caller")
    ] = None
    grantee: Annotated[
        Person | None,
        _doc(
            "who receives the grant (an invitee, a future platform role holder): a user reference, "
            "or 'newcomer' for an address without an account; never the subject"
        ),
    ] = None
    target: Annotated[
        Literal["any"] | None,
        _doc(
            "'any' asks explicitly whether the subject may do this to anyone at all (for UIs); "
            "without it a rank-scoped action needs a member or a grantee (else target_required)"
        ),
    ] = None


NO_ATTRIBUTES = CheckAttributes()


class CheckResource(Struct, frozen=True, forbid_unknown_fields=True):
    """The resource acted upon."""

    type: Name = ""
    id: str | int = ""
    attributes: CheckAttributes = NO_ATTRIBUTES


PropertyMap = Annotated[dict[str, Any], Meta(max_length=64)]


class CheckProperties(Struct, frozen=True, forbid_unknown_fields=True):
    """What the pack's attribute conditions (``when:<id>`` rules, CEL) read; JSON values."""

    subject: PropertyMap = {}
    resource: PropertyMap = {}
    action: PropertyMap = {}
    context: PropertyMap = {}


class Check(Struct, frozen=True, forbid_unknown_fields=True):
    """One authorization question (as a surface parsed it, before any reference is resolved)."""

    subject: Annotated[Person, _doc("a user id, an email, or user:<id>")]
    workspace: Annotated[Name, _doc("workspace slug (or ws:<slug>)")]
    action: Annotated[Name, _doc("an action of the workspace's pack, snake_case")]
    resource: CheckResource | None = None
    properties: Annotated[
        CheckProperties | None,
        _doc("subject, resource, action and context properties for the pack's conditions (docs/decision-api.md)"),
    ] = None


Lookup = Callable[[object], "str | None"]  # a user reference → its user key, or None (names nobody)

# -- user resolution, from memory -----------------------------------------------------------------
# Every reference is answered from the directory loaded with the engine (``app.policy.directory``:
# id, email and external id of every user, kept current through the revision log), without a
# query: a reference it does not hold names nobody at the engine's revision (``unknown_subject``:
# denied). A user another process created a moment ago is found once this process applies that
# revision (``min_revision`` waits for it); one inserted in this process is held from its commit.
# Only before the first load (no directory) is the users table asked, once per request.
_PENDING_HANDLES = "decision_handles_changed"


def _ref_changed(kind: str, target: User, value: object) -> None:
    session = object_session(target)
    # (id,) of a persistent user, read without loading anything
    identity: tuple[Any, ...] | None = inspect(target).identity if session is not None else None
    if session is not None and identity and (value is None or isinstance(value, str)):
        # This process's directory follows at commit (other processes: the user-change revision).
        session.info.setdefault(_PENDING_HANDLES, []).append((int(identity[0]), kind, value))


def email_set(target: User, value: object, oldvalue: object, initiator: Any) -> None:
    _ref_changed("email", target, value)


def external_id_set(target: User, value: object, oldvalue: object, initiator: Any) -> None:
    _ref_changed("ext", target, value)


def user_inserted(mapper: Any, connection: Any, target: User) -> None:
    session = object_session(target)
    if session is not None:
        # the values now: after the commit the object is expired (reading it would query)
        new = (int(target.id), "new", (target.email, target.external_id))
        session.info.setdefault(_PENDING_HANDLES, []).append(new)


def apply_handles(session: Session, directory: Directory | None) -> None:
    """After a commit: users inserted in it, and emails and external ids changed in it, reach this
    process's directory."""
    handles = session.info.pop(_PENDING_HANDLES, ())
    if handles and directory is not None:
        for uid, kind, value in handles:
            if kind == "new":
                directory.put(uid, *value)
            else:
                directory.changed(uid, kind, value)


def drop_handles(session: Session) -> None:
    """After a rollback: no user changed."""
    session.info.pop(_PENDING_HANDLES, None)


def _query_users(wanted: set[Ref]) -> dict[Ref, str]:
    ids = [v for k, v in wanted if k == "id"]
    emails = [v for k, v in wanted if k == "email"]
    externals = [v for k, v in wanted if k == "ext"]
    conds = []
    if ids:
        conds.append(User.id.in_(ids))
    if emails:
        conds.append(User.email.in_(emails))
    if externals:
        conds.append(User.external_id.in_(externals))
    out: dict[Ref, str] = {}
    for uid, email, ext in db.session.execute(select(User.id, User.email, User.external_id).where(or_(*conds))):
        key = f"user:{uid}"
        out[("id", int(uid))] = key
        out[("email", str(email).lower())] = key
        if ext is not None:
            out[("ext", str(ext))] = key
    return out


def resolve_refs(pairs: Iterable[tuple[object, str]], eng: PolicyEngine | None = None) -> dict[Ref, str]:
    """(user reference, domain) pairs → {ref: user key}; unknown references are absent.

    From the directory of every user; before the first load, a user id the engine holds a role
    for in that domain, then one query (none while the database cannot be asked).
    """
    directory = authz.directory
    out: dict[Ref, str] = {}
    if directory is not None:
        for value, _domain in pairs:
            ref = user_ref(value)
            if ref is not None:
                known = directory.key(ref)
                if known is not None:
                    out[ref] = known
        return out
    wanted: set[Ref] = set()
    for value, domain in pairs:
        ref = user_ref(value)
        if ref is None or ref in out:
            continue
        key = f"user:{ref[1]}"
        if ref[0] == "id" and eng is not None and eng.roles_of(key, domain):
            out[ref] = key
        else:
            wanted.add(ref)
    if wanted:
        found = _query_users_if_reachable(wanted) or {}
        out.update((ref, found[ref]) for ref in wanted if ref in found)
    return out


def _query_users_if_reachable(wanted: set[Ref]) -> dict[Ref, str] | None:
    """The users table's answer, or None when the database cannot be asked (held down or failing now)."""
    if not database.reachable():
        return None
    try:
        return _query_users(wanted)
    except (OperationalError, InterfaceError, TimeoutError):
        with contextlib.suppress(SQLAlchemyError):  # the connection may be gone with the database
            db.session.rollback()
        return None


def resolve_users(refs: Iterable[object], eng: PolicyEngine | None = None, domain: str = "") -> dict[Ref, str]:
    """User references → user keys, in at most one query; unknown references are absent."""
    return resolve_refs(((r, domain) for r in refs), eng)


def require_held(selection: Selection, workspaces: Iterable[str]) -> None:
    """WorkspaceNotHeldError (421) naming every workspace of the request this process does not hold
    (its partition as ``k/N``), so nothing of a request is decided unless all of it is held here."""
    if selection.everything:
        return
    foreign: dict[str, str | None] = {}
    for workspace in workspaces:
        domain = domain_of(workspace)
        if not selection.holds(domain) and domain not in foreign:
            foreign[domain] = selection.partition_label(domain)
    if foreign:
        first, partition = next(iter(foreign.items()))
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise WorkspaceNotHeldError(
            f"workspace {first}{more} is not held here ({selection.describe()}): "
            f"ask a replica of partition {partition}" if partition else f"workspace {first}{more} is not held here",
            workspace=first,
            partition=partition,
            held=selection.describe(),
            workspaces=[{"workspace": w, "partition": p} for w, p in foreign.items()],
        )


def _scope_key(value: str | None, kind: str) -> str:
    if not value:
        return ""
    if value.startswith(kind + ":"):
        if not is_prefixed(value, kind):
            raise InvalidIdentifierError(f"invalid {kind}")
        return value
    return group_key(value) if kind == "group" else team_key(value)


@dataclass(frozen=True)
class Prepared:
    """A check ready for the engine, or the decision already known without it."""

    request: AccessRequest | None
    early: str | None = None  # reason when decided before the engine


def prepare(item: Check, person_of: Lookup, eng: PolicyEngine) -> Prepared:
    """Turn an API check into an AccessRequest (references → keys through ``person_of``); unknown
    subject and bad values decided here."""
    got = _prepared(item, person_of, eng)
    return Prepared(None, got) if isinstance(got, str) else Prepared(got)


def _prepared(item: Check, person_of: Lookup, eng: PolicyEngine) -> AccessRequest | str:
    """:func:`prepare` without its wrapper (the decision loop's form): the request, or the reason
    it was decided without the engine."""
    subject = person_of(item.subject)
    if subject is None:
        return Reason.UNKNOWN_SUBJECT.value
    domain = domain_of(item.workspace)
    res = item.resource
    given = item.properties
    if res is None and given is None:  # the commonest check: nothing but subject, workspace, action
        return AccessRequest(subject, domain, NO_FACTS, item.action)
    props = Props(given.subject, given.resource, given.action, given.context) if given is not None else NO_PROPS
    if res is None:
        return AccessRequest(subject, domain, ResourceFacts(props=props), item.action)
    attrs = res.attributes

    def person(value: object) -> str:
        if value is None:
            return ""
        return person_of(value) or NOBODY

    try:
        group = _scope_key(attrs.group, "group")
        team = _scope_key(attrs.team, "team")
    except InvalidIdentifierError:
        return Reason.INVALID_REQUEST.value
    grantee = ""
    if attrs.grantee is not None:
        grantee = NEWCOMER if attrs.grantee == NEWCOMER else (person_of(attrs.grantee) or "")
        if not grantee:  # a grantee naming nobody (a wildcard, an unknown id or email) is no target
            return Reason.UNKNOWN_MEMBER.value
    target = attrs.target or ""
    if target not in ("", "any"):
        return Reason.INVALID_REQUEST.value
    new_role = ""
    if attrs.new_role:
        if attrs.new_role.startswith("role:"):
            new_role = attrs.new_role
        else:
            pack = eng.pack_of(domain)
            if not valid_pack(attrs.new_role):
                return Reason.INVALID_REQUEST.value
            new_role = pack.role_key(attrs.new_role) if pack is not None else ""
    obj = ResourceFacts(
        type=res.type,
        id=str(res.id),
        assignee=person(attrs.assignee),
        owner=person(attrs.owner),
        member=person(attrs.member),
        group=group,
        team=team,
        new_role=new_role,
        grantee=grantee,
        target=target,
        props=props,
    )
    return AccessRequest(subject, domain, obj, item.action)


def _item_refs(items: Sequence[Check]) -> list[tuple[object, str]]:
    """(user reference, domain) of every subject and attribute person of the items."""
    refs: list[tuple[object, str]] = []
    for it in items:
        domain = domain_of(it.workspace)
        refs.append((it.subject, domain))
        if it.resource is not None:
            a = it.resource.attributes
            refs.extend((v, domain) for v in (a.assignee, a.owner, a.member, a.grantee) if v is not None)
    return refs


# The denials decided before the engine (unknown subject, invalid request...), shared like the
# engine's own fixed denials: one per reason, replaced when the revision moves.
_EARLY: dict[str, Decision] = {}

# Whole checks decided at the current state (app.decisions.answers): a repeated check skips the
# references' resolution, the request's construction and the memo key (~60 % of a batch item's
# decision). ~0.5 KB an entry with its request.
CHECKS: Stamped[Check, tuple[AccessRequest | None, Decision]] = Stamped(32_768)


def decide(
    items: Sequence[Check], eng: PolicyEngine, explain: bool = False, directory: Directory | None = None
) -> list[Decision]:
    """Decisions for items, in order: people from ``directory`` (default: the one loaded with the
    current engine; before the first load, at most one user query for all of them), then the engine."""
    if directory is None:
        directory = authz.directory
    if directory is not None:
        person_of: Lookup = directory.lookup
    else:
        users = resolve_refs(_item_refs(items), eng)

        def person_of(value: object) -> str | None:
            ref = user_ref(value)
            return users.get(ref) if ref else None

    out: list[Decision] = []
    append = out.append
    record = None if explain else decisionlog.LOG.record  # a real decision (the playground's explain is not traffic)
    ask = eng.decide
    early = _EARLY
    # The stamp is read before deciding (app.decisions.answers); no table for explanations or without a directory.
    entries = None if explain or directory is None else CHECKS.at((eng.generation, directory.version))
    remember = CHECKS.remember
    for it in items:
        table = entries if it.properties is None else None  # properties hold dicts: not hashable
        if table is not None:
            hit = table.get(it)
            if hit is not None:
                if hit[0] is not None and record is not None:
                    record(hit[0], hit[1].allowed)
                append(hit[1])
                continue
        req = _prepared(it, person_of, eng)
        if isinstance(req, str):  # decided without the engine: one shared denial per reason and revision
            denial = early.get(req)
            if denial is None or denial.revision != eng.revision:
                denial = early[req] = Decision(False, req, eng.revision)
            append(denial)
            if table is not None:
                remember(table, it, (None, denial))
            continue
        decision = ask(req, explain)
        if record is not None:
            record(req, decision.allowed)
        append(decision)
        if table is not None:
            remember(table, it, (req, decision))
    return out


def candidates(eng: PolicyEngine, domain: str) -> list[tuple[int, str]]:
    """(user id, via) of every workspace member and platform role holder of the pack, by id."""
    pack = eng.pack_of(domain)
    if pack is None:
        return []
    found: dict[int, str] = {}
    for user in eng.members_of(domain):
        if user.startswith("user:") and user[5:].isdigit():
            found[int(user[5:])] = "workspace"
    prefix = f"role:{pack.id}:"
    for user, roles in tuple(eng.g.links.get("*", {}).items()):  # snapshot, as above
        if user.startswith("user:") and user[5:].isdigit() and any(r.startswith(prefix) for r in roles):
            found.setdefault(int(user[5:]), "platform")
    return sorted(found.items())


def user_handles(user_ids: Iterable[int]) -> dict[int, tuple[str, str | None]]:
    """user id → (email, external id) for existing users, in one query."""
    ids = sorted(set(user_ids))
    if not ids:
        return {}
    rows = db.session.execute(select(User.id, User.email, User.external_id).where(User.id.in_(ids)))
    return {int(uid): (str(email), ext) for uid, email, ext in rows}
