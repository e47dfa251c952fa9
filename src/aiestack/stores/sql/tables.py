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

#: Tables that migration 0013 creates on PostgreSQL only, in raw SQL: the PostgreSQL document
#: store's BM25 statistics, postings blocks and term vectors (array columns and an INCLUDE primary
#: key that this metadata does not describe; SQLite's term index is tantivy). Schema comparisons
#: (autogenerate) leave them out through :func:`include_object`.
POSTGRES_ONLY_TABLES = frozenset({"bm25_stats", "bm25_blocks", "bm25_docs"})


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Alembic's ``include_object`` hook: everything but :data:`POSTGRES_ONLY_TABLES`."""
    return not (type_ == "table" and name in POSTGRES_ONLY_TABLES)

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
    sa.Column("guard_action", sa.String(), nullable=True),  # 0007: the strongest guardrail action
    # The console lists newest first, optionally for one model or tenant: each list query is an
    # index range scan (read backwards for DESC) rather than a sort of the whole table.
    sa.Index(None, "created_at"),
    sa.Index(None, "model", "created_at"),
    sa.Index(None, "tenant", "created_at"),
    sa.Index(None, "trace_id"),
    # Budgets (a key's spend since the start of the day / month) and per-key usage summaries.
    sa.Index(None, "key_id", "created_at"),
    # 0007: the console's filters by route, outcome and guardrail action, each a range scan.
    sa.Index(None, "route", "created_at"),
    sa.Index(None, "outcome", "created_at"),
    sa.Index(None, "guard_action", "created_at"),
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

# --------------------------------------------------------------------------- 0005: answer caches

cache_entries = sa.Table(
    "cache_entries",
    metadata,
    # "e:<sha256>" for exact entries, "s:<sha256>" for semantic ones (see aiestack.cache).
    sa.Column("key", sa.String(), primary_key=True),
    sa.Column("kind", sa.String(), nullable=False),
    sa.Column("partition", sa.String(), nullable=False),
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("route", sa.String(), nullable=False),
    sa.Column("query", sa.Text(), nullable=False),
    sa.Column("dim", sa.Integer(), nullable=True),
    # float32 little-endian, like embedding_cache.vector; NULL for exact entries.
    sa.Column("vector", sa.LargeBinary(), nullable=True),
    sa.Column("answer", JSONDocument, nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("expires_at", sa.Double(), nullable=True),
    # The semantic index loads and follows new entries by (kind, created_at); purges by expiry.
    sa.Index(None, "kind", "created_at"),
    sa.Index(None, "expires_at"),
    sa.Index(None, "tenant"),
)

# --------------------------------------------------------------------------- 0006: feedback and prompts

feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    # No foreign key to exchanges: an implicit signal can name an exchange still in the writer's queue.
    sa.Column("exchange_id", sa.String(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("kind", sa.String(), nullable=False),
    sa.Column("source", sa.String(), nullable=False),
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("key_id", sa.String(), nullable=True),
    sa.Column("user", sa.String(), nullable=True),
    sa.Column("route", sa.String(), nullable=True),
    sa.Column("prompt", sa.String(), nullable=True),
    sa.Column("prompt_version", sa.Integer(), nullable=True),
    sa.Column("value", sa.Double(), nullable=True),
    sa.Column("thumbs", sa.Integer(), nullable=True),
    sa.Column("rating", sa.Integer(), nullable=True),
    sa.Column("score", sa.Double(), nullable=True),
    sa.Column("comment", sa.Text(), nullable=True),
    sa.Column("correction", sa.Text(), nullable=True),
    sa.Column("tags", JSONDocument, nullable=False),
    sa.Column("detail", JSONDocument, nullable=False),
    # The feedback page lists newest first (optionally per tenant, route or prompt version); the
    # exchange page shows one exchange's feedback.
    sa.Index(None, "created_at"),
    sa.Index(None, "exchange_id"),
    sa.Index(None, "tenant", "created_at"),
    sa.Index(None, "route", "created_at"),
    sa.Index(None, "prompt", "prompt_version", "created_at"),
)

conversation_turns = sa.Table(
    "conversation_turns",
    metadata,
    sa.Column("exchange_id", sa.String(), primary_key=True),
    sa.Column("conversation", sa.String(), nullable=False),
    sa.Column("turn", sa.String(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("route", sa.String(), nullable=True),
    sa.Column("prompt", sa.String(), nullable=True),
    sa.Column("prompt_version", sa.Integer(), nullable=True),
    sa.Column("answer", sa.String(), nullable=True),
    # The implicit-signal detector looks up the latest turns of a conversation or of one turn.
    sa.Index(None, "conversation", "created_at"),
    sa.Index(None, "turn", "created_at"),
)

prompt_versions = sa.Table(
    "prompt_versions",
    metadata,
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("version", sa.Integer(), primary_key=True),
    sa.Column("template", sa.Text(), nullable=False),
    sa.Column("content_hash", sa.String(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("variables", JSONDocument, nullable=False),
    sa.Column("message", sa.Text(), nullable=True),
    sa.Column("metadata", JSONDocument, nullable=False),
)

prompt_labels = sa.Table(
    "prompt_labels",
    metadata,
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("label", sa.String(), primary_key=True),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("updated_at", sa.Double(), nullable=False),
)

# --------------------------------------------------------------------------- 0008: datasets
# Immutable, content-hashed versions (``stores/datasets.py``); each version's rows in order, with
# their lineage. A version row is written in the same transaction as its rows.

dataset_versions = sa.Table(
    "dataset_versions",
    metadata,
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("version", sa.Integer(), primary_key=True),
    sa.Column("kind", sa.String(), nullable=False),
    sa.Column("content_hash", sa.String(), nullable=False),
    sa.Column("rows", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("source", JSONDocument, nullable=False),
    sa.Column("parent", sa.String(), nullable=True),
    sa.Column("message", sa.Text(), nullable=True),
)

dataset_rows = sa.Table(
    "dataset_rows",
    metadata,
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("version", sa.Integer(), primary_key=True),
    sa.Column("position", sa.Integer(), primary_key=True),
    sa.Column("row_id", sa.String(), nullable=False),
    sa.Column("data", JSONDocument, nullable=False),
    sa.Column("lineage", JSONDocument, nullable=False),
)

# --------------------------------------------------------------------------- 0009: agent runs
# One row per run (``stores/runs.py``), its steps (event JSON) in order. ``pending`` holds the state
# a waiting run resumes from and is cleared when the run goes on.

agent_runs = sa.Table(
    "agent_runs",
    metadata,
    sa.Column("run_id", sa.String(), primary_key=True),
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("agent", sa.String(), nullable=False),
    sa.Column("model", sa.String(), nullable=False),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("stop_reason", sa.String(), nullable=True),
    sa.Column("key_id", sa.String(), nullable=True),
    sa.Column("task", sa.Text(), nullable=False),
    sa.Column("answer", sa.Text(), nullable=True),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Column("steps", sa.Integer(), nullable=False),
    sa.Column("input_tokens", sa.Integer(), nullable=False),
    sa.Column("output_tokens", sa.Integer(), nullable=False),
    sa.Column("cost_usd", sa.Double(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("updated_at", sa.Double(), nullable=False),
    sa.Column("pending", JSONDocument, nullable=True),
    sa.Index(None, "tenant", "created_at"),
)

agent_run_steps = sa.Table(
    "agent_run_steps",
    metadata,
    sa.Column("run_id", sa.String(), primary_key=True),
    sa.Column("position", sa.Integer(), primary_key=True),
    sa.Column("type", sa.String(), nullable=False),
    sa.Column("data", JSONDocument, nullable=False),
)

# --------------------------------------------------------------------------- 0010: pending feedback

pending_feedback = sa.Table(
    "pending_feedback",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("exchange_id", sa.String(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("tenant", sa.String(), nullable=True),
    sa.Column("key_id", sa.String(), nullable=True),
    sa.Column("body", JSONDocument, nullable=False),
    # Settling reads the oldest items first.
    sa.Index(None, "created_at"),
)

# --------------------------------------------------------------------------- document stores
# The embedded (SQLite + tantivy + usearch) and PostgreSQL document stores share this layout.
# ``chunks.key`` is the integer key of a chunk in the vector and term indexes: AUTOINCREMENT on
# SQLite, so keys are never reused and an index can be reconciled with the records by key.

#: The integer row key: BIGINT on PostgreSQL, the rowid (INTEGER PRIMARY KEY) on SQLite.
RowKey = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: float32 little-endian bytes on SQLite; ``real[]`` on PostgreSQL (cast to pgvector's vector(dim)).
Embedding = sa.LargeBinary().with_variant(postgresql.ARRAY(sa.REAL()), "postgresql")
#: The chunk's tsvector on PostgreSQL; unused (NULL) on SQLite, where tantivy is the term index.
#: Its GIN index and the per-collection HNSW indexes are PostgreSQL-only: the PostgreSQL document
#: store creates them (``documents_postgres.py``), not the migrations.
TermVector = sa.Text().with_variant(postgresql.TSVECTOR(), "postgresql")

collections = sa.Table(
    "collections",
    metadata,
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("tenant", sa.String(), nullable=False),
    sa.Column("embedding_model", sa.String(), nullable=False),
    sa.Column("dim", sa.Integer(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("version", sa.BigInteger(), nullable=False),
    sa.Column("metadata", JSONDocument, nullable=False),
    sa.Index(None, "tenant", "name"),
)

documents = sa.Table(
    "documents",
    metadata,
    sa.Column("key", RowKey, primary_key=True, autoincrement=True),
    sa.Column("collection", sa.String(), sa.ForeignKey("collections.name", ondelete="CASCADE"), nullable=False),
    sa.Column("id", sa.String(), nullable=False),
    sa.Column("source", sa.String(), nullable=False),
    sa.Column("title", sa.String(), nullable=False),
    sa.Column("chunks", sa.Integer(), nullable=False),
    sa.Column("ingested_at", sa.Double(), nullable=False),
    sa.Column("metadata", JSONDocument, nullable=False),
    sa.UniqueConstraint("collection", "source"),
    sa.Index(None, "collection", "id"),
    sqlite_autoincrement=True,
)

chunks = sa.Table(
    "chunks",
    metadata,
    sa.Column("key", RowKey, primary_key=True, autoincrement=True),
    sa.Column("collection", sa.String(), nullable=False),
    sa.Column("document_key", RowKey, sa.ForeignKey("documents.key", ondelete="CASCADE"), nullable=False),
    sa.Column("id", sa.String(), nullable=False),
    sa.Column("document_id", sa.String(), nullable=False),
    sa.Column("source", sa.String(), nullable=False),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("text", sa.Text(), nullable=False),
    sa.Column("metadata", JSONDocument, nullable=False),
    sa.Column("embedding", Embedding, nullable=False),
    sa.Column("tsv", TermVector, nullable=True),
    sa.Index(None, "collection", "id"),
    sa.Index(None, "document_key"),
    sqlite_autoincrement=True,
)

# Collection pointers (0012): a name standing for another collection, its "current version"
# (DocumentStore.set_pointer). Dropping the collection pointed at drops the pointer.
collection_pointers = sa.Table(
    "collection_pointers",
    metadata,
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("collection", sa.String(), sa.ForeignKey("collections.name", ondelete="CASCADE"), nullable=False),
    sa.Column("updated_at", sa.Double(), nullable=False),
)

# Contextual retrieval (0004): the situating context a model wrote for a chunk, keyed by the model
# and "document content hash:chunk text hash", so re-ingesting a document does not ask again.
context_cache = sa.Table(
    "context_cache",
    metadata,
    sa.Column("model", sa.String(), primary_key=True),
    sa.Column("key", sa.String(), primary_key=True),
    sa.Column("context", sa.Text(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
)

# --------------------------------------------------------------------------- 0011: flywheel runs
# One row per run of a flywheel.yaml (``stores/flywheel.py``) and one per step, keyed by its name,
# with the step's inputs and outputs (the ids that link the lineage).

flywheel_runs = sa.Table(
    "flywheel_runs",
    metadata,
    sa.Column("run_id", sa.String(), primary_key=True),
    sa.Column("name", sa.String(), nullable=False),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("created_at", sa.Double(), nullable=False),
    sa.Column("updated_at", sa.Double(), nullable=False),
    sa.Column("spec", JSONDocument, nullable=False),
    sa.Column("source", sa.Text(), nullable=True),
    sa.Column("outcome", sa.String(), nullable=True),
    sa.Column("detail", sa.Text(), nullable=False),
    sa.Index(None, "name", "created_at"),
)

flywheel_steps = sa.Table(
    "flywheel_steps",
    metadata,
    sa.Column("run_id", sa.String(), primary_key=True),
    sa.Column("name", sa.String(), primary_key=True),
    sa.Column("kind", sa.String(), nullable=False),
    sa.Column("position", sa.Integer(), nullable=False),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("started_at", sa.Double(), nullable=False),
    sa.Column("finished_at", sa.Double(), nullable=True),
    sa.Column("inputs", JSONDocument, nullable=False),
    sa.Column("outputs", JSONDocument, nullable=False),
    sa.Column("error", sa.Text(), nullable=True),
)
