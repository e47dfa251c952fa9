"""The cache protocols' conformance suites on every backend: memory, SQLite, PostgreSQL, Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from aiestack.stores.cache import CacheBackend
from aiestack.stores.cache_memory import MemoryCacheBackend
from aiestack.stores.cache_sql import SqlCacheBackend
from aiestack.stores.context_cache import ContextCache
from aiestack.stores.context_cache_memory import MemoryContextCache
from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.stores.open import open_store
from aiestack.testing.cache_conformance import CacheBackendConformance, ContextCacheConformance, ManualClock


@pytest.mark.unit
class TestMemoryCacheBackend(CacheBackendConformance):
    @pytest.fixture
    def cache_backend(self, clock: ManualClock) -> CacheBackend:
        return MemoryCacheBackend(clock=clock)


@pytest.mark.unit
class TestSqliteCacheBackend(CacheBackendConformance):
    @pytest.fixture
    def cache_backend(self, sqlite_url: str, clock: ManualClock) -> Iterator[CacheBackend]:
        store = SqlExchangeStore(sqlite_url)  # the table comes with the store's migrations
        store.migrate()
        yield SqlCacheBackend(store.engine, clock=clock)
        store.close()


@pytest.mark.integration
class TestPostgresCacheBackend(CacheBackendConformance):
    @pytest.fixture
    def cache_backend(self, pg_url: str, clock: ManualClock) -> Iterator[CacheBackend]:
        store = SqlExchangeStore(pg_url)
        store.migrate()
        yield SqlCacheBackend(store.engine, clock=clock)
        store.close()


@pytest.mark.integration
class TestRedisCacheBackend(CacheBackendConformance):
    own_clock = True  # Redis expires entries itself

    @pytest.fixture
    async def cache_backend(self, redis_url: str) -> AsyncIterator[CacheBackend]:
        backend = open_store(redis_url, "cache", prefix=f"aiestack-test:{uuid.uuid4().hex[:12]}:")
        yield backend
        await backend.clear()
        await backend.aclose()


@pytest.mark.unit
class TestMemoryContextCache(ContextCacheConformance):
    @pytest.fixture
    def context_cache(self) -> ContextCache:
        return MemoryContextCache()


def _sql_context_caches(url: str) -> Iterator[tuple[ContextCache, ContextCache]]:
    store = open_store(url, "exchanges")
    store.migrate()  # the table comes with revision 0004
    first, second = open_store(url, "context_cache"), open_store(url, "context_cache")
    yield first, second
    first.close()
    second.close()
    store.close()


@pytest.mark.unit
class TestSqliteContextCache(ContextCacheConformance):
    @pytest.fixture
    def handles(self, sqlite_url: str) -> Iterator[tuple[ContextCache, ContextCache]]:
        yield from _sql_context_caches(sqlite_url)

    @pytest.fixture
    def context_cache(self, handles: tuple[ContextCache, ContextCache]) -> ContextCache:
        return handles[0]

    @pytest.fixture
    def reopen_context_cache(self, handles: tuple[ContextCache, ContextCache]) -> ContextCache:
        return handles[1]


@pytest.mark.integration
class TestPostgresContextCache(ContextCacheConformance):
    @pytest.fixture
    def handles(self, pg_url: str) -> Iterator[tuple[ContextCache, ContextCache]]:
        yield from _sql_context_caches(pg_url)

    @pytest.fixture
    def context_cache(self, handles: tuple[ContextCache, ContextCache]) -> ContextCache:
        return handles[0]

    @pytest.fixture
    def reopen_context_cache(self, handles: tuple[ContextCache, ContextCache]) -> ContextCache:
        return handles[1]
