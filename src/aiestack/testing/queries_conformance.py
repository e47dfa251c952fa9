"""Conformance test mixin for the exchange-query capability (:mod:`aiestack.stores.queries`).

A store's test class inherits :class:`ExchangeQueriesConformance` and provides an ``exchange_store``
fixture yielding an empty, migrated :class:`~aiestack.stores.base.ExchangeStore`. The suite fills it
with :func:`query_sample` and checks :func:`~aiestack.stores.queries.exchange_queries` of the store
(its own queries, or the scan through its protocol) against the filters applied in Python.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable

import pytest

from aiestack.stores.base import ExchangeRecord, ExchangeStore
from aiestack.stores.queries import (
    PICKER_COLUMNS,
    Cursor,
    ExchangeFilter,
    ExchangeQueries,
    exchange_queries,
    matches,
)

T0 = 1_760_000_000.0
#: A window wide enough that no page of the sample is cut short by it.
WIDE = 1_000_000


def query_sample(n: int = 120, seed: int = 7) -> list[ExchangeRecord]:
    """Exchanges over ``n`` minutes with varied fields; pairs of each five share a timestamp (ties)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.append(
            ExchangeRecord(
                id=f"ex_{i:04d}",
                created_at=T0 + 60 * (i - i % 5 // 4),  # i=3 and i=4 of each five share a second
                model=rng.choice(["m-small", "m-large"]),
                outcome=rng.choice(["ok", "ok", "ok", "error", "cached", "blocked"]),
                tenant=rng.choice(["acme", "globex"]),
                key_id=rng.choice([None, "key_a", "key_b"]),
                route=rng.choice([None, "support", "search"]),
                input_tokens=rng.randint(1, 500),
                output_tokens=rng.randint(0, 300),
                total_ms=rng.uniform(5, 3000),
                ttft_ms=rng.uniform(1, 500),
                tpot_ms=rng.uniform(1, 40),
                cost_usd=rng.choice([None, rng.uniform(0, 0.01)]),
                cached=rng.random() < 0.2,
                guard_action=rng.choice([None, None, None, "block", "redact", "flag"]),
            )
        )
    return out


def _newest_first(records: Iterable[ExchangeRecord]) -> list[str]:
    return [r.id for r in sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)]


def _walk(queries: ExchangeQueries, flt: ExchangeFilter, limit: int, **kwargs: object) -> list[str]:
    """Every page's ids, following the keyset cursor from the last row of each page."""
    out: list[str] = []
    after: Cursor | None = None
    for _ in range(1000):
        rows, floor = queries.page_exchanges(flt, after=after, limit=limit, scan_window=WIDE, **kwargs)  # type: ignore[arg-type]
        assert floor is None  # the window is wider than the sample
        out.extend(r.id for r in rows)
        if len(rows) < limit:
            return out
        after = Cursor(rows[-1].created_at, rows[-1].id)
    raise AssertionError("paging does not terminate")


FILTERS = [
    ExchangeFilter(),
    ExchangeFilter(model="m-large"),
    ExchangeFilter(tenant="acme", outcome="ok"),
    ExchangeFilter(route="support", key_id="key_b"),
    ExchangeFilter(min_latency_ms=1000, max_latency_ms=2500),
    ExchangeFilter(min_tokens=400),
    ExchangeFilter(min_cost_usd=0.005),
    ExchangeFilter(cached=False, outcome="error"),
    ExchangeFilter(guard_action="block"),
    ExchangeFilter(guard_action="any", tenant="globex"),
    ExchangeFilter(since=T0 + 600, until=T0 + 3600),
]


class ExchangeQueriesConformance:
    """The exchange queries' contract. Needs an ``exchange_store`` fixture yielding an empty store."""

    def test_an_empty_store_answers_empty(self, exchange_store: ExchangeStore) -> None:
        queries = exchange_queries(exchange_store)
        assert isinstance(queries, ExchangeQueries)
        assert queries.page_exchanges(ExchangeFilter(), after=None, limit=10, scan_window=WIDE) == ([], None)
        assert queries.first_exchange_at() is None
        assert queries.day_counts(0, time.time()) == {}
        assert queries.distinct_values() == {name: [] for name in PICKER_COLUMNS}

    @pytest.mark.parametrize("flt", FILTERS, ids=lambda f: ",".join(f.active()) or "none")
    def test_keyset_pages_hold_exactly_the_matches_newest_first(
        self, exchange_store: ExchangeStore, flt: ExchangeFilter
    ) -> None:
        sample = query_sample()
        exchange_store.write_exchanges(sample)
        expected = _newest_first(r for r in sample if matches(r, flt))
        assert expected
        assert _walk(exchange_queries(exchange_store), flt, limit=7) == expected

    def test_ids_and_exclude_narrow_a_page(self, exchange_store: ExchangeStore) -> None:
        sample = query_sample()
        exchange_store.write_exchanges(sample)
        queries = exchange_queries(exchange_store)
        wanted = {"ex_0003", "ex_0004", "ex_0050", "ex_0119", "ex_9999"}
        assert _walk(queries, ExchangeFilter(), limit=2, ids=wanted) == ["ex_0119", "ex_0050", "ex_0004", "ex_0003"]
        left = _walk(queries, ExchangeFilter(), limit=50, exclude={"ex_0003", "ex_0119"})
        assert left == [i for i in _newest_first(sample) if i not in ("ex_0003", "ex_0119")]

    def test_a_narrow_window_ends_a_page_early_and_says_where(self, exchange_store: ExchangeStore) -> None:
        sample = query_sample()
        exchange_store.write_exchanges(sample)
        flt = ExchangeFilter(min_tokens=400)
        rows, floor = exchange_queries(exchange_store).page_exchanges(flt, after=None, limit=100, scan_window=10)
        matching = _newest_first(r for r in sample if matches(r, flt))
        if floor is None:  # a scan reads everything: the page is whole
            assert [r.id for r in rows] == matching
        else:  # only the window's rows were checked, and every match in it is on the page
            in_window = [r for r in sample if r.created_at >= floor]
            assert len(in_window) >= 10
            assert [r.id for r in rows] == _newest_first(r for r in in_window if matches(r, flt))

    def test_distinct_values_are_sorted_and_complete(self, exchange_store: ExchangeStore) -> None:
        sample = query_sample()
        exchange_store.write_exchanges(sample)
        values = exchange_queries(exchange_store).distinct_values()
        for name in PICKER_COLUMNS:
            assert values[name] == sorted({str(v) for r in sample if (v := getattr(r, name)) is not None})

    def test_series_rows_day_counts_and_the_first_exchange(self, exchange_store: ExchangeStore) -> None:
        sample = query_sample()
        exchange_store.write_exchanges(sample)
        queries = exchange_queries(exchange_store)
        since, until = T0 + 600, T0 + 3600
        columns = ("created_at", "total_ms", "outcome", "cached")
        rows = sorted(queries.series_rows(since, until, columns))
        assert rows == sorted(
            (r.created_at, r.total_ms, r.outcome, r.cached) for r in sample if since <= r.created_at < until
        )
        days: dict[str, int] = {}
        for r in sample:
            day = time.strftime("%Y-%m-%d", time.gmtime(r.created_at))
            days[day] = days.get(day, 0) + 1
        assert queries.day_counts(T0 - 86400, T0 + 2 * 86400) == days
        assert queries.day_counts(T0 + 10 * 86400, T0 + 11 * 86400) == {}
        assert queries.first_exchange_at() == min(r.created_at for r in sample)
