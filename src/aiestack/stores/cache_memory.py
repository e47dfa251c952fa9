"""The in-process cache backend: a dictionary bounded by ``max_entries`` (oldest evicted first)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from aiestack.stores.cache import Entry, Known


class MemoryCacheBackend:
    """Entries in an ordered dictionary; expired ones are dropped when touched or evicted."""

    name = "memory"
    shared = False  # only this process writes it

    def __init__(self, *, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expired(self._clock()):
            del self._entries[key]
            return None
        return entry

    async def put(self, entry: Entry) -> None:
        await self.put_many((entry,))

    async def put_many(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            self._entries.pop(entry.key, None)
            self._entries[entry.key] = entry
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._entries.pop(key, None)

    async def semantic_since(self, since: float, *, known: Known | None = None) -> list[Entry]:
        now = self._clock()
        live = [
            e for e in self._entries.values()
            if e.kind == "semantic" and e.created_at >= since and not e.expired(now)
            and (known is None or not known(e.key, e.expires_at))
        ]
        return sorted(live, key=lambda e: e.created_at)

    async def clear(self, *, tenant: str | None = None) -> int:
        doomed = [k for k, e in self._entries.items() if tenant is None or e.tenant == tenant]
        for key in doomed:
            del self._entries[key]
        return len(doomed)

    async def aclose(self) -> None:
        """Nothing to release."""
