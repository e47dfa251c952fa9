"""What the console reads: filtered exchange pages (keyset pagination), metric series, day counts.

On a SQL store the queries run in the database (SQLAlchemy Core on the store's engine), each an
index range scan: newest first by ``(created_at, id)``, with the next page starting strictly
below the last row shown (a *keyset*, never ``OFFSET``), so page 2,000 costs what page 1 does.
The filters people pick from a list (model, tenant, key, route, outcome, guard action) each have
a ``(column, created_at)`` index (migrations 0001, 0002, 0007). Numeric filters (latency, tokens,
cost) and the cache flag narrow the same scan.

Any other :class:`~aiestack.stores.base.ExchangeStore` (the memory store) is read through its
protocol and filtered here, with the same semantics: tests check both paths give the same pages.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa

from aiestack.stores.base import ExchangeRecord, ExchangeStore, UsageStore
from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.stores.feedback import FeedbackStore
from aiestack.stores.sql.tables import exchanges

OUTCOMES = ("ok", "error", "blocked", "cached")
GUARD_ACTIONS = ("block", "redact", "flag")
FEEDBACK_FILTERS = ("any", "positive", "negative", "none")
#: How many recent feedback records a feedback filter considers (it pages by exchange ids).
FEEDBACK_SCAN_LIMIT = 5000
MAX_PAGE = 200
#: The most exchanges one page reads to check the filters that have no index of their own.
SCAN_WINDOW = 5_000
#: Equality filters with a ``(column, created_at)`` index, most selective first: the one that
#: leads a filtered scan.
_LEADS = ("key_id", "tenant", "route", "model", "guard_action", "outcome")


@dataclass(frozen=True, slots=True)
class ExchangeFilter:
    """The exchange list's filters; ``None`` means: any. ``since``/``until`` are epoch seconds.

    ``guard_action`` is one of :data:`GUARD_ACTIONS` or ``"any"`` (some guard acted);
    ``feedback`` one of :data:`FEEDBACK_FILTERS` (``none``: no feedback at all).
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


@dataclass(frozen=True, slots=True)
class Page:
    """A page of records; ``next`` continues below it. ``searched`` is set when the page is short
    because the scan window ran out (more matches may be older): ``next`` then continues the search."""

    records: list[ExchangeRecord]
    next: Cursor | None
    searched: int | None = None


def list_page(
    store: ExchangeStore,
    flt: ExchangeFilter,
    *,
    after: Cursor | None = None,
    limit: int = 50,
    scan_window: int = SCAN_WINDOW,
) -> Page:
    """One page of exchanges, newest first, below ``after``; ``next`` is set when more follow.

    Filters without an index of their own (latency, tokens, cost, cache, a second equality) are
    checked within the next ``scan_window`` exchanges of the indexed part of the filter; a page
    that window could not fill ends there, with ``searched`` set and ``next`` continuing below it,
    so that no page ever reads more than ``scan_window`` rows.
    """
    limit = max(1, min(limit, MAX_PAGE))
    ids: set[str] | None = None
    exclude: set[str] | None = None
    if flt.feedback is not None:
        ids, exclude = _feedback_ids(store, flt.feedback)
        if ids is not None and not ids:
            return Page([], None)
    if isinstance(store, SqlExchangeStore):
        rows, floor = _sql_page(store, flt, after, limit + 1, ids, exclude, scan_window)
        if len(rows) <= limit and floor is not None:  # the window was full: older rows may match
            return Page(rows, Cursor(floor, ""), searched=scan_window)
    else:
        rows = _scan_page(store, flt, after, limit + 1, ids, exclude)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, Cursor(rows[-1].created_at, rows[-1].id) if more and rows else None)


def _feedback_ids(store: ExchangeStore, wanted: str) -> tuple[set[str] | None, set[str] | None]:
    """(ids to keep, ids to leave out) for a feedback filter, from the recent feedback records."""
    if not isinstance(store, FeedbackStore):
        return (set(), None) if wanted != "none" else (None, set())
    records = store.list_feedback(limit=FEEDBACK_SCAN_LIMIT)
    if wanted == "none":
        return None, {r.exchange_id for r in records}
    if wanted == "any":
        return {r.exchange_id for r in records}, None
    keep: set[str] = set()
    for r in records:
        if r.value is None:
            continue
        if (wanted == "positive") == (r.value >= 0.5):
            keep.add(r.exchange_id)
    return keep, None


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


def _sql_page(
    store: SqlExchangeStore,
    flt: ExchangeFilter,
    after: Cursor | None,
    limit: int,
    ids: set[str] | None,
    exclude: set[str] | None,
    scan_window: int,
) -> tuple[list[ExchangeRecord], float | None]:
    """The page's rows, and the window's lower time bound when the unindexed filters had one."""
    c = exchanges.c
    indexed, rest = _conditions(flt)
    if ids is not None:
        rest.append(c.id.in_(sorted(ids)))
    if exclude:
        rest.append(c.id.not_in(sorted(exclude)))
    order = (c.created_at.desc(), c.id.desc())
    floor: float | None = None
    with store.engine.connect() as connection:
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
    return [_record(row) for row in rows], floor


def _record(row: sa.RowMapping) -> ExchangeRecord:
    values = dict(row)
    values["request"] = values["request"] or {}
    values["attributes"] = values["attributes"] or {}
    return ExchangeRecord(**values)


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


def _all_records(store: ExchangeStore, *, model: str | None = None, tenant: str | None = None) -> list[ExchangeRecord]:
    return store.list_exchanges(limit=10**9, model=model, tenant=tenant)


def _scan_page(
    store: ExchangeStore,
    flt: ExchangeFilter,
    after: Cursor | None,
    limit: int,
    ids: set[str] | None,
    exclude: set[str] | None,
) -> list[ExchangeRecord]:
    out: list[ExchangeRecord] = []
    for record in _all_records(store, model=flt.model, tenant=flt.tenant):
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
    return out


def distinct_values(store: ExchangeStore) -> dict[str, list[str]]:
    """The models, routes, tenants and keys seen (for the filter pickers), each sorted (at most 500).

    On SQL, a *loose index scan*: a recursive query that jumps from one value to the next along
    the column's index (``MIN(col) WHERE col > previous``), so the cost grows with the number of
    distinct values, not of exchanges (a plain ``DISTINCT`` reads all 100k index entries).
    """
    names = ("model", "route", "tenant", "key_id")
    if isinstance(store, SqlExchangeStore):
        out: dict[str, list[str]] = {}
        with store.engine.connect() as connection:
            for name in names:  # names are this module's constants, never user input
                query = sa.text(
                    f"WITH RECURSIVE v(x, n) AS ("
                    f" SELECT MIN({name}), 1 FROM exchanges"
                    f" UNION ALL SELECT (SELECT MIN({name}) FROM exchanges WHERE {name} > v.x), n + 1"
                    f" FROM v WHERE v.x IS NOT NULL AND n < 500"
                    f") SELECT x FROM v WHERE x IS NOT NULL"
                )
                out[name] = [str(v) for v in connection.execute(query).scalars()]
        return out
    records = _all_records(store)
    return {n: sorted({str(v) for r in records if (v := getattr(r, n)) is not None})[:500] for n in names}


# --------------------------------------------------------------------------- metrics over time

#: The columns a metric series needs, in this order.
_SERIES_COLUMNS = (
    "created_at",
    "total_ms",
    "ttft_ms",
    "tpot_ms",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "cached",
    "outcome",
    "guard_action",
)


@dataclass(frozen=True, slots=True)
class Bucket:
    """Totals of one time bucket (``start`` epoch seconds); percentiles are ``None`` with no data."""

    start: float
    requests: int = 0
    errors: int = 0
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    ttft_p50_ms: float | None = None
    tpot_p50_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cache_hit_rate: float | None = None
    guard_actions: Mapping[str, int] | None = None


def bucket_seconds(span_s: float, *, target: int = 48) -> int:
    """A round bucket width giving at most about ``target`` buckets over ``span_s`` seconds."""
    for width in (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400):
        if span_s / width <= target:
            return width
    return 30 * 86400


#: Above this share of the table, reading a period's rows in table order beats fetching each one
#: through the created_at index (measured on SQLite: about 2x at a third of the table).
_SCAN_SHARE = 0.15


def _series_rows(store: ExchangeStore, since: float, until: float) -> Iterable[tuple[Any, ...]]:
    if isinstance(store, SqlExchangeStore):
        c = exchanges.c
        with store.engine.connect() as connection:
            created: sa.ColumnElement[Any] = c.created_at
            in_range = connection.execute(
                sa.select(sa.func.count()).where(c.created_at >= since, c.created_at < until)
            ).scalar_one()  # an index-only count
            if in_range > 5000:
                total = connection.execute(sa.select(sa.func.count()).select_from(exchanges)).scalar_one()
                if in_range > _SCAN_SHARE * total:
                    created = c.created_at + 0  # an expression: the planner scans the table instead
            query = sa.select(*(c[n] for n in _SERIES_COLUMNS)).where(created >= since, created < until)
            return [tuple(row) for row in connection.execute(query)]
    return [
        tuple(getattr(r, n) for n in _SERIES_COLUMNS)
        for r in _all_records(store)
        if since <= r.created_at < until
    ]


def series(store: ExchangeStore, *, since: float, until: float, width_s: int) -> list[Bucket]:
    """Buckets of ``width_s`` seconds covering ``[since, until)``, empty ones included."""
    start0 = math.floor(since / width_s) * width_s
    count = max(1, math.ceil((until - start0) / width_s))
    grouped: list[list[tuple[Any, ...]]] = [[] for _ in range(count)]
    for row in _series_rows(store, since, until):
        index = int((row[0] - start0) // width_s)
        if 0 <= index < count:
            grouped[index].append(row)
    return [_bucket(start0 + i * width_s, rows) for i, rows in enumerate(grouped)]


def _bucket(start: float, rows: Sequence[tuple[Any, ...]]) -> Bucket:
    if not rows:
        return Bucket(start)
    total = sorted(r[1] for r in rows if r[1] is not None)
    ttft = sorted(r[2] for r in rows if r[2] is not None)
    tpot = sorted(r[3] for r in rows if r[3] is not None)
    answered = [r for r in rows if r[8] in ("ok", "cached")]
    actions: dict[str, int] = {}
    for r in rows:
        if r[9] is not None:
            actions[r[9]] = actions.get(r[9], 0) + 1
    return Bucket(
        start=start,
        requests=len(rows),
        errors=sum(1 for r in rows if r[8] == "error"),
        latency_p50_ms=percentile(total, 50),
        latency_p95_ms=percentile(total, 95),
        ttft_p50_ms=percentile(ttft, 50),
        tpot_p50_ms=percentile(tpot, 50),
        input_tokens=sum(int(r[4] or 0) for r in rows),
        output_tokens=sum(int(r[5] or 0) for r in rows),
        cost_usd=sum(float(r[6] or 0.0) for r in rows),
        cache_hit_rate=(sum(1 for r in answered if r[7]) / len(answered)) if answered else None,
        guard_actions=actions,
    )


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of sorted values by linear interpolation; ``None`` if empty."""
    if not ordered:
        return None
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def day_counts(store: ExchangeStore, *, since: float, until: float | None = None) -> dict[str, int]:
    """Exchanges per UTC day (``YYYY-MM-DD``), imported conversations included (they are exchanges)."""
    until = time.time() + 86400 if until is None else until
    if isinstance(store, SqlExchangeStore):
        # Whole days since the epoch, grouped on the covering (created_at) index: cheaper than
        # formatting a date per row, and the same on SQLite (CAST truncates) and PostgreSQL.
        c = exchanges.c
        whole_day: sa.ColumnElement[Any] = (
            sa.cast(c.created_at / 86400, sa.Integer)
            if store.engine.dialect.name == "sqlite"
            else sa.func.floor(c.created_at / 86400)
        )
        query = (
            sa.select(whole_day.label("day"), sa.func.count().label("n"))
            .where(c.created_at >= since, c.created_at < until)
            .group_by(whole_day)
        )
        with store.engine.connect() as connection:
            return {
                time.strftime("%Y-%m-%d", time.gmtime(int(d) * 86400)): int(n)
                for d, n in connection.execute(query)
            }
    if isinstance(store, UsageStore):
        rows = store.usage_summary(by=("day",), since=since, until=until)
        return {row.day: row.requests for row in rows if row.day is not None}
    out: dict[str, int] = {}
    for r in _all_records(store):
        if since <= r.created_at < until:
            day = time.strftime("%Y-%m-%d", time.gmtime(r.created_at))
            out[day] = out.get(day, 0) + 1
    return out


def first_exchange_at(store: ExchangeStore) -> float | None:
    """When the oldest stored exchange was created (an index lookup on SQL); ``None`` for none."""
    if isinstance(store, SqlExchangeStore):
        with store.engine.connect() as connection:
            value = connection.execute(sa.select(sa.func.min(exchanges.c.created_at))).scalar()
        return float(value) if value is not None else None
    records = _all_records(store)
    return min((r.created_at for r in records), default=None)
