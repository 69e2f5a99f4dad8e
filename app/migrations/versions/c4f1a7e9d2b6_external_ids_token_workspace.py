"""users.external_id (unique, nullable) and service_tokens.workspace (AuthZEN default workspace)

Revision ID: c4f1a7e9d2b6
Revises: b7e2c4a91d03
Create Date: 2026-12-02 05:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c4f1a7e9d2b6"
down_revision = "b7e2c4a91d03"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("external_id", sa.String(length=254), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_users_external_id"), ["external_id"])
    with op.batch_alter_table("service_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("workspace", sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("service_tokens", schema=None) as batch_op:
        batch_op.drop_column("workspace")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_users_external_id"), type_="unique")
        batch_op.drop_column("external_id")
