"""Running the Alembic migrations from code: no ``alembic.ini``, no working-directory assumptions.

The scripts ship inside the package (``aiestack/stores/migrations``); the config is built in memory
with ``script_location`` pointing there. The store hands its own connection to ``env.py`` through
``config.attributes``, so migrations run with the same engine tuning (WAL, transactional DDL).
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

#: Key of the PostgreSQL advisory lock that serialises concurrent ``migrate()`` calls (several
#: gateway workers starting at once): a stable number derived from a fixed name.
_PG_LOCK_KEY = zlib.crc32(b"aiestack.migrate")


def alembic_config(url: URL | None = None) -> Config:
    """An in-memory Alembic config for aiestack's migrations; ``url`` only for offline/authoring use."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser interpolates '%': escape it (URL-encoded passwords contain it).
        config.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


def head_revision() -> str | None:
    """The newest revision the installed package knows."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: sa.Connection) -> str | None:
    """The revision the database is at (None for an empty database)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> None:
    """``alembic upgrade head`` on ``engine``. Idempotent; each migration commits on its own."""
    try:
        _upgrade(engine)
    except sa.exc.DBAPIError:
        # Two SQLite processes may both see an old revision and race to migrate: the loser's DDL
        # fails ("table already exists") after the winner committed. That is success, not failure.
        with engine.connect() as connection:
            if current_revision(connection) == head_revision():
                return
        raise


def _upgrade(engine: Engine) -> None:
    config = alembic_config()
    with engine.connect() as connection, _migration_lock(connection):
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        if connection.in_transaction():
            connection.commit()


@contextlib.contextmanager
def _migration_lock(connection: sa.Connection) -> Iterator[None]:
    """On PostgreSQL, hold a session advisory lock so two processes never migrate at once.

    The lock is taken and released in transactions of their own (then committed), so the
    migrations themselves still start from a connection with no transaction open. SQLite needs
    nothing: its write lock already serialises the migration transactions.
    """
    if connection.dialect.name != "postgresql":
        yield
        return
    connection.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
    connection.commit()
    try:
        yield
    finally:
        if connection.in_transaction():
            connection.rollback()
        connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
        connection.commit()
