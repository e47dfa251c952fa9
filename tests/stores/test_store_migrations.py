"""Migrations: an empty database reaches the schema the code expects, and again is a no-op."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import alembic.op
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from aiestack.stores.base import ExchangeRecord, KeyRecord
from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.stores.sql.migrate import MIGRATIONS_DIR, alembic_config, current_revision, head_revision
from aiestack.stores.sql.tables import POSTGRES_ONLY_TABLES, include_object, metadata
from aiestack.testing.conformance import full_exchange
from aiestack.types import SpanRecord

EXPECTED_INDEXES = {
    "exchanges": {
        "ix_exchanges_created_at": ["created_at"],
        "ix_exchanges_model_created_at": ["model", "created_at"],
        "ix_exchanges_tenant_created_at": ["tenant", "created_at"],
        "ix_exchanges_trace_id": ["trace_id"],
        "ix_exchanges_key_id_created_at": ["key_id", "created_at"],
        "ix_exchanges_route_created_at": ["route", "created_at"],
        "ix_exchanges_outcome_created_at": ["outcome", "created_at"],
        "ix_exchanges_guard_action_created_at": ["guard_action", "created_at"],
    },
    "spans": {
        "ix_spans_trace_id_start_ns": ["trace_id", "start_ns"],
        "ix_spans_exchange_id_start_ns": ["exchange_id", "start_ns"],
    },
    "embedding_cache": {},
    "api_keys": {"ix_api_keys_tenant_created_at": ["tenant", "created_at"]},
}


def _schema_diffs(store: SqlExchangeStore) -> list[object]:
    with store.engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "compare_server_default": True, "include_object": include_object},
        )
        return list(compare_metadata(context, metadata))


def _check_migrated_schema(store: SqlExchangeStore) -> None:
    with store.engine.connect() as connection:
        inspector = sa.inspect(connection)
        assert set(inspector.get_table_names()) == {
            "alembic_version",
            "exchanges",
            "spans",
            "embedding_cache",
            "api_keys",
            "eval_runs",
            "eval_results",
            # 0004: document stores
            "collections",
            "documents",
            "chunks",
            "context_cache",  # 0004: contextual retrieval
            "cache_entries",  # 0005: the exact and semantic answer caches
            # 0006: feedback and prompts
            "feedback",
            "conversation_turns",
            "prompt_versions",
            "prompt_labels",
            # 0008: datasets
            "dataset_versions",
            "dataset_rows",
            # 0009: agent runs
            "agent_runs",
            "agent_run_steps",
            "pending_feedback",  # 0010: feedback sent before its exchange was stored
            # 0011: flywheel runs
            "flywheel_runs",
            "flywheel_steps",
            "collection_pointers",  # 0012: a collection's current version
        } | (POSTGRES_ONLY_TABLES if connection.dialect.name == "postgresql" else set())  # 0013: BM25 blocks
        columns = {t: [c["name"] for c in inspector.get_columns(t)] for t in EXPECTED_INDEXES}
        indexes = {
            t: {
                i["name"]: i["column_names"]
                for i in inspector.get_indexes(t)
                if "duplicates_constraint" not in i
            }
            for t in EXPECTED_INDEXES
        }
        pks = {t: inspector.get_pk_constraint(t)["constrained_columns"] for t in EXPECTED_INDEXES}
        uniques = {
            (u["name"], tuple(u["column_names"])) for u in inspector.get_unique_constraints("api_keys")
        }
        assert current_revision(connection) == head_revision()
    assert columns["exchanges"] == [f.name for f in dataclasses.fields(ExchangeRecord)]
    assert columns["spans"] == [f.name for f in dataclasses.fields(SpanRecord)]
    assert columns["embedding_cache"] == ["model", "text_hash", "dim", "vector"]
    assert sorted(columns["api_keys"]) == sorted(f.name for f in dataclasses.fields(KeyRecord))
    assert indexes == EXPECTED_INDEXES
    assert uniques == {("uq_api_keys_secret_hash", ("secret_hash",))}
    assert pks == {
        "exchanges": ["id"],
        "spans": ["trace_id", "span_id"],
        "embedding_cache": ["model", "text_hash"],
        "api_keys": ["id"],
    }
    assert _schema_diffs(store) == []


def _migrate_twice(store: SqlExchangeStore) -> None:
    store.migrate()
    _check_migrated_schema(store)
    store.write_exchanges([full_exchange()])
    store.migrate()  # a no-op that keeps the data
    _check_migrated_schema(store)
    assert store.get_exchange("ex_full") == full_exchange()


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[SqlExchangeStore]:
    store = SqlExchangeStore(sqlite_url)
    yield store
    store.close()


@pytest.mark.unit
def test_sqlite_empty_database_migrates_to_the_table_metadata(sqlite_store: SqlExchangeStore) -> None:
    _migrate_twice(sqlite_store)


@pytest.mark.integration
def test_postgres_empty_database_migrates_to_the_table_metadata(pg_url: str) -> None:
    store = SqlExchangeStore(pg_url)
    try:
        _migrate_twice(store)
        with store.engine.connect() as connection:
            kinds = {
                c["name"]: type(c["type"]).__name__ for c in sa.inspect(connection).get_columns("exchanges")
            }
        assert kinds["request"] == "JSONB" and kinds["attributes"] == "JSONB"
        assert kinds["created_at"] == "DOUBLE_PRECISION"
    finally:
        store.close()


@pytest.mark.unit
def test_a_table_without_a_migration_is_reported(sqlite_store: SqlExchangeStore) -> None:
    """The metadata check above can fail: a column the migrations lack shows up as a diff."""
    sqlite_store.migrate()
    extended = sa.MetaData()
    for table in metadata.tables.values():
        table.to_metadata(extended)
    extended.tables["spans"].append_column(sa.Column("new_column", sa.Integer()))
    with sqlite_store.engine.connect() as connection:
        diffs = compare_metadata(MigrationContext.configure(connection), extended)
    assert [d[0] for d in diffs] == ["add_column"]


@pytest.mark.unit
def test_sqlite_ddl_is_transactional(sqlite_store: SqlExchangeStore) -> None:
    """A migration interrupted before its commit leaves no half-created tables behind."""
    with sqlite_store.engine.connect() as connection:
        connection.execute(sa.text("CREATE TABLE half_done (x INTEGER)"))
        connection.rollback()
    with sqlite_store.engine.connect() as connection:
        assert "half_done" not in sa.inspect(connection).get_table_names()


def _fail_half_way_then_recover(store: SqlExchangeStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """The crash-safety promise, deterministically: tables created before the failure roll back."""

    def crash(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("simulated crash after the first table")

    with monkeypatch.context() as patched:
        patched.setattr(alembic.op, "create_index", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            store.migrate()
    with store.engine.connect() as connection:
        assert sa.inspect(connection).get_table_names() == []
    store.migrate()
    _check_migrated_schema(store)


@pytest.mark.unit
def test_sqlite_migration_failing_half_way_leaves_nothing_behind(
    sqlite_store: SqlExchangeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_half_way_then_recover(sqlite_store, monkeypatch)


@pytest.mark.integration
def test_postgres_migration_failing_half_way_leaves_nothing_behind(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SqlExchangeStore(pg_url)
    try:
        _fail_half_way_then_recover(store, monkeypatch)
    finally:
        store.close()


@pytest.mark.unit
def test_sqlite_connections_are_tuned(sqlite_store: SqlExchangeStore) -> None:
    with sqlite_store.engine.connect() as connection:
        pragma = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        }
    assert pragma == {"journal_mode": "wal", "synchronous": 1, "foreign_keys": 1, "busy_timeout": 5000}


@pytest.mark.unit
def test_downgrade_to_base_and_upgrade_again(sqlite_store: SqlExchangeStore) -> None:
    sqlite_store.migrate()
    config = alembic_config()
    with sqlite_store.engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "base")
        connection.commit()
        assert set(sa.inspect(connection).get_table_names()) == {"alembic_version"}
        assert current_revision(connection) is None
    sqlite_store.migrate()
    _check_migrated_schema(sqlite_store)


@pytest.mark.unit
def test_the_migrations_ship_with_the_package_and_form_one_line() -> None:
    assert (MIGRATIONS_DIR / "env.py").is_file()
    assert (MIGRATIONS_DIR / "script.py.mako").is_file()
    scripts = ScriptDirectory.from_config(alembic_config())
    assert scripts.get_heads() == ["0014"]
    assert [s.revision for s in scripts.walk_revisions()] == ["0014", "0013", "0012", "0011", "0010", "0009", "0008", "0007", "0006", "0005", "0004", "0003", "0002", "0001"]


@pytest.mark.unit
def test_offline_mode_writes_the_sql(capsys: pytest.CaptureFixture[str], sqlite_url: str) -> None:
    command.upgrade(alembic_config(sa.make_url(sqlite_url)), "head", sql=True)
    sql = capsys.readouterr().out
    assert (
        "CREATE TABLE exchanges" in sql
        and "CREATE TABLE spans" in sql
        and "CREATE TABLE embedding_cache" in sql
    )
    assert "INSERT INTO alembic_version (version_num) VALUES ('0001')" in sql
