"""The exact cache: an answer stored under the canonical hash of its request (:mod:`aiestack.cache.keying`)."""

from __future__ import annotations

import time
from collections.abc import Callable

from aiestack.stores.cache import CacheBackend, CachedAnswer, Entry


class ExactCache:
    """Entries keyed ``e:<sha256>`` in ``backend``; a lookup is one backend read."""

    def __init__(self, backend: CacheBackend, *, clock: Callable[[], float] = time.time) -> None:
        self.backend = backend
        self._clock = clock

    async def get(self, key: str, *, tenant: str) -> Entry | None:
        entry = await self.backend.get("e:" + key)
        if entry is None or entry.tenant != tenant:  # the tenant is in the key; this is belt and braces
            return None
        return entry

    def entry(self, key: str, *, tenant: str, route: str, answer: CachedAnswer, ttl_s: float | None) -> Entry:
        """The entry that stores ``answer`` under ``key`` (written by the caller, with a miss's semantic
        entry in one :meth:`~aiestack.stores.cache.CacheBackend.put_many`)."""
        now = self._clock()
        return Entry(
            key="e:" + key,
            kind="exact",
            partition="",
            tenant=tenant,
            route=route,
            answer=answer,
            created_at=now,
            expires_at=now + ttl_s if ttl_s is not None else None,
        )
