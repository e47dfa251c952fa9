"""The in-process contextual-retrieval cache (tests, ``memory://`` stores)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence


class MemoryContextCache:
    """An in-process :class:`ContextCache`, least recently used first out."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._data: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def get_contexts(self, model: str, keys: Sequence[str]) -> dict[str, str]:
        with self._lock:
            out = {}
            for key in keys:
                value = self._data.get((model, key))
                if value is not None:
                    self._data.move_to_end((model, key))
                    out[key] = value
            return out

    def put_contexts(self, model: str, items: Mapping[str, str]) -> None:
        with self._lock:
            for key, value in items.items():
                self._data[(model, key)] = value
                self._data.move_to_end((model, key))
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def close(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._data)
