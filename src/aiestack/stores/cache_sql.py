"""The SQL cache backend: entries in the store's ``cache_entries`` table (SQLite or PostgreSQL).

Opened beside the exchange store it shares its engine, so the embedded default keeps its cache in the one SQLite
file of the data directory and finds it again after a restart. Reads are one indexed lookup and
run inline; writes run in a worker thread so that a SQLite lock held by the trace writer never
stalls the event loop. Expired rows are never served and are purged every :data:`PURGE_EVERY` writes.

On a SQLite file, a read is one prepared ``SELECT`` on a connection this backend keeps (autocommit:
it sees every committed write), about 15 µs, and a write one autocommitted upsert on another. Through
SQLAlchemy's connection, transaction and statement machinery the same lookup cost about half a
millisecond of the event loop on every cache-eligible request, and each write held the GIL as long
in its worker thread, which the event loop then waited for (bench/gateway_overhead.py, miss path).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.pool import StaticPool

from aiestack.errors import StoreError
from aiestack.stores.cache import CachedAnswer, Entry, Known, QueuedPut, settle
from aiestack.stores.sql.engine import (
    create_store_engine,
    parse_url,
    store_errors,
    unavailable,
    write_transaction,
)
from aiestack.stores.sql.tables import cache_entries

PURGE_EVERY = 1000
_IN_BATCH = 500  # keys per IN (...) list when reading rows whole

_T = cache_entries
_COLUMNS = tuple(c.name for c in _T.columns)
_SQLITE_GET = f"SELECT {', '.join(_COLUMNS)} FROM {_T.name} WHERE key = ?"
_SQLITE_UPSERT = (
    f"INSERT INTO {_T.name} ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)}) "
    f"ON CONFLICT (key) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in _COLUMNS if c != 'key')}"
)
_SQLITE_PURGE = f"DELETE FROM {_T.name} WHERE expires_at <= ?"


class SqlCacheBackend:
    """Cache entries in a SQL database through ``engine`` (migrated to revision 0005 or later)."""

    name = "sql"
    shared = True  # several processes may share the database

    def __init__(self, engine: sa.Engine, *, clock: Callable[[], float] = time.time, owns_engine: bool = False) -> None:
        self._engine = engine
        self._clock = clock
        self._writes = 0
        # Entries waiting for the write in progress (see put_many), the task that will write them, and
        # a future done when no write is in progress (None before the first).
        self._queued: list[QueuedPut] = []
        self._flusher: asyncio.Task[None] | None = None
        self._busy: asyncio.Future[None] | None = None
        self._owns_engine = owns_engine
        # The upsert is built once: building it (``excluded`` makes a proxy of every column) cost
        # more than the write itself, on the event loop, on every cache miss.
        insert = self._insert()
        self._upsert = insert.on_conflict_do_update(
            index_elements=[_T.c.key], set_={c.name: insert.excluded[c.name] for c in _T.columns if c.name != "key"}
        )
        # A SQLite file is read through a connection of its own (see the module's docstring); an
        # in-memory database (one connection shared by every thread, for tests) and PostgreSQL
        # go through SQLAlchemy.
        self._direct = engine.dialect.name == "sqlite" and not isinstance(engine.pool, StaticPool)
        self._reader = _Kept(engine)  # the event loop's reads
        self._writer = _Kept(engine)  # the worker threads' writes, one at a time

    @classmethod
    def open(cls, url: str) -> SqlCacheBackend:
        """A backend with its own engine on ``url`` (disposed of by :meth:`aclose`)."""
        return cls(create_store_engine(parse_url(url)), owns_engine=True)

    async def get(self, key: str) -> Entry | None:
        row: Any  # a RowMapping, or the dict of a direct read
        if self._direct:
            row = self._read_sqlite(key)
        else:
            query = sa.select(_T).where(_T.c.key == key)
            with self._errors("read from"), self._engine.connect() as connection:
                row = connection.execute(query).mappings().first()
        if row is None:
            return None
        entry = _entry(row)
        return None if entry.expired(self._clock()) else entry

    def _read_sqlite(self, key: str) -> dict[str, Any] | None:
        """The row of ``key`` by one prepared statement on the kept connection (autocommit at the driver)."""
        with self._reader.use("read from") as connection:
            cursor = connection.execute(_SQLITE_GET, (key,))
            values = cursor.fetchone()
            cursor.close()
        if values is None:
            return None
        row = dict(zip(_COLUMNS, values, strict=True))
        answer = row["answer"]
        if isinstance(answer, str | bytes):  # the JSON column as SQLite stores it
            row["answer"] = json.loads(answer)
        return row

    async def put(self, entry: Entry) -> None:
        await self.put_many((entry,))

    async def put_many(self, entries: Sequence[Entry]) -> None:
        """Write ``entries``; returns once they are committed (raises the write's error, as a StoreError).

        They go in one transaction, in a worker thread, started by this call itself when no write is
        in progress: one hop (the executor hand-off and the wake-up when it ends cost the event loop
        ~45 µs), no task of its own. Entries put while a write is in progress join the next write, which
        a task writes once it ends (see :meth:`_flush`): under concurrency the rows of many misses share
        a commit."""
        if not entries:
            return
        loop = asyncio.get_running_loop()
        busy = self._busy
        if busy is not None and not busy.done() and busy.get_loop() is loop:  # (a loop closed mid-write: ignored)
            done: asyncio.Future[None] = loop.create_future()
            self._queued.append((entries, done))
            await done
            return
        self._busy = busy = loop.create_future()
        try:
            await self._commit(entries)
        except Exception:
            self._then(busy)
            raise
        except BaseException:  # cancelled (the loop is closing): no put waits for ever
            self._drop_queued()
            busy.set_result(None)
            raise
        self._then(busy)

    def _then(self, busy: asyncio.Future[None]) -> None:
        """After a write: the rows queued meanwhile go in a task of their own, or the backend is idle."""
        if self._queued:
            self._flusher = busy.get_loop().create_task(self._flush(busy))
        else:
            busy.set_result(None)

    async def _flush(self, busy: asyncio.Future[None]) -> None:
        """Write the queued rows, batch after batch, until none are left; settle each put's future."""
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                try:
                    await self._commit([entry for entries, _ in batch for entry in entries])
                except Exception as exc:
                    settle(batch, exc)
                except BaseException:  # cancelled (the loop is closing): no put waits for ever
                    for _, done in batch:
                        done.cancel()
                    self._drop_queued()
                    raise
                else:
                    settle(batch)
        finally:
            if not busy.done():
                busy.set_result(None)
            if self._flusher is asyncio.current_task():
                self._flusher = None

    def _drop_queued(self) -> None:
        for _, done in self._queued:
            done.cancel()
        self._queued = []

    async def _commit(self, entries: Sequence[Entry]) -> None:
        """Write ``entries`` in a worker thread, purging the expired every :data:`PURGE_EVERY` rows."""
        before, self._writes = self._writes, self._writes + len(entries)
        purge = before // PURGE_EVERY != self._writes // PURGE_EVERY
        await asyncio.to_thread(self._write, entries, purge, self._clock())

    def _write(self, entries: Sequence[Entry], purge: bool, now: float) -> None:
        """Upsert the rows of ``entries`` in one transaction (and, now and then, purge the expired); a worker
        thread's work, the rows' serialisation included (off the event loop)."""
        rows = [_row(entry) for entry in entries]
        if self._direct:  # one autocommitted upsert, or one transaction for several
            with self._writer.use("write to") as connection:
                values = [[_sqlite_value(row[c]) for c in _COLUMNS] for row in rows]
                if len(values) == 1 and not purge:
                    connection.execute(_SQLITE_UPSERT, values[0])
                    return
                connection.execute("BEGIN IMMEDIATE")
                try:
                    connection.executemany(_SQLITE_UPSERT, values)
                    if purge:
                        connection.execute(_SQLITE_PURGE, (now,))
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
            return
        with self._errors("write to"), write_transaction(self._engine) as connection:
            connection.execute(self._upsert, rows)
            if purge:
                connection.execute(sa.delete(_T).where(_T.c.expires_at <= now))

    async def delete(self, keys: Sequence[str]) -> None:
        if not keys:
            return

        def remove() -> None:
            with self._errors("write to"), write_transaction(self._engine) as connection:
                connection.execute(sa.delete(_T).where(_T.c.key.in_(list(keys))))

        await asyncio.to_thread(remove)

    async def semantic_since(self, since: float, *, known: Known | None = None) -> list[Entry]:
        """With ``known``, the keys and expiries are read first and only the rows the caller lacks are
        read whole: the index re-reads the last seconds of entries every second, almost all of them
        its own process's writes, and decoding a row (its answer's JSON, its vector) is ~20 µs."""
        now = self._clock()
        live = (
            sa.and_(_T.c.kind == "semantic", _T.c.created_at >= since),
            sa.or_(_T.c.expires_at.is_(None), _T.c.expires_at > now),
        )

        def read() -> list[Entry]:
            with self._errors("read from"), self._engine.connect() as connection:
                if known is None:
                    query = sa.select(_T).where(*live).order_by(_T.c.created_at)
                    return [_entry(r) for r in connection.execute(query).mappings()]
                heads = connection.execute(sa.select(_T.c.key, _T.c.expires_at).where(*live).order_by(_T.c.created_at))
                wanted = [key for key, expires_at in heads if not known(key, expires_at)]
                rows: dict[str, Any] = {}
                for start in range(0, len(wanted), _IN_BATCH):
                    batch = wanted[start : start + _IN_BATCH]
                    rows.update((r["key"], r) for r in connection.execute(sa.select(_T).where(_T.c.key.in_(batch))).mappings())
                return [_entry(rows[key]) for key in wanted if key in rows]  # a row deleted meanwhile is left out

        return await asyncio.to_thread(read)

    async def clear(self, *, tenant: str | None = None) -> int:
        statement = sa.delete(_T) if tenant is None else sa.delete(_T).where(_T.c.tenant == tenant)

        def run() -> int:
            with self._errors("write to"), write_transaction(self._engine) as connection:
                return int(connection.execute(statement).rowcount or 0)

        return await asyncio.to_thread(run)

    async def aclose(self) -> None:
        """Return the read connection; dispose of the engine if it is this backend's own (a shared one
        is the exchange store's)."""
        busy = self._busy
        if busy is not None and busy.get_loop() is asyncio.get_running_loop():  # rows being written
            await busy
        self._reader.close()
        self._writer.close()
        if self._owns_engine:
            self._engine.dispose()

    def _insert(self) -> Any:
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(_T)
        return sqlite.insert(_T)

    def _errors(self, action: str) -> Any:
        return store_errors(self._engine.url, action)


class _Kept:
    """One pooled DBAPI connection kept by the backend (taken on first use), used under a lock.

    A failure invalidates it (the next use opens a fresh one) and is raised as a StoreError."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._connection: Any = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def use(self, action: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                if self._connection is None:
                    self._connection = self._engine.raw_connection()
                yield self._connection.driver_connection
            except (sqlite3.Error, sa.exc.DBAPIError) as exc:
                connection, self._connection = self._connection, None
                if connection is not None:
                    connection.invalidate()
                raise unavailable(self._engine.url, action, exc) from exc

    def close(self) -> None:
        """Hand the connection back to the pool."""
        with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None:
                connection.close()


def _sqlite_value(value: Any) -> Any:
    """A row value as the SQLite driver takes it (the JSON column as its text, as SQLAlchemy writes it)."""
    return json.dumps(value) if isinstance(value, dict) else value


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
