"""Virtual keys (api_keys) and the per-key index on exchanges that budgets and usage read.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02

A frozen snapshot, like 0001: every column is spelled out here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("secret_hash", sa.String(), nullable=False),
        sa.Column("prefix", sa.String(), nullable=False),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("tpm", sa.Integer(), nullable=True),
        sa.Column("budget_day_usd", sa.Double(), nullable=True),
        sa.Column("budget_month_usd", sa.Double(), nullable=True),
        sa.Column("models", JSON, nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("revoked_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("secret_hash", name="uq_api_keys_secret_hash"),
    )
    op.create_index("ix_api_keys_tenant_created_at", "api_keys", ["tenant", "created_at"])
    op.create_index("ix_exchanges_key_id_created_at", "exchanges", ["key_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_exchanges_key_id_created_at", table_name="exchanges")
    op.drop_index("ix_api_keys_tenant_created_at", table_name="api_keys")
    op.drop_table("api_keys")
