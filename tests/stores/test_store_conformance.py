"""Every built-in backend passes the conformance mixins that plugin authors use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.stores.kv import KV
from aiestack.stores.kv_memory import MemoryKV
from aiestack.testing.conformance import (
    EmbeddingCacheConformance,
    ExchangeStoreConformance,
    KeyStoreConformance,
    KVConformance,
    UsageConformance,
)


@pytest.mark.unit
class TestMemoryStore(
    ExchangeStoreConformance, EmbeddingCacheConformance, KeyStoreConformance, UsageConformance
):
    @pytest.fixture
    def store(self) -> MemoryExchangeStore:
        return MemoryExchangeStore()


@pytest.mark.unit
class TestSqliteStore(
    ExchangeStoreConformance, EmbeddingCacheConformance, KeyStoreConformance, UsageConformance
):
    @pytest.fixture
    def store(self, sqlite_url: str) -> Iterator[SqlExchangeStore]:
        store = SqlExchangeStore(sqlite_url)
        store.migrate()
        yield store
        store.close()


@pytest.mark.unit
class TestSqliteInMemoryStore(
    ExchangeStoreConformance, EmbeddingCacheConformance, KeyStoreConformance, UsageConformance
):
    """``sqlite://`` shares one connection, so every thread sees the same in-memory database."""

    @pytest.fixture
    def store(self) -> Iterator[SqlExchangeStore]:
        store = SqlExchangeStore("sqlite://")
        store.migrate()
        yield store
        store.close()


@pytest.mark.integration
class TestPostgresStore(
    ExchangeStoreConformance, EmbeddingCacheConformance, KeyStoreConformance, UsageConformance
):
    @pytest.fixture
    def store(self, pg_url: str) -> Iterator[SqlExchangeStore]:
        store = SqlExchangeStore(pg_url)
        store.migrate()
        yield store
        store.close()


@pytest.mark.unit
class TestMemoryKV(KVConformance):
    @pytest.fixture
    def kv(self) -> MemoryKV:
        return MemoryKV()


@pytest.mark.integration
class TestRedisKV(KVConformance):
    @pytest.fixture
    def kv(self, redis_kv: KV) -> KV:
        return redis_kv
