"""The exchange-query capability on every exchange store: memory (a scan), SQLite, PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiestack.stores.base import ExchangeStore
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.stores.queries import ExchangeQueries, ScanQueries, exchange_queries
from aiestack.testing.queries_conformance import ExchangeQueriesConformance


@pytest.mark.unit
class TestMemoryQueries(ExchangeQueriesConformance):
    @pytest.fixture
    def exchange_store(self) -> ExchangeStore:
        return MemoryExchangeStore()

    def test_the_memory_store_is_scanned(self, exchange_store: ExchangeStore) -> None:
        assert isinstance(exchange_queries(exchange_store), ScanQueries)


@pytest.mark.unit
class TestSqliteQueries(ExchangeQueriesConformance):
    @pytest.fixture
    def exchange_store(self, sqlite_url: str) -> Iterator[ExchangeStore]:
        store = SqlExchangeStore(sqlite_url)
        store.migrate()
        yield store
        store.close()

    def test_the_sql_store_answers_itself(self, exchange_store: ExchangeStore) -> None:
        assert exchange_queries(exchange_store) is exchange_store
        assert isinstance(exchange_store, ExchangeQueries)


@pytest.mark.integration
class TestPostgresQueries(ExchangeQueriesConformance):
    @pytest.fixture
    def exchange_store(self, pg_url: str) -> Iterator[ExchangeStore]:
        store = SqlExchangeStore(pg_url)
        store.migrate()
        yield store
        store.close()
