"""open_store(url, "documents") maps URL schemes to the document backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiestack.errors import StoreError
from aiestack.stores.documents_embedded import EmbeddedDocumentStore
from aiestack.stores.documents_memory import MemoryDocumentStore
from aiestack.stores.documents_postgres import PostgresDocumentStore
from aiestack.stores.open import open_store

pytestmark = pytest.mark.unit


def test_each_scheme_opens_its_backend(tmp_path: Path) -> None:
    assert isinstance(open_store("memory://", "documents"), MemoryDocumentStore)
    embedded = open_store(f"sqlite:///{tmp_path / 'a.db'}", "documents", index_dir=tmp_path / "idx")
    assert isinstance(embedded, EmbeddedDocumentStore) and embedded.index_dir == tmp_path / "idx"
    embedded.close()
    default = open_store(f"sqlite:///{tmp_path / 'b.db'}", "documents")
    assert isinstance(default, EmbeddedDocumentStore) and default.index_dir == tmp_path / "indexes"
    default.close()
    postgres = open_store("postgresql://user@127.0.0.1:5432/db", "documents")
    assert isinstance(postgres, PostgresDocumentStore)
    postgres.close()


def test_bad_urls_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unsupported database"):
        open_store("mysql://host/db", "documents")
    with pytest.raises(StoreError, match="embedded"):
        open_store("postgresql://user@127.0.0.1:5432/db", "documents", index_dir=tmp_path)


def test_the_postgres_postings_cache_bound_is_an_option(tmp_path: Path) -> None:
    url = "postgresql://user@127.0.0.1:5432/db"
    default = open_store(url, "documents")
    assert isinstance(default, PostgresDocumentStore) and default._terms.cache.limit_bytes == 256 * 2**20
    default.close()
    small = open_store(url, "documents", postings_cache_bytes=3 * 2**20)
    assert isinstance(small, PostgresDocumentStore) and small._terms.cache.limit_bytes == 3 * 2**20
    small.close()
    none = open_store(url, "documents", postings_cache_bytes=0)
    assert isinstance(none, PostgresDocumentStore) and none._terms.cache.limit_bytes == 0
    none.close()
    for bad in (-1, 1.5, "big"):
        with pytest.raises(StoreError, match="postings_cache_bytes must be"):
            open_store(url, "documents", postings_cache_bytes=bad)


@pytest.mark.integration
def test_store_postings_cache_mb_reaches_the_postgres_store(pgvector_url: str, tmp_path: Path) -> None:
    from aiestack.build import build_documents
    from aiestack.settings import Settings

    settings = Settings(data_dir=tmp_path, embedded_model=False, store={"url": pgvector_url, "postings_cache_mb": 5})
    store = build_documents(settings)
    assert isinstance(store, PostgresDocumentStore) and store._terms.cache.limit_bytes == 5 * 2**20
    assert store._build_cap_mb == 4096  # the default HNSW build cap
    store.close()
    settings = Settings(data_dir=tmp_path, embedded_model=False, store={"url": pgvector_url, "hnsw_build_memory_mb": 700})
    store = build_documents(settings)
    assert isinstance(store, PostgresDocumentStore) and store._build_cap_mb == 700
    store.close()
    embedded = build_documents(Settings(data_dir=tmp_path, embedded_model=False, store={"postings_cache_mb": 5}))
    assert isinstance(embedded, EmbeddedDocumentStore)  # the option is PostgreSQL's only
    embedded.close()
