"""Revisions get a category (policy | membership | settings) for the policy history's filter, backfilled
from their kind; change requests (a user's server-side draft and submitted requests) and their review
events.

Revision ID: b3c8d1e6f4a9
Revises: a7d4e2c9b1f3
Create Date: 2026-12-06 17:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "b3c8d1e6f4a9"
down_revision = "a7d4e2c9b1f3"
branch_labels = None
depends_on = None

# The same mapping as app.policy.store.CATEGORIES, frozen here (a migration never imports app code that moves).
MEMBERSHIP = ("member", "group", "team", "platform", "user-change", "seed")
SETTINGS = ("workspace", "feature", "token-revoke")


def upgrade() -> None:
    """Apply."""
    with op.batch_alter_table("policy_revisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("category", sa.String(length=16), server_default="policy", nullable=False))
        batch_op.create_index("ix_policy_revisions_category", ["category"], unique=False)
    revisions = sa.table("policy_revisions", sa.column("kind", sa.String), sa.column("category", sa.String))
    op.execute(revisions.update().where(revisions.c.kind.in_(MEMBERSHIP)).values(category="membership"))
    op.execute(revisions.update().where(revisions.c.kind.in_(SETTINGS)).values(category="settings"))
    op.create_table(
        "change_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("why", sa.String(length=2000), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("packs", sa.JSON(), nullable=False),
        sa.Column("base_revision", sa.Integer(), nullable=False),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("applied_revision", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["author_id"], ["users.id"], name="fk_change_requests_author_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_change_requests"),
    )
    op.create_index("ix_change_requests_status", "change_requests", ["status"], unique=False)
    op.create_index("ix_change_requests_author_status", "change_requests", ["author_id", "status"], unique=False)
    op.create_table(
        "change_request_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("change_request_id", sa.Integer(), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("body", sa.String(length=2000), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["change_request_id"],
            ["change_requests.id"],
            name="fk_change_request_events_change_request_id_change_requests",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["users.id"], name="fk_change_request_events_actor_id_users", ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_change_request_events"),
    )
    op.create_index(
        "ix_change_request_events_change_request_id",
        "change_request_events",
        ["change_request_id"],
        unique=False,
    )


def downgrade() -> None:
    """Revert."""
    op.drop_index("ix_change_request_events_change_request_id", table_name="change_request_events")
    op.drop_table("change_request_events")
    op.drop_index("ix_change_requests_author_status", table_name="change_requests")
    op.drop_index("ix_change_requests_status", table_name="change_requests")
    op.drop_table("change_requests")
    with op.batch_alter_table("policy_revisions", schema=None) as batch_op:
        batch_op.drop_index("ix_policy_revisions_category")
        batch_op.drop_column("category")
