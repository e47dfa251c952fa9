"""The console's queries: keyset pages, filters and series, the same on the SQL and memory stores."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiestack.server.console import queries
from aiestack.stores.base import ExchangeRecord, ExchangeStore
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.stores.queries import Cursor, ExchangeFilter, exchange_queries, matches

pytestmark = pytest.mark.unit

T0 = 1_760_000_000.0


def sample(n: int = 120, seed: int = 7) -> list[ExchangeRecord]:
    """Exchanges over ``n`` minutes with varied fields; every fifth pair shares a timestamp (ties)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        created = T0 + 60 * (i - i % 5 // 4)  # i=3 and i=4 of each five share a second
        out.append(
            ExchangeRecord(
                id=f"ex_{i:04d}",
                created_at=created,
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


@pytest.fixture(params=["sqlite", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ExchangeStore]:
    if request.param == "memory":
        memory = MemoryExchangeStore()
        memory.write_exchanges(sample())
        yield memory
        return
    sql = SqlExchangeStore(f"sqlite:///{tmp_path / 'console.db'}")
    sql.migrate()
    sql.write_exchanges(sample())
    yield sql
    sql.close()


def newest_first(records: list[ExchangeRecord]) -> list[str]:
    return [r.id for r in sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)]


def walk(store: ExchangeStore, flt: ExchangeFilter, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    after: Cursor | None = None
    while True:
        page = queries.list_page(exchange_queries(store), flt, feedback=store, after=after, limit=limit)
        pages.append([r.id for r in page.records])
        if page.next is None:
            return pages
        after = Cursor.decode(page.next.encode())
        assert len(pages) < 500, "paging does not terminate"


def test_keyset_pages_cover_every_exchange_once_newest_first(store: ExchangeStore) -> None:
    pages = walk(store, ExchangeFilter(), limit=7)
    flat = [i for p in pages for i in p]
    assert flat == newest_first(sample())
    assert all(len(p) == 7 for p in pages[:-1]) and 0 < len(pages[-1]) <= 7


@pytest.mark.parametrize(
    "flt",
    [
        ExchangeFilter(model="m-large"),
        ExchangeFilter(tenant="acme", outcome="ok"),
        ExchangeFilter(route="support"),
        ExchangeFilter(key_id="key_b"),
        ExchangeFilter(min_latency_ms=1000, max_latency_ms=2500),
        ExchangeFilter(min_tokens=400),
        ExchangeFilter(min_cost_usd=0.005),
        ExchangeFilter(cached=True),
        ExchangeFilter(cached=False, outcome="error"),
        ExchangeFilter(guard_action="block"),
        ExchangeFilter(guard_action="any"),
        ExchangeFilter(since=T0 + 600, until=T0 + 3600),
    ],
)
def test_filters_select_exactly_the_matching_exchanges(store: ExchangeStore, flt: ExchangeFilter) -> None:
    expected = newest_first([r for r in sample() if matches(r, flt)])
    assert expected, "the sample must hold some matches for this filter"
    assert len(expected) < len(sample())
    assert [i for p in walk(store, flt, limit=5) for i in p] == expected


def test_predicates_agree_with_a_hand_written_check() -> None:
    records = sample()
    slow = [r.id for r in records if r.total_ms is not None and r.total_ms >= 1000 and r.tenant == "acme"]
    fast = [r.id for r in records if matches(r, ExchangeFilter(min_latency_ms=1000, tenant="acme"))]
    assert slow == fast and slow


def test_sql_and_memory_pages_agree(tmp_path: Path) -> None:
    sql = SqlExchangeStore(f"sqlite:///{tmp_path / 'a.db'}")
    sql.migrate()
    sql.write_exchanges(sample())
    memory = MemoryExchangeStore()
    memory.write_exchanges(sample())
    flt = ExchangeFilter(outcome="ok", min_tokens=100)
    assert walk(sql, flt, 4) == walk(memory, flt, 4)
    sql.close()


def test_cursors_round_trip_and_malformed_ones_start_over() -> None:
    cursor = Cursor(1_760_000_000.123456, "ex_abc")
    assert Cursor.decode(cursor.encode()) == cursor
    for bad in (None, "", "x,ex_1", "nan,ex_1", "inf,ex_1"):
        assert Cursor.decode(bad) is None


def test_series_buckets_count_percentiles_and_rates(store: ExchangeStore) -> None:
    records = sample()
    buckets = queries.series(exchange_queries(store), since=T0, until=T0 + 3600, width_s=900)
    assert [b.start for b in buckets] == [T0 - T0 % 900 + i * 900 for i in range(len(buckets))]
    assert sum(b.requests for b in buckets) == sum(1 for r in records if T0 <= r.created_at < T0 + 3600)
    first = [r for r in records if buckets[0].start <= r.created_at < buckets[0].start + 900]
    assert buckets[0].requests == len(first)
    latencies = sorted(r.total_ms for r in first if r.total_ms is not None)
    assert buckets[0].latency_p50_ms == pytest.approx(queries.percentile(latencies, 50))
    p50, p95 = buckets[0].latency_p50_ms, buckets[0].latency_p95_ms
    assert p50 is not None and p95 is not None and p95 >= p50
    answered = [r for r in first if r.outcome in ("ok", "cached")]
    assert buckets[0].cache_hit_rate == pytest.approx(sum(r.cached for r in answered) / len(answered))
    blocks = sum(1 for r in first if r.guard_action == "block")
    assert (buckets[0].guard_actions or {}).get("block", 0) == blocks
    assert buckets[0].errors == sum(1 for r in first if r.outcome == "error")


def test_empty_buckets_are_kept_so_gaps_show() -> None:
    hour = T0 - T0 % 3600
    memory = MemoryExchangeStore()
    memory.write_exchanges([dataclasses.replace(sample(1)[0], created_at=hour + 10)])
    buckets = queries.series(exchange_queries(memory), since=hour - 7200, until=hour + 3600, width_s=3600)
    assert [b.start for b in buckets] == [hour - 7200, hour - 3600, hour]
    assert [b.requests for b in buckets] == [0, 0, 1]
    assert buckets[0].latency_p50_ms is None and buckets[0].cache_hit_rate is None


def test_percentile_interpolates() -> None:
    assert queries.percentile([], 50) is None
    assert queries.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert queries.percentile([10.0], 95) == 10.0


def test_bucket_width_is_round_and_bounded() -> None:
    assert queries.bucket_seconds(3600) == 300
    assert queries.bucket_seconds(86400) == 1800
    assert queries.bucket_seconds(30 * 86400) == 86400
    for span in (600, 3600, 86400, 7 * 86400, 90 * 86400):
        assert span / queries.bucket_seconds(span) <= 48


def test_day_counts_per_utc_day(store: ExchangeStore) -> None:
    counts = queries.day_counts(exchange_queries(store), since=T0 - 86400, until=T0 + 86400 * 2)
    assert sum(counts.values()) == len(sample())
    assert set(counts) <= {"2025-10-09", "2025-10-10"}


def test_distinct_values_feed_the_pickers(store: ExchangeStore) -> None:
    values = queries.distinct_values(exchange_queries(store))
    assert values["model"] == ["m-large", "m-small"]
    assert values["route"] == ["search", "support"]
    assert values["tenant"] == ["acme", "globex"]
    assert values["key_id"] == ["key_a", "key_b"]


@pytest.mark.parametrize("window", [3, 10, 50])
def test_a_small_scan_window_still_finds_every_match_once(tmp_path: Path, window: int) -> None:
    """Unindexed filters are checked window by window: short pages continue the search, nothing is lost."""
    sql = SqlExchangeStore(f"sqlite:///{tmp_path / 'w.db'}")
    sql.migrate()
    sql.write_exchanges(sample())
    flt = ExchangeFilter(model="m-small", min_tokens=300)
    expected = newest_first([r for r in sample() if matches(r, flt)])
    found: list[str] = []
    after: Cursor | None = None
    reads = 0
    while True:
        page = queries.list_page(exchange_queries(sql), flt, feedback=sql, after=after, limit=4, scan_window=window)
        found += [r.id for r in page.records]
        reads += 1
        if page.searched is not None:
            assert page.searched == window and len(page.records) <= 4
        if page.next is None:
            break
        after = Cursor.decode(page.next.encode())
    assert found == expected
    assert reads >= len([r for r in sample() if r.model == "m-small"]) // window  # it did page by window
    sql.close()


def test_a_window_boundary_cursor_means_strictly_older() -> None:
    boundary = Cursor.decode("1760000000.5,")
    assert boundary == Cursor(1_760_000_000.5, "")
    memory = MemoryExchangeStore()
    memory.write_exchanges(sample())
    older = queries.list_page(exchange_queries(memory), ExchangeFilter(), after=boundary, limit=200).records
    assert older and all(r.created_at < 1_760_000_000.5 for r in older)
