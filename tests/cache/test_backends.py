"""The semantic index over the cache backends: persists on SQL, follows other processes, stays in its partition.

The backends' own contract is tests/stores/test_cache_conformance.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiestack.cache.semantic import SemanticCache, semantic_key
from aiestack.stores.cache_memory import MemoryCacheBackend
from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.testing.cache_conformance import ManualClock, cached_answer
from aiestack.testing.embeddings import BagOfWordsEmbeddings

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
    await first.store("p", tenant="t", route="r", query=question, vector=await first.embed(question), answer=cached_answer(), ttl_s=60)
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
    clock = ManualClock()
    embeddings = BagOfWordsEmbeddings(dim=256)
    writer = SemanticCache(SqlCacheBackend(store.engine, clock=clock), embeddings, threshold=0.7, clock=clock)
    reader = SemanticCache(
        SqlCacheBackend(store.engine, clock=clock), embeddings, threshold=0.7, sync_interval_s=1.0, clock=clock
    )
    question = "Is the museum open on Monday?"
    vector = await reader.embed(question)
    assert (await reader.lookup("p", tenant="t", query=question, vector=vector)).hit is None  # loads: empty
    await writer.store("p", tenant="t", route="r", query=question, vector=vector, answer=cached_answer(), ttl_s=60)
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
    await cache.store("p1", tenant="a", route="r", query=question, vector=vector, answer=cached_answer(), ttl_s=60)
    assert (await cache.lookup("p1", tenant="a", query=question, vector=vector)).hit is not None
    assert (await cache.lookup("p2", tenant="a", query=question, vector=vector)).hit is None
    assert (await cache.lookup("p1", tenant="b", query=question, vector=vector)).hit is None


@pytest.mark.unit
async def test_expired_semantic_entries_leave_the_index() -> None:
    clock = ManualClock()
    cache = SemanticCache(MemoryCacheBackend(clock=clock), BagOfWordsEmbeddings(dim=256), threshold=0.7, clock=clock)
    question = "What is the refund policy?"
    vector = await cache.embed(question)
    await cache.store("p", tenant="a", route="r", query=question, vector=vector, answer=cached_answer(), ttl_s=10)
    clock.now += 11
    assert (await cache.lookup("p", tenant="a", query=question, vector=vector)).hit is None
    assert len(cache) == 0


@pytest.mark.unit
async def test_asking_the_same_question_again_replaces_its_entry() -> None:
    cache = SemanticCache(MemoryCacheBackend(), BagOfWordsEmbeddings(dim=256), threshold=0.7)
    question = "What is the refund policy?"
    vector = await cache.embed(question)
    for text in ("first", "second"):
        await cache.store("p", tenant="a", route="r", query=question, vector=vector, answer=cached_answer(text), ttl_s=60)
    assert len(cache) == 1
    found = await cache.lookup("p", tenant="a", query=question, vector=vector)
    assert found.hit is not None and found.hit.entry.answer.text == "second"




# ---------------------------------------------------------------------------------- backend choice


@pytest.mark.unit
async def test_the_index_sync_reads_whole_only_the_rows_it_lacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiestack.stores import cache_sql
    from aiestack.stores.cache_sql import SqlCacheBackend

    decoded: list[str] = []
    entry_of = cache_sql._entry
    monkeypatch.setattr(cache_sql, "_entry", lambda row: decoded.append(row["key"]) or entry_of(row))
    store = SqlExchangeStore(f"sqlite:///{tmp_path / 'shared.db'}")
    store.migrate()
    clock = ManualClock()
    embeddings = BagOfWordsEmbeddings(dim=256)
    own = SemanticCache(SqlCacheBackend(store.engine, clock=clock), embeddings, threshold=0.7, sync_interval_s=1.0, clock=clock)
    other = SemanticCache(SqlCacheBackend(store.engine, clock=clock), embeddings, threshold=0.7, clock=clock)
    mine, theirs = "Is the museum open on Monday?", "How tall is the lighthouse?"
    vector = await own.embed(mine)
    assert (await own.lookup("p", tenant="t", query=mine, vector=vector)).hit is None  # loads: empty
    for i in range(30):  # this process's own answers: indexed as they are stored
        await own.store("p", tenant="t", route="r", query=f"{mine} {i}", vector=vector, answer=cached_answer(), ttl_s=60)
    await other.store("p", tenant="t", route="r", query=theirs, vector=await own.embed(theirs), answer=cached_answer(), ttl_s=60)
    decoded.clear()
    clock.now += 1.5
    found = await own.lookup("p", tenant="t", query=theirs, vector=await own.embed(theirs))
    store.close()
    assert found.hit is not None and found.hit.entry.query == theirs  # the other process's entry was read
    assert set(decoded) == {semantic_key("p", theirs)}  # by the sync and the hit; none of the 30 own rows


@pytest.mark.unit
def test_the_auto_backend_is_the_cache_capability_beside_the_exchange_store(tmp_path: Path) -> None:
    from aiestack.cache.setup import build_backend
    from aiestack.settings import Settings
    from aiestack.stores.cache_sql import SqlCacheBackend
    from aiestack.stores.exchanges_memory import MemoryExchangeStore

    sqlite = SqlExchangeStore(f"sqlite:///{tmp_path / 'a.db'}")
    settings = Settings(data_dir=tmp_path, embedded_model=False)
    try:
        beside = build_backend(settings, store=sqlite)
        assert isinstance(beside, SqlCacheBackend) and beside._engine is sqlite.engine  # its database, its connections
    finally:
        sqlite.close()
    # A memory exchange store keeps the cache in memory, even where store.url names a database.
    assert isinstance(build_backend(settings, store=MemoryExchangeStore()), MemoryCacheBackend)


@pytest.mark.unit
def test_a_sql_cache_needs_a_sql_store(tmp_path: Path) -> None:
    from aiestack.cache.setup import build_backend
    from aiestack.errors import ConfigError
    from aiestack.settings import Settings
    from aiestack.stores.exchanges_memory import MemoryExchangeStore

    settings = Settings(data_dir=tmp_path, embedded_model=False, cache={"backend": "sql"})
    with pytest.raises(ConfigError, match="not a SQL database"):
        build_backend(settings, store=MemoryExchangeStore())


@pytest.mark.unit
async def test_the_sqlite_exact_read_sees_writes_of_another_backend_and_reports_a_broken_table(
    tmp_path: Path,
) -> None:
    """Reads on a SQLite file use a connection of their own: they see what another connection
    committed after them, and a failing read is a StoreError, after which reads recover."""
    import sqlalchemy as sa

    from aiestack.errors import StoreError
    from aiestack.stores.cache import Entry
    from aiestack.stores.cache_sql import SqlCacheBackend

    store = SqlExchangeStore(f"sqlite:///{tmp_path / 'exact.db'}")
    store.migrate()
    reader, writer = SqlCacheBackend(store.engine), SqlCacheBackend(store.engine)
    entry = Entry(
        key="e:1", kind="exact", partition="", tenant="t", route="r", answer=cached_answer(), created_at=1.0
    )
    assert await reader.get("e:1") is None  # the reader's connection is open from here on
    await writer.put(entry)
    found = await reader.get("e:1")
    assert found is not None and found.answer.text == "an answer" and found.tenant == "t"
    with store.engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE cache_entries RENAME TO cache_entries_away"))
    with pytest.raises(StoreError, match="read from"):
        await reader.get("e:1")
    with store.engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE cache_entries_away RENAME TO cache_entries"))
    again = await reader.get("e:1")
    assert again is not None and again.answer.text == "an answer"
    await reader.aclose()
    await writer.aclose()
    store.close()


@pytest.mark.unit
async def test_sql_puts_made_together_share_one_write_and_its_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows of one put_many (a miss's semantic and exact entries) go to SQLite in one worker-thread
    write, one transaction; so do the rows put while a write is in progress, and if their write fails
    every put of the batch raises the StoreError."""
    import asyncio

    import sqlalchemy as sa

    from aiestack.errors import StoreError
    from aiestack.stores.cache import Entry
    from aiestack.stores.cache_sql import SqlCacheBackend

    store = SqlExchangeStore(f"sqlite:///{tmp_path / 'batch.db'}")
    store.migrate()
    backend = SqlCacheBackend(store.engine)
    writes: list[int] = []
    original = backend._write

    def counted(entries: list[Entry], purge: bool, now: float) -> None:
        writes.append(len(entries))
        original(entries, purge, now)

    monkeypatch.setattr(backend, "_write", counted)

    def entry(key: str) -> Entry:
        return Entry(key=key, kind="exact", partition="", tenant="t", route="r", answer=cached_answer(), created_at=1.0)

    await asyncio.gather(backend.put(entry("e:1")), backend.put(entry("e:2")), backend.put(entry("e:3")))
    await backend.put(entry("e:4"))
    assert writes == [1, 2, 1]  # the first put writes at once; the two made meanwhile share the next write
    assert all([await backend.get(f"e:{i}") for i in range(1, 5)])
    with store.engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE cache_entries RENAME TO cache_entries_away"))
    results = await asyncio.gather(*(backend.put(entry(f"e:{i}")) for i in (5, 6, 7)), return_exceptions=True)
    assert writes[-2:] == [1, 2] and all(isinstance(r, StoreError) for r in results)
    with store.engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE cache_entries_away RENAME TO cache_entries"))
    await asyncio.gather(backend.put(entry("e:5")), backend.put(entry("e:6")))  # recovers
    assert await backend.get("e:6") is not None
    await backend.put_many([entry("e:8"), entry("e:9")])  # a miss's two entries: one write
    assert writes[-1] == 2 and await backend.get("e:8") is not None and await backend.get("e:9") is not None
    await backend.aclose()
    store.close()


@pytest.mark.unit
async def test_closing_the_sql_backend_waits_for_the_writes_in_progress(tmp_path: Path) -> None:
    import asyncio

    from aiestack.stores.cache import Entry
    from aiestack.stores.cache_sql import SqlCacheBackend

    store = SqlExchangeStore(f"sqlite:///{tmp_path / 'close.db'}")
    store.migrate()
    backend = SqlCacheBackend(store.engine)

    def entry(key: str) -> Entry:
        return Entry(key=key, kind="exact", partition="", tenant="t", route="r", answer=cached_answer(), created_at=1.0)

    puts = [asyncio.create_task(backend.put_many([entry(f"e:{i}"), entry(f"e:{i}b")])) for i in range(3)]
    await asyncio.sleep(0)  # the first writes, the others wait for the next write
    await backend.aclose()
    assert all(p.done() for p in puts)
    again = SqlCacheBackend(store.engine)
    assert all([await again.get(f"e:{i}{b}") for i in range(3) for b in ("", "b")])
    await again.aclose()
    store.close()


@pytest.mark.unit
async def test_lookups_do_not_queue_behind_a_sync_in_progress() -> None:
    import asyncio

    from aiestack.cache.semantic import semantic_key

    class SlowBackend(MemoryCacheBackend):
        shared = True  # re-read like SQL or Redis
        def __init__(self, clock: ManualClock) -> None:
            super().__init__(clock=clock)
            self.reads = 0
            self.release = asyncio.Event()

        async def semantic_since(self, since: float, *, known=None):  # type: ignore[no-untyped-def]
            self.reads += 1
            if self.reads > 1:  # the first read is the load at start; the second one is slow
                await self.release.wait()
            return await super().semantic_since(since, known=known)

    clock = ManualClock()
    backend = SlowBackend(clock)
    cache = SemanticCache(backend, BagOfWordsEmbeddings(dim=64), threshold=0.7, sync_interval_s=1.0, clock=clock)
    question = "Is the museum open on Monday?"
    vector = await cache.embed(question)
    assert (await cache.lookup("p", tenant="t", query=question, vector=vector)).hit is None  # loads
    await cache.store("p", tenant="t", route="r", query=question, vector=vector, answer=cached_answer(), ttl_s=60)
    clock.now += 1.5
    first = asyncio.create_task(cache.lookup("p", tenant="t", query=question, vector=vector))  # finds the sync due
    await asyncio.sleep(0)
    assert backend.reads == 2 and not first.done()  # it waits for its sync
    other = await asyncio.wait_for(cache.lookup("p", tenant="t", query=question, vector=vector), 1.0)
    assert other.hit is not None and other.hit.entry.key == semantic_key("p", question)  # no wait: the index as it is
    backend.release.set()
    assert (await first).hit is not None and backend.reads == 2
