"""The one background batching seam: work leaves the request path at once and is stored in batches.

:class:`BatchQueue` is the queue every background store write goes through: the trace writer
(:class:`BatchWriter`, exchanges and spans) and implicit feedback (``feedback/signals.py``) are two
configurations of it, with one set of semantics.

A producer calls :meth:`BatchQueue.submit` (a lock-protected ``deque.append``: O(1), never waits on
I/O, fine to call from the event loop or any thread) and moves on. One daemon thread, started on the
first submit, hands the queued items to ``handler`` in submission order, up to ``batch_size`` of each
lane at a time, one lane after the other: as soon as ``batch_size`` are waiting, every
``flush_interval_s`` otherwise, and at once while someone waits in :meth:`~BatchQueue.flush`. Many
small inserts thus become a few transactions, done off the request path.

Lanes rank what is worth keeping: items are submitted to a lane (0 by default), a batch takes up to
``batch_size`` from every lane, so a flood of one never starves another, and the handler gets one
lane's items per call. Past ``max_queue`` waiting items the oldest of the *last* non-empty lane are
dropped first (for the trace writer: spans before exchanges, as an exchange record is worth more than
a span of it), and every drop is counted and logged once per overflow.

Failures do not lose work. A :class:`~aiestack.errors.StoreError` (database down, locked,
unreachable) is retried with exponential backoff for as long as it takes, keeping the batch; any
other error means the data itself is bad: after ``bad_data_attempts`` the batch is handled item by
item, so that only the bad items are dropped. Handlers must therefore be idempotent (the stores'
writes are upserts or insert-or-ignore).

The owner calls :meth:`BatchQueue.close` at shutdown (the library registers no ``atexit`` hook): it
handles everything submitted before it returns, so nothing acknowledged is lost on a clean shutdown;
afterwards :meth:`~BatchQueue.submit` raises ``StoreError``. If the store stays down past
``close``'s timeout, what could not be written is counted as dropped and logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

from aiestack.errors import StoreError
from aiestack.stores.base import ExchangeRecord
from aiestack.types import SpanRecord

logger = logging.getLogger(__name__)

T = TypeVar("T")


class BatchQueue(Generic[T]):
    """Runs ``handler(items)`` on a background thread for the submitted items, in batches.

    Counters (read at any time): ``handled`` items given to a handler call that returned,
    ``dropped`` items given up (queue overflow, bad data, or a store still down when ``close`` timed
    out), ``failed_attempts`` handler calls that raised; ``pending`` items submitted and not yet
    handled or dropped. ``describe(item)`` names an item in the log when it is dropped as bad data.
    """

    def __init__(
        self,
        handler: Callable[[Sequence[T]], None],
        *,
        lanes: int = 1,
        batch_size: int = 256,
        flush_interval_s: float = 0.5,
        max_queue: int = 100_000,
        initial_backoff_s: float = 0.05,
        max_backoff_s: float = 5.0,
        bad_data_attempts: int = 3,
        name: str = "aiestack-batch-queue",
        what: str = "records",
        describe: Callable[[T], str] = repr,
    ) -> None:
        if lanes < 1 or batch_size < 1 or max_queue < 1 or bad_data_attempts < 1:
            raise ValueError("lanes, batch_size, max_queue and bad_data_attempts must be at least 1")
        if flush_interval_s <= 0 or initial_backoff_s <= 0 or max_backoff_s < initial_backoff_s:
            raise ValueError(
                "flush_interval_s and initial_backoff_s must be positive, max_backoff_s >= initial_backoff_s"
            )
        self._handler = handler
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._max_queue = max_queue
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        self._bad_data_attempts = bad_data_attempts
        self._name = name
        self._what = what
        self._describe = describe

        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the thread waits here for items
        self._progress = threading.Condition(self._lock)  # flush() waits here for the thread
        self._lanes: list[deque[tuple[int, T]]] = [deque() for _ in range(lanes)]
        self._queued = 0
        self._next_seq = 0
        self._in_flight: int | None = None  # the oldest sequence number in the batch being handled
        self._in_flight_size = 0  # items of that batch not yet handled or dropped
        self._flush_waiters = 0
        self._closing = False
        self._deadline: float | None = None
        self._overflowing = False
        self._abandoned = False  # close() timed out with the store down: items were lost
        self._thread: threading.Thread | None = None
        self._handled = 0
        self._dropped = 0
        self._failed_attempts = 0

    # ------------------------------------------------------------------ counters

    @property
    def handled(self) -> int:
        return self._handled

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def failed_attempts(self) -> int:
        return self._failed_attempts

    @property
    def pending(self) -> int:
        """Items submitted and not yet handled or dropped (queued, or in the batch being handled)."""
        with self._lock:
            return self._queued + self._in_flight_size

    @property
    def closed(self) -> bool:
        return self._closing

    # ------------------------------------------------------------------ producers

    def submit(self, item: T, lane: int = 0) -> None:
        """Queue ``item`` in ``lane``. Never blocks on I/O; ``StoreError`` once :meth:`close` was called."""
        with self._lock:
            if self._closing:
                raise StoreError(
                    f"The background {self._what} queue is closed; the item was not stored.",
                    hint="Submit before calling close(), or create a new queue.",
                )
            if self._thread is None:
                # A daemon, so that a forgotten close() cannot hang interpreter exit; the price is
                # that unflushed items are lost then, which is why the owner must call close().
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._lanes[lane].append((self._next_seq, item))
            self._next_seq += 1
            self._queued += 1
            if self._queued > self._max_queue:
                self._drop_oldest()
            if self._queued == self._batch_size:  # crossing the mark; above it the thread is busy anyway
                self._work.notify()

    def _drop_oldest(self) -> None:
        """Make room: the oldest item of the last non-empty lane goes."""
        next(lane for lane in reversed(self._lanes) if lane).popleft()
        self._queued -= 1
        self._dropped += 1
        self._progress.notify_all()
        if not self._overflowing:
            self._overflowing = True
            logger.warning(
                "The %s queue is full (%d items): dropping the oldest, least valuable first. "
                "The store is down or too slow; see the earlier warnings.",
                self._what,
                self._max_queue,
            )

    # ------------------------------------------------------------------ owner

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted before this call is handled (or dropped).

        Returns False if ``timeout`` seconds passed first (the items stay queued).
        """
        with self._lock:
            target = self._next_seq
            if self._settled(target):
                return True
            self._flush_waiters += 1
            self._work.notify()
            try:
                return self._progress.wait_for(lambda: self._settled(target), timeout)
            finally:
                self._flush_waiters -= 1

    def close(self, timeout: float | None = 30.0) -> bool:
        """Handle everything submitted, then stop the thread. Idempotent.

        ``timeout`` bounds how long a store that stays down is retried; after it, what is left is
        counted as dropped. Returns True when every submitted item was handled or had been dropped
        earlier, i.e. the close itself lost nothing.
        """
        with self._lock:
            if not self._closing:
                self._closing = True
                self._deadline = None if timeout is None else time.monotonic() + timeout
                self._work.notify()  # also cuts a retry backoff short, to honour the deadline
            thread = self._thread
        if thread is None:
            return True
        thread.join(None if timeout is None else timeout + self._max_backoff_s + 1.0)
        with self._lock:
            return not thread.is_alive() and not self._abandoned

    # ------------------------------------------------------------------ the thread

    def _settled(self, target: int) -> bool:
        """Nothing submitted before sequence number ``target`` is still queued or being handled."""
        return all(not lane or lane[0][0] >= target for lane in self._lanes) and (
            self._in_flight is None or self._in_flight >= target
        )

    def _ready(self) -> bool:
        return self._closing or self._queued >= self._batch_size or (self._flush_waiters > 0 and self._queued > 0)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._work.wait_for(self._ready, timeout=self._flush_interval_s)
                if not self._queued:
                    if self._closing:
                        return
                    continue
                batch = self._take_batch()
            completed = all(self._handle(items) for items in batch)
            with self._lock:
                if not completed:
                    self._abandon()
                self._in_flight, self._in_flight_size = None, 0
                self._progress.notify_all()
                if not completed:
                    return

    def _take_batch(self) -> list[list[T]]:
        """Up to ``batch_size`` of every lane, so a flood of one never starves the others."""
        taken = [[lane.popleft() for _ in range(min(self._batch_size, len(lane)))] for lane in self._lanes]
        self._in_flight = min(items[0][0] for items in taken if items)
        self._in_flight_size = sum(len(items) for items in taken)
        self._queued -= self._in_flight_size
        return [[item for _, item in items] for items in taken if items]

    def _abandon(self) -> None:
        """close() timed out with the store down: count what is left of the batch and the queue as lost."""
        lost = self._in_flight_size + self._queued
        for lane in self._lanes:
            lane.clear()
        self._queued = 0
        self._dropped += lost
        self._abandoned = True
        logger.error(
            "The store stayed unavailable until close() timed out: %d %s were not written.", lost, self._what
        )

    def _handle(self, items: list[T]) -> bool:
        """Hand ``items`` to the handler, retrying; False if the store was still down when close() timed out."""
        backoff = self._initial_backoff_s
        failures = 0
        bad_data_failures = 0
        while True:
            try:
                self._handler(items)
            except StoreError as exc:
                failures += 1
                self._count(failed=1)
                if failures & (failures - 1) == 0:  # 1st, 2nd, 4th, 8th... failure: don't flood the log
                    logger.warning(
                        "Writing %d %s failed (attempt %d), retrying: %s", len(items), self._what, failures, exc
                    )
            except Exception:
                failures += 1
                bad_data_failures += 1
                self._count(failed=1)
                if bad_data_failures == 1:
                    logger.warning(
                        "The store rejected a batch of %d %s, retrying:", len(items), self._what, exc_info=True
                    )
                if bad_data_failures >= self._bad_data_attempts:
                    for item in items:
                        self._handle_one(item)
                    return True
            else:
                if failures:
                    logger.info("The store accepted writes again after %d failed attempts.", failures)
                self._count(handled=len(items))
                return True
            if self._past_deadline():
                return False
            self._sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff_s)

    def _handle_one(self, item: T) -> None:
        """Isolate an item the store rejects (bad data): handle it alone, or drop and log it."""
        try:
            self._handler([item])
        except Exception:
            self._count(failed=1, dropped=1)
            logger.exception("The store rejected %s; dropping it.", self._describe(item))
        else:
            self._count(handled=1)

    def _count(self, *, handled: int = 0, dropped: int = 0, failed: int = 0) -> None:
        with self._lock:
            self._handled += handled
            self._dropped += dropped
            self._failed_attempts += failed
            self._in_flight_size -= handled + dropped
            if handled:
                self._overflowing = False

    def _past_deadline(self) -> bool:
        with self._lock:
            return self._deadline is not None and time.monotonic() >= self._deadline

    def _sleep(self, backoff: float) -> None:
        """Wait out a retry backoff, cut short by close() and never past close()'s deadline."""
        with self._lock:
            if self._deadline is not None:
                backoff = min(backoff, self._deadline - time.monotonic())
            if backoff > 0:
                self._work.wait(backoff)


class RecordSink(Protocol):
    """The part of an :class:`~aiestack.stores.base.ExchangeStore` the writer needs."""

    def write_exchanges(self, records: Sequence[ExchangeRecord]) -> None: ...

    def write_spans(self, spans: Sequence[SpanRecord]) -> None: ...


_EXCHANGES, _SPANS = 0, 1  # lanes: past max_queue, spans are dropped before exchanges


class BatchWriter(BatchQueue[ExchangeRecord | SpanRecord]):
    """The trace writer: a :class:`BatchQueue` that writes exchanges and spans to ``store``.

    Exchanges and spans are two lanes, so each batch is one ``write_exchanges`` and one
    ``write_spans`` call, and spans written after their exchange never write the exchange again.
    """

    def __init__(
        self,
        store: RecordSink,
        *,
        batch_size: int = 256,
        flush_interval_s: float = 0.5,
        max_queue: int = 100_000,
        initial_backoff_s: float = 0.05,
        max_backoff_s: float = 5.0,
        bad_data_attempts: int = 3,
        name: str = "aiestack-store-writer",
    ) -> None:
        super().__init__(
            self._write,
            lanes=2,
            batch_size=batch_size,
            flush_interval_s=flush_interval_s,
            max_queue=max_queue,
            initial_backoff_s=initial_backoff_s,
            max_backoff_s=max_backoff_s,
            bad_data_attempts=bad_data_attempts,
            name=name,
            what="records",
            describe=_describe,
        )
        self._store = store

    def submit_exchange(self, record: ExchangeRecord) -> None:
        """Queue an exchange for writing. Never blocks on I/O."""
        self.submit(record, _EXCHANGES)

    def submit_span(self, span: SpanRecord) -> None:
        """Queue a span for writing. Never blocks on I/O."""
        self.submit(span, _SPANS)

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _write(self, items: Sequence[ExchangeRecord | SpanRecord]) -> None:
        """One lane's items: all exchanges or all spans."""
        if isinstance(items[0], ExchangeRecord):
            self._store.write_exchanges([r for r in items if isinstance(r, ExchangeRecord)])
        else:
            self._store.write_spans([s for s in items if isinstance(s, SpanRecord)])


def _describe(item: ExchangeRecord | SpanRecord) -> str:
    return f"exchange {item.id}" if isinstance(item, ExchangeRecord) else f"span {item.span_id}"
