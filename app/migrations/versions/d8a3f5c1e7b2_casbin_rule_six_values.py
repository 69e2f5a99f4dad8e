"""casbin_rule in the stock sqlalchemy_adapter layout (ptype, v0..v5): the p-rule drops its pack

p = priority, sub, pack, act, scope, feature, eft becomes p = priority, sub, act, scope, feature, eft;
the matcher's pack check is g4(r.dom, p.sub), so every role with p-rules gets the link
``g4, pack:<pack>, <role>`` (what the packs' CSV files now hold). The revision log is rewritten the same
way (p tuples without the pack, each link added right after the first p-rule of its role), so history
and rollbacks read the new shape. Then v6 goes, and the unique constraint is rebuilt without it.

Revision ID: d8a3f5c1e7b2
Revises: c4f1a7e9d2b6
Create Date: 2026-12-02 18:40:00
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "d8a3f5c1e7b2"
down_revision = "c4f1a7e9d2b6"
branch_labels = None
depends_on = None

_OLD = ("ptype", "v0", "v1", "v2", "v3", "v4", "v5", "v6")
_NEW = _OLD[:-1]


def _role_pack(role: str) -> str:
    parts = role.split(":")
    return parts[1] if len(parts) == 3 and parts[0] == "role" else ""


def _rules(bind: Any, table: Any) -> Any:
    return bind.execute(sa.select(table).order_by(table.c.id)).mappings().all()


def _rewrite_log(bind: Any, fix: Any) -> None:
    """Apply ``fix(changes) -> changes`` to every revision's logged changes."""
    revisions = sa.table("policy_revisions", sa.column("id", sa.Integer), sa.column("changes", sa.JSON))
    for rid, changes in bind.execute(sa.select(revisions.c.id, revisions.c.changes)).all():
        new = fix(list(changes or []))
        if new != changes:
            bind.execute(revisions.update().where(revisions.c.id == rid).values(changes=new))


def upgrade() -> None:
    """Apply."""
    bind = op.get_bind()
    rules = sa.table("casbin_rule", sa.column("id", sa.Integer), *(sa.column(c, sa.String) for c in _OLD))
    linked = {(r["v0"], r["v1"]) for r in _rules(bind, rules) if r["ptype"] == "g4"}
    roles: list[str] = []
    for row in _rules(bind, rules):
        if row["ptype"] != "p" or row["v6"] == "":
            continue  # already six values (nothing to shift)
        if row["v1"] not in roles:
            roles.append(row["v1"])
        bind.execute(
            rules.update()
            .where(rules.c.id == row["id"])
            .values(v2=row["v3"], v3=row["v4"], v4=row["v5"], v5=row["v6"], v6="")
        )
    for role in roles:
        link = (f"pack:{_role_pack(role)}", role)
        if _role_pack(role) and link not in linked:
            bind.execute(rules.insert().values(ptype="g4", v0=link[0], v1=link[1], v2="", v3="", v4="", v5="", v6=""))
            linked.add(link)

    seen: set[str] = set()

    def fix(changes: list[Any]) -> list[Any]:
        out: list[Any] = []
        for op_, rule in changes:
            if rule and rule[0] == "p" and len(rule) == 8:
                rule = [*rule[:3], *rule[4:]]
                out.append([op_, rule])
                if op_ == "add" and rule[2] not in seen and (f"pack:{_role_pack(rule[2])}", rule[2]) in linked:
                    seen.add(rule[2])
                    out.append(["add", ["g4", f"pack:{_role_pack(rule[2])}", rule[2]]])
            else:
                out.append([op_, rule])
        return out

    _rewrite_log(bind, fix)
    with op.batch_alter_table("casbin_rule", schema=None) as batch_op:
        batch_op.drop_constraint("uq_casbin_rule_all", type_="unique")
        batch_op.drop_column("v6")
        batch_op.create_unique_constraint("uq_casbin_rule_all", list(_NEW))


def downgrade() -> None:
    """Revert: p-rules get their pack back (the role's), the pack → role links go."""
    with op.batch_alter_table("casbin_rule", schema=None) as batch_op:
        batch_op.drop_constraint("uq_casbin_rule_all", type_="unique")
        batch_op.add_column(sa.Column("v6", sa.String(length=255), nullable=False, server_default=""))
    bind = op.get_bind()
    rules = sa.table("casbin_rule", sa.column("id", sa.Integer), *(sa.column(c, sa.String) for c in _OLD))
    for row in _rules(bind, rules):
        if row["ptype"] == "g4" and str(row["v0"]).startswith("pack:"):
            bind.execute(rules.delete().where(rules.c.id == row["id"]))
        elif row["ptype"] == "p" and row["v6"] == "":
            bind.execute(
                rules.update()
                .where(rules.c.id == row["id"])
                .values(v2=f"pack:{_role_pack(row['v1'])}", v3=row["v2"], v4=row["v3"], v5=row["v4"], v6=row["v5"])
            )

    def fix(changes: list[Any]) -> list[Any]:
        out: list[Any] = []
        for op_, rule in changes:
            if rule and rule[0] == "g4" and str(rule[1]).startswith("pack:"):
                continue
            if rule and rule[0] == "p" and len(rule) == 7:
                rule = [*rule[:3], f"pack:{_role_pack(rule[2])}", *rule[3:]]
            out.append([op_, rule])
        return out

    _rewrite_log(bind, fix)
    with op.batch_alter_table("casbin_rule", schema=None) as batch_op:
        batch_op.alter_column("v6", server_default=None)
        batch_op.create_unique_constraint("uq_casbin_rule_all", list(_OLD))
