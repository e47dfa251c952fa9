"""Cache entries (the exact and semantic caches on SQL stores).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28

A frozen snapshot, like 0001: every column is spelled out here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "cache_entries",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("partition", sa.String(), nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("route", sa.String(), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=True),
        sa.Column("vector", sa.LargeBinary(), nullable=True),
        sa.Column("answer", JSON, nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("key", name="pk_cache_entries"),
    )
    op.create_index("ix_cache_entries_kind_created_at", "cache_entries", ["kind", "created_at"])
    op.create_index("ix_cache_entries_expires_at", "cache_entries", ["expires_at"])
    op.create_index("ix_cache_entries_tenant", "cache_entries", ["tenant"])


def downgrade() -> None:
    op.drop_index("ix_cache_entries_tenant", table_name="cache_entries")
    op.drop_index("ix_cache_entries_expires_at", table_name="cache_entries")
    op.drop_index("ix_cache_entries_kind_created_at", table_name="cache_entries")
    op.drop_table("cache_entries")
