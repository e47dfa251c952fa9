"""BM25 on PostgreSQL in blocks: one row per (collection, term, batch) instead of one per posting.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06

PostgreSQL only (SQLite's term index is tantivy beside the database; on SQLite this does nothing).
A frozen snapshot: every statement is spelled out here.

The layout before (created by the PostgreSQL document store's ``migrate()`` since issue #18) had one
``bm25_postings`` row per (term, chunk), about 100 rows per abstract, each a heap tuple and two
B-tree entries: the write cost that kept ingestion far below the embedded store's. Now:

- ``bm25_blocks``: per (collection, term) one row per block of postings, the chunk keys, term
  frequencies and quantised lengths packed as arrays, with the block's count and pruning bounds;
- ``bm25_docs``: per chunk its terms and their frequencies (a term vector: what a delete must take
  out of the blocks, and what scores a candidate without reading whole posting lists);
- ``bm25_stats`` is unchanged (created here when an older database never had it).

A database with the old tables is converted in SQL, in this migration's transaction: every
collection stays searchable with the same scores, and the old tables and their function go.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Postings per block when the old layout's posting lists are converted.
_CONVERT_BLOCK = 4096

_CREATE = (
    """CREATE TABLE IF NOT EXISTS bm25_stats (
        collection text PRIMARY KEY REFERENCES collections (name) ON DELETE CASCADE,
        analyzer text NOT NULL,
        chunks bigint NOT NULL DEFAULT 0,
        tokens bigint NOT NULL DEFAULT 0)""",
    """CREATE TABLE bm25_blocks (
        collection text NOT NULL,
        term text NOT NULL,
        first_key bigint NOT NULL,
        last_key bigint NOT NULL,
        n integer NOT NULL,
        max_tf integer NOT NULL,
        min_norm integer NOT NULL,
        keys bigint[] NOT NULL,
        tfs integer[] NOT NULL,
        norms integer[] NOT NULL,
        CONSTRAINT pk_bm25_blocks PRIMARY KEY (collection, term, first_key) INCLUDE (last_key, n, max_tf, min_norm))""",
    """CREATE TABLE bm25_docs (
        chunk_key bigint NOT NULL,
        norm integer NOT NULL,
        terms text[] NOT NULL,
        tfs integer[] NOT NULL,
        CONSTRAINT pk_bm25_docs PRIMARY KEY (chunk_key))""",
)

# Run only where the old tables exist (PL/pgSQL plans a statement when it first reaches it).
_CONVERT = f"""DO $convert$
BEGIN
    IF to_regclass('bm25_postings') IS NOT NULL AND to_regclass('bm25_terms') IS NOT NULL THEN
        INSERT INTO bm25_blocks (collection, term, first_key, last_key, n, max_tf, min_norm, keys, tfs, norms)
        SELECT collection, term, min(chunk_key), max(chunk_key), count(*), max(tf), min(norm),
               array_agg(chunk_key ORDER BY chunk_key), array_agg(tf ORDER BY chunk_key), array_agg(norm ORDER BY chunk_key)
          FROM (SELECT t.collection, t.term, p.chunk_key, p.tf, p.norm,
                       (row_number() OVER (PARTITION BY p.term_id ORDER BY p.chunk_key) - 1) / {_CONVERT_BLOCK} AS block
                  FROM bm25_postings p JOIN bm25_terms t ON t.id = p.term_id) AS numbered
         GROUP BY collection, term, block;
        INSERT INTO bm25_docs (chunk_key, norm, terms, tfs)
        SELECT p.chunk_key, min(p.norm), array_agg(t.term ORDER BY t.term), array_agg(p.tf ORDER BY t.term)
          FROM bm25_postings p JOIN bm25_terms t ON t.id = p.term_id
         GROUP BY p.chunk_key;
        DROP FUNCTION IF EXISTS aiestack_bm25_top(bigint[], float8[], float8[], bigint, float8, float8, integer, bigint);
        DROP TABLE bm25_postings;
        DROP TABLE bm25_terms;
    END IF;
END
$convert$"""


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    for statement in _CREATE:
        op.execute(sa.text(statement))
    op.execute(sa.text(_CONVERT))


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    # The store's migrate() rebuilds the postings of collections without statistics.
    op.execute(sa.text("DROP TABLE bm25_docs"))
    op.execute(sa.text("DROP TABLE bm25_blocks"))
    op.execute(sa.text("DELETE FROM bm25_stats"))
