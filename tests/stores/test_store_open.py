"""Choosing a backend by URL, and the errors a user sees for a bad URL or an unreachable database."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from aiestack.errors import StoreError
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.stores.open import open_store
from aiestack.testing.net import free_port

pytestmark = pytest.mark.unit


def test_memory_url_gives_the_memory_store() -> None:
    assert isinstance(open_store("memory://", "exchanges"), MemoryExchangeStore)


def test_sqlite_url_creates_the_data_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "aiestack.db"
    store = open_store(f"sqlite:///{path}", "exchanges")
    assert isinstance(store, SqlExchangeStore)
    store.migrate()
    store.ping()
    store.close()
    assert path.is_file()


def test_plain_postgresql_url_means_psycopg_3() -> None:
    store = open_store("postgresql://user:secret@db.example:6543/app", "exchanges")
    assert isinstance(store, SqlExchangeStore)
    assert store.engine.dialect.driver == "psycopg"
    assert "secret" not in store.url and "secret" not in repr(store)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("not a url", "not a valid database URL"),
        ("mysql://u@h/db", "unsupported database 'mysql'"),
    ],
)
def test_a_bad_url_says_what_to_use(url: str, says: str) -> None:
    with pytest.raises(StoreError, match=says) as info:
        open_store(url, "exchanges")
    assert info.value.hint is not None and "store.url" in info.value.hint


def test_an_uncreatable_data_directory_is_reported(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="Cannot create the data directory") as info:
        open_store(f"sqlite:///{blocker / 'sub' / 'x.db'}", "exchanges")
    assert "data_dir" in str(info.value)


def test_a_file_that_is_not_a_database_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not a SQLite database, not even close" * 100)
    store = open_store(f"sqlite:///{path}", "exchanges")
    with pytest.raises(StoreError, match="not a database") as info:
        store.migrate()
    assert str(path) in str(info.value)
    store.close()


def test_a_directory_in_place_of_the_database_is_reported(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    store = open_store(f"sqlite:///{tmp_path / 'dir.db'}", "exchanges")
    with pytest.raises(StoreError, match="unable to open database file") as info:
        store.ping()
    assert info.value.hint is not None and "writable" in info.value.hint




def test_unreachable_postgres_says_where_it_looked() -> None:
    port = free_port()
    store = open_store(f"postgresql+psycopg://postgres:hunter2@127.0.0.1:{port}/test", "exchanges")
    with pytest.raises(StoreError) as info:
        store.ping()
    error = info.value
    assert (
        error.hint == f"Is PostgreSQL running at 127.0.0.1:{port} and reachable from here? Check store.url."
    )
    assert "hunter2" not in str(error)
    assert error.to_openai()["error"]["code"] == "store_unavailable"
    store.close()


@pytest.mark.integration
def test_a_missing_postgres_database_says_how_to_create_it(pg_admin_url: str) -> None:
    url = sa.make_url(pg_admin_url).set(database="aiestack_no_such_db")
    store = open_store(url.render_as_string(hide_password=False), "exchanges")
    with pytest.raises(StoreError, match="does not exist") as info:
        store.ping()
    assert (
        info.value.hint is not None
        and "createdb" in info.value.hint
        and "aiestack_no_such_db" in info.value.hint
    )
    store.close()


def test_every_capability_opens_on_the_backends_that_offer_it(tmp_path: Path) -> None:
    from aiestack.stores.cache_memory import MemoryCacheBackend
    from aiestack.stores.cache_redis import RedisCacheBackend
    from aiestack.stores.cache_sql import SqlCacheBackend
    from aiestack.stores.context_cache_memory import MemoryContextCache
    from aiestack.stores.context_cache_sql import SqlContextCache
    from aiestack.stores.kv_memory import MemoryKV
    from aiestack.stores.kv_redis import RedisKV

    sqlite = f"sqlite:///{tmp_path / 'a.db'}"
    assert isinstance(open_store("memory://", "cache", max_entries=3), MemoryCacheBackend)
    assert isinstance(open_store(sqlite, "cache"), SqlCacheBackend)
    assert isinstance(open_store("redis://127.0.0.1:1/0", "cache", prefix="t:"), RedisCacheBackend)
    assert isinstance(open_store("memory://", "context_cache"), MemoryContextCache)
    context = open_store(sqlite, "context_cache")
    assert isinstance(context, SqlContextCache)
    context.close()
    assert isinstance(open_store("memory://", "kv"), MemoryKV)
    assert isinstance(open_store("rediss://127.0.0.1:1/0", "kv"), RedisKV)


def test_a_sql_cache_opened_beside_the_exchange_store_shares_its_engine(tmp_path: Path) -> None:
    store = SqlExchangeStore(f"sqlite:///{tmp_path / 'a.db'}")
    cache = open_store(store.url, "cache", beside=store)
    assert cache._engine is store.engine  # type: ignore[attr-defined]
    store.close()


def test_a_capability_a_backend_does_not_offer_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot hold the kv") as info:
        open_store(f"sqlite:///{tmp_path / 'a.db'}", "kv")
    assert "redis" in (info.value.hint or "")
    with pytest.raises(StoreError, match="cannot hold the exchanges"):
        open_store("redis://127.0.0.1:6379/0", "exchanges")
    with pytest.raises(StoreError, match="no storage capability"):
        open_store("memory://", "vectors")  # type: ignore[call-overload]


def test_a_plugin_backend_is_opened_for_its_scheme() -> None:
    opened: list[tuple[str, dict[str, object]]] = []

    def factory(url: str, **options: object) -> MemoryExchangeStore:
        opened.append((url, options))
        return MemoryExchangeStore()

    store = open_store("mydb://x", "exchanges", extra={("mydb", "exchanges"): factory}, flag=1)
    assert isinstance(store, MemoryExchangeStore)
    assert opened == [("mydb://x", {"flag": 1})]
