"""Load levels: closed-loop concurrency sweeps and open-loop request rates (Poisson, or replayed gaps).

- **Closed loop** (``--concurrency 1,16,64``): C clients, each sending its next request as soon as its
  last one has ended, until the level's ``requests`` have been sent (or ``duration_s`` has passed).
  This is vLLM's ``benchmark_serving --max-concurrency C`` at an infinite request rate.
- **Open loop** (``--rate 2,8``): requests arrive at exponential gaps of mean 1/rate (a Poisson
  process, seeded) whatever the server's state, as real users do; ``max_concurrency`` optionally caps
  the requests in flight (arrivals then wait for a slot; as in vLLM, the wait is not in their latency).
- **Replay** (``rate = None`` with a workload that has recorded gaps): arrivals at the recorded gaps,
  divided by ``speedup``.

A level's requests cycle through the workload from where the last level stopped, so every request of
a sweep is a different one until the workload is used up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from aiestack.loadbench.client import Endpoint, send
from aiestack.loadbench.metrics import LevelStats, RequestResult, Slo, summarize
from aiestack.loadbench.wire import Pool
from aiestack.loadbench.workload import Workload

Progress = Callable[[LevelStats], None]


@dataclass(frozen=True, slots=True)
class Plan:
    """What to run: the levels, how many requests (or seconds) per level, and the SLOs for goodput."""

    concurrency: tuple[int, ...] = ()
    rates: tuple[float, ...] = ()
    replay: bool = False
    requests: int | None = None  # per level; None: per_level_default(load)
    duration_s: float | None = None
    max_concurrency: int | None = None
    speedup: float = 1.0
    seed: int = 0
    slo: Slo = field(default_factory=Slo)
    warmup: int = 1

    def requests_for(self, concurrency: int | None) -> int:
        if self.requests is not None:
            return self.requests
        return max(32, 4 * concurrency) if concurrency else 64


LAG_TICK_S = 0.005


@contextlib.asynccontextmanager
async def client_lag() -> AsyncIterator[list[float]]:
    """While the block runs, how late (ms) this loop wakes for a 5 ms timer, one sample per tick.

    Every request the client sends waits for the loop as this timer does (an open loop's arrivals, a
    closed loop's next request), and so does every chunk stamp where the kernel's receive time is not
    available (https, not Linux): the samples bound the client's own share (metrics' module doc)."""
    samples: list[float] = []

    async def tick() -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(LAG_TICK_S)
            samples.append((time.perf_counter() - t0 - LAG_TICK_S) * 1000)

    task = asyncio.create_task(tick())
    try:
        yield samples
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _Cursor:
    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.next = 0

    def take(self) -> int:
        i = self.next
        self.next += 1
        return i


async def closed_loop(
    pool: Pool, endpoint: Endpoint, workload: Workload, cursor: _Cursor,
    *, concurrency: int, requests: int, duration_s: float | None = None,
) -> list[RequestResult]:
    results: list[RequestResult] = []
    sent = 0
    until = None if duration_s is None else time.perf_counter() + duration_s

    async def client() -> None:
        nonlocal sent
        while (sent < requests if until is None else time.perf_counter() < until):
            sent += 1
            results.append(await send(pool, endpoint, workload.spec(cursor.take())))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return results


def arrival_offsets(count: int, *, rate: float | None, gaps_s: Sequence[float], speedup: float, seed: int) -> list[float]:
    """Seconds from the level's start at which each request is sent: Poisson at ``rate``, or the recorded gaps."""
    if rate is not None:
        gaps = np.random.default_rng(seed).exponential(1.0 / rate, count)
        gaps[0] = 0.0
        return [float(x) for x in np.cumsum(gaps)]
    cycle = [gaps_s[i % len(gaps_s)] / speedup for i in range(count)] if gaps_s else [0.0] * count
    cycle[0] = 0.0
    return [float(x) for x in np.cumsum(cycle)]


async def open_loop(
    pool: Pool, endpoint: Endpoint, workload: Workload, cursor: _Cursor,
    *, offsets: Sequence[float], max_concurrency: int | None = None,
) -> list[RequestResult]:
    gate = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    start = time.perf_counter()

    async def one(at: float, index: int) -> RequestResult:
        delay = start + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if gate is None:
            return await send(pool, endpoint, workload.spec(index))
        async with gate:  # as in vLLM, the wait for a slot is not part of the request's latency
            return await send(pool, endpoint, workload.spec(index))

    return list(await asyncio.gather(*(one(at, cursor.take()) for at in offsets)))


async def run_plan(endpoint: Endpoint, workload: Workload, plan: Plan, progress: Progress | None = None) -> list[LevelStats]:
    """Every level of ``plan`` in order (closed loop first, then rates, then the replay)."""
    levels: list[LevelStats] = []
    cursor = _Cursor(workload)
    async with Pool(endpoint.url) as pool:
        for _ in range(plan.warmup):
            warm = await send(pool, endpoint, workload.spec(cursor.take()))
            if not warm.ok:
                raise ConnectionError(f"the warm-up request to {endpoint.url} failed: {warm.error or 'no output'}")

        def done(stats: LevelStats) -> None:
            levels.append(stats)
            if progress is not None:
                progress(stats)

        for c in plan.concurrency:
            async with client_lag() as lag:
                results = await closed_loop(
                    pool, endpoint, workload, cursor, concurrency=c,
                    requests=plan.requests_for(c), duration_s=plan.duration_s,
                )
            done(summarize("concurrency", c, results, plan.slo, lag))
        for n, rate in enumerate(plan.rates):
            count = plan.requests_for(None) if plan.duration_s is None else max(1, round(rate * plan.duration_s))
            offsets = arrival_offsets(count, rate=rate, gaps_s=(), speedup=1.0, seed=plan.seed + n)
            async with client_lag() as lag:
                results = await open_loop(pool, endpoint, workload, cursor, offsets=offsets,
                                          max_concurrency=plan.max_concurrency)
            done(summarize("rate", rate, results, plan.slo, lag))
        if plan.replay:
            count = plan.requests if plan.requests is not None else len(workload.specs)
            cursor.next = 0
            offsets = arrival_offsets(count, rate=None, gaps_s=workload.gaps_s, speedup=plan.speedup, seed=plan.seed)
            async with client_lag() as lag:
                results = await open_loop(pool, endpoint, workload, cursor, offsets=offsets,
                                          max_concurrency=plan.max_concurrency)
            done(summarize("replay", plan.speedup, results, plan.slo, lag))
    return levels


def measure(endpoint: Endpoint, workload: Workload, plan: Plan, progress: Progress | None = None) -> list[LevelStats]:
    """:func:`run_plan` in an event loop of its own: uvloop's where it is installed, else asyncio's.

    uvloop's callbacks cost a fraction of asyncio's, which matters for when requests go out and for
    stamps taken in ``data_received`` (https); over plain http on Linux chunk stamps are the kernel's
    (``aiestack.loadbench.wire``), whatever the loop.
    """
    work = run_plan(endpoint, workload, plan, progress)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(work)
    return uvloop.run(work)
