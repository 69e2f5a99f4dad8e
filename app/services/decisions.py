"""Reference resolution and fact preparation for every decision surface (decision API, AuthZEN).

A surface parses its own wire format into :class:`Check` values (or anything shaped like them)
and hands them to :func:`decide`. Everything between the wire and the engine happens here, once:
user references (ids, emails, ``user:<id>``) become user keys in at most one query per request,
unknown people in resource attributes name nobody, scope names become prefixed keys, and the
decisions come from the engine. Blueprints never resolve users themselves.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from msgspec import Meta, Struct
from sqlalchemy import event, inspect, or_, select
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError, TimeoutError
from sqlalchemy.orm import Session, object_session

from app.authz import AccessRequest, Decision, PolicyEngine, Reason, ResourceFacts
from app.authz.identifiers import InvalidIdentifierError, group_key, is_prefixed, team_key, valid_pack
from app.models import User
from app.services.ttlcache import TTLCache, app_cache

# A user reference that never names a real user (real keys are user:<digits>): unknown people
# in resource attributes simply match nothing.
NOBODY = "user:unknown"
# A user reference never holds whitespace, control characters, commas or "*": such a value names
# nobody (it is not trimmed into a real user), so a malformed subject can never be allowed.
_BAD_REF = re.compile(r"[\s\x00-\x1f\x7f,*]")
MAX_USER_ID = 2**31 - 1  # users.id is an INTEGER column: larger ids name nobody (PostgreSQL refuses to compare them)
# An external id: printable ASCII without ",", "*" or "@", not all digits, at most 254 characters.
EXTERNAL_ID = re.compile(r"(?![0-9]+\Z)[\x21-\x29\x2b\x2d-\x3f\x41-\x7e]{1,254}")


# -- what a surface hands over ---------------------------------------------------------------------
class AttributesLike(Protocol):
    """Resource facts as a surface parsed them: people are references, scopes are names."""

    @property
    def assignee(self) -> int | str | None: ...
    @property
    def owner(self) -> int | str | None: ...
    @property
    def member(self) -> int | str | None: ...
    @property
    def group(self) -> str | None: ...
    @property
    def team(self) -> str | None: ...
    @property
    def new_role(self) -> str | None: ...


class ResourceLike(Protocol):
    """The resource acted upon."""

    @property
    def type(self) -> str: ...
    @property
    def id(self) -> str | int: ...
    @property
    def attributes(self) -> AttributesLike: ...


class CheckLike(Protocol):
    """One question: may subject do action in workspace (on resource)?"""

    @property
    def subject(self) -> int | str: ...
    @property
    def workspace(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def resource(self) -> ResourceLike | None: ...


# The wire types of the decision API, decoded by msgspec (``app.api.decision``) with the limits the
# pydantic schema states (``app.api.schemas``: exact types, bool is not an int, names at most 254
# characters, no unknown fields). Other surfaces (AuthZEN) construct them directly.
Name = Annotated[str, Meta(max_length=254)]


class CheckAttributes(Struct, frozen=True, forbid_unknown_fields=True):
    """Resource facts (people as user references, scopes as names)."""

    assignee: int | str | None = None
    owner: int | str | None = None
    member: int | str | None = None
    group: Name | None = None
    team: Name | None = None
    new_role: Name | None = None
    role: Name | None = None


NO_ATTRIBUTES = CheckAttributes()


class CheckResource(Struct, frozen=True, forbid_unknown_fields=True):
    """The resource acted upon."""

    type: Name = ""
    id: str | int = ""
    attributes: CheckAttributes = NO_ATTRIBUTES


class Check(Struct, frozen=True, forbid_unknown_fields=True):
    """One question, as a surface parsed it (before any reference is resolved)."""

    subject: int | str
    workspace: Name
    action: Name
    resource: CheckResource | None = None


def user_ref(value: object) -> tuple[str, int | str] | None:
    """("id", n), ("email", address) or ("ext", external id) for a user reference; None if it names nobody.

    ASCII digits (or ``user:<digits>``) are a user id, a value with ``@`` is an email (any case),
    anything else is an external id (exact match). External ids are therefore never all digits
    and never hold ``@`` (``users.set_external_id`` refuses them).
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return ("id", value) if 0 < value <= MAX_USER_ID else None
    if not isinstance(value, str) or not value or len(value) > 254 or _BAD_REF.search(value):
        return None
    body = value[5:] if value.startswith("user:") else value
    if body.isascii() and body.isdigit():  # str.isdigit() alone admits "²" (int() fails) and "٣" (int() = 3)
        return ("id", int(body)) if len(body) < 19 and 0 < int(body) <= MAX_USER_ID else None
    if "@" in body:
        if not body.isascii():
            try:
                body.encode("utf-8")  # a lone surrogate ("\ud800", valid in JSON) is nobody's address
            except UnicodeEncodeError:
                return None
        return ("email", body.lower())
    if body is value and EXTERNAL_ID.fullmatch(value):
        return ("ext", value)
    return None


Ref = tuple[str, int | str]

# -- user resolution, cached -----------------------------------------------------------------------
# Users are never deleted and ids never reused, and facts (memberships, scopes) are only ever
# written for existing users; so a ``user:<id>`` the engine holds a role for in the request's
# workspace (or a platform role) is a real user, and needs no query. Next, the directory loaded
# with the engine (``app.services.directory``: id, email and external id of every user the policy
# knows, kept current through the revision log) answers without a query. Everything else (people
# without facts, users created a moment ago) goes to the users table once (one query per request),
# and positive answers are cached for
# USER_CACHE_SECONDS (default 5 s): id → key, email → key and external id → key. Negative answers
# are never cached, so a user created a moment ago is found at once. An email or external id change
# in this process drops both values at once; one made by another process is seen here within the TTL.
# When the database cannot be asked (app.database holds it down, or the query fails), references
# resolve from memory instead: the last answer this process saw (expired or not), or an id the
# policy holds a role for anywhere; any other reference is unknown (``unknown_subject``: denied).
DEFAULT_USER_CACHE_SECONDS = 5.0
USER_CACHE_MAX = 100_000
_USER_CACHE = "decision_user_cache"
_PENDING_EMAILS = "decision_emails_changed"
_PENDING_HANDLES = "decision_handles_changed"


UserCache = TTLCache[Ref, str]


def user_cache() -> UserCache | None:
    """The current app's user cache (None outside an app context)."""
    return app_cache(_USER_CACHE, "USER_CACHE_SECONDS", DEFAULT_USER_CACHE_SECONDS, USER_CACHE_MAX)


def _forget_refs(refs: Iterable[Ref]) -> None:
    cache = user_cache()
    if cache is not None:
        for r in refs:
            cache.discard(r)


def _ref_changed(kind: str, target: User, value: object, oldvalue: object) -> None:
    changed = [(kind, v.lower() if kind == "email" else v) for v in (value, oldvalue) if isinstance(v, str)]
    _forget_refs(changed)
    session = object_session(target)
    if session is not None:
        session.info.setdefault(_PENDING_EMAILS, set()).update(changed)
        # (id,) of a persistent user, read without loading anything
        identity: tuple[Any, ...] | None = inspect(target).identity
        if identity and (value is None or isinstance(value, str)):
            # This process's directory follows at commit (other processes: the user-change revision).
            session.info.setdefault(_PENDING_HANDLES, []).append((int(identity[0]), kind, value))


@event.listens_for(User.email, "set")
def _email_set(target: User, value: object, oldvalue: object, initiator: Any) -> None:
    _ref_changed("email", target, value, oldvalue)


@event.listens_for(User.external_id, "set")
def _external_id_set(target: User, value: object, oldvalue: object, initiator: Any) -> None:
    _ref_changed("ext", target, value, oldvalue)


@event.listens_for(Session, "after_commit")
def _emails_committed(session: Session) -> None:
    # A lookup between the change and its commit read the old row: drop it again.
    _forget_refs(session.info.pop(_PENDING_EMAILS, ()))
    handles = session.info.pop(_PENDING_HANDLES, ())
    if handles:
        from app.extensions import authz

        directory = authz.directory
        if directory is not None:
            for uid, kind, value in handles:
                directory.changed(uid, kind, value)


@event.listens_for(Session, "after_soft_rollback")
def _emails_rolled_back(session: Session, previous_transaction: Any) -> None:
    session.info.pop(_PENDING_EMAILS, None)
    session.info.pop(_PENDING_HANDLES, None)


def _query_users(wanted: set[Ref]) -> dict[Ref, str]:
    from app.extensions import db

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

    Known to the engine in that domain (or by a platform role), then the directory of the users the
    policy knows, then the cache, then one query (none while the database is held down).
    """
    from app.extensions import authz

    directory = authz.directory
    cache = user_cache()
    out: dict[Ref, str] = {}
    wanted: set[Ref] = set()
    for value, domain in pairs:
        ref = user_ref(value)
        if ref is None or ref in out:
            continue
        if ref[0] == "id" and eng is not None:
            key = f"user:{ref[1]}"
            if eng.roles_of(key, domain):
                out[ref] = key
                continue
        if directory is not None:
            known = directory.key(ref)
            if known is not None:
                out[ref] = known
                continue
        hit = cache.get(ref) if cache is not None else None
        if hit is not None:
            out[ref] = hit
        else:
            wanted.add(ref)
    if wanted:
        generation = cache.generation if cache is not None else 0
        found = _query_users_if_reachable(wanted)
        if found is None:
            found = _from_memory(wanted, cache, eng)
        elif cache is not None:
            cache.put_many(found, generation)
        for ref in wanted:
            got = found.get(ref)
            if got is not None:
                out[ref] = got
    return out


def _query_users_if_reachable(wanted: set[Ref]) -> dict[Ref, str] | None:
    """The users table's answer, or None when the database cannot be asked (held down or failing now)."""
    from app import database
    from app.extensions import db

    if not database.reachable():
        return None
    try:
        return _query_users(wanted)
    except (OperationalError, InterfaceError, TimeoutError):
        with contextlib.suppress(SQLAlchemyError):  # the connection may be gone with the database
            db.session.rollback()
        return None


def _from_memory(wanted: set[Ref], cache: UserCache | None, eng: PolicyEngine | None) -> dict[Ref, str]:
    """Without the database: the last answer this process saw, or a user id the policy holds a role for."""
    out: dict[Ref, str] = {}
    for ref in wanted:
        hit = cache.get_stale(ref) if cache is not None else None
        if hit is None and ref[0] == "id" and eng is not None:
            key = f"user:{ref[1]}"
            if any(key in users for users in tuple(eng.g.links.values())):  # a snapshot: the listener applies changes
                hit = key  # facts are only written for existing users, and users are never deleted
        if hit is not None:
            out[ref] = hit
    return out


def resolve_users(refs: Iterable[object], eng: PolicyEngine | None = None, domain: str = "") -> dict[Ref, str]:
    """User references → user keys, in at most one query; unknown references are absent."""
    return resolve_refs(((r, domain) for r in refs), eng)


def resolve_user(value: object, eng: PolicyEngine | None = None, domain: str = "") -> str | None:
    """One user reference → its user key, or None if it names nobody."""
    r = user_ref(value)
    return resolve_users([value], eng, domain).get(r) if r else None


def domain_of(workspace: str) -> str:
    """The Casbin domain of a workspace slug (``ws:<slug>``; prefixed domains unchanged)."""
    return workspace if workspace.startswith(("ws:", "platform:")) else f"ws:{workspace}"


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


def prepare(item: CheckLike, users: dict[Ref, str], eng: PolicyEngine) -> Prepared:
    """Turn an API check into an AccessRequest (ids → keys); unknown subject and bad values decided here."""
    sref = user_ref(item.subject)
    subject = users.get(sref) if sref else None
    if subject is None:
        return Prepared(None, Reason.UNKNOWN_SUBJECT.value)
    domain = domain_of(item.workspace)
    res = item.resource
    if res is None:
        return Prepared(AccessRequest(subject, domain, ResourceFacts(), item.action))
    attrs = res.attributes

    def person(value: object) -> str:
        if value is None:
            return ""
        ref = user_ref(value)
        return users.get(ref, NOBODY) if ref else NOBODY

    try:
        group = _scope_key(attrs.group, "group")
        team = _scope_key(attrs.team, "team")
    except InvalidIdentifierError:
        return Prepared(None, Reason.INVALID_REQUEST.value)
    new_role = ""
    if attrs.new_role:
        if attrs.new_role.startswith("role:"):
            new_role = attrs.new_role
        else:
            pack = eng.pack_of(domain)
            if not valid_pack(attrs.new_role):
                return Prepared(None, Reason.INVALID_REQUEST.value)
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
    )
    return Prepared(AccessRequest(subject, domain, obj, item.action))


def _item_refs(items: Sequence[CheckLike]) -> list[tuple[object, str]]:
    """(user reference, domain) of every subject and attribute person of the items."""
    refs: list[tuple[object, str]] = []
    for it in items:
        domain = domain_of(it.workspace)
        refs.append((it.subject, domain))
        if it.resource is not None:
            a = it.resource.attributes
            refs.extend((v, domain) for v in (a.assignee, a.owner, a.member) if v is not None)
    return refs


def decide(items: Sequence[CheckLike], eng: PolicyEngine, explain: bool = False) -> list[Decision]:
    """Decisions for items, in order: at most one user query for all of them, then the engine."""
    users = resolve_refs(_item_refs(items), eng)
    out = []
    decide_one = eng.explain if explain else eng.check
    for it in items:
        prep = prepare(it, users, eng)
        if prep.request is None:
            out.append(Decision(False, prep.early or Reason.INVALID_REQUEST.value, eng.revision))
        else:
            out.append(decide_one(prep.request))
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
    from app.extensions import db

    ids = sorted(set(user_ids))
    if not ids:
        return {}
    rows = db.session.execute(select(User.id, User.email, User.external_id).where(User.id.in_(ids)))
    return {int(uid): (str(email), ext) for uid, email, ext in rows}
