"""Collection pointers: a name standing for another collection, its "current version" (issue #15).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06

A frozen snapshot, like 0001: every column is spelled out here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "collection_pointers",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("collection", sa.String(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_collection_pointers"),
        sa.ForeignKeyConstraint(
            ["collection"], ["collections.name"], name="fk_collection_pointers_collection_collections", ondelete="CASCADE"
        ),
    )


def downgrade() -> None:
    op.drop_table("collection_pointers")
