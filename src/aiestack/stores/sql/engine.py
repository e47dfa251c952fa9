"""Engines for the SQL store, and the translation of driver failures into actionable errors.

SQLite is tuned on every new connection (an engine event, never a global one):

- ``journal_mode=WAL``: readers (the console) never block the writer, and a killed process
  leaves a database that opens cleanly.
- ``synchronous=NORMAL``: safe with WAL against application crashes; only a power loss can undo
  the last transactions, and never corrupts the file.
- ``foreign_keys=ON`` and ``busy_timeout``: a writer waits for a lock instead of failing at once.

The ``pysqlite`` driver does not begin a transaction before DDL, so a migration interrupted half
way would leave half a schema. The engine therefore takes over transaction control (the recipe in
SQLAlchemy's SQLite dialect documentation): the driver runs in autocommit mode and SQLAlchemy emits
``BEGIN`` itself, which makes DDL transactional like on PostgreSQL.

A transaction that writes is opened with :func:`write_transaction`, which on SQLite emits ``BEGIN
IMMEDIATE``: it takes the write lock at once (waiting up to ``busy_timeout`` for another writer).
A deferred ``BEGIN`` would take it only at the first write, and if that transaction had read first
and another connection wrote meanwhile (the background exchange writer, a second engine on the same
file, another process), SQLite cannot upgrade its stale read snapshot and fails the write at once
with "database is locked", the busy timeout notwithstanding. Reads keep the deferred ``BEGIN``, so
they never wait for a writer.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import StaticPool

from aiestack.errors import StoreError

SQLITE_BUSY_TIMEOUT_MS = 5_000
PG_CONNECT_TIMEOUT_S = 5

_URL_HELP = (
    "Use sqlite:///path/to/aiestack.db, postgresql+psycopg://user@host:5432/dbname or memory:// "
    "(set store.url in aiestack.toml or AIESTACK_STORE__URL)."
)


def parse_url(url: str | URL) -> URL:
    """Parse and normalise a store URL; plain ``postgresql://`` means the psycopg 3 driver."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise StoreError(f"The store URL {url!r} is not a valid database URL.", hint=_URL_HELP) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(
            f"The store URL {safe_url(parsed)} names an unsupported database '{parsed.get_backend_name()}'.",
            hint=_URL_HELP,
        )
    return parsed


def safe_url(url: URL) -> str:
    """The URL for messages and logs: never the password."""
    return url.render_as_string(hide_password=True)


def create_store_engine(url: URL, *, pre_ping: bool = True) -> Engine:
    """A sync engine for ``url`` (already :func:`parse_url`-ed), tuned for its backend.

    ``pre_ping=False`` lends pooled connections without a test round trip; its caller must retry
    a statement that fails on a dead connection (only safe for reads)."""
    try:
        if url.get_backend_name() == "sqlite":
            return _sqlite_engine(url)
        return sa.create_engine(
            url, pool_pre_ping=pre_ping, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_S}
        )
    except (sa.exc.NoSuchModuleError, ImportError) as exc:
        raise StoreError(
            f"The database driver for {safe_url(url)} is not installed ({exc}).",
            hint="Install it with: pip install 'aiestack[postgres]'.",
        ) from None


def sqlite_path(url: URL) -> Path | None:
    """The database file of a SQLite URL, or None for an in-memory database."""
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database).expanduser()


def _sqlite_engine(url: URL) -> Engine:
    path = sqlite_path(url)
    options: dict[str, Any] = {}
    if path is None:
        # One shared connection: a pool would give each thread (e.g. the background writer) its
        # own, empty, in-memory database. Meant for tests; memory:// is the in-process store for
        # concurrent use.
        options = {"poolclass": StaticPool, "connect_args": {"check_same_thread": False}}
    else:
        _ensure_directory(path.parent, url)
        url = url.set(database=str(path))
    engine = sa.create_engine(url, **options)
    event.listen(engine, "connect", _tune_sqlite_connection)
    event.listen(engine, "begin", _begin_sqlite_transaction)
    return engine


def _ensure_directory(directory: Path, url: URL) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(
            f"Cannot create the data directory {directory} for {safe_url(url)}: {exc.strerror or exc}.",
            hint="Choose a writable location with data_dir or store.url.",
        ) from None


def _tune_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # autocommit at the driver; SQLAlchemy sends BEGIN
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


#: The execution option :func:`write_transaction` sets: begin the SQLite transaction IMMEDIATE.
_IMMEDIATE = "aiestack_sqlite_immediate"


def _begin_sqlite_transaction(connection: sa.Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE" if connection.get_execution_options().get(_IMMEDIATE) else "BEGIN")


@contextlib.contextmanager
def write_transaction(engine: Engine) -> Iterator[sa.Connection]:
    """``engine.begin()`` for a transaction that writes (commits at the end, rolls back on error).

    On SQLite the transaction holds the write lock from its start (``BEGIN IMMEDIATE``, see the
    module's docstring), so reading before writing inside it is safe beside concurrent writers."""
    with engine.connect() as connection:
        connection.execution_options(**{_IMMEDIATE: True})
        with connection.begin():
            yield connection


# --------------------------------------------------------------------------- error translation

#: Driver failures that mean "the store cannot be used right now": translated to StoreError,
#: which the background writer retries. Other errors (bad data, bugs) propagate unchanged.
_UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)


@contextlib.contextmanager
def store_errors(url: URL, action: str) -> Iterator[None]:
    """Turn "cannot reach / cannot lock / cannot open" failures into a :class:`StoreError` with a hint."""
    try:
        yield
    except _UNAVAILABLE as exc:
        raise unavailable(url, action, exc) from exc
    except sa.exc.DBAPIError as exc:
        # A bare DatabaseError (not one of its subclasses) is how SQLite reports a file that is
        # not a database or is damaged: the user must fix the file or the URL, not the data.
        if exc.connection_invalidated or type(exc) is sa.exc.DatabaseError:
            raise unavailable(url, action, exc) from exc
        raise


def unavailable(url: URL, action: str, exc: BaseException) -> StoreError:
    """A StoreError saying what failed at ``url`` and what to check."""
    detail = _driver_message(exc)
    return StoreError(f"Cannot {action} the store at {safe_url(url)}: {detail}.", hint=_hint(url, detail))


def _driver_message(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(original).strip().splitlines() if line.strip()]
    return (lines[0] if lines else type(original).__name__).rstrip(".")


def _hint(url: URL, detail: str) -> str:
    lowered = detail.lower()
    if url.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        if "locked" in lowered or "busy" in lowered:
            return (
                f"Another process held a lock on {path} for more than {SQLITE_BUSY_TIMEOUT_MS / 1000:g} s; "
                "retry, or use PostgreSQL for many concurrent writers."
            )
        if path is None:
            return "Check store.url."
        return f"Check that {path.parent} exists and is writable, and that {path} is a SQLite database (store.url)."
    host = url.host or "localhost"
    port = url.port or 5432
    if "does not exist" in lowered and "database" in lowered:
        return f"Create the database (createdb -h {host} -p {port} {url.database}) or fix store.url."
    if "authentication" in lowered or "password" in lowered or re.search(r"role .* does not exist", lowered):
        return "Check the user and password in store.url (the password may come from PGPASSWORD)."
    return f"Is PostgreSQL running at {host}:{port} and reachable from here? Check store.url."
