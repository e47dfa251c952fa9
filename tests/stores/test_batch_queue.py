"""The one background batching seam (stores/writer.BatchQueue): order, lanes, batching, retries,
bad data, overflow, flush and close. The trace writer and implicit feedback are configurations of it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import pytest

from aiestack.errors import StoreError
from aiestack.stores.writer import BatchQueue

pytestmark = pytest.mark.unit


def test_items_are_handled_in_order_in_batches_of_at_most_batch_size() -> None:
    batches: list[list[int]] = []
    queue: BatchQueue[int] = BatchQueue(lambda b: batches.append(list(b)), batch_size=4, flush_interval_s=60)
    for i in range(10):
        queue.submit(i)
    assert queue.flush(timeout=10)
    assert [i for b in batches for i in b] == list(range(10))
    assert all(len(b) <= 4 for b in batches) and queue.handled == 10 and queue.pending == 0
    assert queue.close(timeout=10)


def test_each_handler_call_gets_one_lane_and_a_batch_takes_from_every_lane() -> None:
    started, release = threading.Event(), threading.Event()
    calls: list[list[str]] = []

    def handler(batch: Sequence[str]) -> None:
        started.set()
        release.wait(10)
        calls.append(list(batch))

    queue: BatchQueue[str] = BatchQueue(handler, lanes=2, batch_size=2, flush_interval_s=60)
    queue.submit("first")
    queue.submit("second")  # a full batch: the thread takes it at once
    assert started.wait(10)  # held in the handler while a backlog builds in both lanes
    for i in range(3):
        queue.submit(f"a{i}", 0)
        queue.submit(f"b{i}", 1)
    release.set()
    assert queue.close(timeout=10)
    assert calls == [["first", "second"], ["a0", "a1"], ["b0", "b1"], ["a2"], ["b2"]]


def test_a_store_error_is_retried_with_the_same_batch_until_it_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[list[int]] = []
    failures = [StoreError("database is locked")] * 2

    def handler(batch: Sequence[int]) -> None:
        if failures:
            raise failures.pop()
        seen.append(list(batch))

    queue: BatchQueue[int] = BatchQueue(handler, batch_size=10, flush_interval_s=60, initial_backoff_s=0.01)
    with caplog.at_level(logging.WARNING, logger="aiestack.stores.writer"):
        for i in range(3):
            queue.submit(i)
        assert queue.flush(timeout=10)
    assert seen == [[0, 1, 2]]
    assert (queue.handled, queue.dropped, queue.failed_attempts) == (3, 0, 2)
    assert "database is locked" in caplog.records[0].getMessage()
    assert queue.close(timeout=10)


def test_bad_data_is_isolated_item_by_item_and_only_the_bad_item_dropped(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []

    def handler(batch: Sequence[int]) -> None:
        if 1 in batch:
            raise ValueError("cannot serialise 1")
        seen.extend(batch)

    queue: BatchQueue[int] = BatchQueue(
        handler, batch_size=10, flush_interval_s=60, initial_backoff_s=0.01, bad_data_attempts=2,
        describe=lambda i: f"item number {i}",
    )
    with caplog.at_level(logging.ERROR, logger="aiestack.stores.writer"):
        for i in range(3):
            queue.submit(i)
        assert queue.flush(timeout=10)
    assert seen == [0, 2]
    assert (queue.handled, queue.dropped, queue.failed_attempts) == (2, 1, 3)
    assert any("item number 1" in r.getMessage() for r in caplog.records)
    assert queue.close(timeout=10)


def test_close_handles_everything_queued_then_refuses_new_items() -> None:
    release = threading.Event()
    seen: list[int] = []

    def slow(batch: Sequence[int]) -> None:
        release.wait(10)
        seen.extend(batch)

    queue: BatchQueue[int] = BatchQueue(slow, batch_size=2, flush_interval_s=60)
    for i in range(5):
        queue.submit(i)
    assert queue.pending == 5
    release.set()
    assert queue.close(timeout=10) and queue.close(timeout=10)  # idempotent
    assert seen == [0, 1, 2, 3, 4] and queue.closed
    with pytest.raises(StoreError, match="closed"):
        queue.submit(5)
    assert queue.pending == 0 and queue.handled == 5


def test_past_max_queue_the_oldest_of_the_last_lane_go_first(caplog: pytest.LogCaptureFixture) -> None:
    started, release = threading.Event(), threading.Event()
    seen: list[str] = []

    def held(batch: Sequence[str]) -> None:
        started.set()
        release.wait(10)
        seen.extend(batch)

    queue: BatchQueue[str] = BatchQueue(held, lanes=2, batch_size=1, max_queue=3, what="test items")
    queue.submit("held")
    assert started.wait(10)  # in the handler; the rest queues up behind it
    with caplog.at_level(logging.WARNING, logger="aiestack.stores.writer"):
        for name in ("k1", "k2"):
            queue.submit(name, 0)
        for name in ("s1", "s2", "s3"):
            queue.submit(name, 1)
        assert queue.dropped == 2  # five into room for three: the two oldest of lane 1
        queue.submit("k3", 0)
        queue.submit("k4", 0)
    assert queue.dropped == 4  # lane 1 emptied first, then lane 0's oldest
    assert sum("test items queue is full" in r.getMessage() for r in caplog.records) == 1
    release.set()
    assert queue.close(timeout=10)
    assert seen == ["held", "k2", "k3", "k4"]
    assert queue.handled + queue.dropped == 8


def test_close_gives_up_on_a_store_that_stays_down_and_counts_the_loss(caplog: pytest.LogCaptureFixture) -> None:
    def down(batch: Sequence[int]) -> None:
        raise StoreError("connection refused")

    queue: BatchQueue[int] = BatchQueue(
        down, lanes=2, batch_size=2, flush_interval_s=0.01, initial_backoff_s=0.01, max_backoff_s=0.05
    )
    for i in range(5):
        queue.submit(i, i % 2)
    with caplog.at_level(logging.ERROR, logger="aiestack.stores.writer"):
        assert queue.close(timeout=0.3) is False
    assert (queue.handled, queue.dropped, queue.pending) == (0, 5, 0)
    assert any("5 records were not written" in r.getMessage() for r in caplog.records)


def test_a_queue_never_used_starts_no_thread() -> None:
    before = threading.active_count()
    queue: BatchQueue[int] = BatchQueue(lambda b: None)
    assert threading.active_count() == before
    assert queue.flush(timeout=1) and queue.close(timeout=1)


@pytest.mark.parametrize(
    "kwargs",
    [{"lanes": 0}, {"batch_size": 0}, {"max_queue": 0}, {"flush_interval_s": 0}, {"initial_backoff_s": 1, "max_backoff_s": 0.5}],
)
def test_invalid_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BatchQueue(lambda b: None, **kwargs)  # type: ignore[arg-type]
