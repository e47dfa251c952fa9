"""A bounded queue of work items handled in batches by one background thread.

A producer calls :meth:`BatchQueue.submit` (a lock and a ``deque.append``: O(1), never waits on
I/O, fine to call from the event loop or any thread) and moves on. One daemon thread, started on
the first submit, hands the queued items to ``handler`` in order, up to ``batch_size`` at a time:
as soon as ``batch_size`` are waiting, every ``flush_interval_s`` otherwise, and at once while
someone waits in :meth:`flush`. Many small units of work (a query and two writes each) thus become
a few queries and two transactions per batch, done off the request path and, under load, rarely.

Past ``max_queue`` waiting items the oldest are dropped and counted (the handler is too slow or
its store is down). A handler that raises loses its batch: the error is logged and counted, and
the thread goes on with the next one. :meth:`close` handles everything submitted before it
returns, so a clean shutdown loses nothing; afterwards :meth:`submit` refuses (returns False).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

_log = logging.getLogger(__name__)

T = TypeVar("T")


class BatchQueue(Generic[T]):
    """Runs ``handler(batch)`` on a background thread for the submitted items, in submission order.

    Counters: ``handled`` items given to a handler call that returned, ``dropped`` items lost to
    queue overflow or to a handler that raised, ``failed_batches`` handler calls that raised.
    """

    def __init__(
        self,
        handler: Callable[[Sequence[T]], None],
        *,
        batch_size: int = 256,
        flush_interval_s: float = 0.25,
        max_queue: int = 10_000,
        name: str = "aiestack-batch-queue",
        what: str = "work",
    ) -> None:
        if batch_size < 1 or max_queue < 1 or flush_interval_s <= 0:
            raise ValueError("batch_size and max_queue must be at least 1, flush_interval_s positive")
        self._handler = handler
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._max_queue = max_queue
        self._name = name
        self._what = what
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)  # the thread waits here for items
        self._progress = threading.Condition(self._lock)  # flush() waits here for the thread
        self._queue: deque[tuple[int, T]] = deque()
        self._next_seq = 0
        self._in_flight: int | None = None  # first sequence number of the batch being handled
        self._in_flight_size = 0
        self._flush_waiters = 0
        self._closing = False
        self._overflowing = False
        self._thread: threading.Thread | None = None
        self._handled = 0
        self._dropped = 0
        self._failed_batches = 0

    # ------------------------------------------------------------------ counters

    @property
    def handled(self) -> int:
        return self._handled

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def failed_batches(self) -> int:
        return self._failed_batches

    @property
    def pending(self) -> int:
        """Items submitted and not yet handled or dropped (queued, or in the batch being handled)."""
        with self._lock:
            return len(self._queue) + self._in_flight_size

    @property
    def closed(self) -> bool:
        return self._closing

    # ------------------------------------------------------------------ producers

    def submit(self, item: T) -> bool:
        """Queue ``item``; False (nothing queued) once :meth:`close` has been called. Never blocks on I/O."""
        with self._lock:
            if self._closing:
                return False
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                self._thread.start()
            self._queue.append((self._next_seq, item))
            self._next_seq += 1
            if len(self._queue) > self._max_queue:
                self._queue.popleft()
                self._dropped += 1
                self._progress.notify_all()
                if not self._overflowing:
                    self._overflowing = True
                    _log.warning(
                        "The %s queue is full (%d items): dropping the oldest. Its store is down or too slow.",
                        self._what,
                        self._max_queue,
                    )
            if len(self._queue) == self._batch_size:  # crossing the mark; above it the thread is busy anyway
                self._work.notify()
            return True

    # ------------------------------------------------------------------ owner

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every item submitted before this call is handled (or dropped).

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

        Returns True when the thread finished within ``timeout`` (it is a daemon: a handler that
        hangs cannot hold up the interpreter's exit).
        """
        with self._lock:
            self._closing = True
            self._work.notify()
            thread = self._thread
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    # ------------------------------------------------------------------ the thread

    def _settled(self, target: int) -> bool:
        """Nothing submitted before sequence number ``target`` is still queued or being handled."""
        return (not self._queue or self._queue[0][0] >= target) and (
            self._in_flight is None or self._in_flight >= target
        )

    def _ready(self) -> bool:
        return self._closing or len(self._queue) >= self._batch_size or (self._flush_waiters > 0 and bool(self._queue))

    def _run(self) -> None:
        while True:
            with self._lock:
                self._work.wait_for(self._ready, timeout=self._flush_interval_s)
                if not self._queue:
                    if self._closing:
                        return
                    continue
                taken = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
                self._in_flight, self._in_flight_size = taken[0][0], len(taken)
            batch = [item for _, item in taken]
            try:
                self._handler(batch)
            except Exception:
                _log.exception("aiestack could not handle a batch of %d %s items; they are lost", len(batch), self._what)
                with self._lock:
                    self._failed_batches += 1
                    self._dropped += len(batch)
            else:
                with self._lock:
                    self._handled += len(batch)
                    self._overflowing = False
            with self._lock:
                self._in_flight, self._in_flight_size = None, 0
                self._progress.notify_all()
