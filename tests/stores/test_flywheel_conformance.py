"""Every flywheel store backend passes the same conformance suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.testing.flywheel_conformance import FlywheelStoreConformance


@pytest.mark.unit
class TestMemoryFlywheelStore(FlywheelStoreConformance):
    @pytest.fixture
    def store(self) -> MemoryExchangeStore:
        return MemoryExchangeStore()


@pytest.mark.unit
class TestSqliteFlywheelStore(FlywheelStoreConformance):
    @pytest.fixture
    def store(self, sqlite_url: str) -> Iterator[SqlExchangeStore]:
        store = SqlExchangeStore(sqlite_url)
        store.migrate()
        yield store
        store.close()


@pytest.mark.integration
class TestPostgresFlywheelStore(FlywheelStoreConformance):
    @pytest.fixture
    def store(self, pg_url: str) -> Iterator[SqlExchangeStore]:
        store = SqlExchangeStore(pg_url)
        store.migrate()
        yield store
        store.close()
