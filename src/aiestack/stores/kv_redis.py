"""The Redis KV: counters exact across every gateway process that shares one Redis.

Each operation is a single Redis command or a single Lua script, and Redis runs a script
atomically: no other client's command runs between its read and its write. That is what makes
:meth:`RedisKV.window_add` exact: N processes racing for the last slot of a window are serialised
by Redis, and exactly one gets it. (A ``GET`` then ``INCRBY`` from the client, or a
``MULTI``/``EXEC`` without ``WATCH`` retries, would not be.)

Keys are namespaced with ``prefix`` (default ``aiestack:``) so that a shared Redis can hold other
applications' data, or several aiestack deployments, side by side. The scripts touch only the
key they are given, so they also work on Redis Cluster.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from aiestack.errors import StoreError
from aiestack.stores.kv import WindowResult

CONNECT_TIMEOUT_S = 5.0
#: Connections per process. A blocking pool makes request 65 wait for a free connection (up to
#: the timeout) instead of failing with "Too many connections" under a burst.
MAX_CONNECTIONS = 64

#: KEYS[1] counter; ARGV amount, ttl in ms (0: none). Sets the TTL only if this call created it.
_INCR = """
local existed = redis.call('EXISTS', KEYS[1])
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if existed == 0 and ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return value
"""

#: KEYS[1] window counter; ARGV amount, limit, window in ms. Returns {allowed, current, ttl_ms}.
_WINDOW_ADD = """
local amount = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if amount > 0 and current + amount > limit then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then ttl = window end
  return {0, current, ttl}
end
current = redis.call('INCRBY', KEYS[1], amount)
local ttl = redis.call('PTTL', KEYS[1])
if ttl == -1 then
  redis.call('PEXPIRE', KEYS[1], window)
  ttl = window
end
return {1, current, ttl}
"""


def _ms(seconds: float | None) -> int:
    """A TTL in whole milliseconds, at least 1 (0 means "no TTL" to the scripts)."""
    return 0 if seconds is None else max(1, math.ceil(seconds * 1000))


class RedisKV:
    """KV counters in Redis via redis-py's asyncio client.

    ``url`` is a Redis URL (``redis://127.0.0.1:6379/0``, ``rediss://`` for TLS). Nothing connects
    until the first call; call :meth:`ping` at start to fail early with a clear message. Bind one
    instance to one event loop (the client's connections belong to the loop that made them).
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "aiestack:",
        max_connections: int = MAX_CONNECTIONS,
        client: Redis | None = None,
    ) -> None:
        self._url = url
        self._prefix = prefix
        if client is None:
            pool = BlockingConnectionPool.from_url(
                url,
                max_connections=max_connections,
                timeout=CONNECT_TIMEOUT_S,
                socket_connect_timeout=CONNECT_TIMEOUT_S,
                socket_timeout=CONNECT_TIMEOUT_S,
            )
            client = Redis.from_pool(pool)  # the client owns the pool and closes it
        self._client = client
        self._incr = self._client.register_script(_INCR)
        self._window_add = self._client.register_script(_WINDOW_ADD)

    def __repr__(self) -> str:
        return f"RedisKV({self.url!r}, prefix={self._prefix!r})"

    @property
    def url(self) -> str:
        """The URL without its password."""
        scheme, sep, rest = self._url.partition("://")
        if sep and "@" in rest:
            credentials, _, host = rest.rpartition("@")
            user = credentials.split(":", 1)[0]
            return f"{scheme}://{user}:***@{host}" if ":" in credentials else self._url
        return self._url

    async def get(self, key: str) -> int | None:
        with self._errors("read from"):
            value = await self._client.get(self._prefix + key)
        return int(value) if value is not None else None

    async def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        with self._errors("write to"):
            value = await self._incr(keys=[self._prefix + key], args=[int(amount), _ms(ttl_s)])
        return int(value)

    async def set_if_absent(self, key: str, value: int, *, ttl_s: float | None = None) -> bool:
        ttl_ms = _ms(ttl_s)
        with self._errors("write to"):
            created = await self._client.set(self._prefix + key, int(value), nx=True, px=ttl_ms or None)
        return bool(created)

    async def window_add(self, key: str, amount: int, limit: int, window_s: float) -> WindowResult:
        with self._errors("write to"):
            allowed, current, ttl_ms = await self._window_add(
                keys=[self._prefix + key], args=[int(amount), int(limit), _ms(window_s)]
            )
        return WindowResult(bool(allowed), int(current), max(int(ttl_ms), 0) / 1000)

    async def delete(self, *keys: str) -> None:
        if not keys:
            return
        with self._errors("write to"):
            await self._client.delete(*(self._prefix + k for k in keys))

    async def ping(self) -> None:
        with self._errors("connect to"):
            await self._client.ping()

    async def aclose(self) -> None:
        await self._client.aclose()

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Redis failures as a :class:`StoreError` that says where and what to check."""
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreError(
                f"Cannot {action} Redis at {self.url}: {str(exc).rstrip('.')}.",
                hint="Is Redis running and reachable from here? Check gateway.redis_url "
                "(AIESTACK_GATEWAY__REDIS_URL), or leave it empty to keep limits in process.",
            ) from exc
        except RedisError as exc:
            raise StoreError(
                f"Redis at {self.url} refused a {action.split()[0]}: {str(exc).rstrip('.')}.",
                hint=f"Another application may be using keys under the prefix {self._prefix!r}; "
                "choose a different prefix or Redis database.",
            ) from exc
