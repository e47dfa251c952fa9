"""The local PostgreSQL and Redis a test suite shares, isolated per test: one helper for every suite.

PostgreSQL is ``AIESTACK_TEST_POSTGRES_URL`` (default: the machine's server, database ``test``, as
``postgres`` or ``root``); a test gets a schema of its own, selected through the connection's
``search_path`` and dropped afterwards (:func:`postgres_schema`), so runs, helpers and suites
sharing the database never see each other's tables. Redis is ``AIESTACK_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``); a test's keys live under a prefix of their own, deleted afterwards
(:func:`redis_prefix`). Each ``*_url()`` returns ``(url, "")`` or ``(None, why)`` so that a fixture
can skip with the reason and the variable to set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

DEFAULT_POSTGRES_URLS = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def postgres_url() -> tuple[str | None, str]:
    """The first candidate admin URL that accepts a connection, or ``(None, why none did)``."""
    explicit = os.environ.get("AIESTACK_TEST_POSTGRES_URL")
    reasons = []
    for url in (explicit,) if explicit else DEFAULT_POSTGRES_URLS:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3}, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            return url, ""
        except sa.exc.OperationalError as exc:
            reasons.append(f"{url}: {str(exc.orig).strip().splitlines()[0]}")
        finally:
            engine.dispose()
    return None, "PostgreSQL is not reachable (" + "; ".join(reasons) + "); set AIESTACK_TEST_POSTGRES_URL"


@contextmanager
def postgres_schema(admin_url: str, *, prefix: str = "aiestack_test", search_path: str = "") -> Iterator[str]:
    """A URL whose connections live in a new, empty schema, dropped (with everything in it) on exit.

    ``search_path`` adds schemas after the new one (``"public"`` where an extension lives there).
    """
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, poolclass=sa.pool.NullPool)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    path = f"{schema},{search_path}" if search_path else schema
    url = sa.make_url(admin_url).update_query_dict({"options": f"-csearch_path={path}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def redis_url() -> tuple[str | None, str]:
    """The test Redis URL if it answers a ping, else ``(None, why)``."""
    import redis

    url = os.environ.get("AIESTACK_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        return None, f"Redis is not reachable at {url} ({exc}); set AIESTACK_TEST_REDIS_URL"
    finally:
        client.close()
    return url, ""


@contextmanager
def redis_prefix(url: str, *, prefix: str = "aiestack-test") -> Iterator[str]:
    """A key prefix of its own (``prefix:<random>:``); every key under it is deleted on exit."""
    import redis

    value = f"{prefix}:{uuid.uuid4().hex[:12]}:"
    try:
        yield value
    finally:
        client = redis.Redis.from_url(url)
        try:
            keys = list(client.scan_iter(match=f"{value}*"))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
