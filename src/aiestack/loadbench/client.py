"""The benchmark's HTTP client: one streamed chat completion, timed chunk by chunk.

Requests go to ``{base_url}/chat/completions`` of any OpenAI-compatible server with ``stream: true``
and ``stream_options.include_usage`` (servers that do not send usage are counted by chunks). The
body is parsed as Server-Sent Events line by line, and each ``data:`` event whose delta carries text
(content, reasoning or tool-call arguments) is stamped with the time the bytes that completed its
line arrived (:mod:`aiestack.loadbench.wire`: the kernel's receive time over plain http on Linux,
else when the transport handed them over, before any parsing); a request ends when its ``[DONE]``
arrived. A request's clock starts just before it is written to the connection, so the client's own
queueing and connection set-up, which grow with concurrency in a one-process client, are not counted
as server latency (vLLM starts it before handing the request to aiohttp, and stamps each chunk when
its task reads it). Every request has its own cache-bypass header set (``metadata.cache = "off"`` for
aiestack), so a benchmark of the gateway measures the model path, not the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import h11
import orjson

from aiestack.loadbench.metrics import RequestResult
from aiestack.loadbench.wire import Connection, Pool
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


_END_GRACE_S = 1.0


def _has_text(delta: dict[str, Any]) -> bool:
    if delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning"):
        return True
    return any((call.get("function") or {}).get("arguments") for call in delta.get("tool_calls") or ())


def _event(line: bytes, at: float, result: RequestResult) -> bool:
    """Record one SSE line that arrived at ``at``; True when the stream has ended (``[DONE]`` or an error)."""
    line = line.strip()
    if not line.startswith(b"data:"):
        return False
    data = line[5:].strip()
    if data == b"[DONE]":
        result.end = at
        return True
    event = orjson.loads(data)
    if "error" in event:
        result.error = f"stream error: {str(event['error'])[:300]}"
        return True
    for choice in event.get("choices") or ():
        if _has_text(choice.get("delta") or {}):
            result.chunk_times.append(at)
            break
    usage = event.get("usage")
    if usage:
        result.output_tokens = usage.get("completion_tokens")
        result.input_tokens = usage.get("prompt_tokens")
    return False


async def _stream(connection: Connection, result: RequestResult) -> None:
    """Read the event stream to ``[DONE]``, each line stamped with its bytes' arrival, then the body's end.

    The body's end (the last chunk of a chunked body) is waited for at most ``_END_GRACE_S`` after
    ``[DONE]``, so that the connection can be reused; a server that keeps the stream open after it
    loses the connection, not the request."""
    pending = b""
    while True:
        at, event = await connection.next_event()
        if isinstance(event, h11.EndOfMessage):
            if not (pending.strip() and _event(pending, at, result)):
                result.error = result.error or "the stream ended without [DONE]"
            return
        if not isinstance(event, h11.Data):
            continue
        *lines, pending = (pending + event.data).split(b"\n")
        for line in lines:
            if _event(line, at, result):
                if result.error is None:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(_END_GRACE_S):
                            await connection.body_start(0)
                return


async def send(pool: Pool, endpoint: Endpoint, spec: RequestSpec) -> RequestResult:
    """Send one request on a connection of ``pool`` (opened for ``endpoint.url``) and time it.

    Failures (refused or reset connections, a status other than 200, a broken stream, a timeout of
    ``endpoint.timeout_s`` for the whole exchange) are recorded on the result, never raised."""
    result = RequestResult(start=time.perf_counter())
    connection: Connection | None = None
    headers = [("host", pool.host_header), ("user-agent", "aiestack-bench-load"), ("accept", "*/*"),
               *endpoint.headers().items()]
    try:
        async with asyncio.timeout(endpoint.timeout_s):
            connection = await pool.connect()
            result.start = await connection.post(pool.target, headers, endpoint.body(spec))
            _, response = await connection.response()
            if response.status_code != 200:
                text = (await connection.body_start(1200)).decode("utf-8", "replace")[:300]
                result.error = f"HTTP {response.status_code}: {text}"
            else:
                await _stream(connection, result)
    except TimeoutError:
        result.error = f"timed out after {endpoint.timeout_s:g} s"
    except (OSError, h11.ProtocolError, ValueError) as exc:  # ValueError: orjson's, a bad header's
        result.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        if connection is not None:
            pool.release(connection)
    if not result.end or result.error is not None:
        result.end = time.perf_counter()
    return result
