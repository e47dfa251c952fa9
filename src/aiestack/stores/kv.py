"""The KV protocol: integer counters with time-to-live, and an atomic fixed-window check-and-add.

Rate limits and budgets need counters that many gateway processes share and update without
losing or double-counting a request. The protocol therefore offers only operations that a backend
can make atomic on its own, with no read-modify-write left to the caller:

- :meth:`KV.incr`: add (possibly a negative amount) and return the new value.
- :meth:`KV.set_if_absent`: seed a counter once (e.g. a budget's spend from the exchange store)
  without overwriting what another process has already seeded and added since.
- :meth:`KV.window_add`: "add ``amount`` unless that would pass ``limit``", decided and applied
  in one step. A separate get-then-incr would let N processes all see room for the last request
  and all take it; with Redis this is one Lua script, so the total admitted is exactly the limit
  however many processes ask at once.

The memory backend (:mod:`aiestack.stores.kv_memory`) is exact within one process; the Redis
backend (:mod:`aiestack.stores.kv_redis`) is exact across processes. Both pass
:class:`aiestack.testing.conformance.KVConformance`. Keys are plain strings; a backend may add a
namespace prefix of its own. Backends raise :class:`aiestack.errors.StoreError` when unreachable.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable


class WindowResult(NamedTuple):
    """The outcome of :meth:`KV.window_add`.

    ``current`` is the window's count after the call (unchanged when not ``allowed``);
    ``retry_after_s`` is how long until the window's counter expires (0 if it has no expiry).
    """

    allowed: bool
    current: int
    retry_after_s: float


@runtime_checkable
class KV(Protocol):
    """Shared integer counters with TTLs. All methods are atomic with respect to each other."""

    async def get(self, key: str) -> int | None:
        """The counter's value, or None if it does not exist (or has expired)."""
        ...

    async def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        """Add ``amount`` (may be negative) and return the new value.

        A missing counter starts at 0. ``ttl_s`` applies only when this call creates the counter:
        later increments never extend its life, so a fixed window stays fixed.
        """
        ...

    async def set_if_absent(self, key: str, value: int, *, ttl_s: float | None = None) -> bool:
        """Create the counter with ``value`` unless it exists; True if this call created it."""
        ...

    async def window_add(self, key: str, amount: int, limit: int, window_s: float) -> WindowResult:
        """Add ``amount`` to the window counter ``key`` unless the sum would exceed ``limit``.

        The counter is created with a TTL of ``window_s``. A non-positive ``amount`` (a refund or
        a correction) is always applied. A refused call changes nothing.
        """
        ...

    async def delete(self, *keys: str) -> None:
        """Remove the counters (missing ones are ignored)."""
        ...

    async def ping(self) -> None:
        """Raise :class:`aiestack.errors.StoreError` if the backend cannot be reached."""
        ...

    async def aclose(self) -> None:
        """Release connections. Idempotent."""
        ...
