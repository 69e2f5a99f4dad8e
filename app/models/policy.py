"""The live policy: Casbin rules, pack documents, and the revision log that keeps processes in sync."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, utcnow

RULE_COLUMNS = ("v0", "v1", "v2", "v3", "v4", "v5")


class CasbinRule(Base):
    """One Casbin rule, in the stock ``sqlalchemy_adapter`` table shape (``id, ptype, v0..v5``).

    Unlike the stock adapter's table, a rule is unique and the domain columns are indexed. Stock
    ``sqlalchemy_adapter.Adapter(url)``, with its own row class, reads it (see ``app.embedded``).
    """

    __tablename__ = "casbin_rule"
    __table_args__ = (
        UniqueConstraint("ptype", *RULE_COLUMNS, name="uq_casbin_rule_all"),
        Index("ix_casbin_rule_ptype_v2", "ptype", "v2"),
        Index("ix_casbin_rule_ptype_v0", "ptype", "v0"),
        Index("ix_casbin_rule_ptype_v1", "ptype", "v1"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ptype: Mapped[str] = mapped_column(String(8))
    v0: Mapped[str] = mapped_column(String(255), default="")
    v1: Mapped[str] = mapped_column(String(255), default="")
    v2: Mapped[str] = mapped_column(String(255), default="")
    v3: Mapped[str] = mapped_column(String(255), default="")
    v4: Mapped[str] = mapped_column(String(255), default="")
    v5: Mapped[str] = mapped_column(String(255), default="")

    def as_rule(self) -> tuple[str, ...]:
        """(ptype, v0, ...) without trailing empty fields."""
        values = [self.v0, self.v1, self.v2, self.v3, self.v4, self.v5]
        while values and values[-1] == "":
            values.pop()
        return (self.ptype, *values)

    def __str__(self) -> str:
        """The rule as a Casbin policy line (what the adapter's own row class prints: trailing empty values left
        out; values never contain commas, the writers refuse them)."""
        return ", ".join(self.as_rule())


class PolicyHead(Base):
    """A single row holding the current revision; updating it serialises policy writers."""

    __tablename__ = "policy_head"

    id: Mapped[int] = mapped_column(primary_key=True)
    revision: Mapped[int] = mapped_column(default=0)


class PolicyRevision(Base):
    """One committed policy change: the rules added and removed, in order."""

    __tablename__ = "policy_revisions"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    kind: Mapped[str] = mapped_column(String(32))
    # What the revision is about, for the history's filter: policy | membership | settings
    # (``app.policy.store.category_of`` maps every kind).
    category: Mapped[str] = mapped_column(String(16), default="policy", index=True)
    message: Mapped[str] = mapped_column(String(500), default="")
    changes: Mapped[list[Any]] = mapped_column(JSON, default=list)


class PolicyPack(Base):
    """The live copy of a pack's metadata document (the YAML of ``policy/<pack>.yaml``)."""

    __tablename__ = "policy_packs"

    pack: Mapped[str] = mapped_column(String(40), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    revision: Mapped[int] = mapped_column(default=0)


class ChangeRequest(Base):
    """A proposed policy edit on its way to review: an editor's working draft (status ``draft``, one per
    user) or a submitted request (``open`` → ``applied`` | ``rejected``) with its checks and impact."""

    __tablename__ = "change_requests"
    __table_args__ = (Index("ix_change_requests_author_status", "author_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), default=None)
    status: Mapped[str] = mapped_column(String(16), default="draft", index=True)
    title: Mapped[str] = mapped_column(String(200), default="")
    why: Mapped[str] = mapped_column(String(2000), default="")
    changes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    packs: Mapped[list[Any]] = mapped_column(JSON, default=list)
    base_revision: Mapped[int] = mapped_column(default=0)
    checks: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # verifier, tests, impact, replay
    applied_revision: Mapped[int | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChangeRequestEvent(Base):
    """One step of a change request's review: submitted, updated, comment, approve, reject, apply."""

    __tablename__ = "change_request_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    change_request_id: Mapped[int] = mapped_column(ForeignKey("change_requests.id", ondelete="CASCADE"), index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    kind: Mapped[str] = mapped_column(String(16))
    body: Mapped[str] = mapped_column(String(2000), default="")
    revision: Mapped[int] = mapped_column(default=0)  # the change request's base revision when it happened
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
