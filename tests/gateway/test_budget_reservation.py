"""Budgets reserve each call's estimated cost before it runs and settle to the real cost after
(issue #13, defect 8): concurrent calls cannot all pass a "spend < budget" check at once."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence

import pytest

from aiestack.gateway.limits import KeyBudgetExceeded, Limits, reachable_models
from aiestack.stores.kv_memory import MemoryKV
from aiestack.types import ChatRequest, Completion, Exchange, Message, Params, RoutePlan, Usage

from .test_limits import NOW, Clock, Setup

pytestmark = pytest.mark.unit

COUNTER = "spend:day:{}:2025-06-15"


def _estimate(models: Sequence[str], input_tokens: int, output_tokens: int) -> float:
    return 1.0 * output_tokens  # $1 per output token, inputs free


def _limits(s: Setup) -> Limits:
    return Limits(s.store, s.kv, s.store, clock=Clock(NOW), cost_estimate=_estimate)


def _ex(key_id: str, max_tokens: int = 2) -> Exchange:
    request = ChatRequest(model="m", messages=(Message("user", "hi"),), params=Params(max_tokens=max_tokens))
    return Exchange(request=request, key_id=key_id)


async def test_concurrent_calls_are_admitted_only_as_far_as_the_budget_goes() -> None:
    s = Setup()
    key = s.key(budget_day_usd=5.0)
    limits = _limits(s)
    gate = asyncio.Event()

    async def slow(e: Exchange) -> Exchange:  # every call is in flight when the others are checked
        await gate.wait()
        return dataclasses.replace(e, completion=Completion(message=Message("assistant", "ok"), model="m", provider="fake", usage=Usage(0, 2), cost_usd=2.0))

    tasks = [asyncio.create_task(limits(_ex(key.id), slow)) for _ in range(10)]
    await asyncio.sleep(0.05)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    admitted = [r for r in results if isinstance(r, Exchange)]
    assert len(admitted) == 2  # $2 each, $5 budget: a third would pass it
    assert all(isinstance(r, KeyBudgetExceeded) for r in results if not isinstance(r, Exchange))
    assert await s.kv.get(COUNTER.format(key.id)) == 4_000_000


async def test_a_failed_or_cheaper_call_gives_its_reservation_back() -> None:
    s = Setup()
    key = s.key(budget_day_usd=5.0)
    limits = _limits(s)

    async def fail(e: Exchange) -> Exchange:
        raise RuntimeError("upstream down")

    with pytest.raises(RuntimeError):
        await limits(_ex(key.id, max_tokens=4), fail)
    assert await s.kv.get(COUNTER.format(key.id)) == 0

    async def cheap(e: Exchange) -> Exchange:
        return dataclasses.replace(e, completion=Completion(message=Message("assistant", "ok"), model="m", provider="fake", usage=Usage(0, 1), cost_usd=0.5))

    await limits(_ex(key.id, max_tokens=4), cheap)  # reserved $4, cost $0.50
    assert await s.kv.get(COUNTER.format(key.id)) == 500_000


async def test_a_call_dearer_than_what_is_left_is_refused_and_says_so() -> None:
    s = Setup()
    key = s.key(budget_day_usd=5.0)
    limits = _limits(s)

    async def never(e: Exchange) -> Exchange:
        raise AssertionError("refused before the model")

    with pytest.raises(KeyBudgetExceeded) as raised:
        await limits(_ex(key.id, max_tokens=6), never)
    assert "less than this call may cost" in raised.value.message
    assert await s.kv.get(COUNTER.format(key.id)) == 0  # nothing stays reserved


async def test_a_reservation_in_one_budget_is_released_when_the_other_refuses() -> None:
    s = Setup()
    key = s.key(budget_day_usd=100.0, budget_month_usd=1.0)
    limits = Limits(s.store, MemoryKV(), s.store, clock=Clock(NOW), cost_estimate=_estimate)

    async def never(e: Exchange) -> Exchange:
        raise AssertionError("refused before the model")

    with pytest.raises(KeyBudgetExceeded):
        await limits(_ex(key.id, max_tokens=2), never)
    assert await limits._kv.get(COUNTER.format(key.id)) == 0


def test_the_estimate_prices_the_models_the_exchanges_route_plan_may_reach() -> None:
    from aiestack.build import cost_estimator
    from aiestack.models.fake import FakeModel
    from aiestack.models.pricing import Price, PriceTable
    from aiestack.models.registry import ModelEntry, ModelRegistry

    request = ChatRequest(model="r", messages=(Message("user", "hi"),))
    plan = RoutePlan(route="support", deployments=("cheap",), fallbacks=("dear", "other-route"))
    planned = Exchange(request=request, plan=plan)  # the router chose "support", whatever the request named
    assert reachable_models(planned) == ("cheap", "dear", "other-route")
    assert reachable_models(Exchange(request=request, plan=RoutePlan())) == ("r",)  # a bare model
    registry = ModelRegistry(ModelEntry(n, FakeModel(), n) for n in ("cheap", "dear"))
    estimate = cost_estimator(registry, PriceTable({"cheap": Price(1.0, 1.0), "dear": Price(10.0, 10.0)}))
    assert estimate(reachable_models(planned), 1_000_000, 0) == 10.0  # the dearest; a route fallback is not a price
    assert estimate(("unknown",), 1_000_000, 0) is None
