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
