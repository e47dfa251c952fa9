"""Generate and whole answers: when the provider may ask its upstream for the whole answer at once.

A request for a whole answer reaches the provider with ``stream`` false (the ``openai`` provider then
asks its upstream for one JSON body) unless a first-token limit applies (a route's ``timeout_s``):
only a stream has a first token to time. Retries, fallbacks and cached-token pricing work the same
either way; the streamed path is covered by test_generate_fallbacks.py.
"""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import pytest

from aiestack.gateway.generate import ATTEMPT_LOG, DEPLOYMENT, Generate
from aiestack.gateway.routes import build_route_table, route_plans
from aiestack.models.fake import FakeModel
from aiestack.models.openai import OpenAIChatModel
from aiestack.models.pricing import Price, PriceTable
from aiestack.models.registry import ModelEntry, ModelRegistry
from aiestack.pipeline import Pipeline
from aiestack.streams import collect
from aiestack.types import ChatRequest, Exchange, Message, Usage

pytestmark = pytest.mark.unit


async def _no_sleep(_: float) -> None:
    return None


def _pipeline(entries: list[ModelEntry], routes: dict[str, Any], prices: PriceTable | None = None) -> Pipeline:
    registry = ModelRegistry(entries)
    table = build_route_table(routes, registry)
    generate = Generate(registry, prices or PriceTable(), routes=table, sleep=_no_sleep, rng=random.Random(0))
    return Pipeline([generate], plans=route_plans(table))


async def _ask(pipeline: Pipeline, model: str, *, stream: bool = False) -> Exchange:
    request = ChatRequest(model=model, messages=(Message("user", "hello there"),), stream=stream)
    return await pipeline(Exchange(request=request))


@pytest.mark.parametrize(
    ("model", "stream", "upstream_streams"),
    [
        ("m", False, False),  # a bare model has no first-token limit: the answer may come whole
        ("m", True, True),
        ("limited", False, True),  # the route's timeout_s times the first token: it needs a stream
        ("limited", True, True),
        ("unlimited", False, False),  # a route without a time limit needs no stream either
    ],
)
async def test_the_provider_streams_only_when_the_client_or_a_first_token_limit_needs_it(
    model: str, stream: bool, upstream_streams: bool
) -> None:
    fake = FakeModel()
    routes = {"limited": {"deployments": ["m"], "timeout_s": 30}, "unlimited": {"deployments": ["m"], "timeout_s": None}}
    pipeline = _pipeline([ModelEntry("m", fake, "m-up")], routes)
    ex = await _ask(pipeline, model, stream=stream)
    final = await collect(ex.completion) if stream else ex.completion  # type: ignore[arg-type]
    assert final is not None and final.text == "hello there"
    assert [r.stream for r in fake.requests] == [upstream_streams]
    assert fake.requests[0].model == "m-up"


def _openai(handler: Any) -> OpenAIChatModel:
    return OpenAIChatModel(base_url="http://up.test/v1", api_key_env=None, transport=httpx.MockTransport(handler))


def _whole_answer(request: httpx.Request) -> httpx.Response:
    assert "stream" not in json.loads(request.content)  # asked for whole
    usage = {"prompt_tokens": 1000, "completion_tokens": 10, "prompt_tokens_details": {"cached_tokens": 800}}
    message = {"role": "assistant", "content": "from b"}
    return httpx.Response(200, json={"choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage})


async def test_a_whole_answer_asked_whole_is_retried_falls_back_and_is_priced_with_cached_tokens() -> None:
    calls: list[dict[str, Any]] = []

    def down(request: httpx.Request) -> httpx.Response:
        calls.append(json.loads(request.content))
        return httpx.Response(503, json={"error": {"message": "overloaded"}})

    prices = PriceTable({"b-up": Price(input_per_mtok=2.0, output_per_mtok=8.0, cached_input_per_mtok=0.5)})
    entries = [ModelEntry("a", _openai(down), "a-up"), ModelEntry("b", _openai(_whole_answer), "b-up")]
    routes = {"r": {"deployments": ["a"], "fallbacks": ["b"], "retries": 1, "timeout_s": None}}
    ex = await _ask(_pipeline(entries, routes, prices), "r")

    assert ex.completion is not None and ex.completion.text == "from b"
    assert len(calls) == 2 and all("stream" not in body for body in calls)  # one retry, then the fallback
    assert ex.attributes[DEPLOYMENT] == "b"
    assert ex.attributes[ATTEMPT_LOG] == ("a: ProviderUnavailable", "a: ProviderUnavailable", "b: ok")
    assert ex.completion.usage == Usage(input_tokens=1000, output_tokens=10, cached_tokens=800)
    assert ex.completion.cost_usd == pytest.approx((200 * 2.0 + 800 * 0.5 + 10 * 8.0) / 1e6)
    timing = ex.completion.timing
    assert timing.tpot_ms is None and timing.ttft_ms == timing.total_ms


async def test_a_route_with_a_first_token_limit_streams_a_whole_answer_from_the_upstream() -> None:
    bodies: list[dict[str, Any]] = []

    def sse(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        events = [
            {"choices": [{"index": 0, "delta": {"content": "stream"}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {"content": "ed"}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
        ]
        text = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        return httpx.Response(200, content=text.encode(), headers={"content-type": "text/event-stream"})

    pipeline = _pipeline([ModelEntry("a", _openai(sse), "a-up")], {"r": {"deployments": ["a"], "timeout_s": 30}})
    ex = await _ask(pipeline, "r")
    assert ex.completion is not None and ex.completion.text == "streamed"
    assert bodies[0]["stream"] is True
    assert ex.completion.usage == Usage(3, 2, 0) and ex.completion.timing.tpot_ms is not None
