"""The exchange-query capability: what the console asks of the exchange store, beyond the protocol.

Filtered pages of exchanges (keyset pagination, newest first), the distinct values of the picker
columns, the rows of a metric series, exchanges per day and the first exchange's time. A store
that can answer these in its database implements :class:`ExchangeQueries` (the SQL store, see
:mod:`aiestack.stores.queries_sql`); any other :class:`~aiestack.stores.base.ExchangeStore` (the
memory store, plugin stores) is read through its protocol by :class:`ScanQueries`, with the same
semantics: the conformance suite (:class:`aiestack.testing.queries.ExchangeQueriesConformance`)
runs against both. :func:`exchange_queries` picks the one for a store.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol, runtime_checkable

from aiestack.stores.base import ExchangeRecord, ExchangeStore, UsageStore

#: The picker columns :meth:`ExchangeQueries.distinct_values` lists.
PICKER_COLUMNS = ("model", "route", "tenant", "key_id")
#: The most distinct values listed per column.
MAX_DISTINCT = 500


@dataclass(frozen=True, slots=True)
class ExchangeFilter:
    """The exchange list's filters; ``None`` means: any. ``since``/``until`` are epoch seconds.

    ``guard_action`` is one of ``block``, ``redact``, ``flag`` or ``"any"`` (some guard acted);
    ``feedback`` one of ``any``, ``positive``, ``negative``, ``none`` (no feedback at all) and is
    resolved by the caller into exchange ids (it is not a column of the exchange).
    Latency is the exchange's total (ms); tokens are input plus output.
    """

    since: float | None = None
    until: float | None = None
    tenant: str | None = None
    key_id: str | None = None
    route: str | None = None
    model: str | None = None
    outcome: str | None = None
    min_latency_ms: float | None = None
    max_latency_ms: float | None = None
    min_tokens: int | None = None
    min_cost_usd: float | None = None
    cached: bool | None = None
    guard_action: str | None = None
    feedback: str | None = None

    def active(self) -> dict[str, Any]:
        """The filters set, by name (for links that keep them)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True, slots=True)
class Cursor:
    """A position in the newest-first order: the page continues strictly below it."""

    created_at: float
    id: str

    def encode(self) -> str:
        return f"{self.created_at!r},{self.id}"

    @classmethod
    def decode(cls, text: str | None) -> Cursor | None:
        """The cursor in ``text``, or ``None`` for a missing or malformed one (the first page)."""
        if not text:
            return None
        stamp, _, exchange_id = text.partition(",")
        try:
            value = float(stamp)
        except ValueError:
            return None
        if not math.isfinite(value):
            return None
        return cls(value, exchange_id)  # an empty id: everything strictly older than the time


@runtime_checkable
class ExchangeQueries(Protocol):
    """Queries over the stored exchanges that a database answers better than a scan."""

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
        """Up to ``limit`` exchanges passing ``flt`` (its feedback filter aside), newest first, strictly
        below ``after``; only ids in ``ids`` (when given), none in ``exclude``.

        Filters without an index of their own may be checked within the next ``scan_window``
        exchanges of the indexed part only: the second value is then the window's lower time bound
        (older rows may match too), else ``None``.
        """
        ...

    def distinct_values(self) -> dict[str, list[str]]:
        """The values of each of :data:`PICKER_COLUMNS` seen, sorted, at most :data:`MAX_DISTINCT` each."""
        ...

    def series_rows(self, since: float, until: float, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """``columns`` of every exchange created in ``[since, until)``, in any order."""
        ...

    def day_counts(self, since: float, until: float) -> dict[str, int]:
        """Exchanges per UTC day (``YYYY-MM-DD``) created in ``[since, until)``."""
        ...

    def first_exchange_at(self) -> float | None:
        """When the oldest stored exchange was created; ``None`` for none."""
        ...


def matches(record: ExchangeRecord, flt: ExchangeFilter) -> bool:
    """Whether ``record`` passes ``flt`` (the feedback filter aside): the SQL conditions in Python."""
    for name in ("tenant", "key_id", "route", "model", "outcome"):
        value = getattr(flt, name)
        if value is not None and getattr(record, name) != value:
            return False
    checks: list[tuple[Any, Callable[[Any], bool]]] = [
        (flt.since, lambda v: record.created_at >= v),
        (flt.until, lambda v: record.created_at < v),
        (flt.min_latency_ms, lambda v: record.total_ms is not None and record.total_ms >= v),
        (flt.max_latency_ms, lambda v: record.total_ms is not None and record.total_ms <= v),
        (flt.min_tokens, lambda v: record.input_tokens + record.output_tokens >= v),
        (flt.min_cost_usd, lambda v: record.cost_usd is not None and record.cost_usd >= v),
        (flt.cached, lambda v: record.cached is v),
    ]
    if not all(check(value) for value, check in checks if value is not None):
        return False
    if flt.guard_action == "any":
        return record.guard_action is not None
    return flt.guard_action is None or record.guard_action == flt.guard_action


class ScanQueries:
    """:class:`ExchangeQueries` for any exchange store, read through its protocol and filtered here."""

    def __init__(self, store: ExchangeStore) -> None:
        self._store = store

    def _records(self, *, model: str | None = None, tenant: str | None = None) -> list[ExchangeRecord]:
        return self._store.list_exchanges(limit=10**9, model=model, tenant=tenant)

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
        out: list[ExchangeRecord] = []
        for record in self._records(model=flt.model, tenant=flt.tenant):
            if after is not None and (record.created_at, record.id) >= (after.created_at, after.id):
                continue
            if ids is not None and record.id not in ids:
                continue
            if exclude and record.id in exclude:
                continue
            if matches(record, flt):
                out.append(record)
                if len(out) >= limit:
                    break
        return out, None

    def distinct_values(self) -> dict[str, list[str]]:
        records = self._records()
        return {
            n: sorted({str(v) for r in records if (v := getattr(r, n)) is not None})[:MAX_DISTINCT]
            for n in PICKER_COLUMNS
        }

    def series_rows(self, since: float, until: float, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        return [tuple(getattr(r, n) for n in columns) for r in self._records() if since <= r.created_at < until]

    def day_counts(self, since: float, until: float) -> dict[str, int]:
        if isinstance(self._store, UsageStore):
            rows = self._store.usage_summary(by=("day",), since=since, until=until)
            return {row.day: row.requests for row in rows if row.day is not None}
        out: dict[str, int] = {}
        for r in self._records():
            if since <= r.created_at < until:
                day = time.strftime("%Y-%m-%d", time.gmtime(r.created_at))
                out[day] = out.get(day, 0) + 1
        return out

    def first_exchange_at(self) -> float | None:
        return min((r.created_at for r in self._records()), default=None)


def exchange_queries(store: ExchangeStore) -> ExchangeQueries:
    """The store's own queries when it has them (SQL), else a scan through its protocol."""
    if isinstance(store, ExchangeQueries):
        return store
    return ScanQueries(store)
