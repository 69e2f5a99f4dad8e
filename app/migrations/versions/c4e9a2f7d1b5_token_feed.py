"""service_tokens.feed: the token may follow the change feed (``GET /v1/snapshot``, ``/v1/changes``)

Least privilege: a decision token asks questions; a feed token also receives the rows of every
workspace its binding reaches (the users they name, the hashes of the tokens bound inside it), so it
must be granted explicitly (``flask token create --feed``). Existing tokens get false.

Revision ID: c4e9a2f7d1b5
Revises: b3c8d1e6f4a9
Create Date: 2026-12-06 19:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c4e9a2f7d1b5"
down_revision = "b3c8d1e6f4a9"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    with op.batch_alter_table("service_tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("feed", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("service_tokens", schema=None) as batch_op:
        batch_op.drop_column("feed")
