"""The background batch queue behind implicit feedback: order, batching, failures, flush and close."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import pytest

from aiestack.feedback.batches import BatchQueue

pytestmark = pytest.mark.unit


def test_items_are_handled_in_order_in_batches_of_at_most_batch_size() -> None:
    batches: list[list[int]] = []
    queue: BatchQueue[int] = BatchQueue(lambda b: batches.append(list(b)), batch_size=4, flush_interval_s=60)
    for i in range(10):
        assert queue.submit(i)
    assert queue.flush(timeout=10)
    assert [i for b in batches for i in b] == list(range(10))
    assert all(len(b) <= 4 for b in batches) and queue.handled == 10 and queue.pending == 0
    assert queue.close(timeout=10)


def test_a_failing_batch_is_logged_and_counted_and_the_next_one_is_handled(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[int] = []

    def handler(batch: Sequence[int]) -> None:
        if 0 in batch:
            raise RuntimeError("store down")
        seen.extend(batch)

    queue: BatchQueue[int] = BatchQueue(handler, batch_size=1, flush_interval_s=60, what="test")
    with caplog.at_level(logging.ERROR):
        for i in range(3):
            queue.submit(i)
        assert queue.flush(timeout=10)
    assert seen == [1, 2] and queue.failed_batches == 1 and queue.dropped == 1
    assert "could not handle a batch of 1 test items" in caplog.text
    queue.close(timeout=10)


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
    assert seen == [0, 1, 2, 3, 4]
    assert not queue.submit(5) and queue.pending == 0


def test_past_max_queue_the_oldest_items_are_dropped() -> None:
    started, release = threading.Event(), threading.Event()
    seen: list[int] = []

    def held(batch: Sequence[int]) -> None:
        started.set()
        release.wait(10)
        seen.extend(batch)

    queue: BatchQueue[int] = BatchQueue(held, batch_size=1, max_queue=2)
    queue.submit(0)
    assert started.wait(10)  # the thread holds 0 in the handler; 1..5 queue up behind it
    for i in range(1, 6):
        queue.submit(i)
    release.set()
    queue.close(timeout=10)
    assert seen == [0, 4, 5] and queue.dropped == 3


def test_a_queue_never_used_starts_no_thread() -> None:
    before = threading.active_count()
    queue: BatchQueue[int] = BatchQueue(lambda b: None)
    assert threading.active_count() == before
    assert queue.flush(timeout=1) and queue.close(timeout=1)
