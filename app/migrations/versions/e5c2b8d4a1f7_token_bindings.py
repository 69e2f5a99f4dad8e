"""service_tokens.binding (what a token may ask about) and service_tokens.migrated

Existing tokens move to the binding closest to what they could do without widening anyone: a
token with a default workspace (``--workspace``) is bound to that workspace; one without could
ask about anything, so it becomes an explicit all-workspaces token (``*``: every workspace and
platform domain except the service meta-pack's, which no migrated token reaches). Both are
flagged ``migrated`` so ``flask token list`` shows them for review. Downgrade drops both columns.

Revision ID: e5c2b8d4a1f7
Revises: d8a3f5c1e7b2
Create Date: 2026-12-06 11:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "e5c2b8d4a1f7"
down_revision = "d8a3f5c1e7b2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    with op.batch_alter_table("service_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("binding", sa.String(length=2000), server_default="", nullable=False))
        batch_op.add_column(sa.Column("migrated", sa.Boolean(), server_default=sa.false(), nullable=False))
    tokens = sa.table(
        "service_tokens",
        sa.column("workspace", sa.String),
        sa.column("binding", sa.String),
        sa.column("migrated", sa.Boolean),
    )
    op.execute(
        tokens.update()
        .where(tokens.c.workspace.is_not(None))
        .values(binding=sa.literal("ws:") + tokens.c.workspace, migrated=True)
    )
    op.execute(tokens.update().where(tokens.c.workspace.is_(None)).values(binding="*", migrated=True))


def downgrade() -> None:
    """Revert (the bindings are lost: the previous code has none)."""
    with op.batch_alter_table("service_tokens", schema=None) as batch_op:
        batch_op.drop_column("migrated")
        batch_op.drop_column("binding")
