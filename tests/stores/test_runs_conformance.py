"""Every built-in backend passes the agent run store conformance mixin."""

from __future__ import annotations

import pytest

from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.testing.runs_conformance import RunStoreConformance


@pytest.mark.unit
class TestMemoryRunStore(RunStoreConformance):
    @pytest.fixture
    def store(self) -> MemoryExchangeStore:
        return MemoryExchangeStore()


@pytest.mark.unit
class TestSqliteRunStore(RunStoreConformance):
    @pytest.fixture
    def store(self, sqlite_exchange_store: SqlExchangeStore) -> SqlExchangeStore:
        return sqlite_exchange_store


@pytest.mark.integration
class TestPostgresRunStore(RunStoreConformance):
    @pytest.fixture
    def store(self, pg_exchange_store: SqlExchangeStore) -> SqlExchangeStore:
        return pg_exchange_store
