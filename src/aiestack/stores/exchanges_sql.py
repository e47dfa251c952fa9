"""The SQL ExchangeStore (and EmbeddingCacheStore): SQLite by default, PostgreSQL to scale out.

SQLAlchemy 2 Core on a synchronous engine: the background writer calls it from its own thread, and
read paths call it directly or from a thread pool. Every method runs in one short transaction
from the engine's pool, so one store is safe to share between threads.

Writes are idempotent so that the writer can retry a batch after any failure: exchanges are
upserted by id (``INSERT ... ON CONFLICT DO UPDATE``), spans and vectors are keyed by their ids.

The same store is the :class:`~aiestack.stores.base.KeyStore` (virtual keys) and the
:class:`~aiestack.stores.base.UsageStore` (usage summaries and spend, computed by the database
with the ``(key_id, created_at)`` index, so a budget check never reads the exchanges themselves).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL

from aiestack.stores.base import (
    EvalResultRecord,
    ExchangeRecord,
    KeyRecord,
    UsageGroup,
    UsageRow,
    check_usage_groups,
    sort_usage,
)
from aiestack.stores.datasets_sql import SqlDatasetsMixin
from aiestack.stores.feedback_sql import SqlFeedbackMixin
from aiestack.stores.flywheel_sql import SqlFlywheelMixin
from aiestack.stores.queries_sql import SqlQueriesMixin, exchange_record
from aiestack.stores.runs_sql import SqlRunsMixin
from aiestack.stores.sql import migrate as migrations
from aiestack.stores.sql import vectors
from aiestack.stores.sql.engine import (
    create_store_engine,
    parse_url,
    safe_url,
    store_errors,
    write_transaction,
)
from aiestack.stores.sql.plain import PlainInsert, plain
from aiestack.stores.sql.tables import api_keys, embedding_cache, eval_results, eval_runs, exchanges, spans
from aiestack.types import EvalRun, SpanRecord

logger = logging.getLogger(__name__)

_EXCHANGE_FIELDS = tuple(f.name for f in dataclasses.fields(ExchangeRecord))
_SPAN_FIELDS = (
    "trace_id",
    "span_id",
    "parent_id",
    "name",
    "start_ns",
    "end_ns",
    "status",
    "attributes",
    "exchange_id",
)
_KEY_FIELDS = tuple(f.name for f in dataclasses.fields(KeyRecord))
_EVAL_RESULT_FIELDS = tuple(f.name for f in dataclasses.fields(EvalResultRecord))

#: Keys per ``IN (...)`` list: far below SQLite's bound-parameter limit on every version.
_IN_CHUNK = 500


class SqlExchangeStore(SqlFeedbackMixin, SqlDatasetsMixin, SqlRunsMixin, SqlFlywheelMixin, SqlQueriesMixin):
    """Exchanges, spans and the embedding cache in SQLite or PostgreSQL.

    ``url`` is a SQLAlchemy URL: ``sqlite:///path/to/aiestack.db`` (the directory is created) or
    ``postgresql+psycopg://user@host:5432/db``. Nothing connects until the first call; call
    :meth:`migrate` once at start, then :meth:`ping` to fail early with a clear message.
    """

    def __init__(self, url: str | URL) -> None:
        self._url = parse_url(url)
        self._engine = create_store_engine(self._url)
        # The background writer's two statements, on SQLite compiled once and run with plain
        # tuples: SQLAlchemy's per-row work in executemany (parameter dicts, bind processors)
        # costs several times what SQLite does, and the writer holds the GIL the server needs.
        self._sqlite = self._engine.dialect.name == "sqlite"
        if self._sqlite:
            self._exchange_insert = PlainInsert(self._engine, self._exchange_upsert(), exchanges)
            self._span_insert = PlainInsert(self._engine, self._span_insert_statement(), spans)

    def __repr__(self) -> str:
        return f"SqlExchangeStore({self.url!r})"

    @property
    def url(self) -> str:
        """The database URL without its password."""
        return safe_url(self._url)

    @property
    def engine(self) -> sa.Engine:
        return self._engine

    # ------------------------------------------------------------------ lifecycle

    def migrate(self) -> None:
        with store_errors(self._url, "migrate"):
            migrations.upgrade(self._engine)

    def ping(self) -> None:
        with store_errors(self._url, "connect to"), self._engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))

    def close(self) -> None:
        self._engine.dispose()

    # ------------------------------------------------------------------ exchanges

    def write_exchanges(self, records: Sequence[ExchangeRecord]) -> None:
        # One statement may not touch a row twice (PostgreSQL rejects it): the last record wins,
        # which is what writing them one after the other would have left.
        latest = {record.id: record for record in records}
        if not latest:
            return
        if self._sqlite:
            self._write_rows(self._exchange_insert, latest.values(), "write exchanges to")
            return
        rows = [_exchange_row(record) for record in latest.values()]
        with store_errors(self._url, "write exchanges to"), write_transaction(self._engine) as connection:
            connection.execute(self._exchange_upsert(), rows)

    def _exchange_upsert(self) -> Any:
        insert = self._insert(exchanges)
        return insert.on_conflict_do_update(
            index_elements=[exchanges.c.id],
            set_={name: insert.excluded[name] for name in _EXCHANGE_FIELDS if name != "id"},
        )

    def _span_insert_statement(self) -> Any:
        return self._insert(spans).on_conflict_do_nothing(index_elements=[spans.c.trace_id, spans.c.span_id])

    def _write_rows(self, insert: PlainInsert, records: Iterable[Any], action: str) -> None:
        """SQLite: ``insert`` executed by the driver with one plain tuple per record."""
        rows = [insert.row(record) for record in records]
        with store_errors(self._url, action), write_transaction(self._engine) as connection:
            connection.exec_driver_sql(insert.sql, rows)

    def get_exchange(self, exchange_id: str) -> ExchangeRecord | None:
        query = sa.select(exchanges).where(exchanges.c.id == exchange_id)
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            row = connection.execute(query).mappings().first()
        return exchange_record(row) if row is not None else None

    def list_exchanges(
        self,
        *,
        limit: int = 50,
        before: float | None = None,
        model: str | None = None,
        tenant: str | None = None,
    ) -> list[ExchangeRecord]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        query = sa.select(exchanges)
        if before is not None:
            query = query.where(exchanges.c.created_at < before)
        if model is not None:
            query = query.where(exchanges.c.model == model)
        if tenant is not None:
            query = query.where(exchanges.c.tenant == tenant)
        query = query.order_by(exchanges.c.created_at.desc(), exchanges.c.id.desc()).limit(limit)
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [exchange_record(row) for row in rows]

    # ------------------------------------------------------------------ spans

    def write_spans(self, records: Sequence[SpanRecord]) -> None:
        if not records:
            return
        if self._sqlite:
            self._write_rows(self._span_insert, records, "write spans to")
            return
        rows = [{name: plain(getattr(span, name)) for name in _SPAN_FIELDS} for span in records]
        with store_errors(self._url, "write spans to"), write_transaction(self._engine) as connection:
            connection.execute(self._span_insert_statement(), rows)

    def spans(self, *, trace_id: str | None = None, exchange_id: str | None = None) -> list[SpanRecord]:
        if trace_id is None and exchange_id is None:
            raise ValueError("spans() needs a trace_id or an exchange_id")
        query = sa.select(spans)
        if trace_id is not None:
            query = query.where(spans.c.trace_id == trace_id)
        if exchange_id is not None:
            query = query.where(spans.c.exchange_id == exchange_id)
        query = query.order_by(spans.c.start_ns, spans.c.span_id)
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [SpanRecord(**{**row, "attributes": row["attributes"] or {}}) for row in rows]

    # ------------------------------------------------------------------ embedding cache

    def get_embeddings(self, model: str, hashes: Sequence[str]) -> dict[str, list[float]]:
        wanted = list(dict.fromkeys(hashes))
        found: dict[str, list[float]] = {}
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            for chunk in _chunks(wanted, _IN_CHUNK):
                query = sa.select(
                    embedding_cache.c.text_hash, embedding_cache.c.dim, embedding_cache.c.vector
                ).where(embedding_cache.c.model == model, embedding_cache.c.text_hash.in_(chunk))
                for text_hash, dim, blob in connection.execute(query):
                    try:
                        found[text_hash] = vectors.unpack(bytes(blob), dim)
                    except ValueError as exc:  # a damaged row is a cache miss, not a failure
                        logger.warning("Ignoring the cached embedding %s for %s: %s", text_hash, model, exc)
        return found

    def put_embeddings(self, model: str, items: Mapping[str, Sequence[float]]) -> None:
        if not items:
            return
        rows = [
            {"model": model, "text_hash": text_hash, "dim": len(vector), "vector": vectors.pack(vector)}
            for text_hash, vector in items.items()
        ]
        insert = self._insert(embedding_cache)
        statement = insert.on_conflict_do_update(
            index_elements=[embedding_cache.c.model, embedding_cache.c.text_hash],
            set_={"dim": insert.excluded.dim, "vector": insert.excluded.vector},
        )
        with store_errors(self._url, "write embeddings to"), write_transaction(self._engine) as connection:
            connection.execute(statement, rows)

    # ------------------------------------------------------------------ usage

    def usage_summary(
        self,
        *,
        by: Sequence[UsageGroup] = ("key",),
        since: float | None = None,
        until: float | None = None,
    ) -> list[UsageRow]:
        groups = check_usage_groups(by)
        columns = {group: self._group_column(group).label(group) for group in groups}
        c = exchanges.c
        query = sa.select(
            *columns.values(),
            sa.func.count().label("requests"),
            sa.func.coalesce(sa.func.sum(c.input_tokens), 0).label("input_tokens"),
            sa.func.coalesce(sa.func.sum(c.output_tokens), 0).label("output_tokens"),
            sa.func.coalesce(sa.func.sum(c.cost_usd), 0.0).label("cost_usd"),
            sa.func.coalesce(sa.func.sum(sa.case((c.outcome == "error", 1), else_=0)), 0).label("errors"),
        )
        if since is not None:
            query = query.where(c.created_at >= since)
        if until is not None:
            query = query.where(c.created_at < until)
        if columns:
            query = query.group_by(*columns.values())
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        summary = [
            UsageRow(
                requests=int(row["requests"]),
                input_tokens=int(row["input_tokens"]),
                output_tokens=int(row["output_tokens"]),
                cost_usd=float(row["cost_usd"]),
                errors=int(row["errors"]),
                **{("key_id" if g == "key" else g): row[g] for g in groups},
            )
            for row in rows
            if row["requests"]  # an aggregate without GROUP BY yields one row even for no exchanges
        ]
        return sort_usage(summary, groups)

    def spend(self, key_id: str, since: float) -> float:
        c = exchanges.c
        query = sa.select(sa.func.coalesce(sa.func.sum(c.cost_usd), 0.0)).where(
            c.key_id == key_id, c.created_at >= since
        )
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            return float(connection.execute(query).scalar_one())

    def _group_column(self, group: UsageGroup) -> sa.ColumnElement[Any]:
        c = exchanges.c
        if group == "key":
            return c.key_id
        if group == "tenant":
            return c.tenant
        if group == "model":
            return c.model
        # The UTC calendar day of an epoch-seconds column, as YYYY-MM-DD on either backend.
        if self._engine.dialect.name == "postgresql":
            utc = sa.func.timezone("UTC", sa.func.to_timestamp(c.created_at))
            return sa.func.to_char(utc, "YYYY-MM-DD")
        return sa.func.strftime("%Y-%m-%d", c.created_at, "unixepoch")

    # ------------------------------------------------------------------ virtual keys

    def add_key(self, record: KeyRecord) -> None:
        row = {name: getattr(record, name) for name in _KEY_FIELDS}
        row["models"] = list(record.models)
        try:
            with store_errors(self._url, "write a key to"), write_transaction(self._engine) as connection:
                connection.execute(sa.insert(api_keys), row)
        except sa.exc.IntegrityError:
            raise ValueError(f"a key with id {record.id!r} or the same secret already exists") from None

    def get_key(self, key_id: str) -> KeyRecord | None:
        return self._one_key(api_keys.c.id == key_id)

    def find_key(self, secret_hash: str) -> KeyRecord | None:
        return self._one_key(api_keys.c.secret_hash == secret_hash)

    def list_keys(self, *, tenant: str | None = None, include_revoked: bool = False) -> list[KeyRecord]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with store_errors(self._url, "read keys from"), self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [_key_record(row) for row in rows]

    def revoke_key(self, key_id: str, *, at: float) -> KeyRecord | None:
        update = (
            sa.update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        with store_errors(self._url, "revoke a key in"), write_transaction(self._engine) as connection:
            connection.execute(update)
            row = connection.execute(sa.select(api_keys).where(api_keys.c.id == key_id)).mappings().first()
        return _key_record(row) if row is not None else None

    def has_keys(self) -> bool:
        with store_errors(self._url, "read keys from"), self._engine.connect() as connection:
            return connection.execute(sa.select(api_keys.c.id).limit(1)).first() is not None

    def _one_key(self, condition: sa.ColumnElement[bool]) -> KeyRecord | None:
        with store_errors(self._url, "read keys from"), self._engine.connect() as connection:
            row = connection.execute(sa.select(api_keys).where(condition)).mappings().first()
        return _key_record(row) if row is not None else None

    # ------------------------------------------------------------------ evaluation runs

    def write_eval_run(self, run: EvalRun) -> None:
        row = {
            "id": run.id,
            "suite": run.suite,
            "systems": list(run.systems),
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "summary": plain(run.summary),
        }
        insert = self._insert(eval_runs)
        statement = insert.on_conflict_do_update(
            index_elements=[eval_runs.c.id], set_={name: insert.excluded[name] for name in row if name != "id"}
        )
        with store_errors(self._url, "write an eval run to"), write_transaction(self._engine) as connection:
            connection.execute(statement, row)

    def get_eval_run(self, run_id: str) -> EvalRun | None:
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            row = connection.execute(sa.select(eval_runs).where(eval_runs.c.id == run_id)).mappings().first()
        return _eval_run(row) if row is not None else None

    def list_eval_runs(self, *, limit: int = 50, suite: str | None = None) -> list[EvalRun]:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        query = sa.select(eval_runs)
        if suite is not None:
            query = query.where(eval_runs.c.suite == suite)
        query = query.order_by(eval_runs.c.started_at.desc(), eval_runs.c.id.desc()).limit(limit)
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [_eval_run(row) for row in rows]

    def write_eval_results(self, results: Sequence[EvalResultRecord]) -> None:
        latest = {(r.run_id, r.example_id, r.system): r for r in results}
        if not latest:
            return
        rows = [{name: plain(getattr(r, name)) for name in _EVAL_RESULT_FIELDS} for r in latest.values()]
        insert = self._insert(eval_results)
        keys = ("run_id", "example_id", "system")
        statement = insert.on_conflict_do_update(
            index_elements=[eval_results.c[k] for k in keys],
            set_={name: insert.excluded[name] for name in _EVAL_RESULT_FIELDS if name not in keys},
        )
        with store_errors(self._url, "write eval results to"), write_transaction(self._engine) as connection:
            connection.execute(statement, rows)

    def eval_results(self, run_id: str, *, system: str | None = None) -> list[EvalResultRecord]:
        query = sa.select(eval_results).where(eval_results.c.run_id == run_id)
        if system is not None:
            query = query.where(eval_results.c.system == system)
        query = query.order_by(eval_results.c.system, eval_results.c.example_id)
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [
            EvalResultRecord(**{**row, "scores": row["scores"] or {}, "details": row["details"] or {}}) for row in rows
        ]

    # ------------------------------------------------------------------ helpers

    def _insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT, which has ``on_conflict_do_update`` / ``on_conflict_do_nothing``."""
        if self._engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)


def _exchange_row(record: ExchangeRecord) -> dict[str, Any]:
    return {name: plain(getattr(record, name)) for name in _EXCHANGE_FIELDS}


def _eval_run(row: sa.RowMapping) -> EvalRun:
    return EvalRun(
        id=row["id"],
        suite=row["suite"],
        systems=tuple(row["systems"] or ()),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        summary=row["summary"] or {},
    )


def _key_record(row: sa.RowMapping) -> KeyRecord:
    values = dict(row)
    values["models"] = tuple(values["models"] or ())
    return KeyRecord(**values)


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
