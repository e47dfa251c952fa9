"""The benchmark's HTTP client: one streamed chat completion, timed chunk by chunk.

Requests go to ``{base_url}/chat/completions`` of any OpenAI-compatible server with ``stream: true``
and ``stream_options.include_usage`` (servers that do not send usage are counted by chunks). The
body is parsed as Server-Sent Events line by line, and each ``data:`` event whose delta carries text
(content, reasoning or tool-call arguments) is stamped with ``perf_counter`` when its line arrives.
A request's clock starts when its body has been written to the connection (aiohttp's
``on_request_chunk_sent``), so the client's own queueing and connection set-up, which grow with
concurrency in a one-process client, are not counted as server latency (vLLM starts it before
handing the request to aiohttp). Every request has its own cache-bypass header set (``metadata.cache = "off"`` for aiestack), so a
benchmark of the gateway measures the model path, not the cache.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import aiohttp
import orjson

from aiestack.loadbench.metrics import RequestResult
from aiestack.loadbench.workload import RequestSpec


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to send: the API base URL (ending in ``/v1``), the model, the key, extra body fields."""

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 600.0
    ignore_eos: bool = False  # vLLM's extension: generate exactly max_tokens
    temperature: float | None = 0.0
    bypass_cache: bool = True

    @property
    def url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"

    def headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        return headers

    def body(self, spec: RequestSpec) -> bytes:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": list(spec.messages),
            "max_tokens": spec.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.ignore_eos:
            body["ignore_eos"] = True
            body["min_tokens"] = spec.max_tokens
        if self.bypass_cache:
            body["metadata"] = {"cache": "off"}
        return orjson.dumps(body)


def _has_text(delta: dict[str, Any]) -> bool:
    if delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning"):
        return True
    return any((call.get("function") or {}).get("arguments") for call in delta.get("tool_calls") or ())


async def _body_sent(_session: object, ctx: SimpleNamespace, _params: object) -> None:
    result = ctx.trace_request_ctx
    if isinstance(result, RequestResult):
        result.start = time.perf_counter()


def trace_config() -> aiohttp.TraceConfig:
    """The session's trace hook that stamps each request's start when its body is on the wire."""
    config = aiohttp.TraceConfig()
    config.on_request_chunk_sent.append(_body_sent)
    return config


async def send(session: aiohttp.ClientSession, endpoint: Endpoint, spec: RequestSpec) -> RequestResult:
    """Send one request and time it; failures are recorded on the result, never raised."""
    result = RequestResult(start=time.perf_counter())
    try:
        async with session.post(
            endpoint.url, data=endpoint.body(spec), headers=endpoint.headers(),
            timeout=aiohttp.ClientTimeout(total=endpoint.timeout_s), trace_request_ctx=result,
        ) as response:
            if response.status != 200:
                text = (await response.text())[:300]
                result.error = f"HTTP {response.status}: {text}"
                return result
            done = False
            async for raw in response.content:
                now = time.perf_counter()
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    done = True
                    break
                event = orjson.loads(data)
                if "error" in event:
                    result.error = f"stream error: {str(event['error'])[:300]}"
                    break
                for choice in event.get("choices") or ():
                    if _has_text(choice.get("delta") or {}):
                        result.chunk_times.append(now)
                        break
                usage = event.get("usage")
                if usage:
                    result.output_tokens = usage.get("completion_tokens")
                    result.input_tokens = usage.get("prompt_tokens")
            if not done and result.error is None:
                result.error = "the stream ended without [DONE]"
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError, OSError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:300]
    result.end = time.perf_counter()
    return result
