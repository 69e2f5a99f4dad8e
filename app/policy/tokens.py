"""Service tokens for the decision API: random secrets shown once, stored as SHA-256, revocable.

Authentication is cached per app (per process) with no expiry: SHA-256 of a live token → its id
and name, so a known token needs no database on the hot path (a database outage changes nothing
for it). Every live token is put there by each full policy load (:func:`load_live`, in the load's
snapshot), so a process accepts any valid token during an outage, used before or not. A create and
a revoke are revisions in the policy revision log (``token-create``, ``token-revoke``, the message
naming the token), applied in the writing process at its commit and by every other process as it
follows the log (``PolicyRuntime.sync``): a token reaches them, and leaves them, like a role
change, within the listener's delay. So a process whose cache holds every live token (a complete
load, no expiry, room for all) and whose listener is connected and caught up refuses an unknown secret without
asking the database (:func:`authenticate`): no request with a made-up token can make a worker
wait on it. Otherwise (polling, SQLite, a cache that cannot hold them all) a miss reads the row;
while the database is down a token missing from a complete cache is refused, 401. Only live tokens
are cached, never unknown or revoked ones.
``TOKEN_CACHE_SECONDS`` (default: forever) bounds an entry's life; 0 turns the cache off.
``last_used_at`` is a hint, never written by a request answered from the cache: the request marks
the token used (a set add), and the policy listener's thread writes the marked tokens' column at
its next sync (:func:`touch_used`, at most once a minute per token and process); a token a request
looks up in the database has it written then.

Every token is bound to what it may ask about (``binding``): workspaces, one pack's platform, or
every workspace — never the service meta-pack unless named. The binding travels in the cached
:class:`TokenIdentity`, so :func:`require_bound` costs a set lookup per decision and no query;
the decision and AuthZEN surfaces call it before deciding anything (403 ``token-not-bound``).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from flask import current_app
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session

from app.authz import PolicyEngine
from app.authz.identifiers import domain_of, valid_pack
from app.database import in_transaction
from app.decisions.answers import Stamped
from app.errors import ConflictError, ForbiddenError, NotFoundError, ValidationError
from app.models import AuditEvent, ServiceToken, Workspace, utcnow
from app.policy import store as policy_store
from app.ttlcache import TTLCache, app_cache

PREFIX = "lat_"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,79}")
# last_used_at is a hint for operators; writing it on every request would serialise the API.
TOUCH_EVERY = timedelta(minutes=1)
DEFAULT_CACHE_SECONDS = math.inf  # revocation travels through the revision log, not an expiry
TOKEN_REVOKE = "token-revoke"  # the revision kind of a revoke (its message names the token)
TOKEN_CREATE = "token-create"  # the revision kind of a create (its message names the token)
TOKEN_KINDS = (TOKEN_CREATE, TOKEN_REVOKE)
CACHE_MAX_ENTRIES = 4096
_EXT = "token_cache"
# SHA-256 of every request's bearer secret: CPython's own implementation where it has one (the same
# digest): OpenSSL's (hashlib's default) sets up an EVP context per call, which cost a request
# 2.8-3.4 µs with cold caches against 1.6-1.8 µs (a 48-byte secret, this machine, 7 Dec).
_SHA256: Callable[[bytes], Any] = hashlib.sha256
for _module in ("_sha2", "_sha256"):  # CPython >= 3.12, <= 3.11
    with contextlib.suppress(ImportError, AttributeError):
        _SHA256 = importlib.import_module(_module).sha256
        break
WIDE = "*"  # the stored binding of an all-workspaces token
META_PACK = "service"  # the policy's own pack: reached only by a token bound to it by name
_PENDING = "tokens_revoked"
_CREATED = "tokens_created"  # session.info: (hash, identity) of tokens created in the transaction
# app.extensions: the cache's ``resets`` when a full load put every live token in it (complete while equal)
_LOADED = "tokens_loaded"
log = logging.getLogger("app.authz")


@dataclass(frozen=True)
class TokenIdentity:
    """Who authenticated: the token's id, name, default workspace and binding (what the decision APIs need).

    The binding is what the token may ask about, held in memory with the identity so that checking
    it costs a set lookup per decision: ``domains`` (``ws:<slug>`` the token names), ``platform``
    (a pack id: its platform domain and every workspace of that pack) or ``wide`` (every workspace
    and platform domain, except the service meta-pack's, which only a binding naming it reaches).
    """

    id: int
    name: str
    workspace: str | None = None  # slug AuthZEN requests naming no workspace decide in
    domains: frozenset[str] = frozenset()
    platform: str | None = None
    wide: bool = False
    feed: bool = False  # may follow the change feed within the binding (app.policy.feed)
    # the bound domains as requests name them (``ws:<slug>`` or the bare slug): one set lookup per item
    names: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "names", self.domains | {d[3:] for d in self.domains})

    def may_ask(self, domain: str, pack: str | None) -> bool:
        """True if the token may ask about ``domain`` (whose pack is ``pack``, None if unknown)."""
        if domain in self.domains:
            return True
        if pack is None:
            return self.wide  # an unknown workspace: only a wide token may learn that it is unknown
        if pack == self.platform:
            return True
        return self.wide and pack != META_PACK


def parse_binding(text: str) -> tuple[frozenset[str], str | None, bool]:
    """A stored binding → (domains, platform pack, wide); anything unreadable binds nothing."""
    if text == WIDE:
        return frozenset(), None, True
    if text.startswith("platform:"):
        pack = text[len("platform:") :]
        return frozenset(), (pack if valid_pack(pack) else None), False
    domains = text.split()
    if not all(d.startswith("ws:") and len(d) > 3 for d in domains):
        return frozenset(), None, False
    return frozenset(domains), None, False


def describe_binding(row: ServiceToken) -> str:
    """What ``flask token list`` and the policy API show: the binding in words."""
    domains, platform, wide = parse_binding(row.binding or "")
    if wide:
        text = "all workspaces (not service)"
    elif platform:
        text = f"platform {platform}"
    elif domains:
        text = "workspaces " + ",".join(sorted(d[3:] for d in domains))
    else:
        text = "nothing"
    return text + (" [migrated]" if row.migrated else "")


class TokenCache(TTLCache[str, TokenIdentity]):
    """The token cache, and the ids of the tokens it answered for since this process last wrote
    their ``last_used_at`` (:func:`touch_used`)."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        super().__init__(ttl, max_entries)
        self.used: set[int] = set()  # added to by requests (a set add: no lock, no query)
        self.touched: dict[int, float] = {}  # token id → when (monotonic) this process last wrote it


def cache() -> TokenCache | None:
    """The current app's token cache (None outside an app context)."""
    found: TTLCache[str, TokenIdentity] | None = app_cache(
        _EXT, "TOKEN_CACHE_SECONDS", DEFAULT_CACHE_SECONDS, CACHE_MAX_ENTRIES, TokenCache
    )
    return found  # type: ignore[return-value]  # made by TokenCache


def touch_used(engine: Engine) -> int:
    """Write ``last_used_at`` (now) of the tokens this process answered for since it last wrote
    theirs, at most once every :data:`TOUCH_EVERY` a token, in one statement of its own
    transaction; how many. Called by the policy listener's thread at each sync, never by a
    request; a failing write keeps them for the next one."""
    c = cache()
    if c is None or not c.used:
        return 0
    now = time.monotonic()
    every = TOUCH_EVERY.total_seconds()
    ids, c.used = c.used, set()
    due = sorted(i for i in ids if now - c.touched.get(i, -math.inf) >= every)
    if not due:
        return 0
    try:
        with Session(engine) as session, session.begin():
            session.execute(update(ServiceToken).where(ServiceToken.id.in_(due)).values(last_used_at=utcnow()))
    except SQLAlchemyError as exc:
        log.debug("last_used_at of %d tokens not written (kept for the next sync): %s", len(due), exc)
        c.used.update(due)
        return 0
    c.touched.update(dict.fromkeys(due, now))
    return len(due)


def _forget(token_hash: str) -> None:
    c = cache()
    if c is not None:
        c.discard(token_hash)


def forget_committed(session: Session) -> None:
    """After a commit: tokens revoked in it leave the cache (a request that read the row between the
    revoke's flush and its commit may have cached it)."""
    for token_hash in session.info.pop(_PENDING, ()):
        _forget(token_hash)


def learn_committed(session: Session) -> None:
    """After a commit: tokens created in it enter this process's cache (the revision log brings
    them to the others)."""
    created = session.info.pop(_CREATED, None)
    c = cache()
    if created and c is not None:
        c.put_many(dict(created), c.generation)


def learn_created(session: Session, messages: Iterable[str]) -> None:
    """Put the live tokens these ``token-create`` revisions name (``token:<name>``) in this process's
    cache; a token revoked since is not live, and is not put."""
    c = cache()
    names = [m[len("token:") :] for m in messages if m.startswith("token:")]
    if c is None or not names:
        return
    for _ in range(3):
        generation = c.generation  # a revoke while reading drops what was read: read again
        if c.put_many(live_named(session, names), generation):
            return
    # Revoked under our feet three times: the cache may lack a live token, so it is no longer complete.
    current_app.extensions[_LOADED] = None


def live_named(session: Session, names: Sequence[str]) -> dict[str, TokenIdentity]:
    """The live tokens of these names (hash → identity); a revoked one is not live."""
    rows = session.execute(select(*_COLUMNS).where(ServiceToken.name.in_(names), ServiceToken.revoked_at.is_(None)))
    return {token_hash: _identity(*row) for token_hash, *row in rows}


def drop_pending(session: Session) -> None:
    """After a rollback: nothing was revoked or created."""
    session.info.pop(_PENDING, None)
    session.info.pop(_CREATED, None)


def hash_token(token: str) -> str:
    """Hex SHA-256 of a token (what the database stores)."""
    digest: str = _SHA256(token.encode("utf-8")).hexdigest()
    return digest


def _slug(session: Session, workspace: str) -> str:
    slug = workspace[3:] if isinstance(workspace, str) and workspace.startswith("ws:") else workspace
    if not isinstance(slug, str) or not 0 < len(slug) <= 64:
        raise NotFoundError("no workspace by that slug")
    if session.scalar(select(Workspace.id).where(Workspace.slug == slug)) is None:
        raise NotFoundError(f"no workspace {slug!r}")
    return slug


def create_token(
    session: Session,
    name: str,
    actor_id: int | None = None,
    workspace: str | None = None,
    *,
    workspaces: Sequence[str] = (),
    platform: str | None = None,
    all_workspaces: bool = False,
    default_workspace: str | None = None,
    feed: bool = False,
) -> tuple[ServiceToken, str]:
    """A new token row and its secret (returned once, never stored).

    The token must name what it may ask about, exactly one of: workspaces (``workspace`` and/or
    ``workspaces``, slugs or ``ws:<slug>``), one pack's ``platform`` (its platform domain and every
    workspace of the pack), or ``all_workspaces`` (every workspace except the service meta-pack's).
    A token bound to exactly one workspace decides AuthZEN requests naming none there; another
    binding may name that ``default_workspace`` (inside the binding). Raises ValidationError (bad
    name, no binding or more than one kind, a default outside the binding), NotFoundError (no such
    workspace or pack), ConflictError (name taken).
    """
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ValidationError("token name: letters, digits, '.', '_' and '-', 1-80 characters")
    named = [workspace] if workspace is not None else []
    named += list(workspaces)
    kinds = sum((bool(named), platform is not None, bool(all_workspaces)))
    if kinds != 1:
        raise ValidationError(
            "a token names what it may ask about, one of: workspaces (--workspace SLUG, repeatable), "
            "one pack's platform (--platform PACK) or every workspace (--all-workspaces)"
        )
    slugs = sorted({_slug(session, w) for w in named})
    if platform is not None:
        pack = platform[len("platform:") :] if platform.startswith("platform:") else platform
        if not valid_pack(pack) or not session.scalar(select(Workspace.id).where(Workspace.pack == pack).limit(1)):
            raise NotFoundError(f"no pack {platform!r} with a workspace")
        binding = f"platform:{pack}"
    elif all_workspaces:
        binding = WIDE
    else:
        binding = " ".join(f"ws:{s}" for s in slugs)
    if len(binding) > 2000:
        raise ValidationError("too many workspaces for one token")
    default = slugs[0] if len(slugs) == 1 else None
    if default_workspace is not None:
        chosen = _slug(session, default_workspace)
        its_pack = session.scalar(select(Workspace.pack).where(Workspace.slug == chosen))
        if not TokenIdentity(0, name, None, *parse_binding(binding)).may_ask(f"ws:{chosen}", its_pack):
            raise ValidationError(f"the default workspace {chosen!r} is outside the token's binding")
        default = chosen
    if session.scalar(select(ServiceToken.id).where(ServiceToken.name == name)) is not None:
        raise ConflictError(f"a token named {name!r} already exists")
    secret = PREFIX + secrets.token_urlsafe(32)
    row = ServiceToken(
        name=name,
        token_hash=hash_token(secret),
        created_by_id=actor_id,
        workspace=default,
        binding=binding,
        feed=feed,
    )
    session.add(row)
    session.add(AuditEvent(actor_id=actor_id, action="token.create", target=f"token:{name}"))
    # Every process learns the token when it applies this revision (this one at the commit).
    policy_store.begin_write(session, TOKEN_CREATE, actor_id, message=f"token:{name}")
    session.flush()
    identity = _identity(row.id, name, default, binding, feed)
    session.info.setdefault(_CREATED, []).append((row.token_hash, identity))
    return row, secret


def revoke_token(session: Session, name: str, actor_id: int | None = None) -> ServiceToken:
    """Revoke a token by name (idempotent). Raises NotFoundError."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise NotFoundError("no token by that name")  # no such name can exist (and NUL never reaches the database)
    row = session.scalar(select(ServiceToken).where(ServiceToken.name == name))
    if row is None:
        raise NotFoundError(f"no token named {name!r}")
    _forget(row.token_hash)  # refused in this process from now on
    session.info.setdefault(_PENDING, set()).add(row.token_hash)
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(AuditEvent(actor_id=actor_id, action="token.revoke", target=f"token:{name}"))
        # Every other process drops the token when it applies this revision.
        policy_store.begin_write(session, TOKEN_REVOKE, actor_id, message=f"token:{name}")
        session.flush()
    return row


def forget_revoked(message: str) -> None:
    """Drop the token a ``token-revoke`` revision names (its message: ``token:<name>``) from this process's cache."""
    c = cache()
    if c is not None and message.startswith("token:"):
        name = message[len("token:") :]
        c.discard_values(lambda ident: ident.name == name)


def list_tokens(session: Session) -> list[ServiceToken]:
    """Every token, oldest first."""
    return list(session.scalars(select(ServiceToken).order_by(ServiceToken.id)))


def load_live(session: Session) -> dict[str, TokenIdentity]:
    """Every live token (hash → identity), read with the policy and directory in their snapshot."""
    rows = session.execute(select(*_COLUMNS).where(ServiceToken.revoked_at.is_(None)))
    return {token_hash: _identity(*row) for token_hash, *row in rows}


# A token row's columns an identity is made of, after its hash (:func:`_identity`)
_COLUMNS = (
    ServiceToken.token_hash,
    ServiceToken.id,
    ServiceToken.name,
    ServiceToken.workspace,
    ServiceToken.binding,
    ServiceToken.feed,
)


def _identity(id_: Any, name: Any, workspace: Any, binding: Any, feed: Any) -> TokenIdentity:
    """The identity of a token row's columns."""
    return TokenIdentity(int(id_), str(name), workspace, *parse_binding(binding or ""), feed=bool(feed))


def remember(live: dict[str, TokenIdentity], generation: int) -> int:
    """Put the tokens of a load into this process's cache (dropped if a revocation came since
    ``generation``, the cache's generation before the load read them); how many were put."""
    c = cache()
    if c is None or generation != c.generation:
        return 0
    c.put_many(live, generation)
    # complete only if the cache holds them all, for good (no expiry, room for each) until it starts over
    whole = c.ttl == math.inf and len(live) <= CACHE_MAX_ENTRIES
    current_app.extensions[_LOADED] = c.resets if whole else None
    return len(live)


def complete(c: TokenCache) -> bool:
    """True if the cache holds every live token: a full load put them all there and it has not
    started over since (a create or a lookup that found it full clears it)."""
    loaded = current_app.extensions.get(_LOADED)
    return loaded is not None and loaded == c.resets


def generation() -> int:
    """The cache's generation now (0 without a cache): taken before a load reads the tokens."""
    c = cache()
    return c.generation if c is not None else 0


def cached_identity(app: Any, secret: str) -> TokenIdentity | None:
    """The live token with this secret if app's process already knows it (no query, no app
    context); None otherwise (then :func:`authenticate` decides)."""
    c = app.extensions.get(_EXT)
    if c is None or not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    found: TokenIdentity | None = c.get(_SHA256(secret.encode("utf-8")).hexdigest())  # hash_token, inlined
    if found is not None:
        c.used.add(found.id)
    return found


def authenticate(session: Session, secret: str) -> TokenIdentity | None:
    """The live token with this secret, or None (unknown or revoked).

    A cache hit touches nothing (it marks the token used: :func:`touch_used` writes it later); a
    miss reads the row and, at most once a minute per token, writes ``last_used_at``.
    """
    if not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    token_hash = hash_token(secret)
    c = cache()
    generation = 0
    if c is not None:
        hit = c.get(token_hash)
        if hit is not None:
            c.used.add(hit.id)
            return hit
        generation = c.generation
    whole = c is not None and complete(c)
    runtime = current_app.extensions.get("authz")
    if whole and runtime is not None and runtime.follows_log():
        # Every live token is here and every create reaches this process through the revision log
        # it follows: an unknown secret is refused without the database (no request waits on it).
        return None
    try:
        row = session.scalar(select(ServiceToken).where(ServiceToken.token_hash == token_hash))
    except DBAPIError:
        if c is None or not whole:
            raise  # this process never held every live token: the database must answer (503)
        # Every token live at the last load is in the cache, so this one is unknown, revoked or
        # created since: refused (fail closed) while the database is unreachable.
        session.rollback()
        log.warning("token not among the loaded ones and the database is unreachable: refused")
        return None
    if row is None or row.revoked_at is not None:
        return None
    domains, platform, wide = parse_binding(row.binding or "")
    identity = TokenIdentity(int(row.id), str(row.name), row.workspace, domains, platform, wide, bool(row.feed))
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > TOUCH_EVERY:
        with in_transaction(session):
            row.last_used_at = now
        if c is not None:
            c.touched[identity.id] = time.monotonic()
    if c is not None:
        c.put(token_hash, identity, generation)
    return identity


class OutOfBindingError(ForbiddenError):
    """The service token asked about a workspace outside its binding (403, whatever the answer would be)."""

    slug = "token-not-bound"


def first_outside(token: TokenIdentity, workspaces: Iterable[str], eng: PolicyEngine) -> int | None:
    """Index of the first workspace (a slug or a domain) the token may not ask about, None if all are bound."""
    names = token.names
    for i, workspace in enumerate(workspaces):
        if workspace in names:
            continue
        domain = domain_of(workspace) if isinstance(workspace, str) else ""
        pack = eng.pack_of(domain)
        if not token.may_ask(domain, pack.id if pack is not None else None):
            return i
    return None


# Workspaces each token was found bound to, at one engine generation (a workspace's pack, which a
# binding may name, is the engine's): checking a batch is one set comparison (first_outside cost
# ~0.7 µs a workspace). Keyed by the identity object the token cache holds (a revoked token's is gone).
_BOUND: Stamped[int, tuple[TokenIdentity, set[str]]] = Stamped(4096)
_BOUND_NAMES = 65_536  # names remembered a token at most (then checked each time)


def all_bound(token: TokenIdentity, workspaces: Iterable[str], eng: PolicyEngine) -> bool:
    """True if the token may ask about every one of ``workspaces`` (as :func:`first_outside` is None)."""
    table = _BOUND.at((eng.generation, 0))
    held = table.get(id(token))
    if held is None or held[0] is not token:
        held = (token, set())
        _BOUND.remember(table, id(token), held)
    known = held[1]
    if known.issuperset(workspaces):
        return True
    new = set(workspaces) - known
    if first_outside(token, new, eng) is not None:
        return False
    if len(known) < _BOUND_NAMES:
        known |= new
    return True


def require_bound(
    token: TokenIdentity, workspaces: Sequence[str], eng: PolicyEngine, where: Callable[[int], str] | None = None
) -> None:
    """OutOfBindingError naming the first workspace outside the token's binding (and where the request
    named it: ``where(index)``, e.g. ``checks[3].workspace``); nothing is decided then, not even the
    items inside the binding, so a batch never answers half a question it may not ask."""
    i = first_outside(token, workspaces, eng)
    if i is None:
        return
    at = where(i) if where is not None else "workspace"
    extra: dict[str, Any] = {"token": token.name, "workspace": workspaces[i], "at": at}
    if where is not None:
        extra["index"] = i
    raise OutOfBindingError(f"service token {token.name!r} is not bound to workspace {workspaces[i]!r} ({at})", **extra)
