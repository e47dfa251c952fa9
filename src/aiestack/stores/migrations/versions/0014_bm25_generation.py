"""BM25 on PostgreSQL: a generation per collection, so processes may keep posting lists in memory.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07

PostgreSQL only (on SQLite this does nothing). A frozen snapshot: every statement is spelled out here.

- ``bm25_stats.generation``: the 64-bit id of the transaction that last changed the collection's
  postings (``pg_current_xact_id()``, set by that transaction), what a process's cached posting
  lists are checked against. Existing collections start at 0 until their next write.
- ``bm25_stats.writes``: the collection's count of postings writes, which picks the terms a write
  checks for crowded small blocks.
- The server-side search function ``aiestack_bm25_top`` goes: the store scores the posting lists
  itself now (``stores/documents_postgres_postings.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(sa.text("ALTER TABLE bm25_stats ADD COLUMN IF NOT EXISTS generation bigint NOT NULL DEFAULT 0"))
    op.execute(sa.text("ALTER TABLE bm25_stats ADD COLUMN IF NOT EXISTS writes bigint NOT NULL DEFAULT 0"))
    op.execute(
        sa.text(
            "DROP FUNCTION IF EXISTS aiestack_bm25_top(text, text[], float8[], float8[], bigint, float8, float8, integer, bigint)"
        )
    )


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.execute(sa.text("ALTER TABLE bm25_stats DROP COLUMN writes"))
    op.execute(sa.text("ALTER TABLE bm25_stats DROP COLUMN generation"))
