"""Every cache backend stores, expires, lists and clears entries alike; SQL persists, Redis is shared."""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from aiestack.cache.semantic import SemanticCache
from aiestack.stores.cache import CacheBackend, CachedAnswer, Entry
from aiestack.stores.cache_memory import MemoryCacheBackend
from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.testing.embeddings import BagOfWordsEmbeddings
from aiestack.types import ToolCall, Usage

REDIS_URL = os.environ.get("AIESTACK_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


class Clock:
    def __init__(self) -> None:
        self.now = time.time()  # Redis expires entries by the wall clock

    def __call__(self) -> float:
        return self.now


def answer(text: str = "an answer") -> CachedAnswer:
    return CachedAnswer(
        text=text,
        model="m",
        provider="fake",
        finish_reason="stop",
        tool_calls=(ToolCall("c1", "lookup", '{"q": 1}'),),
        usage=Usage(10, 5, 2),
        cost_usd=0.25,
        exchange_id="ex_1",
    )


def entry(
    key: str, *, kind: str = "exact", tenant: str = "t", created: float | None = None, ttl: float | None = 60
) -> Entry:
    created = time.time() if created is None else created
    vector = np.arange(8, dtype=np.float32) / 10 if kind == "semantic" else None
    return Entry(
        key=key,
        kind=kind,  # type: ignore[arg-type]
        partition="p" if kind == "semantic" else "",
        tenant=tenant,
        route="r",
        answer=answer(),
        created_at=created,
        expires_at=created + ttl if ttl is not None else None,
        query="How do I reset my password?" if kind == "semantic" else "",
        vector=vector,
    )


def redis_available() -> bool:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
        return True
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture(
    params=[
        pytest.param("memory", marks=pytest.mark.unit),
        pytest.param("sql", marks=pytest.mark.unit),
        pytest.param("redis", marks=pytest.mark.integration),
    ]
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[CacheBackend, Clock]]:
    clock = Clock()
    if request.param == "memory":
        yield MemoryCacheBackend(clock=clock), clock
        return
    if request.param == "sql":
        from aiestack.stores.cache_sql import SqlCacheBackend

        store = SqlExchangeStore(f"sqlite:///{tmp_path / 'a.db'}")
        store.migrate()
        yield SqlCacheBackend(store.engine, clock=clock), clock
        store.close()
        return
    if not redis_available():
        pytest.skip(f"Redis is not reachable at {REDIS_URL}; set AIESTACK_TEST_REDIS_URL to run these tests")
    from aiestack.stores.cache_redis import RedisCacheBackend

    prefix = f"aiestack-test:{uuid.uuid4().hex[:12]}:"
    backend = RedisCacheBackend(REDIS_URL, prefix=prefix)
    yield backend, clock
    await backend.clear()
    await backend.aclose()


async def test_an_entry_round_trips_with_its_answer_and_vector(backend: tuple[CacheBackend, Clock]) -> None:
    store, _ = backend
    original = entry("s:1", kind="semantic", ttl=None)
    await store.put(original)
    got = await store.get("s:1")
    assert got is not None
    assert got == original  # every field but the vector (not compared by the dataclass)
    assert got.vector is not None and np.array_equal(got.vector, original.vector)  # type: ignore[arg-type]
    assert got.answer.tool_calls == (ToolCall("c1", "lookup", '{"q": 1}'),)
    assert await store.get("missing") is None


async def test_put_replaces_and_delete_removes(backend: tuple[CacheBackend, Clock]) -> None:
    store, _ = backend
    await store.put(entry("e:1"))
    await store.put(dataclasses.replace(entry("e:1"), answer=answer("newer")))
    got = await store.get("e:1")
    assert got is not None and got.answer.text == "newer"
    await store.delete(["e:1", "e:unknown"])
    assert await store.get("e:1") is None


async def test_expired_entries_are_never_served(backend: tuple[CacheBackend, Clock]) -> None:
    store, clock = backend
    if isinstance(store, MemoryCacheBackend) or store.name == "sql":
        await store.put(entry("e:old", created=clock.now, ttl=10))
        await store.put(entry("s:old", kind="semantic", created=clock.now, ttl=10))
        clock.now += 11
        assert await store.get("e:old") is None
        assert [e.key for e in await store.semantic_since(0)] == []
    else:  # Redis expires by its own clock: an entry that expired a second ago is gone
        stale = entry("e:old", created=time.time() - 100, ttl=99)
        await store.put(stale)
        assert await store.get("e:old") is None


async def test_semantic_since_lists_only_new_live_semantic_entries(backend: tuple[CacheBackend, Clock]) -> None:
    store, clock = backend
    base = clock.now
    await store.put(entry("s:a", kind="semantic", created=base - 50, ttl=1000))
    await store.put(entry("s:b", kind="semantic", created=base - 10, ttl=1000))
    await store.put(entry("e:c", created=base - 5, ttl=1000))
    assert [e.key for e in await store.semantic_since(base - 100)] == ["s:a", "s:b"]
    assert [e.key for e in await store.semantic_since(base - 20)] == ["s:b"]


async def test_clear_one_tenant_leaves_the_others(backend: tuple[CacheBackend, Clock]) -> None:
    store, clock = backend
    base = clock.now
    await store.put(entry("e:1", tenant="a", created=base))
    await store.put(entry("e:2", tenant="b", created=base))
    await store.put(entry("s:3", kind="semantic", tenant="a", created=base))
    assert await store.clear(tenant="a") == 2
    assert await store.get("e:1") is None and await store.get("s:3") is None
    assert await store.get("e:2") is not None


# ---------------------------------------------------------------------------------- semantic index


@pytest.mark.unit
async def test_the_sqlite_cache_survives_a_restart(tmp_path: Path) -> None:
    from aiestack.stores.cache_sql import SqlCacheBackend

    url = f"sqlite:///{tmp_path / 'aiestack.db'}"
    embeddings = BagOfWordsEmbeddings(dim=256)
    store = SqlExchangeStore(url)
    store.migrate()
    first = SemanticCache(SqlCacheBackend(store.engine), embeddings, threshold=0.7)
    question = "How do I reset my password?"
    await first.store("p", tenant="t", route="r", query=question, vector=await first.embed(question), answer=answer(), ttl_s=60)
    store.close()

    reopened = SqlExchangeStore(url)
    second = SemanticCache(SqlCacheBackend(reopened.engine), embeddings, threshold=0.7)
    paraphrase = "how do i reset my password please"
    found = await second.lookup("p", tenant="t", query=paraphrase, vector=await second.embed(paraphrase))
    reopened.close()
    assert found.hit is not None and found.hit.entry.answer.text == "an answer"


@pytest.mark.unit
async def test_a_shared_backend_index_follows_entries_other_processes_add(tmp_path: Path) -> None:
    from aiestack.stores.cache_sql import SqlCacheBackend

    store = SqlExchangeStore(f"sqlite:///{tmp_path / 'shared.db'}")
    store.migrate()
    clock = Clock()
    embeddings = BagOfWordsEmbeddings(dim=256)
    writer = SemanticCache(SqlCacheBackend(store.engine, clock=clock), embeddings, threshold=0.7, clock=clock)
    reader = SemanticCache(
        SqlCacheBackend(store.engine, clock=clock), embeddings, threshold=0.7, sync_interval_s=1.0, clock=clock
    )
    question = "Is the museum open on Monday?"
    vector = await reader.embed(question)
    assert (await reader.lookup("p", tenant="t", query=question, vector=vector)).hit is None  # loads: empty
    await writer.store("p", tenant="t", route="r", query=question, vector=vector, answer=answer(), ttl_s=60)
    assert (await reader.lookup("p", tenant="t", query=question, vector=vector)).hit is None  # not yet due
    clock.now += 1.5
    found = await reader.lookup("p", tenant="t", query=question, vector=vector)
    store.close()
    assert found.hit is not None and found.hit.similarity == pytest.approx(1.0, abs=1e-5)


@pytest.mark.unit
async def test_a_semantic_lookup_stays_in_its_partition_and_tenant() -> None:
    cache = SemanticCache(MemoryCacheBackend(), BagOfWordsEmbeddings(dim=256), threshold=0.7)
    question = "What is the refund policy?"
    vector = await cache.embed(question)
    await cache.store("p1", tenant="a", route="r", query=question, vector=vector, answer=answer(), ttl_s=60)
    assert (await cache.lookup("p1", tenant="a", query=question, vector=vector)).hit is not None
    assert (await cache.lookup("p2", tenant="a", query=question, vector=vector)).hit is None
    assert (await cache.lookup("p1", tenant="b", query=question, vector=vector)).hit is None


@pytest.mark.unit
async def test_expired_semantic_entries_leave_the_index() -> None:
    clock = Clock()
    cache = SemanticCache(MemoryCacheBackend(clock=clock), BagOfWordsEmbeddings(dim=256), threshold=0.7, clock=clock)
    question = "What is the refund policy?"
    vector = await cache.embed(question)
    await cache.store("p", tenant="a", route="r", query=question, vector=vector, answer=answer(), ttl_s=10)
    clock.now += 11
    assert (await cache.lookup("p", tenant="a", query=question, vector=vector)).hit is None
    assert len(cache) == 0


@pytest.mark.unit
async def test_asking_the_same_question_again_replaces_its_entry() -> None:
    cache = SemanticCache(MemoryCacheBackend(), BagOfWordsEmbeddings(dim=256), threshold=0.7)
    question = "What is the refund policy?"
    vector = await cache.embed(question)
    for text in ("first", "second"):
        await cache.store("p", tenant="a", route="r", query=question, vector=vector, answer=answer(text), ttl_s=60)
    assert len(cache) == 1
    found = await cache.lookup("p", tenant="a", query=question, vector=vector)
    assert found.hit is not None and found.hit.entry.answer.text == "second"


