"""The exchange queries of :mod:`aiestack.stores.queries` in SQL (SQLite, PostgreSQL), for the SQL store.

Each query is an index range scan: newest first by ``(created_at, id)``, with the next page
starting strictly below the last row shown (a *keyset*, never ``OFFSET``), so page 2,000 costs what
page 1 does. The filters people pick from a list (model, tenant, key, route, outcome, guard action)
each have a ``(column, created_at)`` index (migrations 0001, 0002, 0007). Numeric filters (latency,
tokens, cost) and the cache flag narrow the same scan.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from typing import Any

import sqlalchemy as sa

from aiestack.stores.base import ExchangeRecord
from aiestack.stores.queries import MAX_DISTINCT, PICKER_COLUMNS, Cursor, ExchangeFilter
from aiestack.stores.sql.tables import exchanges

#: Equality filters with a ``(column, created_at)`` index, most selective first: the one that
#: leads a filtered scan.
_LEADS = ("key_id", "tenant", "route", "model", "guard_action", "outcome")
#: Above this share of the table, reading a period's rows in table order beats fetching each one
#: through the created_at index (measured on SQLite: about 2x at a third of the table).
_SCAN_SHARE = 0.15
#: The JSON columns of an exchange row, ``{}`` when NULL.
_JSON_FIELDS = ("request", "attributes")


def exchange_record(row: sa.RowMapping) -> ExchangeRecord:
    """The record of an ``exchanges`` row."""
    values = dict(row)
    for name in _JSON_FIELDS:
        values[name] = values[name] or {}
    return ExchangeRecord(**values)


class SqlQueriesMixin:
    """:class:`~aiestack.stores.queries.ExchangeQueries` on the store's engine (``self._engine``)."""

    _engine: sa.Engine

    def page_exchanges(
        self,
        flt: ExchangeFilter,
        *,
        after: Cursor | None,
        limit: int,
        ids: Collection[str] | None = None,
        exclude: Collection[str] | None = None,
        scan_window: int,
    ) -> tuple[list[ExchangeRecord], float | None]:
        c = exchanges.c
        indexed, rest = _conditions(flt)
        if ids is not None:
            rest.append(c.id.in_(sorted(ids)))
        if exclude:
            rest.append(c.id.not_in(sorted(exclude)))
        order = (c.created_at.desc(), c.id.desc())
        floor: float | None = None
        with self._engine.connect() as connection:
            if rest:
                # The window: how far back the next scan_window rows of the indexed part reach. Only
                # created_at is read, so this is an index-only scan.
                bound = (
                    sa.select(c.created_at)
                    .where(*indexed, *_keyset(after))
                    .order_by(c.created_at.desc())
                    .offset(scan_window - 1)
                    .limit(1)
                )
                floor = connection.execute(bound).scalar()
            query = sa.select(exchanges).where(*indexed, *_keyset(after), *rest)
            if floor is not None:
                query = query.where(c.created_at >= floor)
            rows = connection.execute(query.order_by(*order).limit(limit)).mappings().all()
        return [exchange_record(row) for row in rows], floor

    def distinct_values(self) -> dict[str, list[str]]:
        """A *loose index scan* per column: a recursive query that jumps from one value to the next
        along the column's index (``MIN(col) WHERE col > previous``), so the cost grows with the
        number of distinct values, not of exchanges (a plain ``DISTINCT`` reads every index entry)."""
        out: dict[str, list[str]] = {}
        with self._engine.connect() as connection:
            for name in PICKER_COLUMNS:  # names are this module's constants, never user input
                query = sa.text(
                    f"WITH RECURSIVE v(x, n) AS ("
                    f" SELECT MIN({name}), 1 FROM exchanges"
                    f" UNION ALL SELECT (SELECT MIN({name}) FROM exchanges WHERE {name} > v.x), n + 1"
                    f" FROM v WHERE v.x IS NOT NULL AND n < {MAX_DISTINCT}"
                    f") SELECT x FROM v WHERE x IS NOT NULL"
                )
                out[name] = [str(v) for v in connection.execute(query).scalars()]
        return out

    def series_rows(self, since: float, until: float, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        c = exchanges.c
        with self._engine.connect() as connection:
            created: sa.ColumnElement[Any] = c.created_at
            in_range = connection.execute(
                sa.select(sa.func.count()).where(c.created_at >= since, c.created_at < until)
            ).scalar_one()  # an index-only count
            if in_range > 5000:
                total = connection.execute(sa.select(sa.func.count()).select_from(exchanges)).scalar_one()
                if in_range > _SCAN_SHARE * total:
                    created = c.created_at + 0  # an expression: the planner scans the table instead
            query = sa.select(*(c[n] for n in columns)).where(created >= since, created < until)
            return [tuple(row) for row in connection.execute(query)]

    def day_counts(self, since: float, until: float) -> dict[str, int]:
        # Whole days since the epoch, grouped on the covering (created_at) index: cheaper than
        # formatting a date per row, and the same on SQLite (CAST truncates) and PostgreSQL.
        c = exchanges.c
        whole_day: sa.ColumnElement[Any] = (
            sa.cast(c.created_at / 86400, sa.Integer)
            if self._engine.dialect.name == "sqlite"
            else sa.func.floor(c.created_at / 86400)
        )
        query = (
            sa.select(whole_day.label("day"), sa.func.count().label("n"))
            .where(c.created_at >= since, c.created_at < until)
            .group_by(whole_day)
        )
        with self._engine.connect() as connection:
            return {
                time.strftime("%Y-%m-%d", time.gmtime(int(d) * 86400)): int(n) for d, n in connection.execute(query)
            }

    def first_exchange_at(self) -> float | None:
        with self._engine.connect() as connection:
            value = connection.execute(sa.select(sa.func.min(exchanges.c.created_at))).scalar()
        return float(value) if value is not None else None


def _lead(flt: ExchangeFilter) -> str | None:
    """The equality filter that leads the index scan (the first set of :data:`_LEADS`)."""
    for name in _LEADS:
        value = getattr(flt, name)
        if value is not None and value != "any":
            return name
    return None


def _conditions(flt: ExchangeFilter) -> tuple[list[sa.ColumnElement[bool]], list[sa.ColumnElement[bool]]]:
    """(the indexed part: the lead equality and the time range; every other condition)."""
    c = exchanges.c
    lead = _lead(flt)
    indexed: list[sa.ColumnElement[bool]] = []
    rest: list[sa.ColumnElement[bool]] = []
    for name in ("tenant", "key_id", "route", "model", "outcome"):
        value = getattr(flt, name)
        if value is not None:
            (indexed if name == lead else rest).append(c[name] == value)
    if flt.since is not None:
        indexed.append(c.created_at >= flt.since)
    if flt.until is not None:
        indexed.append(c.created_at < flt.until)
    if flt.min_latency_ms is not None:
        rest.append(c.total_ms >= flt.min_latency_ms)
    if flt.max_latency_ms is not None:
        rest.append(c.total_ms <= flt.max_latency_ms)
    if flt.min_tokens is not None:
        rest.append(c.input_tokens + c.output_tokens >= flt.min_tokens)
    if flt.min_cost_usd is not None:
        rest.append(c.cost_usd >= flt.min_cost_usd)
    if flt.cached is not None:
        rest.append(c.cached.is_(flt.cached))
    if flt.guard_action == "any":
        rest.append(c.guard_action.is_not(None))
    elif flt.guard_action is not None:
        (indexed if lead == "guard_action" else rest).append(c.guard_action == flt.guard_action)
    return indexed, rest


def _keyset(after: Cursor | None) -> list[sa.ColumnElement[bool]]:
    if after is None:
        return []
    c = exchanges.c
    # The first conjunct is the index range; the second breaks ties on created_at by id.
    return [c.created_at <= after.created_at, sa.or_(c.created_at < after.created_at, c.id < after.id)]
