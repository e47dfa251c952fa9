"""open_document_store maps URL schemes to the document backends."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiestack.errors import StoreError
from aiestack.stores.documents_embedded import EmbeddedDocumentStore
from aiestack.stores.documents_memory import MemoryDocumentStore
from aiestack.stores.documents_open import open_document_store
from aiestack.stores.documents_postgres import PostgresDocumentStore

pytestmark = pytest.mark.unit


def test_each_scheme_opens_its_backend(tmp_path: Path) -> None:
    assert isinstance(open_document_store("memory://"), MemoryDocumentStore)
    embedded = open_document_store(f"sqlite:///{tmp_path / 'a.db'}", index_dir=tmp_path / "idx")
    assert isinstance(embedded, EmbeddedDocumentStore) and embedded.index_dir == tmp_path / "idx"
    embedded.close()
    default = open_document_store(f"sqlite:///{tmp_path / 'b.db'}")
    assert isinstance(default, EmbeddedDocumentStore) and default.index_dir == tmp_path / "indexes"
    default.close()
    postgres = open_document_store("postgresql://user@127.0.0.1:5432/db")
    assert isinstance(postgres, PostgresDocumentStore)
    postgres.close()


def test_bad_urls_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="unsupported database"):
        open_document_store("mysql://host/db")
    with pytest.raises(StoreError, match="embedded"):
        open_document_store("postgresql://user@127.0.0.1:5432/db", index_dir=tmp_path)
