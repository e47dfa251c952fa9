"""The contextual-retrieval cache on SQL: round trip, upsert, misses, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from aiestack.stores.context_cache import ContextCache
from aiestack.stores.context_cache_sql import SqlContextCache
from aiestack.stores.open import open_store


def _exercise(url: str) -> None:
    store = open_store(url, "exchanges")
    store.migrate()  # the table comes with revision 0004
    cache = SqlContextCache(url)
    try:
        assert isinstance(cache, ContextCache)
        assert cache.get_contexts("m", ["d:a"]) == {}
        cache.put_contexts("m", {"d:a": "About A.", "d:b": "About B."})
        cache.put_contexts("other", {"d:a": "Another model's context."})
        assert cache.get_contexts("m", ["d:a", "d:b", "d:c", "d:a"]) == {"d:a": "About A.", "d:b": "About B."}
        cache.put_contexts("m", {"d:a": "About A, again."})  # written again: replaced, not a conflict
        assert cache.get_contexts("m", ["d:a"]) == {"d:a": "About A, again."}
        assert cache.get_contexts("other", ["d:a", "d:b"]) == {"d:a": "Another model's context."}
        many = {f"d:{i}": f"context {i}" for i in range(1200)}  # more than one IN (...) chunk
        cache.put_contexts("bulk", many)
        assert cache.get_contexts("bulk", list(many)) == many
        again = SqlContextCache(url)  # another process later: the contexts persisted
        assert again.get_contexts("m", ["d:b"]) == {"d:b": "About B."}
        again.close()
    finally:
        cache.close()
        store.close()


@pytest.mark.unit
def test_sqlite(sqlite_url: str) -> None:
    _exercise(sqlite_url)


@pytest.mark.integration
def test_postgresql(pg_url: str) -> None:
    _exercise(pg_url)
