"""Pending feedback: explicit feedback sent before its exchange was stored (issue #13).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06

A frozen snapshot, like 0001: every column is spelled out here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "pending_feedback",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("exchange_id", sa.String(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("tenant", sa.String(), nullable=True),
        sa.Column("key_id", sa.String(), nullable=True),
        sa.Column("body", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_pending_feedback"),
    )
    op.create_index("ix_pending_feedback_created_at", "pending_feedback", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_pending_feedback_created_at", table_name="pending_feedback")
    op.drop_table("pending_feedback")
