"""The in-memory DocumentStore passes the DocumentStore conformance tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiestack.stores.documents import DocumentStore
from aiestack.stores.documents_memory import MemoryDocumentStore
from aiestack.testing.documents import DocumentStoreConformance

pytestmark = pytest.mark.unit


class TestMemoryDocumentStore(DocumentStoreConformance):
    @pytest.fixture
    def store(self) -> Iterator[MemoryDocumentStore]:
        store = MemoryDocumentStore()
        store.migrate()
        yield store
        store.close()


def test_it_implements_the_protocol() -> None:
    assert isinstance(MemoryDocumentStore(), DocumentStore)
