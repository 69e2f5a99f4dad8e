"""Drop users.session_version: nothing reads or writes it (sessions are server-side rows,
``user_sessions``, ended one by one); it was dead since the sessions migration. Downgrade adds it
back with 0 for every user.

Revision ID: f1a9c3e5b7d2
Revises: e5c2b8d4a1f7
Create Date: 2026-12-06 15:25:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "f1a9c3e5b7d2"
down_revision = "e5c2b8d4a1f7"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Apply."""
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("session_version")


def downgrade() -> None:
    """Revert."""
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("session_version", sa.Integer(), server_default="0", nullable=False))
