"""CPU work off the event loop: :func:`run_cpu` runs small work inline and large work in a thread.

Guards, tokenisation, classification and redaction are pure Python or C that holds the GIL in
short steps. On the event loop, one large request (a megabyte message) would stall every other
request for seconds. In a worker thread the loop keeps running between those steps, so ``/health``
and the other requests still answer. A thread hop costs tens of microseconds, more than checking a
short prompt, so work on at most :data:`INLINE_MAX_CHARS` characters runs inline (well under a
millisecond); everything larger goes to :func:`asyncio.to_thread`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

#: Characters of input up to which CPU work runs inline on the event loop (≈ 0.3 ms of guard checks).
INLINE_MAX_CHARS = 2048


async def run_cpu(size: int, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)``, inline when ``size`` (characters of input) is small, else in a thread."""
    if size <= INLINE_MAX_CHARS:
        return fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)
