"""Datasets: immutable, content-hashed versions and their rows with lineage.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06

A frozen snapshot, like 0001: every column is spelled out here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "dataset_versions",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("content_hash", sa.String(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("source", JSON, nullable=False),
        sa.Column("parent", sa.String(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", "version", name="pk_dataset_versions"),
    )
    op.create_table(
        "dataset_rows",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("row_id", sa.String(), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("lineage", JSON, nullable=False),
        sa.PrimaryKeyConstraint("name", "version", "position", name="pk_dataset_rows"),
    )


def downgrade() -> None:
    op.drop_table("dataset_rows")
    op.drop_table("dataset_versions")
