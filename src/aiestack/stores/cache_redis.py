"""The Redis cache backend: entries shared by every gateway process, expired by Redis itself.

Each entry is a hash ``{prefix}cache:{key}`` with two fields, ``meta`` (JSON: the answer, tenant,
route, question...) and ``vector`` (float32 bytes, semantic entries only), and a TTL, so Redis
drops it when it expires. Semantic entries are also listed in the sorted set
``{prefix}cache:semantic`` scored by creation time: that is how each process's in-process vector
index loads the entries at start and then follows the ones other processes add
(:meth:`RedisCacheBackend.semantic_since`). Members whose hash has expired are removed from the
set as they are met.

Plain Redis has no vector search, so the search itself runs in process (usearch HNSW, a fraction
of a millisecond at 100k entries); Redis Stack's vector index would save each process the memory
of the index, at the price of a network round trip per lookup.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from aiestack.errors import StoreError
from aiestack.stores.cache import CachedAnswer, Entry, Known, QueuedPut, settle


class RedisCacheBackend:
    """Cache entries in Redis at ``url`` under ``prefix``; bind one instance to one event loop."""

    name = "redis"
    shared = True

    def __init__(self, url: str, *, prefix: str = "aiestack:", client: Redis | None = None) -> None:
        self._client = (
            client if client is not None else Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
        )
        self._prefix = prefix + "cache:"
        self._index = self._prefix + "semantic"
        self._url = url
        # Writes waiting for the writer, in call order, and the writer writing them (see put_many).
        self._queued: list[QueuedPut] = []
        self._writer: asyncio.Task[None] | None = None

    async def get(self, key: str) -> Entry | None:
        with self._errors():
            fields = await self._client.hgetall(self._prefix + key)
        return _entry(key, fields) if fields else None

    async def put(self, entry: Entry) -> None:
        await self.put_many((entry,))

    async def put_many(self, entries: Sequence[Entry]) -> None:
        """One MULTI/EXEC pipeline for all ``entries``: one round trip, applied together.

        Writes are applied in the order they were made: one writer takes every write waiting when it
        is free into one pipeline, in call order. Pipelines sent at once on the pool's connections
        would reach Redis in whatever order their connections did, so the earlier of two puts of a
        key could win."""
        if not entries:
            return
        done = asyncio.get_running_loop().create_future()
        self._queued.append((entries, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued())
        await asyncio.shield(done)  # a cancelled caller's write still happens, in its turn

    async def _write_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            try:
                await self._write([entry for entries, _ in batch for entry in entries])
            except BaseException as exc:
                settle(batch, exc)
                if not isinstance(exc, Exception):
                    raise
            else:
                settle(batch)

    async def _write(self, entries: Sequence[Entry]) -> None:
        with self._errors():
            async with self._client.pipeline(transaction=True) as pipe:
                for entry in entries:
                    mapping: dict[str, bytes] = {"meta": orjson.dumps(_meta(entry))}
                    if entry.vector is not None:
                        mapping["vector"] = np.asarray(entry.vector, dtype="<f4").tobytes()
                    name = self._prefix + entry.key
                    pipe.delete(name)
                    pipe.hset(name, mapping=mapping)  # type: ignore[arg-type]
                    if entry.expires_at is not None:
                        pipe.pexpireat(name, int(entry.expires_at * 1000))
                    if entry.kind == "semantic":
                        pipe.zadd(self._index, {entry.key: entry.created_at})
                await pipe.execute()

    async def delete(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        with self._errors():
            await self._client.delete(*(self._prefix + k for k in keys))
            await self._client.zrem(self._index, *keys)

    async def semantic_since(self, since: float, *, known: Known | None = None) -> list[Entry]:
        """The index's members since ``since``, each read whole (``known`` is not used: the sorted set
        holds keys only, and an entry's expiry is in its hash)."""
        with self._errors():
            members = await self._client.zrangebyscore(self._index, since, "+inf")
            keys = [m.decode() if isinstance(m, bytes) else str(m) for m in members]
            out: list[Entry] = []
            gone: list[str] = []
            for start in range(0, len(keys), 500):
                batch = keys[start : start + 500]
                async with self._client.pipeline(transaction=False) as pipe:
                    for key in batch:
                        pipe.hgetall(self._prefix + key)
                    results = await pipe.execute()
                for key, fields in zip(batch, results, strict=True):
                    if fields:
                        out.append(_entry(key, fields))
                    else:
                        gone.append(key)
            if gone:
                await self._client.zrem(self._index, *gone)
        return out

    async def clear(self, *, tenant: str | None = None) -> int:
        removed = 0
        with self._errors():
            async for name in self._client.scan_iter(match=self._prefix + "[es]:*", count=1000):
                key = (name.decode() if isinstance(name, bytes) else str(name))[len(self._prefix) :]
                if tenant is not None:
                    meta = await self._client.hget(name, "meta")
                    if meta is None or orjson.loads(meta).get("tenant") != tenant:
                        continue
                await self._client.delete(name)
                await self._client.zrem(self._index, key)
                removed += 1
        return removed

    async def aclose(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer  # the writes already made reach Redis first
        await self._client.aclose()

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (RedisError, OSError) as exc:
            raise StoreError(
                f"The cache cannot use Redis: {str(exc).rstrip('.')}.",
                hint="Is Redis running and reachable? Check cache.redis_url (or gateway.redis_url), "
                'or set cache.backend = "sql" to keep the cache in the store.',
            ) from exc


def _meta(entry: Entry) -> dict[str, Any]:
    return {
        "kind": entry.kind,
        "partition": entry.partition,
        "tenant": entry.tenant,
        "route": entry.route,
        "query": entry.query,
        "answer": entry.answer.to_json(),
        "created_at": entry.created_at,
        "expires_at": entry.expires_at,
    }


def _entry(key: str, fields: dict[Any, Any]) -> Entry:
    plain = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
    meta = orjson.loads(plain["meta"])
    blob = plain.get("vector")
    vector = np.frombuffer(blob, dtype="<f4").astype(np.float32) if blob else None
    return Entry(
        key=key,
        kind=meta["kind"],
        partition=meta["partition"],
        tenant=meta["tenant"],
        route=meta["route"],
        answer=CachedAnswer.from_json(meta["answer"]),
        created_at=meta["created_at"],
        expires_at=meta["expires_at"],
        query=meta["query"],
        vector=vector,
    )
