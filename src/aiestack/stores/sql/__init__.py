"""The SQL store: SQLAlchemy 2 Core tables, Alembic migrations, SQLite and PostgreSQL engines."""

from aiestack.stores.sql.store import SqlExchangeStore

__all__ = ["SqlExchangeStore"]
