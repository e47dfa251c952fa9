"""Collections, documents and chunks (the embedded and PostgreSQL document stores).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

A frozen snapshot, like 0001: every column is spelled out here.

One layout for both backends. Two columns change type by dialect: ``embedding`` is float32
little-endian bytes on SQLite and ``real[]`` on PostgreSQL (pgvector casts it to ``vector(dim)``
in the per-collection HNSW index the PostgreSQL store creates with each collection, since the
dimension is per collection), and ``tsv`` is the chunk's ``tsvector`` on PostgreSQL (NULL on
SQLite, where the term index is tantivy beside the database). The PostgreSQL-only indexes (GIN on
``tsv``, HNSW per collection) are created by the PostgreSQL document store, so this schema
migrates on any PostgreSQL, with or without pgvector.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
KEY = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
EMBEDDING = sa.LargeBinary().with_variant(postgresql.ARRAY(sa.REAL()), "postgresql")
TSVECTOR = sa.Text().with_variant(postgresql.TSVECTOR(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "collections",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("tenant", sa.String(), nullable=False),
        sa.Column("embedding_model", sa.String(), nullable=False),
        sa.Column("dim", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_collections"),
    )
    op.create_index("ix_collections_tenant_name", "collections", ["tenant", "name"])
    op.create_table(
        "documents",
        sa.Column("key", KEY, autoincrement=True, nullable=False),
        sa.Column("collection", sa.String(), nullable=False),
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("title", sa.String(), nullable=False),
        sa.Column("chunks", sa.Integer(), nullable=False),
        sa.Column("ingested_at", sa.Double(), nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["collection"], ["collections.name"], name="fk_documents_collection_collections", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("key", name="pk_documents"),
        sa.UniqueConstraint("collection", "source", name="uq_documents_collection_source"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_documents_collection_id", "documents", ["collection", "id"])
    op.create_table(
        "chunks",
        sa.Column("key", KEY, autoincrement=True, nullable=False),
        sa.Column("collection", sa.String(), nullable=False),
        sa.Column("document_key", KEY, nullable=False),
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("document_id", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("embedding", EMBEDDING, nullable=False),
        sa.Column("tsv", TSVECTOR, nullable=True),
        sa.ForeignKeyConstraint(
            ["document_key"], ["documents.key"], name="fk_chunks_document_key_documents", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("key", name="pk_chunks"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_chunks_collection_id", "chunks", ["collection", "id"])
    op.create_index("ix_chunks_document_key", "chunks", ["document_key"])
    # Contextual retrieval: a model's situating context per (model, document hash:chunk hash).
    op.create_table(
        "context_cache",
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("context", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("model", "key", name="pk_context_cache"),
    )


def downgrade() -> None:
    op.drop_table("context_cache")
    op.drop_index("ix_chunks_document_key", table_name="chunks")
    op.drop_index("ix_chunks_collection_id", table_name="chunks")
    op.drop_table("chunks")
    op.drop_index("ix_documents_collection_id", table_name="documents")
    op.drop_table("documents")
    op.drop_index("ix_collections_tenant_name", table_name="collections")
    op.drop_table("collections")
