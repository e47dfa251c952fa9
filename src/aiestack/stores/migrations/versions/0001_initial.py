"""Initial schema: exchanges, spans and the embedding cache.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

A frozen snapshot: it spells out every column instead of importing
``aiestack.stores.sql.tables``, so later changes to the tables never rewrite history.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "exchanges",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("key_id", sa.String(), nullable=True),
        sa.Column("route", sa.String(), nullable=True),
        sa.Column("provider", sa.String(), nullable=True),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("finish_reason", sa.String(), nullable=True),
        sa.Column("error_type", sa.String(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_tokens", sa.Integer(), nullable=False),
        sa.Column("queue_ms", sa.Double(), nullable=True),
        sa.Column("ttft_ms", sa.Double(), nullable=True),
        sa.Column("tpot_ms", sa.Double(), nullable=True),
        sa.Column("total_ms", sa.Double(), nullable=True),
        sa.Column("cost_usd", sa.Double(), nullable=True),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("trace_id", sa.String(), nullable=True),
        sa.Column("request", JSON, nullable=False),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("attributes", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_exchanges"),
    )
    op.create_index("ix_exchanges_created_at", "exchanges", ["created_at"])
    op.create_index("ix_exchanges_model_created_at", "exchanges", ["model", "created_at"])
    op.create_index("ix_exchanges_tenant_created_at", "exchanges", ["tenant", "created_at"])
    op.create_index("ix_exchanges_trace_id", "exchanges", ["trace_id"])

    op.create_table(
        "spans",
        sa.Column("trace_id", sa.String(), nullable=False),
        sa.Column("span_id", sa.String(), nullable=False),
        sa.Column("parent_id", sa.String(), nullable=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("start_ns", sa.BigInteger(), nullable=False),
        sa.Column("end_ns", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("attributes", JSON, nullable=False),
        sa.Column("exchange_id", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("trace_id", "span_id", name="pk_spans"),
    )
    op.create_index("ix_spans_trace_id_start_ns", "spans", ["trace_id", "start_ns"])
    op.create_index("ix_spans_exchange_id_start_ns", "spans", ["exchange_id", "start_ns"])

    op.create_table(
        "embedding_cache",
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("text_hash", sa.String(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("model", "text_hash", name="pk_embedding_cache"),
    )


def downgrade() -> None:
    op.drop_table("embedding_cache")
    op.drop_index("ix_spans_exchange_id_start_ns", table_name="spans")
    op.drop_index("ix_spans_trace_id_start_ns", table_name="spans")
    op.drop_table("spans")
    op.drop_index("ix_exchanges_trace_id", table_name="exchanges")
    op.drop_index("ix_exchanges_tenant_created_at", table_name="exchanges")
    op.drop_index("ix_exchanges_model_created_at", table_name="exchanges")
    op.drop_index("ix_exchanges_created_at", table_name="exchanges")
    op.drop_table("exchanges")
