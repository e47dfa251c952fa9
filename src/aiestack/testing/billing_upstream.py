"""A mock Anthropic and OpenAI upstream that counts prompt-cache tokens and bills the way each provider does.

It answers Anthropic's ``POST /v1/messages`` (streamed) and OpenAI's ``POST /v1/chat/completions``
(whole or streamed) with a short fixed answer, and reports usage as the real APIs do:

- **Anthropic**: only prefixes that end at a ``cache_control`` breakpoint are cached, in the API's
  order (tools, then system, then messages), when at least ``min_tokens`` (1,024) long. A request
  reads the longest cached breakpoint prefix (``cache_read_input_tokens``), writes the prefixes of its
  later breakpoints (``cache_creation_input_tokens``), and the rest is ``input_tokens``. Entries live
  5 minutes from their last use.
- **OpenAI**: caching is automatic for prompts of at least 1,024 tokens; ``cached_tokens``
  (``usage.prompt_tokens_details``) is the longest prefix shared with an earlier prompt, rounded
  down to 1,024 + a multiple of 128; ``prompt_tokens`` counts every prompt token.

Tokens are characters / 4 of each block's text (the JSON of a tool). ``GET /stats`` returns each
provider's totals and its bill at the list prices of :mod:`aiestack.models.pricing` for the model
asked for (reads at the cached rate, Anthropic's writes at 1.25× input), so a test can check that
the gateway priced every exchange exactly as the provider billed it.

    python -m aiestack.testing.billing_upstream --port 9300
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from aiestack.models.pricing import BUILTIN_PRICES, Price
from aiestack.types import Usage

MIN_TOKENS = 1024
TTL_S = 300.0
ANSWER = ["The", " answer", " is", " here", "."]


def tokens(text: str) -> int:
    return len(text) // 4


@dataclass
class _Bill:
    requests: int = 0
    input_tokens: int = 0  # every prompt token
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0

    def add(self, model: str, usage: Usage) -> None:
        price: Price | None = BUILTIN_PRICES.get(model)
        self.requests += 1
        self.input_tokens += usage.input_tokens
        self.cached_tokens += usage.cached_tokens
        self.cache_write_tokens += usage.cache_write_tokens
        self.output_tokens += usage.output_tokens
        if price is not None:
            self.usd += price.cost(usage)


@dataclass
class BillingUpstream:
    """The mock's state: the two providers' caches and bills."""

    min_tokens: int = MIN_TOKENS
    anthropic_cache: dict[str, float] = field(default_factory=dict)  # prefix hash -> expiry
    openai_prompts: list[str] = field(default_factory=list)
    bills: dict[str, _Bill] = field(default_factory=lambda: {"anthropic": _Bill(), "openai": _Bill()})

    # ----------------------------------------------------------------- Anthropic

    def anthropic_usage(self, body: dict[str, Any], now: float) -> Usage:
        """Usage for one Messages request, updating the cache."""
        blocks: list[tuple[str, bool]] = []  # (canonical text, breakpoint)
        for tool in body.get("tools") or ():
            plain = {k: v for k, v in tool.items() if k != "cache_control"}
            blocks.append((json.dumps(plain, sort_keys=True), "cache_control" in tool))
        system = body.get("system")
        if isinstance(system, str):
            blocks.append((system, False))
        for block in system if isinstance(system, list) else ():
            blocks.append((str(block.get("text", "")), "cache_control" in block))
        for turn in body.get("messages") or ():
            content = turn.get("content")
            if isinstance(content, str):
                blocks.append((turn["role"] + ":" + content, False))
                continue
            for block in content or ():
                plain = {k: v for k, v in block.items() if k != "cache_control"}
                blocks.append((turn["role"] + ":" + json.dumps(plain, sort_keys=True), "cache_control" in block))
        total = sum(tokens(text) for text, _ in blocks)
        digest = hashlib.sha256()
        length = 0
        breakpoints: list[tuple[str, int]] = []  # (prefix hash, prefix tokens)
        for text, marked in blocks:
            digest.update(text.encode() + b"\x00")
            length += tokens(text)
            if marked and length >= self.min_tokens:
                breakpoints.append((digest.copy().hexdigest(), length))
        self.anthropic_cache = {k: t for k, t in self.anthropic_cache.items() if t > now}
        read = 0
        for key, length in breakpoints:
            if key in self.anthropic_cache:
                read = length
        written = 0
        for key, length in breakpoints:
            self.anthropic_cache[key] = now + TTL_S  # a read refreshes, a write creates
            if length > read:
                written = length - read
        return Usage(input_tokens=total, output_tokens=len(ANSWER), cached_tokens=read, cache_write_tokens=written)

    # ----------------------------------------------------------------- OpenAI

    def openai_usage(self, body: dict[str, Any]) -> Usage:
        prompt = "".join(
            f"{m.get('role')}:{m.get('content') if isinstance(m.get('content'), str) else json.dumps(m.get('content'))}\n"
            for m in body.get("messages") or ()
        )
        total = tokens(prompt)
        shared = 0
        for earlier in self.openai_prompts:
            n = 0
            limit = min(len(earlier), len(prompt))
            while n < limit and earlier[n] == prompt[n]:
                n += 1
            shared = max(shared, tokens(prompt[:n]))
        cached = 0 if shared < self.min_tokens else self.min_tokens + (shared - self.min_tokens) // 128 * 128
        if total >= self.min_tokens:
            self.openai_prompts.append(prompt)
        return Usage(input_tokens=total, output_tokens=len(ANSWER), cached_tokens=min(cached, total))


def _anthropic_sse(model: str, usage: Usage) -> bytes:
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {
            "id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [],
            "usage": {"input_tokens": usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens,
                      "cache_read_input_tokens": usage.cached_tokens,
                      "cache_creation_input_tokens": usage.cache_write_tokens, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        *({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": p}} for p in ANSWER),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": usage.output_tokens}},
        {"type": "message_stop"},
    ]
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


def _openai_usage_json(usage: Usage) -> dict[str, Any]:
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}}


def create_app(state: BillingUpstream | None = None) -> Starlette:
    mock = state or BillingUpstream()

    async def messages(request: Request) -> Response:
        body = await request.json()
        usage = mock.anthropic_usage(body, time.time())
        mock.bills["anthropic"].add(body.get("model", ""), usage)
        return Response(_anthropic_sse(body.get("model", ""), usage), media_type="text/event-stream")

    async def chat(request: Request) -> Response:
        body = await request.json()
        model = body.get("model", "")
        usage = mock.openai_usage(body)
        mock.bills["openai"].add(model, usage)
        if not body.get("stream"):
            return JSONResponse({
                "id": "chatcmpl-mock", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(ANSWER)},
                             "finish_reason": "stop"}],
                "usage": _openai_usage_json(usage),
            })

        async def events() -> Any:
            for piece in ANSWER:
                chunk = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": model,
                         "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            final = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": _openai_usage_json(usage)}
            yield f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def models(_: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": m, "object": "model"} for m in BUILTIN_PRICES]})

    async def stats(_: Request) -> Response:
        return JSONResponse({name: vars(bill) for name, bill in mock.bills.items()})

    return Starlette(routes=[
        Route("/v1/messages", messages, methods=["POST"]),
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/models", models),
        Route("/stats", stats),
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
