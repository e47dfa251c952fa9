"""Single flight: identical requests in flight wait for one upstream call instead of making their own."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from aiestack.cache.stage import CACHE_COALESCED, header_value
from aiestack.errors import ProviderBadRequest
from aiestack.models.fake import Script
from aiestack.pipeline import Next
from aiestack.streams import collect
from aiestack.types import Exchange

from .conftest import Kit, make_kit

pytestmark = pytest.mark.unit

QUESTION = "How do I reset my password?"


class Gate:
    """An inner stage that holds every request until the test opens it."""

    name = "gate"

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.passed = 0

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        self.passed += 1
        await self.open.wait()
        return await call_next(ex)


async def burst(
    kit: Kit, gate: Gate, n: int, *, stream: bool = False, return_exceptions: bool = False
) -> list[Any]:
    """Send ``n`` identical requests at once; open the gate once every one has looked the cache up.

    Each request reads its streamed answer to the end in its own task, as a server does."""
    looked_up = 0
    exact = kit.stage.exact
    assert exact is not None
    get = exact.get

    async def counted(key: str, *, tenant: str) -> Any:
        nonlocal looked_up
        found = await get(key, tenant=tenant)
        looked_up += 1
        return found

    exact.get = counted  # type: ignore[method-assign]

    async def one() -> Exchange:
        ex = await kit.ask(QUESTION, stream=stream)
        if stream and ex.completion is not None:
            ex = dataclasses.replace(ex, completion=await collect(ex.completion))
        return ex

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    # Each request, in the step its exact lookup returns in, leads the flight or joins it.
    while looked_up < n:
        await asyncio.sleep(0)
    gate.open.set()
    return await asyncio.gather(*tasks, return_exceptions=return_exceptions)


async def test_a_burst_of_duplicates_makes_one_upstream_call() -> None:
    gate = Gate()
    kit = make_kit(inner=[gate])
    kit.model.enqueue(["Click 'Forgot password'."])
    results = await burst(kit, gate, 8)
    assert len(kit.model.requests) == 1 and gate.passed == 1
    texts = {r.completion.text for r in results if r.completion is not None}
    assert texts == {"Click 'Forgot password'."}
    leaders = [r for r in results if header_value(r) == "miss"]
    followers = [r for r in results if r.attributes.get(CACHE_COALESCED)]
    assert len(leaders) == 1 and len(followers) == 7
    for f in followers:
        assert header_value(f) == "hit" and f.outcome == "cached"
        assert f.completion is not None and f.completion.cached and f.completion.cost_usd == 0.0
    assert kit.stage._flights == {}  # nothing left behind
    # eight requests, eight exact lookups: one miss, seven coalesced (none counted twice)
    lookups = {
        result: kit.metrics.registry.get_sample_value(
            "aiestack_cache_lookups_total", {"route": "none", "kind": "exact", "result": result}
        )
        for result in ("miss", "coalesced", "hit")
    }
    assert lookups == {"miss": 1, "coalesced": 7, "hit": None}
    # The next identical request is an ordinary exact hit.
    assert header_value(await kit.ask(QUESTION)) == "hit"


async def test_streamed_duplicates_wait_for_the_leaders_stream_to_finish() -> None:
    gate = Gate()
    kit = make_kit(inner=[gate])
    kit.model.enqueue([["Click ", "'Forgot ", "password'."]])
    results = await burst(kit, gate, 4, stream=True)
    texts = [r.completion.text for r in results if r.completion is not None]
    assert texts == ["Click 'Forgot password'."] * 4
    assert len(kit.model.requests) == 1
    assert sum(1 for r in results if r.attributes.get(CACHE_COALESCED)) == 3
    assert kit.stage._flights == {}


async def test_when_the_leader_fails_the_others_make_their_own_calls() -> None:
    gate = Gate()
    kit = make_kit(inner=[gate])
    kit.model.enqueue([Script(error=ProviderBadRequest("refused", provider="fake"))])
    kit.model.enqueue(["answer"] * 3)
    results = await burst(kit, gate, 4, return_exceptions=True)
    assert sum(isinstance(r, ProviderBadRequest) for r in results) == 1
    answered = [r for r in results if isinstance(r, Exchange)]
    # Nobody was handed the failure; each went on without single flight (the first of them to
    # finish stored its answer, so the others may find it in the cache as any later request would).
    assert [r.completion.text for r in answered if r.completion is not None] == ["answer"] * 3
    assert not any(r.attributes.get(CACHE_COALESCED) for r in answered)
    assert len(kit.model.requests) >= 2
    assert kit.stage._flights == {}


async def test_different_requests_do_not_share_a_flight() -> None:
    gate = Gate()
    kit = make_kit(inner=[gate])
    kit.model.enqueue(["one", "two"])
    tasks = [asyncio.create_task(kit.ask(q)) for q in ("How do I reset my password?", "Where is my invoice?")]
    while gate.passed < 2:
        await asyncio.sleep(0)
    gate.open.set()
    results = await asyncio.gather(*tasks)
    assert len(kit.model.requests) == 2
    assert not any(r.attributes.get(CACHE_COALESCED) for r in results)
