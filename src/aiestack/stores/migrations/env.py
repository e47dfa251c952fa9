"""Alembic environment for aiestack's store schema.

aiestack runs migrations programmatically (:meth:`SqlExchangeStore.migrate`), passing its own
connection in ``config.attributes["connection"]``; no ``alembic.ini`` is involved. Developers who
author a new revision build the same config with
:func:`aiestack.stores.sql.migrate.alembic_config` and a URL, then call ``alembic.command.revision``.

Every migration runs in its own transaction together with its ``alembic_version`` update
(``transaction_per_migration``), so a crash leaves the schema at a whole revision and the next
``migrate()`` continues from there. SQLite cannot ``ALTER`` most things in place;
``render_as_batch`` makes Alembic copy-and-swap tables there instead.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from aiestack.stores.sql.engine import create_store_engine, parse_url
from aiestack.stores.sql.tables import include_object, metadata

config = context.config


def _configure(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_object=include_object,
        transaction_per_migration=True,
        # aiestack's SQLite engine emits BEGIN itself, so DDL is transactional there too
        # (Alembic assumes it is not, and would otherwise leave half a migration after a crash).
        transactional_ddl=True,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        return
    engine = create_store_engine(parse_url(config.get_main_option("sqlalchemy.url") or ""))
    try:
        with engine.connect() as own_connection:
            _configure(own_connection)
            own_connection.commit()
    finally:
        engine.dispose()


def run_offline() -> None:
    """Write the migration SQL instead of running it (``alembic upgrade --sql``), e.g. for a DBA."""
    url = parse_url(config.get_main_option("sqlalchemy.url") or "")
    context.configure(
        url=url,
        target_metadata=metadata,
        include_object=include_object,
        transaction_per_migration=True,
        render_as_batch=url.get_backend_name() == "sqlite",
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
