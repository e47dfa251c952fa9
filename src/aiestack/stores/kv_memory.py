"""The in-process KV: exact within one process, shared by every task and thread in it.

Every operation holds one ``threading.Lock`` for a few dictionary operations, so it is atomic
with respect to asyncio tasks and to threads alike (the lock is never held across an ``await``).
Expired counters are dropped when touched, and swept every :data:`SWEEP_EVERY` writes, so a
gateway that creates a counter per key per minute does not grow without bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from aiestack.stores.kv import WindowResult

#: Writes between sweeps of expired counters.
SWEEP_EVERY = 1024


class MemoryKV:
    """Counters in a dictionary: ``key -> (value, expires_at)``; ``clock`` is monotonic seconds."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._data: dict[str, tuple[int, float | None]] = {}
        self._writes = 0

    def __repr__(self) -> str:
        return "MemoryKV()"

    async def get(self, key: str) -> int | None:
        with self._lock:
            entry = self._live(key, self._clock())
        return entry[0] if entry is not None else None

    async def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        with self._lock:
            now = self._clock()
            entry = self._live(key, now)
            if entry is None:
                entry = (0, now + ttl_s if ttl_s is not None else None)
            value = entry[0] + amount
            self._write(key, value, entry[1], now)
        return value

    async def set_if_absent(self, key: str, value: int, *, ttl_s: float | None = None) -> bool:
        with self._lock:
            now = self._clock()
            if self._live(key, now) is not None:
                return False
            self._write(key, value, now + ttl_s if ttl_s is not None else None, now)
        return True

    async def window_add(self, key: str, amount: int, limit: int, window_s: float) -> WindowResult:
        with self._lock:
            now = self._clock()
            entry = self._live(key, now)
            current, expires_at = entry if entry is not None else (0, now + window_s)
            retry_after = max((expires_at or now) - now, 0.0)
            if amount > 0 and current + amount > limit:
                return WindowResult(False, current, retry_after)
            self._write(key, current + amount, expires_at, now)
        return WindowResult(True, current + amount, retry_after)

    async def delete(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)

    async def ping(self) -> None:
        """Always reachable."""

    async def aclose(self) -> None:
        """Nothing to release."""

    # ------------------------------------------------------------------ internals (lock held)

    def _live(self, key: str, now: float) -> tuple[int, float | None] | None:
        entry = self._data.get(key)
        if entry is not None and entry[1] is not None and entry[1] <= now:
            del self._data[key]
            return None
        return entry

    def _write(self, key: str, value: int, expires_at: float | None, now: float) -> None:
        self._data[key] = (value, expires_at)
        self._writes += 1
        if self._writes % SWEEP_EVERY == 0:
            expired = [k for k, (_, at) in self._data.items() if at is not None and at <= now]
            for k in expired:
                del self._data[k]
