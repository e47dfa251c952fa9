"""Every flywheel store backend passes the same conformance suite."""

from __future__ import annotations

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
    def store(self, sqlite_exchange_store: SqlExchangeStore) -> SqlExchangeStore:
        return sqlite_exchange_store


@pytest.mark.integration
class TestPostgresFlywheelStore(FlywheelStoreConformance):
    @pytest.fixture
    def store(self, pg_exchange_store: SqlExchangeStore) -> SqlExchangeStore:
        return pg_exchange_store
