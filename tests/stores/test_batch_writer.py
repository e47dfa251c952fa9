"""The background writer: batching, flush and close semantics, retries, overflow, bad data."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import pytest

from aiestack.errors import StoreError
from aiestack.stores.base import ExchangeRecord
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.exchanges_sql import SqlExchangeStore
from aiestack.stores.writer import BatchWriter
from aiestack.testing.conformance import minimal_exchange, span
from aiestack.types import SpanRecord

pytestmark = pytest.mark.unit


class RecordingStore(MemoryExchangeStore):
    """A memory store that remembers each batch's size, fails on demand, and can be held up."""

    def __init__(self, *, fail_times: int = 0, error: Exception | None = None) -> None:
        super().__init__()
        self.batches: list[tuple[str, int]] = []
        self.fail_times = fail_times
        self.error = error or StoreError("database is locked")
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def _maybe_fail(self) -> None:
        self.entered.set()
        self.gate.wait()
        if self.fail_times:
            self.fail_times -= 1
            raise self.error

    def write_exchanges(self, records: Sequence[ExchangeRecord]) -> None:
        self._maybe_fail()
        self.batches.append(("exchanges", len(records)))
        super().write_exchanges(records)

    def write_spans(self, spans: Sequence[SpanRecord]) -> None:
        self._maybe_fail()
        self.batches.append(("spans", len(spans)))
        super().write_spans(spans)


def _count(store: MemoryExchangeStore) -> int:
    return len(store.list_exchanges(limit=1_000_000))


def test_clean_close_loses_nothing_submitted_from_many_threads(sqlite_url: str) -> None:
    store = SqlExchangeStore(sqlite_url)
    store.migrate()
    writer = BatchWriter(store, batch_size=64, flush_interval_s=0.01)
    threads, per_thread = 8, 500

    def produce(t: int) -> None:
        for i in range(per_thread):
            writer.submit_exchange(minimal_exchange(f"ex_{t}_{i}", created_at=float(i)))
            writer.submit_span(span(f"s_{t}_{i}", i, trace_id=f"trace_{t}"))

    workers = [threading.Thread(target=produce, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert writer.close(timeout=30) is True

    total = threads * per_thread
    assert len(store.list_exchanges(limit=total + 1)) == total
    assert sum(len(store.spans(trace_id=f"trace_{t}")) for t in range(threads)) == total
    assert (writer.handled, writer.dropped, writer.failed_attempts, writer.pending) == (2 * total, 0, 0, 0)
    store.close()


def test_batches_never_exceed_batch_size() -> None:
    store = RecordingStore()
    store.gate.clear()  # hold the first write so that a backlog builds up
    writer = BatchWriter(store, batch_size=100, flush_interval_s=0.01)
    writer.submit_exchange(minimal_exchange("ex_first"))
    assert store.entered.wait(5)
    for i in range(1000):
        writer.submit_exchange(minimal_exchange(f"ex_{i}"))
    store.gate.set()
    assert writer.close(timeout=10)
    sizes = [n for kind, n in store.batches if kind == "exchanges"]
    assert max(sizes) == 100 and sum(sizes) == 1001


def test_records_are_written_every_flush_interval_without_a_flush() -> None:
    store = MemoryExchangeStore()
    writer = BatchWriter(store, batch_size=10_000, flush_interval_s=0.05)
    writer.submit_exchange(minimal_exchange())
    deadline = time.monotonic() + 30  # a wait, not a bound: the interval is 0.05 s
    while store.get_exchange("ex_min") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.get_exchange("ex_min") is not None
    writer.close()


def test_flush_waits_until_everything_so_far_is_written() -> None:
    store = MemoryExchangeStore()
    writer = BatchWriter(store, batch_size=10_000, flush_interval_s=60)  # only flush() can trigger a write
    for i in range(300):
        writer.submit_exchange(minimal_exchange(f"ex_{i}"))
        writer.submit_span(span(f"s{i}", i))
    assert writer.flush(timeout=5) is True
    assert _count(store) == 300 and len(store.spans(trace_id="trace-a")) == 300
    assert writer.pending == 0
    writer.close()


def test_flush_times_out_while_the_store_is_held_up() -> None:
    store = RecordingStore()
    store.gate.clear()
    writer = BatchWriter(store, flush_interval_s=0.01)
    writer.submit_exchange(minimal_exchange())
    assert writer.flush(timeout=0.1) is False
    assert writer.pending == 1
    store.gate.set()
    assert writer.flush(timeout=5) is True
    writer.close()


def test_failed_writes_are_retried_until_they_succeed(caplog: pytest.LogCaptureFixture) -> None:
    store = RecordingStore(fail_times=2)
    writer = BatchWriter(store, flush_interval_s=0.01, initial_backoff_s=0.01)
    with caplog.at_level(logging.WARNING, logger="aiestack.stores.writer"):
        for i in range(10):
            writer.submit_exchange(minimal_exchange(f"ex_{i}"))
        assert writer.flush(timeout=5)
    assert _count(store) == 10
    assert (writer.handled, writer.dropped, writer.failed_attempts) == (10, 0, 2)
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    assert "database is locked" in caplog.records[0].getMessage()
    writer.close()


def test_exchanges_are_not_written_again_when_only_the_spans_failed() -> None:
    class SpansFailOnce(RecordingStore):
        def write_spans(self, spans: Sequence[SpanRecord]) -> None:
            if not self.batches or self.batches[-1][0] != "failed":
                self.batches.append(("failed", len(spans)))
                raise StoreError("database is locked")
            super().write_spans(spans)

    store = SpansFailOnce()
    writer = BatchWriter(store, batch_size=10_000, flush_interval_s=60, initial_backoff_s=0.01)
    writer.submit_exchange(minimal_exchange())
    writer.submit_span(span("s1", 0))
    assert writer.flush(timeout=5)
    assert store.batches == [("exchanges", 1), ("failed", 1), ("spans", 1)]
    assert (writer.handled, writer.failed_attempts, writer.dropped) == (2, 1, 0)
    writer.close()


def test_a_full_queue_drops_the_oldest_spans_first(caplog: pytest.LogCaptureFixture) -> None:
    store = RecordingStore()
    store.gate.clear()
    writer = BatchWriter(store, batch_size=1, flush_interval_s=0.01, max_queue=10)
    writer.submit_exchange(minimal_exchange("ex_in_flight"))
    assert store.entered.wait(5)  # that one is being written; the queue holds the rest
    with caplog.at_level(logging.WARNING, logger="aiestack.stores.writer"):
        for i in range(6):
            writer.submit_exchange(minimal_exchange(f"ex_{i}"))
        for i in range(8):
            writer.submit_span(span(f"s{i}", i))
    assert writer.dropped == 4  # 14 queued into room for 10: the four oldest spans go
    assert sum("queue is full" in r.getMessage() for r in caplog.records) == 1
    for i in range(8):  # past the spans, exchanges go too
        writer.submit_exchange(minimal_exchange(f"ex_late_{i}"))
    assert writer.dropped == 12
    store.gate.set()
    assert writer.close(timeout=5)
    assert [s.span_id for s in store.spans(trace_id="trace-a")] == []
    kept = sorted(r.id for r in store.list_exchanges(limit=100))
    assert kept == sorted(["ex_in_flight", "ex_4", "ex_5"] + [f"ex_late_{i}" for i in range(8)])
    assert writer.handled + writer.dropped == 1 + 6 + 8 + 8


def test_bad_records_are_isolated_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    class PickyStore(RecordingStore):
        def write_exchanges(self, records: Sequence[ExchangeRecord]) -> None:
            if any(r.id == "ex_bad" for r in records):
                raise ValueError("cannot serialise ex_bad")
            super().write_exchanges(records)

    store = PickyStore()
    writer = BatchWriter(
        store, batch_size=10_000, flush_interval_s=60, initial_backoff_s=0.01, bad_data_attempts=2
    )
    for name in ("ex_1", "ex_bad", "ex_2"):
        writer.submit_exchange(minimal_exchange(name))
    with caplog.at_level(logging.ERROR, logger="aiestack.stores.writer"):
        assert writer.flush(timeout=5)
    assert sorted(r.id for r in store.list_exchanges()) == ["ex_1", "ex_2"]
    assert (writer.handled, writer.dropped, writer.failed_attempts) == (2, 1, 3)
    assert any("ex_bad" in r.getMessage() for r in caplog.records)
    writer.close()


def test_close_gives_up_on_a_store_that_stays_down(caplog: pytest.LogCaptureFixture) -> None:
    store = RecordingStore(fail_times=1_000_000)
    writer = BatchWriter(
        store, batch_size=2, flush_interval_s=0.01, initial_backoff_s=0.01, max_backoff_s=0.05
    )
    for i in range(5):
        writer.submit_exchange(minimal_exchange(f"ex_{i}"))
    with caplog.at_level(logging.ERROR, logger="aiestack.stores.writer"):
        assert writer.close(timeout=0.3) is False  # a writer that kept retrying would leave them pending
    assert (writer.handled, writer.dropped, writer.pending) == (0, 5, 0)
    assert writer.failed_attempts >= 2
    assert any("were not written" in r.getMessage() for r in caplog.records)


def test_submitting_after_close_is_an_error_and_close_is_idempotent() -> None:
    writer = BatchWriter(MemoryExchangeStore())
    assert writer.close() is True
    assert writer.close() is True
    with pytest.raises(StoreError, match="closed"):
        writer.submit_exchange(minimal_exchange())
    with pytest.raises(StoreError, match="closed"):
        writer.submit_span(span("s", 0))


def test_context_manager_closes() -> None:
    store = MemoryExchangeStore()
    with BatchWriter(store, batch_size=10_000, flush_interval_s=60) as writer:
        writer.submit_exchange(minimal_exchange())
    assert store.get_exchange("ex_min") is not None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"batch_size": 0},
        {"max_queue": 0},
        {"flush_interval_s": 0},
        {"initial_backoff_s": 1, "max_backoff_s": 0.5},
    ],
)
def test_invalid_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BatchWriter(MemoryExchangeStore(), **kwargs)  # type: ignore[arg-type]
