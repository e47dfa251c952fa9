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
