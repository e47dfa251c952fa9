"""The background batch writer: exchanges and spans leave the request path at once.

A request hands its records to :meth:`BatchWriter.submit_exchange` / :meth:`~BatchWriter.submit_span`
(a lock-protected ``deque.append``: O(1), never waits on I/O, fine to call from the event loop) and
moves on. A daemon thread writes them in batches, either when ``batch_size`` records are waiting or
every ``flush_interval_s``, so trace storage never slows a request, and many small inserts become a
few transactions.

Failures do not lose records. A :class:`StoreError` (database down, locked, unreachable) is retried
with exponential backoff for as long as it takes, keeping the batch; meanwhile new records queue up
to ``max_queue``, past which the oldest *spans* are dropped first (an exchange record is worth more
than a span of it), and every drop is counted. Any other error means the data itself is bad: after
a few attempts the batch is written record by record so that only the bad records are dropped.

The owner calls :meth:`BatchWriter.close` at shutdown (the library registers no ``atexit`` hook):
it writes everything submitted before it returns, so nothing acknowledged is lost on a clean
shutdown. If the store stays down past ``close``'s timeout, what could not be written is counted
as dropped and logged.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from aiestack.errors import StoreError
from aiestack.stores.base import ExchangeRecord
from aiestack.types import SpanRecord

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RecordSink(Protocol):
    """The part of an :class:`~aiestack.stores.base.ExchangeStore` the writer needs."""

    def write_exchanges(self, records: Sequence[ExchangeRecord]) -> None: ...

    def write_spans(self, spans: Sequence[SpanRecord]) -> None: ...


@dataclass
class _Batch:
    """Records taken off the queues; ``first_seq`` is the oldest submission among them."""

    first_seq: int
    exchanges: list[ExchangeRecord] = field(default_factory=list)
    spans: list[SpanRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.exchanges) + len(self.spans)


class BatchWriter:
    """Writes submitted exchanges and spans to ``store`` from a background thread, in batches.

    Counters (read at any time): ``written`` records stored, ``dropped`` records given up (queue
    overflow, bad data, or a store still down when ``close`` timed out), ``failed_attempts`` write
    attempts that raised.
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
        if batch_size < 1 or max_queue < 1 or bad_data_attempts < 1:
            raise ValueError("batch_size, max_queue and bad_data_attempts must be at least 1")
        if flush_interval_s <= 0 or initial_backoff_s <= 0 or max_backoff_s < initial_backoff_s:
            raise ValueError(
                "flush_interval_s and initial_backoff_s must be positive, max_backoff_s >= initial_backoff_s"
            )
        self._store = store
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._max_queue = max_queue
        self._initial_backoff_s = initial_backoff_s
        self._max_backoff_s = max_backoff_s
        self._bad_data_attempts = bad_data_attempts

        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the writer thread waits here for records
        self._progress = threading.Condition(self._lock)  # flush() waits here for the writer
        self._exchanges: deque[tuple[int, ExchangeRecord]] = deque()
        self._spans: deque[tuple[int, SpanRecord]] = deque()
        self._next_seq = 0
        self._in_flight: _Batch | None = None
        self._flush_waiters = 0
        self._closing = False
        self._deadline: float | None = None
        self._overflowing = False
        self._abandoned = False  # close() timed out with the store down: records were lost
        self._written = 0
        self._dropped = 0
        self._failed_attempts = 0

        # A daemon, so that a forgotten close() cannot hang interpreter exit; the price is that
        # unflushed records are lost then, which is why the owner must call close().
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ counters

    @property
    def written(self) -> int:
        return self._written

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def failed_attempts(self) -> int:
        return self._failed_attempts

    @property
    def pending(self) -> int:
        """Records submitted and not yet written or dropped (queued or being written)."""
        with self._lock:
            return self._queued() + (len(self._in_flight) if self._in_flight else 0)

    # ------------------------------------------------------------------ producers

    def submit_exchange(self, record: ExchangeRecord) -> None:
        """Queue an exchange for writing. Never blocks on I/O."""
        with self._lock:
            self._check_open()
            self._exchanges.append((self._next_seq, record))
            self._after_submit()

    def submit_span(self, span: SpanRecord) -> None:
        """Queue a span for writing. Never blocks on I/O."""
        with self._lock:
            self._check_open()
            self._spans.append((self._next_seq, span))
            self._after_submit()

    def _check_open(self) -> None:
        if self._closing:
            raise StoreError(
                "The background store writer is closed; the record was not stored.",
                hint="Submit records before calling close(), or create a new BatchWriter.",
            )

    def _after_submit(self) -> None:
        self._next_seq += 1
        if self._queued() > self._max_queue:
            self._drop_oldest()
        if self._queued() == self._batch_size:  # crossing the mark; above it the writer is busy anyway
            self._work.notify()

    def _drop_oldest(self) -> None:
        """Make room: the oldest span goes first; exchanges only when no span is left to drop."""
        if self._spans:
            self._spans.popleft()
        else:
            self._exchanges.popleft()
        self._dropped += 1
        self._progress.notify_all()
        if not self._overflowing:
            self._overflowing = True
            logger.warning(
                "The store writer's queue is full (%d records): dropping the oldest spans, then exchanges. "
                "The store is down or too slow; see the earlier warnings.",
                self._max_queue,
            )

    # ------------------------------------------------------------------ owner

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted before this call is written (or dropped).

        Returns False if ``timeout`` seconds passed first (the records stay queued).
        """
        with self._lock:
            target = self._next_seq
            self._flush_waiters += 1
            self._work.notify()
            try:
                return self._progress.wait_for(lambda: self._settled(target), timeout)
            finally:
                self._flush_waiters -= 1

    def close(self, timeout: float | None = 30.0) -> bool:
        """Write everything submitted, then stop the thread. Idempotent.

        ``timeout`` bounds how long a store that stays down is retried; after it, what is left is
        counted as dropped. Returns True when every submitted record was written or had been
        dropped earlier, i.e. the close itself lost nothing.
        """
        with self._lock:
            if not self._closing:
                self._closing = True
                self._deadline = None if timeout is None else time.monotonic() + timeout
                self._work.notify()  # also cuts a retry backoff short, to honour the deadline
        self._thread.join(None if timeout is None else timeout + self._max_backoff_s + 1.0)
        with self._lock:
            return not self._thread.is_alive() and not self._abandoned

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the writer thread

    def _queued(self) -> int:
        return len(self._exchanges) + len(self._spans)

    def _settled(self, target: int) -> bool:
        """Nothing submitted before sequence number ``target`` is still queued or in flight."""
        return (
            (not self._exchanges or self._exchanges[0][0] >= target)
            and (not self._spans or self._spans[0][0] >= target)
            and (self._in_flight is None or self._in_flight.first_seq >= target)
        )

    def _should_write(self) -> bool:
        queued = self._queued()
        return self._closing or queued >= self._batch_size or (self._flush_waiters > 0 and queued > 0)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._work.wait_for(self._should_write, timeout=self._flush_interval_s)
                if not self._queued():
                    if self._closing:
                        return
                    continue
                batch = self._take_batch()
            completed = self._write(batch)
            with self._lock:
                self._in_flight = None
                if not completed:
                    self._abandon(batch)
                self._progress.notify_all()
                if not completed:
                    return

    def _take_batch(self) -> _Batch:
        """Up to ``batch_size`` of each kind, so a flood of one never starves the other."""
        exchanges = _pop(self._exchanges, self._batch_size)
        spans = _pop(self._spans, self._batch_size)
        first = min(items[0][0] for items in (exchanges, spans) if items)
        batch = _Batch(first, [r for _, r in exchanges], [s for _, s in spans])
        self._in_flight = batch
        return batch

    def _abandon(self, batch: _Batch) -> None:
        """close() timed out with the store down: count the batch and the queue as lost."""
        lost = len(batch) + self._queued()
        self._exchanges.clear()
        self._spans.clear()
        self._dropped += lost
        self._abandoned = True
        logger.error(
            "The store stayed unavailable until close() timed out: %d records were not written.", lost
        )

    def _write(self, batch: _Batch) -> bool:
        """Write ``batch``, retrying; False if the store was still down when close() timed out."""
        backoff = self._initial_backoff_s
        failures = 0
        bad_data_failures = 0
        while True:
            try:
                if batch.exchanges:
                    self._store.write_exchanges(batch.exchanges)
                    self._count_written(len(batch.exchanges))
                    batch.exchanges = []  # written: a retry of the spans must not count them again
                if batch.spans:
                    self._store.write_spans(batch.spans)
                    self._count_written(len(batch.spans))
                    batch.spans = []
            except StoreError as exc:
                failures += 1
                self._count_failure()
                if failures & (failures - 1) == 0:  # 1st, 2nd, 4th, 8th... failure: don't flood the log
                    logger.warning(
                        "Writing %d records failed (attempt %d), retrying: %s", len(batch), failures, exc
                    )
            except Exception:
                failures += 1
                bad_data_failures += 1
                self._count_failure()
                if bad_data_failures == 1:
                    logger.warning(
                        "The store rejected a batch of %d records, retrying:", len(batch), exc_info=True
                    )
                if bad_data_failures >= self._bad_data_attempts:
                    self._write_one_by_one(batch)
                    return True
            else:
                if failures:
                    logger.info("The store accepted writes again after %d failed attempts.", failures)
                return True
            if self._past_deadline():
                return False
            self._sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff_s)

    def _write_one_by_one(self, batch: _Batch) -> None:
        """Isolate the records the store rejects (bad data): write the rest, drop and log those."""
        for record in batch.exchanges:
            self._write_single(
                functools.partial(self._store.write_exchanges, [record]), f"exchange {record.id}"
            )
        for span in batch.spans:
            self._write_single(functools.partial(self._store.write_spans, [span]), f"span {span.span_id}")

    def _write_single(self, write: Callable[[], None], label: str) -> None:
        try:
            write()
        except Exception:
            self._count_failure()
            with self._lock:
                self._dropped += 1
            logger.exception("The store rejected %s; dropping it.", label)
        else:
            self._count_written(1)

    def _count_written(self, n: int) -> None:
        with self._lock:
            self._written += n
            self._overflowing = False

    def _count_failure(self) -> None:
        with self._lock:
            self._failed_attempts += 1

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


def _pop(queue: deque[tuple[int, T]], n: int) -> list[tuple[int, T]]:
    return [queue.popleft() for _ in range(min(n, len(queue)))]
