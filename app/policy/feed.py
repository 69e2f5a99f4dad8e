"""The change feed: what a follower (a sidecar) may see of the policy, as a snapshot and as changes.

A follower authenticates with a service token that has the ``feed`` capability (``flask token
create --feed``); what it sees is a :class:`View`: the token's binding intersected with a
:class:`~app.authz.selection.Selection` (the follower's ``--workspaces`` / ``--partition``). Through
the view it receives, at one revision (:func:`snapshot_state`) and then revision by revision
(:func:`events_after`):

* the pack documents and pack rules: global, the same for every tenant;
* the facts (g/g2/g3/g4/g5 rows) of exactly the workspaces the view holds (a workspace is held
  when the token may ask about it, ``TokenIdentity.may_ask``, and the selection holds it);
* platform roles (``g, user:<id>, role:<pack>:<role>, *``) of the packs the view reaches: the packs
  of its workspaces (a platform role decides inside every workspace of its pack, so without it a
  follower would answer differently from the central tier) and the platform domains the token
  may ask about. Platform roles of other packs never leave;
* the directory rows (id, email, external id) of exactly the users those rows name;
* the AuthZEN catalogs of the held workspaces;
* the SHA-256 hashes and identities of the live service tokens whose binding lies inside the
  follower token's and meets the view (:meth:`View.covers`: a wide token only for a wide follower
  token, a platform token for a wide token or one of its platform, a workspace token whose
  workspaces the follower's token may all ask about and the selection holds one of), so the
  follower authenticates its callers without the database.

Nothing else leaves: not another tenant's rows, not the users only they name. The filter is one
function, :meth:`Filter.row`, used by both the snapshot and the changes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.authz.engine import RuleChange
from app.authz.packs import is_pack_rule
from app.authz.selection import Selection
from app.models import CasbinRule, PolicyRevision, ServiceToken, User, Workspace
from app.policy import directory, snapshot, tokens
from app.policy import store as policy_store
from app.policy.directory import USER_FACTS, parse_catalog
from app.policy.tokens import TokenIdentity

PLATFORM = "*"  # the domain of platform roles
DATABASE = "feed"  # a feed snapshot's header names this as its database (whichever one it was read from)


@dataclass(frozen=True)
class View:
    """What one follower may see: its token's binding ∩ its selection."""

    token: TokenIdentity
    selection: Selection = field(default_factory=Selection)

    def holds(self, domain: str, pack: str | None) -> bool:
        """True if the workspace ``domain`` (of ``pack``, None when unknown) is visible."""
        return self.token.may_ask(domain, pack) and self.selection.holds(domain)

    def platform(self, pack: str) -> bool:
        """True if the platform domain of ``pack`` is visible (its platform rows decide there)."""
        return self.token.may_ask(f"platform:{pack}", pack) and self.selection.holds(f"platform:{pack}")

    def covers(self, other: TokenIdentity, packs: Mapping[str, str]) -> bool:
        """True if ``other``'s hash may go to the follower: the follower's token may ask about everything
        ``other`` may (never a token of wider authority), and ``other`` may ask about something the view
        holds. A partition replica with a wide feed token thus authenticates wide callers; what they ask
        outside its selection is a 421 there, outside their binding a 403."""
        if other.wide:
            return self.token.wide
        if other.platform is not None:
            return (self.token.wide or self.token.platform == other.platform) and (
                other.platform != tokens.META_PACK or self.token.platform == other.platform
            )
        domains = other.domains
        return (
            bool(domains)
            and all(self.token.may_ask(d, packs.get(d)) for d in domains)
            and any(self.selection.holds(d) for d in domains)
        )


def _pack_of_role(role: str) -> str | None:
    parts = role.split(":")
    return parts[1] if len(parts) == 3 and parts[0] == "role" else None


@dataclass
class Filter:
    """The view's verdict on rows, knowing each workspace's pack (from its g4 row)."""

    view: View
    packs: dict[str, str]  # ws:<slug> → pack id
    pack_ids: Sequence[str]  # every pack (its documents)

    def workspace(self, domain: str) -> bool:
        """True if the workspace domain is visible."""
        return self.view.holds(domain, self.packs.get(domain))

    def reached_packs(self) -> set[str]:
        """Packs whose platform roles the view receives: its workspaces' packs and its platform domains."""
        out = {p for d, p in self.packs.items() if self.workspace(d)}
        out.update(p for p in self.pack_ids if self.view.platform(p))
        return out

    def row(self, rule: Sequence[str], reached: set[str]) -> bool:
        """True if the fact row (ptype, fields…) is visible (``reached``: :meth:`reached_packs`)."""
        if not rule:
            return False
        kind = rule[0]
        if kind in USER_FACTS and len(rule) >= 4:
            if rule[3] == PLATFORM:
                pack = _pack_of_role(rule[2])
                return rule[1].startswith("user:") and pack is not None and pack in reached
            return rule[3].startswith("ws:") and self.workspace(rule[3])
        if kind in ("g4", "g5") and len(rule) >= 3:
            return rule[1].startswith("ws:") and self.workspace(rule[1])
        return False

    def learn(self, changes: Iterable[RuleChange]) -> None:
        """Note the packs of workspaces a revision gives one (or removes: kept, packs never change)."""
        for ch in changes:
            r = ch.rule
            if r[0] == "g4" and len(r) >= 3 and r[1].startswith("ws:") and r[2].startswith("pack:"):
                self.packs[r[1]] = r[2][len("pack:") :]


def _workspace_packs(facts: Iterable[Sequence[str]]) -> dict[str, str]:
    return {
        r[1]: r[2][len("pack:") :]
        for r in facts
        if r[0] == "g4" and len(r) >= 3 and r[1].startswith("ws:") and r[2].startswith("pack:")
    }


def current_filter(session: Session, view: View) -> Filter:
    """The view's filter at the session's state (the workspaces' packs read from the g4 rows)."""
    rows = session.execute(
        select(CasbinRule.ptype, CasbinRule.v0, CasbinRule.v1).where(
            CasbinRule.ptype == "g4", CasbinRule.v0.like("ws:%")
        )
    )
    packs = _workspace_packs(tuple(r) for r in rows)
    return Filter(view, packs, sorted(policy_store.load_documents(session)))


def _user_ids(rows: Iterable[Sequence[str]]) -> set[int]:
    out = set()
    for r in rows:
        if r[0] in USER_FACTS and len(r) > 1:
            uid = directory.user_id(r[1])
            if uid is not None:
                out.add(uid)
    return out


def _users(session: Session, ids: set[int]) -> list[tuple[int, str, str | None]]:
    out: list[tuple[int, str, str | None]] = []
    wanted = sorted(ids)
    for i in range(0, len(wanted), directory.FETCH_CHUNK):
        chunk = wanted[i : i + directory.FETCH_CHUNK]
        rows = session.execute(select(User.id, User.email, User.external_id).where(User.id.in_(chunk)))
        out.extend((int(uid), str(email).lower(), ext) for uid, email, ext in rows)
    return sorted(out)


def _catalogs(session: Session, slugs: Iterable[str]) -> dict[str, Any]:
    wanted = sorted(set(slugs))
    out: dict[str, Any] = {}
    for i in range(0, len(wanted), directory.FETCH_CHUNK):
        rows = session.execute(
            select(Workspace.slug, Workspace.settings).where(Workspace.slug.in_(wanted[i : i + directory.FETCH_CHUNK]))
        )
        out.update((str(slug), parse_catalog(settings)) for slug, settings in rows)
    return out


def token_rows(live: Mapping[str, TokenIdentity], view: View, packs: Mapping[str, str]) -> list[snapshot.TokenRow]:
    """The live tokens whose binding lies inside the view's, as a snapshot stores them."""
    return sorted(
        (
            snapshot.TokenRow(h, t.id, t.name, t.workspace, sorted(t.domains), t.platform, t.wide, t.feed)
            for h, t in live.items()
            if view.covers(t, packs)
        ),
        key=lambda r: r.id,
    )


def snapshot_state(session: Session, view: View) -> tuple[int, snapshot.State]:
    """(revision, the view's state at it) read in one consistent snapshot (PostgreSQL: REPEATABLE READ)."""
    revision, documents, pack_rules, facts_iter = policy_store.read_policy(session)
    facts = [tuple(r) for r in facts_iter]
    filt = Filter(view, _workspace_packs(facts), sorted(documents))
    reached = filt.reached_packs()
    kept = [r for r in facts if filt.row(r, reached)]
    held = sorted({d[3:] for d in filt.packs if filt.workspace(d)} | {d[3:] for d in view.token.domains})
    catalogs = {slug: cat for slug, cat in _catalogs(session, held).items() if filt.workspace(f"ws:{slug}")}
    state = snapshot.State(
        documents=documents,
        pack_rules=[tuple(r) for r in pack_rules],
        facts=kept,
        users=_users(session, _user_ids(kept)),
        catalogs=catalogs,
        tokens=token_rows(tokens.load_live(session), view, filt.packs),
    )
    return revision, state


class Event(msgspec.Struct, omit_defaults=True):
    """One revision as a follower sees it (JSON in the ``data:`` of a server-sent event)."""

    revision: int
    kind: str = ""
    changes: list[tuple[str, list[str]]] = []  # (op, rule) of the visible rows, in order
    users: list[tuple[int, str, str | None]] = []  # directory rows of users these rows or a user change name
    catalogs: dict[str, Any] = {}  # AuthZEN catalogs of visible workspaces given a pack or new settings
    revoked: list[str] = []  # SHA-256 of revoked tokens the follower holds
    created: list[snapshot.TokenRow] = []  # a created token bound inside the follower's binding
    resnapshot: bool = False  # pack documents may have changed: load a fresh snapshot


def events_after(session: Session, filt: Filter, since: int, limit: int = 500) -> list[Event]:
    """The events of the revisions after ``since`` (at most ``limit``), oldest first; every revision
    has one, empty when nothing in it is visible (the follower's revision advances all the same)."""
    batch = policy_store.revision_log_after(session, since, limit)
    if not batch:
        return []
    notes = directory.messages(
        session, [n for n, kind, _ in batch if kind in (*directory.MESSAGE_KINDS, *tokens.TOKEN_KINDS)]
    )
    out: list[Event] = []
    for number, kind, changes in batch:
        filt.learn(changes)
        if kind in policy_store.DOCUMENT_KINDS:
            out.append(Event(number, kind, resnapshot=True))
            continue
        reached = filt.reached_packs()
        visible = [ch for ch in changes if is_pack_rule(ch.rule) or filt.row(ch.rule, reached)]
        event = Event(number, kind, [(ch.op, list(ch.rule)) for ch in visible])
        ids = _user_ids(ch.rule for ch in visible if ch.op == "add")
        note = notes.get(number, "")
        if kind == directory.USER_CHANGE:
            uid = directory.user_id(note)
            if uid is not None and _named(session, filt, uid):
                ids.add(uid)
        slugs = [ch.rule[1][3:] for ch in visible if ch.op == "add" and ch.rule[0] == "g4"]
        if kind == directory.WORKSPACE_KIND and note.startswith(directory.SETTINGS_OF):
            slug = note[len(directory.SETTINGS_OF) :]
            if filt.workspace(f"ws:{slug}"):
                slugs.append(slug)
        if ids:
            event.users = _users(session, ids)
        if slugs:
            event.catalogs = _catalogs(session, slugs)
        if kind == tokens.TOKEN_REVOKE and note.startswith("token:"):
            event.revoked = _revoked(session, filt, note[len("token:") :])
        if kind == tokens.TOKEN_CREATE and note.startswith("token:"):
            # as a snapshot would hold it: live, and bound inside the follower's binding
            event.created = token_rows(tokens.live_named(session, [note[len("token:") :]]), filt.view, filt.packs)
        out.append(event)
    return out


def _named(session: Session, filt: Filter, uid: int) -> bool:
    """True if a visible row names user uid now (their directory row may go to the follower)."""
    rows = session.execute(
        select(CasbinRule.ptype, CasbinRule.v0, CasbinRule.v1, CasbinRule.v2).where(
            CasbinRule.v0 == f"user:{uid}", CasbinRule.ptype.in_(USER_FACTS)
        )
    )
    reached = filt.reached_packs()
    return any(filt.row(tuple(r), reached) for r in rows)


def _revoked(session: Session, filt: Filter, name: str) -> list[str]:
    row = session.execute(
        select(ServiceToken.token_hash, ServiceToken.binding).where(ServiceToken.name == name)
    ).first()
    if row is None:
        return []
    ident = TokenIdentity(0, name, None, *tokens.parse_binding(row.binding or ""))
    return [str(row.token_hash)] if filt.view.covers(ident, filt.packs) else []


def oldest_revision(session: Session) -> int | None:
    """The oldest revision the log holds (None when it is empty)."""
    value = session.scalar(select(PolicyRevision.id).order_by(PolicyRevision.id).limit(1))
    return int(value) if value is not None else None
