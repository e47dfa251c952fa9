"""The console's queries on PostgreSQL: the same pages, pickers, day counts and series as on SQLite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiestack.server.console import queries
from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.stores.queries import ExchangeFilter, exchange_queries, matches
from aiestack.testing.services import postgres_schema, postgres_url

from .test_console_queries import T0, newest_first, sample, walk

pytestmark = pytest.mark.integration

@pytest.fixture
def pg_store() -> Iterator[SqlExchangeStore]:
    """A store in a fresh schema of the test database (dropped afterwards)."""
    admin_url, why = postgres_url()
    if admin_url is None:
        pytest.skip(why)
    with postgres_schema(admin_url, prefix="aiestack_console") as url:
        store = SqlExchangeStore(url)
        try:
            store.migrate()
            store.write_exchanges(sample())
            yield store
        finally:
            store.close()


@pytest.mark.parametrize(
    "flt",
    [ExchangeFilter(), ExchangeFilter(model="m-large", min_tokens=100), ExchangeFilter(guard_action="any"),
     ExchangeFilter(route="support", cached=True)],
)
def test_pages_on_postgres(pg_store: SqlExchangeStore, flt: ExchangeFilter) -> None:
    expected = newest_first([r for r in sample() if matches(r, flt)])
    assert [i for p in walk(pg_store, flt, 5) for i in p] == expected
    small = [i for p in walk_window(pg_store, flt) for i in p]
    assert small == expected


def walk_window(store: SqlExchangeStore, flt: ExchangeFilter) -> list[list[str]]:
    pages, after = [], None
    while True:
        page = queries.list_page(exchange_queries(store), flt, feedback=store, after=after, limit=3, scan_window=7)
        pages.append([r.id for r in page.records])
        if page.next is None:
            return pages
        after = queries.Cursor.decode(page.next.encode())


def test_pickers_days_and_series_on_postgres(pg_store: SqlExchangeStore) -> None:
    assert queries.distinct_values(exchange_queries(pg_store))["route"] == ["search", "support"]
    assert queries.day_counts(exchange_queries(pg_store), since=T0 - 86400, until=T0 + 2 * 86400) == {
        "2025-10-09": sum(1 for r in sample() if r.created_at < 1_760_054_400),
        **({"2025-10-10": n} if (n := sum(1 for r in sample() if r.created_at >= 1_760_054_400)) else {}),
    }
    buckets = queries.series(exchange_queries(pg_store), since=T0, until=T0 + 7200, width_s=3600)
    assert sum(b.requests for b in buckets) == sum(1 for r in sample() if T0 <= r.created_at < T0 + 7200)
