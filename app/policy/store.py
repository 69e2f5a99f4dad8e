"""Rules in the database: one writer at a time, every change logged as a numbered revision.

A service that changes the policy calls :func:`begin_write` first (it locks the single
``policy_head`` row, so writers serialise and revisions commit in order, without gaps), reads
what its invariants need, then :func:`add_changes`. Rules are written through the caller's
session, inside the caller's transaction; the in-memory engine sees them only after commit
(see ``app.policy.runtime``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from sqlalchemy import and_, delete, func, select, text, update
from sqlalchemy.orm import Session

from app.authz.engine import RuleChange
from app.authz.packs import G_ARITY, P_FIELDS, Rule, format_rule, is_pack_rule
from app.authz.shapes import rule_problems
from app.errors import ConflictError, NotFoundError, ValidationError
from app.models import CasbinRule, PolicyHead, PolicyPack, PolicyRevision
from app.models.policy import RULE_COLUMNS
from app.policy.sync import notify_revision

PENDING_KEY = "authz_pending"


@dataclass
class WriteHandle:
    """The revision a transaction is writing."""

    revision: PolicyRevision

    @property
    def number(self) -> int:
        """The revision number this transaction will commit."""
        return int(self.revision.id)


def _row_values(rule: Rule) -> dict[str, str]:
    values = list(rule[1:])
    if len(values) > len(RULE_COLUMNS):
        raise ValidationError("rule has too many fields", errors=[format_rule(rule)])
    values += [""] * (len(RULE_COLUMNS) - len(values))
    return {"ptype": rule[0], **dict(zip(RULE_COLUMNS, values))}


def _match(rule: Rule) -> Any:
    vals = _row_values(rule)
    return and_(*(getattr(CasbinRule, k) == v for k, v in vals.items()))


def check_rule_shape(rule: Rule) -> list[str]:
    """Problems with a rule's shape (field count, forbidden characters, what it links).

    The engine refuses the same rules (``app.authz.shapes.rule_problems``; this adds the column
    width), so nothing committed here can make it answer differently from Casbin.
    """
    problems = rule_problems(rule)
    if problems:
        return problems
    for v in rule[1:]:
        if len(v) > 255:
            problems.append("value longer than 255 characters")
    return problems


def current_revision(session: Session) -> int:
    """The committed head revision (0 on an empty database)."""
    rev = session.execute(select(PolicyHead.revision).where(PolicyHead.id == 1)).scalar()
    return int(rev or 0)


# What a revision is about (the policy history shows "policy" by default): every kind a writer uses.
CATEGORIES = {
    "policy-edit": "policy",
    "policy-rollback": "policy",
    "import": "policy",
    "member": "membership",
    "group": "membership",
    "team": "membership",
    "platform": "membership",
    "user-change": "membership",
    "seed": "membership",  # flask seed: demo people, memberships, groups
    "workspace": "settings",
    "feature": "settings",
    "token-revoke": "settings",
    "token-create": "settings",
}
CATEGORY_NAMES = ("policy", "membership", "settings")


def category_of(kind: str) -> str:
    """The category of a revision kind (an unknown kind is settings: never offered a policy rollback)."""
    return CATEGORIES.get(kind, "settings")


def begin_write(session: Session, kind: str, actor_id: int | None = None, message: str = "") -> WriteHandle:
    """Lock the head row, allocate the next revision and log it (changes added later)."""
    res = session.execute(update(PolicyHead).where(PolicyHead.id == 1).values(revision=PolicyHead.revision + 1))
    if res.rowcount == 0:  # type: ignore[attr-defined]
        session.add(PolicyHead(id=1, revision=1))
        session.flush()
    number = current_revision(session)
    row = PolicyRevision(
        id=number, kind=kind, category=category_of(kind), actor_id=actor_id, message=message[:500], changes=[]
    )
    session.add(row)
    session.flush()
    pending = session.info.setdefault(PENDING_KEY, [])
    pending.append(row)
    notify_revision(session, number)  # NOTIFY policy, delivered by PostgreSQL at commit
    return WriteHandle(row)


def rule_exists(session: Session, rule: Rule) -> bool:
    """True if exactly this rule is stored."""
    return session.execute(select(CasbinRule.id).where(_match(rule)).limit(1)).first() is not None


def add_changes(session: Session, handle: WriteHandle, changes: Sequence[RuleChange]) -> None:
    """Write rule additions and removals; duplicates and missing rules are conflicts."""
    problems = [p for ch in changes for p in check_rule_shape(ch.rule)]
    if problems:
        raise ValidationError("invalid rule", errors=problems)
    for ch in changes:
        if ch.op == "add":
            if rule_exists(session, ch.rule):
                raise ConflictError(f"rule already exists: {format_rule(ch.rule)}")
            if (
                ch.rule[0] == "g4"
                and ch.rule[1].startswith("ws:")
                and session.execute(
                    select(CasbinRule.id).where(CasbinRule.ptype == "g4", CasbinRule.v0 == ch.rule[1]).limit(1)
                ).first()
            ):
                # The engine refuses a second pack for a workspace too (PolicyEngine.apply).
                raise ConflictError(f"workspace already has a pack: {format_rule(ch.rule)}")
            session.add(CasbinRule(**_row_values(ch.rule)))
            session.flush()
        elif ch.op == "remove":
            res = session.execute(delete(CasbinRule).where(_match(ch.rule)))
            if res.rowcount != 1:  # type: ignore[attr-defined]
                raise NotFoundError(f"rule not found: {format_rule(ch.rule)}")
        else:
            raise ValidationError(f"unknown operation {ch.op!r}")
    log = list(handle.revision.changes or [])
    log.extend([ch.op, list(ch.rule)] for ch in changes)
    handle.revision.changes = log
    session.flush()


def load_rules(session: Session, ptypes: Iterable[str] | None = None) -> list[Rule]:
    """Every stored rule (optionally of some types), as tuples."""
    cols = [CasbinRule.ptype, *(getattr(CasbinRule, c) for c in RULE_COLUMNS)]
    stmt = select(*cols).order_by(CasbinRule.id)
    if ptypes is not None:
        stmt = stmt.where(CasbinRule.ptype.in_(list(ptypes)))
    out: list[Rule] = []
    for row in session.execute(stmt):
        values = list(row)
        width = 1 + (len(P_FIELDS) if values[0] == "p" else G_ARITY.get(values[0], len(RULE_COLUMNS)))
        out.append(tuple(values[:width]))
    return out


def load_documents(session: Session) -> dict[str, dict[str, Any]]:
    """Stored pack documents by pack id."""
    return {p.pack: dict(p.document) for p in session.scalars(select(PolicyPack))}


def save_document(session: Session, pack_id: str, document: Mapping[str, Any], revision: int) -> None:
    """Insert or replace a pack document."""
    row = session.get(PolicyPack, pack_id)
    if row is None:
        session.add(PolicyPack(pack=pack_id, document=dict(document), revision=revision))
    else:
        row.document = dict(document)
        row.revision = revision
    session.flush()


def documents_written_at(session: Session, revision: int) -> dict[str, dict[str, Any]] | None:
    """The pack documents ``revision`` wrote (pack id → document; empty when it wrote none), or None
    when that is no longer known: a document saved again by a later revision hides what this one
    wrote (the caller rebuilds). Reads the few ``policy_packs`` rows saved at or after it."""
    rows = session.execute(
        select(PolicyPack.pack, PolicyPack.revision, PolicyPack.document).where(PolicyPack.revision >= revision)
    ).all()
    if any(int(rev) > revision for _, rev, _ in rows):
        return None
    return {str(pack): dict(document) for pack, _, document in rows}


# Revision kinds that may change pack documents (roles, actions, ranks): a process reads them
# (``documents_written_at``) and moves its engine to the new packs (``PolicyEngine.apply_packs``).
DOCUMENT_KINDS = frozenset({"policy-edit", "policy-rollback", "import"})


LOG_BATCH = 10_000  # revisions read at a time


def revision_log_after(
    session: Session, revision: int, limit: int | None = LOG_BATCH
) -> list[tuple[int, str, list[RuleChange]]]:
    """Committed revisions newer than ``revision``, oldest first: (number, kind, changes); all of them
    with ``limit=None`` (a rollback must see every later change, not the first batch)."""
    stmt = (
        select(PolicyRevision.id, PolicyRevision.kind, PolicyRevision.changes)
        .where(PolicyRevision.id > revision)
        .order_by(PolicyRevision.id)
    )
    rows = session.execute(stmt if limit is None else stmt.limit(limit))
    return [
        (int(rid), str(kind), [RuleChange(op, tuple(rule)) for op, rule in (changes or [])])
        for rid, kind, changes in rows
    ]


def count_rules(session: Session) -> int:
    """How many rules are stored."""
    return int(session.execute(select(func.count(CasbinRule.id))).scalar() or 0)


# -- loading the whole policy -------------------------------------------------------------------
_PACK_RULES_WHERE = "ptype = 'p' OR (ptype = 'g' AND v2 = '*') OR (ptype = 'g4' AND v0 LIKE 'pack:%')"
_FACT_COLUMNS = "ptype, v0, v1, v2"
# The domain of a fact row (app.authz.selection.fact_domain, in SQL).
_DOMAIN = "(CASE WHEN ptype IN ('g', 'g2', 'g3') THEN v2 WHEN ptype IN ('g4', 'g5') THEN v0 ELSE '*' END)"


def read_policy(
    session: Any, holds: Callable[[str], bool] | None = None
) -> tuple[int, dict[str, Any], list[tuple[str, ...]], Iterator[tuple[str, ...]]]:
    """(revision, pack documents, pack rules, facts) from one consistent snapshot.

    On PostgreSQL the transaction is REPEATABLE READ, so the revision and every row belong to
    the same committed state, and the facts (a million rows at full size) stream out of
    ``COPY ... TO STDOUT`` straight into the role manager: no ORM objects, no full list.
    Elsewhere (SQLite) they come from ``load_rules``.

    ``holds`` (a partition's): on PostgreSQL only the facts of the workspaces it holds (a workspace
    is a ``ws:`` domain with a pack, its ``g4`` fact; the list is read first and filtered here) and
    of every other domain leave the database, so a replica reads about 1/N of the rows. The caller
    still filters (SQLite, and the rows of a workspace without a pack).
    """
    is_pg = session.get_bind().dialect.name == "postgresql"
    if is_pg and not session.in_transaction():
        # A caller's open transaction keeps its own isolation; a fresh one gets one snapshot.
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    revision = current_revision(session)
    documents = load_documents(session)
    if not is_pg:
        rules = load_rules(session)
        return (
            revision,
            documents,
            [r for r in rules if is_pack_rule(r)],
            iter([r for r in rules if not is_pack_rule(r)]),
        )
    head = session.execute(
        text(f"SELECT ptype, v0, v1, v2, v3, v4, v5 FROM casbin_rule WHERE {_PACK_RULES_WHERE} ORDER BY id")
    ).all()
    pack_rules: list[tuple[str, ...]] = []
    strays: list[tuple[str, ...]] = []
    for row in head:
        rule = _trim(tuple(row))
        (pack_rules if is_pack_rule(rule) else strays).append(rule)
    raw = session.connection().connection.driver_connection
    where = f"NOT ({_PACK_RULES_WHERE})"
    if holds is not None:
        held = [
            str(ws)
            for (ws,) in session.execute(text("SELECT v0 FROM casbin_rule WHERE ptype = 'g4' AND v0 LIKE 'ws:%'"))
            if holds(str(ws))
        ]
        # A literal array (COPY takes no parameters): PostgreSQL 14+ hashes `= ANY` of a constant array.
        domains = sql.Literal(held).as_string(raw) + "::text[]"
        where += f" AND ({_DOMAIN} NOT LIKE 'ws:%' OR {_DOMAIN} = ANY({domains}))"

    def facts() -> Iterator[tuple[str, ...]]:
        yield from strays
        sql = f"COPY (SELECT {_FACT_COLUMNS} FROM casbin_rule WHERE {where}) TO STDOUT"
        with raw.cursor() as cur, cur.copy(sql) as copy:
            # (ptype, v0, v1, v2): two-field types carry v2 = "", which load_facts accepts.
            yield from copy.rows()

    return revision, documents, pack_rules, facts()


def _trim(row: tuple[str, ...]) -> tuple[str, ...]:
    width = 1 + (len(P_FIELDS) if row[0] == "p" else G_ARITY.get(row[0], len(row) - 1))
    return row[:width]
