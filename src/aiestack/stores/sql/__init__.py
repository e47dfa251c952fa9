"""SQL plumbing shared by the SQL stores: SQLAlchemy 2 Core tables, engines (SQLite, PostgreSQL), Alembic migrations."""
