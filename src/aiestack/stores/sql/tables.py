"""The SQL schema as SQLAlchemy Core metadata: what the code reads and writes.

The migrations in ``aiestack/stores/migrations/versions`` create this schema; they are frozen
snapshots and never import this module. A test migrates an empty database and checks with
Alembic's ``compare_metadata`` that the two agree, so a column added here without a migration
(or the reverse) fails CI.

Types are chosen to behave the same on SQLite and PostgreSQL: ``Double`` for epoch seconds and
milliseconds (8-byte floats on both, so values round-trip exactly), ``BigInteger`` for
nanosecond timestamps, ``JSON`` (``JSONB`` on PostgreSQL, which is smaller and indexable) for
the open-ended parts of a record.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

#: JSON on SQLite, JSONB on PostgreSQL.
JSONDocument = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

#: Constraint and index names are fixed, so that migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

exchanges = sa.Table(
    "exchanges",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("model", sa.String(), nullable=False),
    sa.Column("outcome", sa.String(), nullable=False),
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("key_id", sa.String(), nullable=True),
    sa.Column("route", sa.String(), nullable=True),
    sa.Column("provider", sa.String(), nullable=True),
    sa.Column("stream", sa.Boolean(), nullable=False),
    sa.Column("finish_reason", sa.String(), nullable=True),
    sa.Column("error_type", sa.String(), nullable=True),
    sa.Column("error_message", sa.Text(), nullable=True),
    sa.Column("input_tokens", sa.Integer(), nullable=False),
    sa.Column("output_tokens", sa.Integer(), nullable=False),
    sa.Column("cached_tokens", sa.Integer(), nullable=False),
    sa.Column("queue_ms", sa.Double(), nullable=True),
    sa.Column("ttft_ms", sa.Double(), nullable=True),
    sa.Column("tpot_ms", sa.Double(), nullable=True),
    sa.Column("total_ms", sa.Double(), nullable=True),
    sa.Column("cost_usd", sa.Double(), nullable=True),
    sa.Column("cached", sa.Boolean(), nullable=False),
    sa.Column("trace_id", sa.String(), nullable=True),
    sa.Column("request", JSONDocument, nullable=False),
    sa.Column("response", sa.Text(), nullable=True),
    sa.Column("attributes", JSONDocument, nullable=False),
    # The console lists newest first, optionally for one model or tenant: each list query is an
    # index range scan (read backwards for DESC) rather than a sort of the whole table.
    sa.Index(None, "created_at"),
    sa.Index(None, "model", "created_at"),
    sa.Index(None, "tenant", "created_at"),
    sa.Index(None, "trace_id"),
    # Budgets (a key's spend since the start of the day / month) and per-key usage summaries.
    sa.Index(None, "key_id", "created_at"),
)

spans = sa.Table(
    "spans",
    metadata,
    sa.Column("trace_id", sa.String(), primary_key=True),
    sa.Column("span_id", sa.String(), primary_key=True),
    sa.Column("parent_id", sa.String(), nullable=True),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("start_ns", sa.BigInteger(), nullable=False),
    sa.Column("end_ns", sa.BigInteger(), nullable=False),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("attributes", JSONDocument, nullable=False),
    # No foreign key to exchanges: spans are exported as they end, often before their exchange
    # record is written, and the two travel in different batches.
    sa.Column("exchange_id", sa.String(), nullable=True),
    sa.Index(None, "trace_id", "start_ns"),
    sa.Index(None, "exchange_id", "start_ns"),
)

embedding_cache = sa.Table(
    "embedding_cache",
    metadata,
    sa.Column("model", sa.String(), primary_key=True),
    sa.Column("text_hash", sa.String(), primary_key=True),
    sa.Column("dim", sa.Integer(), nullable=False),
    # float32 little-endian: 4 bytes a dimension, the precision embedding models produce.
    sa.Column("vector", sa.LargeBinary(), nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("name", sa.String(), nullable=True),
    sa.Column("tenant", sa.String(), nullable=False),
    # sha256 hex of the secret: a lookup by equality, never the secret itself.
    sa.Column("secret_hash", sa.String(), nullable=False),
    sa.Column("prefix", sa.String(), nullable=False),
    sa.Column("rpm", sa.Integer(), nullable=True),
    sa.Column("tpm", sa.Integer(), nullable=True),
    sa.Column("budget_day_usd", sa.Double(), nullable=True),
    sa.Column("budget_month_usd", sa.Double(), nullable=True),
    sa.Column("models", JSONDocument, nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("revoked_at", sa.Double(), nullable=True),
    sa.UniqueConstraint("secret_hash"),
    sa.Index(None, "tenant", "created_at"),
)

eval_runs = sa.Table(
    "eval_runs",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("suite", sa.String(), nullable=False),
    sa.Column("systems", JSONDocument, nullable=False),
    sa.Column("started_at", sa.Double(), nullable=False),
    sa.Column("finished_at", sa.Double(), nullable=True),
    sa.Column("summary", JSONDocument, nullable=False),
    sa.Index(None, "started_at"),
    sa.Index(None, "suite", "started_at"),
)

eval_results = sa.Table(
    "eval_results",
    metadata,
    sa.Column("run_id", sa.String(), primary_key=True),
    sa.Column("example_id", sa.String(), primary_key=True),
    sa.Column("system", sa.String(), primary_key=True),
    sa.Column("output", sa.Text(), nullable=False),
    sa.Column("scores", JSONDocument, nullable=False),
    sa.Column("details", JSONDocument, nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
    # No foreign key to exchanges: an exchange is written by the background writer, often after
    # the result, and a cached result names an exchange from an earlier run.
    sa.Column("exchange_id", sa.String(), nullable=True),
    sa.Column("latency_ms", sa.Double(), nullable=True),
    sa.Column("cost_usd", sa.Double(), nullable=True),
    sa.Column("cached", sa.Boolean(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    # The console opens an exchange's eval results, and an eval result's exchange.
    sa.Index(None, "exchange_id"),
)
