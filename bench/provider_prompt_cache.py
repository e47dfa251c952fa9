"""Provider prompt caching: what a long stable system prompt costs with and without it, as the provider bills.

aiestack (in-process, default configuration: guards, canary, tracing on) sends N questions that share
a long system prompt to a mock upstream that keeps a prompt cache and bills like Anthropic and OpenAI
(:mod:`aiestack.testing.billing_upstream`, list prices from aiestack's price table):

- Anthropic through a route with ``prompt_cache = true`` (``cache_control`` breakpoints) and through
  one without;
- OpenAI (automatic prefix caching; nothing to mark).

It prints, per case, the tokens read from and written to the cache, the provider's bill, aiestack's
priced cost (they must agree to the cent fraction: exit 1 otherwise), and the ratio of the bill to
the uncached bill. The gateway's own caches are bypassed (``metadata.cache = "off"``).

    .venv/bin/python bench/provider_prompt_cache.py            # --requests 20 --system-tokens 3000
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import httpx

from aiestack.build import open_stack
from aiestack.models.anthropic import AnthropicChatModel
from aiestack.models.openai import OpenAIChatModel
from aiestack.models.registry import ModelEntry
from aiestack.settings import Settings
from aiestack.testing.billing_upstream import BillingUpstream, create_app
from aiestack.types import ChatRequest, Message, Params


async def run(requests: int, system_tokens: int) -> int:
    system = "You answer questions about the handbook below, citing its sections.\n" + (
        "Section text that stays the same from one request to the next. " * (system_tokens * 4 // 64)
    )
    mock = BillingUpstream()
    transport = httpx.ASGITransport(app=create_app(mock))
    models = [
        ModelEntry("claude", AnthropicChatModel(base_url="http://mock", api_key="k", transport=transport),
                   "claude-sonnet-4-0"),
        ModelEntry("gpt", OpenAIChatModel(base_url="http://mock/v1", api_key="k", transport=transport), "gpt-4o"),
    ]
    rows = []
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp), embedded_model=False, default_model="claude",
            routes={"claude-cached": {"deployments": ["claude"], "prompt_cache": True},
                    "claude-plain": {"deployments": ["claude"]},
                    "gpt-auto": {"deployments": ["gpt"]}},
        )
        async with open_stack(settings, models=models) as stack:
            for route, provider in (("claude-plain", "anthropic"), ("claude-cached", "anthropic"), ("gpt-auto", "openai")):
                before = dict(vars(mock.bills[provider]))
                priced = 0.0
                read = written = prompt = 0
                for i in range(requests):
                    ex = await stack.chat(ChatRequest(
                        model=route, params=Params(temperature=0, max_tokens=64), metadata={"cache": "off"},
                        messages=(Message("system", system), Message("user", f"What does section {i} say?")),
                    ))
                    assert ex.completion is not None, ex.error
                    usage = ex.completion.usage
                    priced += ex.completion.cost_usd or 0.0
                    read, written, prompt = read + usage.cached_tokens, written + usage.cache_write_tokens, prompt + usage.input_tokens
                bill = vars(mock.bills[provider])["usd"] - before["usd"]
                failed |= abs(bill - priced) > 1e-9
                rows.append((route, prompt, read, written, bill, priced))
    print(f"{requests} requests, system prompt ≈ {system_tokens} tokens, each a new question\n")
    print("| route | prompt tokens | read from cache | written to cache | provider bill (USD) | aiestack cost (USD) | bill / uncached |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for route, prompt, read, written, bill, priced in rows:
        base = rows[0][4] if route.startswith("claude") else uncached_bill(bill, read)
        print(f"| {route} | {prompt} | {read} | {written} | {bill:.5f} | {priced:.5f} | {bill / base:.3f} |")
    print("\naiestack's cost equals the provider's bill on every route." if not failed
          else "\nMISMATCH between aiestack's cost and the provider's bill.")
    return 1 if failed else 0


def uncached_bill(bill: float, read: int) -> float:
    """The OpenAI route's bill had its cached tokens been billed at the full input rate (gpt-4o)."""
    from aiestack.models.pricing import BUILTIN_PRICES

    price = BUILTIN_PRICES["gpt-4o"]
    return bill + read * (price.input_per_mtok - (price.cached_input_per_mtok or price.input_per_mtok)) / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--system-tokens", type=int, default=3000)
    args = parser.parse_args()
    return asyncio.run(run(args.requests, args.system_tokens))


if __name__ == "__main__":
    sys.exit(main())
