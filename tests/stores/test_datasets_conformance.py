"""Every built-in backend passes the dataset conformance mixin."""

from __future__ import annotations

import pytest

from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.testing.datasets_conformance import DatasetStoreConformance


@pytest.mark.unit
class TestMemoryDatasetStore(DatasetStoreConformance):
    @pytest.fixture
    def store(self) -> MemoryExchangeStore:
        return MemoryExchangeStore()


@pytest.mark.unit
class TestSqliteDatasetStore(DatasetStoreConformance):
    @pytest.fixture
    def store(self, sqlite_exchange_store: SqlExchangeStore) -> SqlExchangeStore:
        return sqlite_exchange_store


@pytest.mark.integration
class TestPostgresDatasetStore(DatasetStoreConformance):
    @pytest.fixture
    def store(self, pg_exchange_store: SqlExchangeStore) -> SqlExchangeStore:
        return pg_exchange_store
