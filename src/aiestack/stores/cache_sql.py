"""The SQL cache backend: entries in the store's ``cache_entries`` table (SQLite or PostgreSQL).

Opened beside the exchange store it shares its engine, so the embedded default keeps its cache in the one SQLite
file of the data directory and finds it again after a restart. Reads are one indexed lookup and
run inline (a fraction of a millisecond); writes run in a worker thread so that a SQLite lock held
by the trace writer never stalls the event loop. Expired rows are never served and are purged
every :data:`PURGE_EVERY` writes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from aiestack.errors import StoreError
from aiestack.stores.cache import CachedAnswer, Entry
from aiestack.stores.sql.engine import create_store_engine, parse_url, store_errors
from aiestack.stores.sql.tables import cache_entries

PURGE_EVERY = 1000

_T = cache_entries


class SqlCacheBackend:
    """Cache entries in a SQL database through ``engine`` (migrated to revision 0005 or later)."""

    name = "sql"
    shared = True  # several processes may share the database

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], float] = time.time, owns_engine: bool = False) -> None:
        self._engine = engine
        self._clock = clock
        self._writes = 0
        self._owns_engine = owns_engine
        # The upsert is built once: building it (``excluded`` makes a proxy of every column) cost
        # more than the write itself, on the event loop, on every cache miss.
        insert = self._insert()
        self._upsert = insert.on_conflict_do_update(
            index_elements=[_T.c.key], set_={c.name: insert.excluded[c.name] for c in _T.columns if c.name != "key"}
        )

    @classmethod
    def open(cls, url: str) -> SqlCacheBackend:
        """A backend with its own engine on ``url`` (disposed of by :meth:`aclose`)."""
        return cls(create_store_engine(parse_url(url)), owns_engine=True)

    async def get(self, key: str) -> Entry | None:
        query = sa.select(_T).where(_T.c.key == key)
        with self._errors("read from"), self._engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        if row is None:
            return None
        entry = _entry(row)
        return None if entry.expired(self._clock()) else entry

    async def put(self, entry: Entry) -> None:
        row = _row(entry)
        statement = self._upsert
        self._writes += 1
        purge = self._writes % PURGE_EVERY == 0
        now = self._clock()

        def write() -> None:
            with self._errors("write to"), self._engine.begin() as connection:
                connection.execute(statement, [row])
                if purge:
                    connection.execute(sa.delete(_T).where(_T.c.expires_at <= now))

        await asyncio.to_thread(write)

    async def delete(self, keys: Sequence[str]) -> None:
        if not keys:
            return

        def remove() -> None:
            with self._errors("write to"), self._engine.begin() as connection:
                connection.execute(sa.delete(_T).where(_T.c.key.in_(list(keys))))

        await asyncio.to_thread(remove)

    async def semantic_since(self, since: float) -> list[Entry]:
        now = self._clock()
        query = (
            sa.select(_T)
            .where(_T.c.kind == "semantic", _T.c.created_at >= since)
            .where(sa.or_(_T.c.expires_at.is_(None), _T.c.expires_at > now))
            .order_by(_T.c.created_at)
        )

        def read() -> list[Entry]:
            with self._errors("read from"), self._engine.connect() as connection:
                return [_entry(r) for r in connection.execute(query).mappings()]

        return await asyncio.to_thread(read)

    async def clear(self, *, tenant: str | None = None) -> int:
        statement = sa.delete(_T) if tenant is None else sa.delete(_T).where(_T.c.tenant == tenant)

        def run() -> int:
            with self._errors("write to"), self._engine.begin() as connection:
                return int(connection.execute(statement).rowcount or 0)

        return await asyncio.to_thread(run)

    async def aclose(self) -> None:
        """Dispose of the engine if it is this backend's own (a shared one is the exchange store's)."""
        if self._owns_engine:
            self._engine.dispose()

    def _insert(self) -> Any:
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(_T)
        return sqlite.insert(_T)

    def _errors(self, action: str) -> Any:
        return store_errors(self._engine.url, action)


def _row(entry: Entry) -> dict[str, Any]:
    vector = entry.vector
    return {
        "key": entry.key,
        "kind": entry.kind,
        "partition": entry.partition,
        "tenant": entry.tenant,
        "route": entry.route,
        "query": entry.query,
        "dim": int(vector.shape[0]) if vector is not None else None,
        "vector": np.asarray(vector, dtype="<f4").tobytes() if vector is not None else None,
        "answer": entry.answer.to_json(),
        "created_at": entry.created_at,
        "expires_at": entry.expires_at,
    }


def _entry(row: Any) -> Entry:
    blob, dim = row["vector"], row["dim"]
    vector = None
    if blob is not None:
        vector = np.frombuffer(bytes(blob), dtype="<f4").astype(np.float32)
        if dim is not None and vector.shape[0] != dim:
            raise StoreError(
                f"The cache entry {row['key']} has a vector of {vector.shape[0]} values but says dim={dim}.",
                hint="Delete the row from cache_entries (the cache refills itself); nothing else depends on it.",
            )
    return Entry(
        key=row["key"],
        kind=row["kind"],
        partition=row["partition"],
        tenant=row["tenant"],
        route=row["route"],
        answer=CachedAnswer.from_json(row["answer"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        query=row["query"],
        vector=vector,
    )
