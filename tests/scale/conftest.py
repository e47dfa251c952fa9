"""Fixtures for the scale-out tests: gateway processes on 127.0.0.1 sharing PostgreSQL and Redis.

- ``upstream``: one fake OpenAI-compatible upstream process (:mod:`aiestack.testing.upstream`).
- ``pg_url``: a fresh schema in the machine's PostgreSQL (``AIESTACK_TEST_POSTGRES_URL``), dropped
  afterwards; ``redis_url``: the machine's Redis (``AIESTACK_TEST_REDIS_URL``), keys under a
  fresh prefix, deleted afterwards (both through :mod:`aiestack.testing.services`, as the store
  tests do). A test module skips cleanly when either is unreachable.

Every process is started and stopped by the test that needs it, and bounded in time.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiestack.testing.cluster import ServerProcess, clean_env, free_port, upstream_command
from aiestack.testing.services import postgres_schema, postgres_url
from aiestack.testing.services import redis_prefix as redis_key_prefix
from aiestack.testing.services import redis_url as redis_test_url


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    admin_url, why = postgres_url()
    if admin_url is None:
        pytest.skip(why)
    with postgres_schema(admin_url, prefix="aiestack_scale") as url:
        yield url


@pytest.fixture(scope="module")
def redis_url() -> str:
    url, why = redis_test_url()
    if url is None:
        pytest.skip(why)
    return url


@pytest.fixture(scope="module")
def redis_prefix(redis_url: str) -> Iterator[str]:
    with redis_key_prefix(redis_url, prefix="aiestack-scale") as prefix:
        yield prefix


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    port = free_port()
    log = tmp_path_factory.mktemp("upstream") / "upstream.log"
    with ServerProcess("upstream", upstream_command(port), port=port, log=log, env=clean_env(),
                       ready_path="/stats") as process:
        yield process
