"""What the console reads: filtered exchange pages, metric series, day counts.

Everything here reads the stack's exchange-query capability (``stack.queries``, opened with
``open_store(store.url, "queries")``, :mod:`aiestack.stores.queries`): in the database for the SQL
store (keyset pagination on indexes), a plugin's for its backend, by a scan through the
:class:`~aiestack.stores.base.ExchangeStore` protocol for any other. This module adds what is the
console's own: resolving the feedback filter into exchange ids, paging, and bucketing a series.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiestack.stores.base import ExchangeRecord
from aiestack.stores.feedback import FeedbackStore
from aiestack.stores.queries import Cursor, ExchangeFilter, ExchangeQueries

OUTCOMES = ("ok", "error", "blocked", "cached")
GUARD_ACTIONS = ("block", "redact", "flag")
FEEDBACK_FILTERS = ("any", "positive", "negative", "none")
#: How many recent feedback records a feedback filter considers (it pages by exchange ids).
FEEDBACK_SCAN_LIMIT = 5000
MAX_PAGE = 200
#: The most exchanges one page reads to check the filters that have no index of their own.
SCAN_WINDOW = 5_000


@dataclass(frozen=True, slots=True)
class Page:
    """A page of records; ``next`` continues below it. ``searched`` is set when the page is short
    because the scan window ran out (more matches may be older): ``next`` then continues the search."""

    records: list[ExchangeRecord]
    next: Cursor | None
    searched: int | None = None


def list_page(
    queries: ExchangeQueries,
    flt: ExchangeFilter,
    *,
    feedback: object = None,
    after: Cursor | None = None,
    limit: int = 50,
    scan_window: int = SCAN_WINDOW,
) -> Page:
    """One page of exchanges, newest first, below ``after``; ``next`` is set when more follow.

    Filters without an index of their own (latency, tokens, cost, cache, a second equality) are
    checked within the next ``scan_window`` exchanges of the indexed part of the filter; a page
    that window could not fill ends there, with ``searched`` set and ``next`` continuing below it,
    so that no page ever reads more than ``scan_window`` rows. ``feedback`` is the store that
    holds feedback (a :class:`~aiestack.stores.feedback.FeedbackStore`), for a feedback filter.
    """
    limit = max(1, min(limit, MAX_PAGE))
    ids: set[str] | None = None
    exclude: set[str] | None = None
    if flt.feedback is not None:
        ids, exclude = _feedback_ids(feedback, flt.feedback)
        if ids is not None and not ids:
            return Page([], None)
    rows, floor = queries.page_exchanges(
        flt, after=after, limit=limit + 1, ids=ids, exclude=exclude, scan_window=scan_window
    )
    if len(rows) <= limit and floor is not None:  # the window was full: older rows may match
        return Page(rows, Cursor(floor, ""), searched=scan_window)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, Cursor(rows[-1].created_at, rows[-1].id) if more and rows else None)


def _feedback_ids(store: object, wanted: str) -> tuple[set[str] | None, set[str] | None]:
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


def distinct_values(queries: ExchangeQueries) -> dict[str, list[str]]:
    """The models, routes, tenants and keys seen (for the filter pickers), each sorted (at most 500)."""
    return queries.distinct_values()


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


def series(queries: ExchangeQueries, *, since: float, until: float, width_s: int) -> list[Bucket]:
    """Buckets of ``width_s`` seconds covering ``[since, until)``, empty ones included."""
    start0 = math.floor(since / width_s) * width_s
    count = max(1, math.ceil((until - start0) / width_s))
    grouped: list[list[tuple[Any, ...]]] = [[] for _ in range(count)]
    for row in queries.series_rows(since, until, _SERIES_COLUMNS):
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


def day_counts(queries: ExchangeQueries, *, since: float, until: float | None = None) -> dict[str, int]:
    """Exchanges per UTC day (``YYYY-MM-DD``), imported conversations included (they are exchanges)."""
    return queries.day_counts(since, time.time() + 86400 if until is None else until)


def first_exchange_at(queries: ExchangeQueries) -> float | None:
    """When the oldest stored exchange was created (an index lookup on SQL); ``None`` for none."""
    return queries.first_exchange_at()
