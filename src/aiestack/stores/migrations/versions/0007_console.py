"""Console: exchange columns and indexes for filtering and pagination.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28

A frozen snapshot, like 0001: every column is spelled out here.

The console lists exchanges newest first with keyset pagination (``created_at, id`` below the
last row seen), optionally filtered. Each filter on a column people pick from a list gets an
index led by that column and followed by ``created_at``, so a filtered page is an index range
scan read backwards, never a sort of the table: ``route``, ``outcome`` (ok, error, blocked,
cached) and the new ``guard_action`` (the strongest action a guardrail took on the exchange:
block, redact or flag; NULL when none acted). Model, tenant and key already have theirs (0001,
0002).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("exchanges", sa.Column("guard_action", sa.String(), nullable=True))
    op.create_index("ix_exchanges_route_created_at", "exchanges", ["route", "created_at"])
    op.create_index("ix_exchanges_outcome_created_at", "exchanges", ["outcome", "created_at"])
    op.create_index("ix_exchanges_guard_action_created_at", "exchanges", ["guard_action", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_exchanges_guard_action_created_at", table_name="exchanges")
    op.drop_index("ix_exchanges_outcome_created_at", table_name="exchanges")
    op.drop_index("ix_exchanges_route_created_at", table_name="exchanges")
    with op.batch_alter_table("exchanges") as batch:
        batch.drop_column("guard_action")
