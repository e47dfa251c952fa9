"""Fixtures for the scale-out tests: gateway processes on 127.0.0.1 sharing PostgreSQL and Redis.

- ``upstream``: one fake OpenAI-compatible upstream process (:mod:`aiestack.testing.upstream`).
- ``pg_url``: a fresh schema in the machine's PostgreSQL (``AIESTACK_TEST_POSTGRES_URL``), dropped
  afterwards; ``redis_url``: the machine's Redis (``AIESTACK_TEST_REDIS_URL``), keys under a
  fresh prefix, deleted afterwards. A test skips cleanly when either is unreachable.

Every process is started and stopped by the test that needs it, and bounded in time.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from aiestack.testing.cluster import ServerProcess, clean_env, free_port, upstream_command

DEFAULT_PG_URLS = ("postgresql+psycopg://postgres@127.0.0.1:5432/test", "postgresql+psycopg://root@127.0.0.1:5432/test")
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _admin_pg_url() -> str | None:
    explicit = os.environ.get("AIESTACK_TEST_POSTGRES_URL")
    for url in (explicit,) if explicit else DEFAULT_PG_URLS:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3}, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            return url
        except sa.exc.OperationalError:
            continue
        finally:
            engine.dispose()
    return None


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    admin_url = _admin_pg_url()
    if admin_url is None:
        pytest.skip("PostgreSQL is not reachable; set AIESTACK_TEST_POSTGRES_URL to run the scale-out tests")
    schema = f"aiestack_scale_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, poolclass=sa.pool.NullPool)
    with admin.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.make_url(admin_url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as connection:
            connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(scope="module")
def redis_url() -> str:
    import redis

    url = os.environ.get("AIESTACK_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    client = redis.Redis.from_url(url, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis is not reachable at {url} ({exc}); set AIESTACK_TEST_REDIS_URL")
    finally:
        client.close()
    return url


@pytest.fixture(scope="module")
def redis_prefix(redis_url: str) -> Iterator[str]:
    import redis

    prefix = f"aiestack-scale:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    log = tmp_path_factory.mktemp("upstream") / "upstream.log"
    with ServerProcess("upstream", upstream_command(port), port=port, log=log, env=clean_env(),
                       ready_path="/stats") as process:
        yield process
