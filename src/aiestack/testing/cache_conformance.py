"""Conformance test mixins for the response cache and the contextual-retrieval cache.

A backend's test class inherits the mixin and provides its fixture::

    class TestMyCacheBackend(CacheBackendConformance):
        @pytest.fixture
        async def cache_backend(self, clock):
            backend = MyCacheBackend(..., clock=clock)
            yield backend
            await backend.aclose()

``clock`` (a :class:`ManualClock`, provided by the mixin) is what the backend must read the time
from, so that expiry is tested without waiting. A backend that expires entries by a clock of its
own (Redis) sets ``own_clock = True``: its expiry test then uses entries that expired long ago.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator

import numpy as np
import pytest

from aiestack.stores.cache import CacheBackend, CachedAnswer, Entry, Kind
from aiestack.stores.context_cache import ContextCache
from aiestack.types import ToolCall, Usage


class ManualClock:
    """A clock tests move by hand: ``clock.now += 11``. Starts at the wall-clock time."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def cached_answer(text: str = "an answer") -> CachedAnswer:
    """An answer with every field set (tool calls, usage, cost), to check each one round-trips."""
    return CachedAnswer(
        text=text,
        model="m",
        provider="fake",
        finish_reason="stop",
        tool_calls=(ToolCall("c1", "lookup", '{"q": 1}'),),
        usage=Usage(10, 5, 2),
        cost_usd=0.25,
        exchange_id="ex_1",
        origin={"prompt.version": 3},
    )


def cache_entry(
    key: str, *, kind: Kind = "exact", tenant: str = "t", created: float | None = None, ttl: float | None = 60
) -> Entry:
    """An exact entry, or a semantic one (with its question and an 8-value vector)."""
    created = time.time() if created is None else created
    return Entry(
        key=key,
        kind=kind,
        partition="p" if kind == "semantic" else "",
        tenant=tenant,
        route="r",
        answer=cached_answer(),
        created_at=created,
        expires_at=created + ttl if ttl is not None else None,
        query="How do I reset my password?" if kind == "semantic" else "",
        vector=np.arange(8, dtype=np.float32) / 10 if kind == "semantic" else None,
    )


class CacheBackendConformance:
    """The :class:`~aiestack.stores.cache.CacheBackend` contract. Needs a ``cache_backend`` fixture
    yielding an empty backend that reads the time from ``clock``."""

    own_clock = False

    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock()

    def test_is_a_cache_backend(self, cache_backend: CacheBackend) -> None:
        assert isinstance(cache_backend, CacheBackend)

    async def test_an_entry_round_trips_with_its_answer_and_vector(self, cache_backend: CacheBackend) -> None:
        original = cache_entry("s:1", kind="semantic", ttl=None)
        await cache_backend.put(original)
        got = await cache_backend.get("s:1")
        assert got is not None
        assert got == original  # every field but the vector (not compared by the dataclass)
        assert got.vector is not None and original.vector is not None
        assert got.vector.dtype == np.float32 and np.array_equal(got.vector, original.vector)
        assert got.answer == cached_answer()
        assert await cache_backend.get("missing") is None

    async def test_put_replaces_and_delete_removes(self, cache_backend: CacheBackend) -> None:
        await cache_backend.put(cache_entry("e:1"))
        await cache_backend.put(cache_entry("e:2"))
        await cache_backend.put(dataclasses.replace(cache_entry("e:1"), answer=cached_answer("newer")))
        got = await cache_backend.get("e:1")
        assert got is not None and got.answer.text == "newer"
        await cache_backend.delete(["e:1", "e:unknown"])
        await cache_backend.delete([])
        assert await cache_backend.get("e:1") is None
        assert await cache_backend.get("e:2") is not None

    async def test_puts_made_together_are_all_stored_the_later_one_of_a_key_winning(
        self, cache_backend: CacheBackend
    ) -> None:
        entries = [cache_entry(f"e:{i}") for i in range(5)] + [cache_entry("s:1", kind="semantic", ttl=None)]
        entries.append(dataclasses.replace(cache_entry("e:0"), answer=cached_answer("later")))
        await asyncio.gather(*(cache_backend.put(entry) for entry in entries))
        for entry in entries[1:-1]:
            got = await cache_backend.get(entry.key)
            assert got is not None and got.answer == entry.answer
        first = await cache_backend.get("e:0")
        assert first is not None and first.answer.text == "later"

    async def test_many_puts_of_one_key_made_together_apply_in_the_order_made(self, cache_backend: CacheBackend) -> None:
        """Order, not luck: writes sent at once on a pool's connections can reach the server in any order."""
        for round_ in range(10):
            key = f"e:race{round_}"
            versions = [dataclasses.replace(cache_entry(key), answer=cached_answer(f"v{i}")) for i in range(16)]
            await asyncio.gather(*(cache_backend.put(entry) for entry in versions))
            got = await cache_backend.get(key)
            assert got is not None and got.answer.text == "v15", (round_, got and got.answer.text)

    async def test_put_many_stores_entries_of_both_kinds_in_one_call_the_later_one_of_a_key_winning(
        self, cache_backend: CacheBackend, clock: ManualClock
    ) -> None:
        semantic = cache_entry("s:1", kind="semantic", created=clock.now, ttl=None)
        entries = [semantic, cache_entry("e:1", created=clock.now), cache_entry("e:2", created=clock.now)]
        entries.append(dataclasses.replace(cache_entry("e:2", created=clock.now), answer=cached_answer("later")))
        await cache_backend.put_many(entries)
        await cache_backend.put_many([])
        got = await cache_backend.get("s:1")
        assert got is not None and got == semantic
        assert got.vector is not None and semantic.vector is not None and np.array_equal(got.vector, semantic.vector)
        exact = await cache_backend.get("e:1")
        assert exact is not None and exact.answer == cached_answer() and exact.kind == "exact"
        replaced = await cache_backend.get("e:2")
        assert replaced is not None and replaced.answer.text == "later"
        assert [e.key for e in await cache_backend.semantic_since(clock.now - 1)] == ["s:1"]
        await asyncio.gather(  # concurrent calls, each of several entries, all stored
            *(cache_backend.put_many([cache_entry(f"e:{i}:{j}") for j in range(3)]) for i in range(4))
        )
        for i in range(4):
            for j in range(3):
                assert await cache_backend.get(f"e:{i}:{j}") is not None

    async def test_expired_entries_are_never_served(self, cache_backend: CacheBackend, clock: ManualClock) -> None:
        if self.own_clock:  # expired by the backend's own clock: entries that expired a while ago
            await cache_backend.put(cache_entry("e:old", created=time.time() - 100, ttl=90))
            await cache_backend.put(cache_entry("s:old", kind="semantic", created=time.time() - 100, ttl=90))
        else:
            await cache_backend.put(cache_entry("e:old", created=clock.now, ttl=10))
            await cache_backend.put(cache_entry("s:old", kind="semantic", created=clock.now, ttl=10))
            assert await cache_backend.get("e:old") is not None
            clock.now += 11
        assert await cache_backend.get("e:old") is None
        assert [e.key for e in await cache_backend.semantic_since(0)] == []

    async def test_semantic_since_lists_only_new_live_semantic_entries_oldest_first(
        self, cache_backend: CacheBackend, clock: ManualClock
    ) -> None:
        base = clock.now
        await cache_backend.put(cache_entry("s:b", kind="semantic", created=base - 10, ttl=1000))
        await cache_backend.put(cache_entry("s:a", kind="semantic", created=base - 50, ttl=1000))
        await cache_backend.put(cache_entry("e:c", created=base - 5, ttl=1000))
        assert [e.key for e in await cache_backend.semantic_since(base - 100)] == ["s:a", "s:b"]
        assert [e.key for e in await cache_backend.semantic_since(base - 20)] == ["s:b"]
        assert await cache_backend.semantic_since(base) == []

    async def test_semantic_since_returns_every_entry_the_caller_does_not_hold(
        self, cache_backend: CacheBackend, clock: ManualClock
    ) -> None:
        base = clock.now
        await cache_backend.put(cache_entry("s:a", kind="semantic", created=base - 50, ttl=1000))
        await cache_backend.put(cache_entry("s:b", kind="semantic", created=base - 10, ttl=1000))
        held = {"s:a": base - 50 + 1000}  # the caller holds s:a with its stored expiry
        got = [e.key for e in await cache_backend.semantic_since(base - 100, known=lambda k, e: held.get(k, -1.0) == e)]
        assert got in (["s:a", "s:b"], ["s:b"])  # s:a may be left out; s:b, not held, must not
        stale = {"s:a": base + 5.0}  # held with another expiry (it was stored again): not known
        got = [e.key for e in await cache_backend.semantic_since(base - 100, known=lambda k, e: stale.get(k, -1.0) == e)]
        assert got == ["s:a", "s:b"]

    async def test_clear_one_tenant_leaves_the_others(self, cache_backend: CacheBackend, clock: ManualClock) -> None:
        base = clock.now
        await cache_backend.put(cache_entry("e:1", tenant="a", created=base))
        await cache_backend.put(cache_entry("e:2", tenant="b", created=base))
        await cache_backend.put(cache_entry("s:3", kind="semantic", tenant="a", created=base))
        assert await cache_backend.clear(tenant="a") == 2
        assert await cache_backend.get("e:1") is None and await cache_backend.get("s:3") is None
        assert await cache_backend.get("e:2") is not None
        assert [e.key for e in await cache_backend.semantic_since(0)] == []
        assert await cache_backend.clear() == 1
        assert await cache_backend.get("e:2") is None


class ContextCacheConformance:
    """The :class:`~aiestack.stores.context_cache.ContextCache` contract. Needs a ``context_cache``
    fixture yielding an empty cache; ``reopen_context_cache`` (optional) another handle on the same
    storage, to check that contexts persist."""

    @pytest.fixture
    def reopen_context_cache(self) -> Iterator[ContextCache | None]:
        yield None

    def test_is_a_context_cache(self, context_cache: ContextCache) -> None:
        assert isinstance(context_cache, ContextCache)

    def test_contexts_round_trip_per_model(self, context_cache: ContextCache) -> None:
        assert context_cache.get_contexts("m", ["d:a"]) == {}
        context_cache.put_contexts("m", {"d:a": "About A.", "d:b": "About B."})
        context_cache.put_contexts("other", {"d:a": "Another model's context."})
        context_cache.put_contexts("m", {})
        assert context_cache.get_contexts("m", ["d:a", "d:b", "d:c", "d:a"]) == {"d:a": "About A.", "d:b": "About B."}
        assert context_cache.get_contexts("other", ["d:a", "d:b"]) == {"d:a": "Another model's context."}

    def test_writing_a_key_again_replaces_it(self, context_cache: ContextCache) -> None:
        context_cache.put_contexts("m", {"d:a": "About A."})
        context_cache.put_contexts("m", {"d:a": "About A, again."})
        assert context_cache.get_contexts("m", ["d:a"]) == {"d:a": "About A, again."}

    def test_many_keys_at_once(self, context_cache: ContextCache) -> None:
        many = {f"d:{i}": f"context {i}" for i in range(1200)}  # more than one SQL IN (...) list
        context_cache.put_contexts("bulk", many)
        assert context_cache.get_contexts("bulk", list(many)) == many

    def test_contexts_persist_for_another_handle(
        self, context_cache: ContextCache, reopen_context_cache: ContextCache | None
    ) -> None:
        if reopen_context_cache is None:
            pytest.skip("this backend keeps its contexts in process only")
        context_cache.put_contexts("m", {"d:b": "About B."})
        assert reopen_context_cache.get_contexts("m", ["d:b"]) == {"d:b": "About B."}
