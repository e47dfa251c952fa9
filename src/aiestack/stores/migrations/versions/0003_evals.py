"""Evaluation runs and their per-example results (eval_runs, eval_results).

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03

A frozen snapshot, like 0001: every column is spelled out here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("suite", sa.String(), nullable=False),
        sa.Column("systems", JSON, nullable=False),
        sa.Column("started_at", sa.Double(), nullable=False),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("summary", JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_eval_runs"),
    )
    op.create_index("ix_eval_runs_started_at", "eval_runs", ["started_at"])
    op.create_index("ix_eval_runs_suite_started_at", "eval_runs", ["suite", "started_at"])
    op.create_table(
        "eval_results",
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("example_id", sa.String(), nullable=False),
        sa.Column("system", sa.String(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("scores", JSON, nullable=False),
        sa.Column("details", JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("exchange_id", sa.String(), nullable=True),
        sa.Column("latency_ms", sa.Double(), nullable=True),
        sa.Column("cost_usd", sa.Double(), nullable=True),
        sa.Column("cached", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "example_id", "system", name="pk_eval_results"),
    )
    op.create_index("ix_eval_results_exchange_id", "eval_results", ["exchange_id"])


def downgrade() -> None:
    op.drop_index("ix_eval_results_exchange_id", table_name="eval_results")
    op.drop_table("eval_results")
    op.drop_index("ix_eval_runs_suite_started_at", table_name="eval_runs")
    op.drop_index("ix_eval_runs_started_at", table_name="eval_runs")
    op.drop_table("eval_runs")
