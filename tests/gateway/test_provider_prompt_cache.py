"""Provider prompt caching through the gateway, against a mock upstream that bills like the providers.

A route with ``prompt_cache = true`` marks the stable prefix for Anthropic's cache (``cache_control``);
cache reads and writes come back in the usage of both providers and every exchange is priced exactly
as the provider billed it (reads at the cached rate, Anthropic's writes at 1.25× input).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from aiestack.build import Stack, open_stack
from aiestack.models.anthropic import AnthropicChatModel
from aiestack.models.anthropic_wire import messages_body
from aiestack.models.openai import OpenAIChatModel
from aiestack.models.pricing import BUILTIN_PRICES
from aiestack.models.registry import ModelEntry
from aiestack.settings import Settings
from aiestack.testing.billing_upstream import BillingUpstream, create_app
from aiestack.types import ChatRequest, Message, Params, Tool

SYSTEM = "You answer questions about the handbook below.\n" + "The handbook says many things. " * 400  # ~3,200 tokens


def _ask(model: str, question: str, history: tuple[Message, ...] = ()) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=(Message("system", SYSTEM), *history, Message("user", question)),
        params=Params(temperature=0),
        metadata={"cache": "off"},  # the gateway's own caches stay out of this
    )


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Stack, BillingUpstream]]:
    mock = BillingUpstream()
    transport = httpx.ASGITransport(app=create_app(mock))
    claude = AnthropicChatModel(base_url="http://mock", api_key="k", transport=transport)
    gpt = OpenAIChatModel(base_url="http://mock/v1", api_key="k", transport=transport)
    settings = Settings(
        data_dir=tmp_path / "data", embedded_model=False, default_model="claude",
        routes={
            "cached": {"deployments": ["claude"], "prompt_cache": True},
            "plain": {"deployments": ["claude"]},
            "chatgpt": {"deployments": ["gpt"], "prompt_cache": True},
        },
    )
    models = [ModelEntry("claude", claude, "claude-sonnet-4-0"), ModelEntry("gpt", gpt, "gpt-4o")]
    async with open_stack(settings, models=models) as stack:
        yield stack, mock


def test_the_marked_body_has_breakpoints_on_tools_system_and_history() -> None:
    tool = Tool(name="lookup", description="d", parameters={"type": "object", "properties": {}})
    history = (Message("user", "first"), Message("assistant", "one"))
    request = ChatRequest(
        model="m", messages=(Message("system", "S"), *history, Message("user", "now")),
        params=Params(tools=(tool,)), prompt_cache=True,
    )
    body = messages_body(request, max_tokens_default=10)
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert body["system"] == [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}]
    assert body["messages"][1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert "cache_control" not in body["messages"][2]["content"][-1]  # the new turn is not cached
    plain = messages_body(ChatRequest(model="m", messages=request.messages, params=request.params), max_tokens_default=10)
    assert "cache_control" not in str(plain)
    assert plain["system"] == "S"


async def test_anthropic_route_with_prompt_cache_writes_then_reads_and_prices_like_the_bill(
    setup: tuple[Stack, BillingUpstream],
) -> None:
    stack, mock = setup
    exchanges = [await stack.chat(_ask("cached", f"Question {i}?")) for i in range(3)]
    first, second, third = (ex.completion for ex in exchanges)
    assert first is not None and second is not None and third is not None
    assert first.usage.cache_write_tokens > 3000 and first.usage.cached_tokens == 0
    assert second.usage.cached_tokens == first.usage.cache_write_tokens and second.usage.cache_write_tokens == 0
    assert third.usage.cached_tokens == first.usage.cache_write_tokens
    price = BUILTIN_PRICES["claude-sonnet-4-0"]
    assert price.cache_write_per_mtok == pytest.approx(1.25 * price.input_per_mtok)
    # the gateway's cost is the provider's bill, exchange by exchange and in total
    assert sum(c.cost_usd or 0 for c in (first, second, third)) == pytest.approx(mock.bills["anthropic"].usd, rel=1e-9)
    assert (second.cost_usd or 0) < 0.2 * (first.cost_usd or 0)


async def test_without_the_route_setting_nothing_is_cached(setup: tuple[Stack, BillingUpstream]) -> None:
    stack, mock = setup
    for i in range(2):
        ex = await stack.chat(_ask("plain", f"Question {i}?"))
        assert ex.completion is not None
        assert ex.completion.usage.cached_tokens == 0 and ex.completion.usage.cache_write_tokens == 0
    assert mock.bills["anthropic"].cached_tokens == 0


async def test_openai_cached_tokens_are_read_and_priced_at_the_cached_rate(setup: tuple[Stack, BillingUpstream]) -> None:
    stack, mock = setup
    first = (await stack.chat(_ask("chatgpt", "Question one?"))).completion
    second = (await stack.chat(_ask("chatgpt", "Question two?"))).completion
    assert first is not None and second is not None
    assert first.usage.cached_tokens == 0
    assert second.usage.cached_tokens >= 1024 and (second.usage.cached_tokens - 1024) % 128 == 0
    price = BUILTIN_PRICES["gpt-4o"]
    expected = (
        (second.usage.input_tokens - second.usage.cached_tokens) * price.input_per_mtok
        + second.usage.cached_tokens * (price.cached_input_per_mtok or 0)
        + second.usage.output_tokens * price.output_per_mtok
    ) / 1e6
    assert second.cost_usd == pytest.approx(expected)
    assert (first.cost_usd or 0) + (second.cost_usd or 0) == pytest.approx(mock.bills["openai"].usd, rel=1e-9)
