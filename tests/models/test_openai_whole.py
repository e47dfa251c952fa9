"""The openai provider asked for a whole answer: one JSON body from the upstream instead of a stream.

A request with ``stream`` false is asked of the upstream whole (``whole_upstream``, on by default);
these tests pin what that keeps (text, tool calls, logprobs, usage with cached tokens, typed errors)
and what it changes (TTFT is the time to the whole answer, TPOT is unknown, ``whole_timeout_s``
bounds the wait). The streamed path is tests/models/test_openai.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import httpx
import pytest

from aiestack.errors import (
    ContextLengthExceeded,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    StreamBroken,
)
from aiestack.models.openai import OpenAIChatModel, OpenAIModelConfig
from aiestack.models.openai_wire import answer_delta
from aiestack.types import ChatRequest, Delta, Message, Params, Timing, ToolCallDelta, Usage

pytestmark = pytest.mark.unit

BASE = "http://llm.test/v1"
KEY = "sk-test-secret-123"


def answer(
    content: str | None = "Hello.",
    *,
    finish: str | None = "stop",
    usage: dict[str, Any] | None = None,
    **message: Any,
) -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", "content": content, **message}, "finish_reason": finish}
    out: dict[str, Any] = {"id": "c1", "object": "chat.completion", "model": "m", "choices": [choice]}
    if usage is not None:
        out["usage"] = usage
    return out


class Recorder:
    def __init__(self, reply: Callable[[httpx.Request], httpx.Response]) -> None:
        self.reply = reply
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.reply(request)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests]


def replying(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Recorder:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Recorder(lambda _: httpx.Response(status, content=content, headers=headers or {}))


def provider(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> OpenAIChatModel:
    return OpenAIChatModel(
        base_url=BASE, api_key=KEY, api_key_env="OPENAI_API_KEY", transport=httpx.MockTransport(handler), **kwargs
    )


def whole(text: str = "hi", **params: Any) -> ChatRequest:
    return ChatRequest(model="m", messages=(Message("user", text),), params=Params(**params))


async def drain(stream: AsyncIterator[Delta]) -> list[Delta]:
    return [d async for d in stream]


class CutBody(httpx.AsyncByteStream):
    def __init__(self, parts: Iterable[bytes], error: Exception) -> None:
        self.parts, self.error = list(parts), error

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part
        raise self.error


# --------------------------------------------------------------------------- the answer


async def test_whole_answer_is_one_delta_with_usage_cached_tokens_and_timing() -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14, "prompt_tokens_details": {"cached_tokens": 8}}
    rec = replying(answer("Hello.", usage=usage))
    model = provider(rec)
    deltas = await drain(model.stream(whole("say hello", temperature=0)))
    await model.aclose()

    assert len(deltas) == 1
    done = deltas[0]
    assert done.text == "Hello." and done.finish_reason == "stop"
    assert done.usage == Usage(input_tokens=12, output_tokens=2, cached_tokens=8)
    assert done.timing is not None and done.timing.tpot_ms is None  # no tokens were seen arriving
    assert done.timing.ttft_ms is not None and done.timing.ttft_ms == done.timing.total_ms
    body = rec.bodies[0]
    assert "stream" not in body and "stream_options" not in body
    assert body["messages"] == [{"role": "user", "content": "say hello"}] and body["temperature"] == 0
    assert rec.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_tool_calls_and_logprobs_of_a_whole_answer() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Oslo"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": {"tz": "CET"}}},
    ]
    lp = {"content": [{"token": "Hi", "logprob": -0.1, "top_logprobs": [{"token": "Yo", "logprob": -2.5}]}]}
    body = answer(None, finish="tool_calls", tool_calls=calls)
    body["choices"][0]["logprobs"] = lp
    (done,) = await drain(provider(replying(body)).stream(whole(logprobs=True)))
    assert done.text == "" and done.finish_reason == "tool_calls"
    assert done.tool_calls == (
        ToolCallDelta(index=0, id="call_1", name="weather", arguments='{"city": "Oslo"}'),
        ToolCallDelta(index=1, id="call_2", name="time", arguments='{"tz": "CET"}'),
    )
    assert [(t.token, t.logprob, t.top) for t in done.logprobs] == [("Hi", -0.1, (("Yo", -2.5),))]


async def test_without_usage_or_finish_reason_the_answer_still_finishes() -> None:
    (done,) = await drain(provider(replying(answer("ok", finish=None))).stream(whole()))
    assert done.text == "ok" and done.finish_reason == "stop" and done.usage == Usage()


def test_answer_delta_reads_the_first_choice_and_maps_the_finish_reason() -> None:
    body = answer("b", finish="length")
    body["choices"].insert(0, {"index": 1, "message": {"content": "not me"}, "finish_reason": "stop"})
    timing = Timing(ttft_ms=5.0, total_ms=5.0)
    delta = answer_delta(body, timing)
    assert delta == Delta(text="b", finish_reason="length", usage=Usage(), timing=timing)
    assert answer_delta({"choices": []}, timing) is None


async def test_streamed_requests_and_whole_upstream_off_still_stream() -> None:
    sse = b'data: {"choices":[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'
    for model, req in (
        (provider, ChatRequest(model="m", messages=(Message("user", "q"),), stream=True)),
        (None, whole()),
    ):
        rec = replying(sse, headers={"content-type": "text/event-stream"})
        if model is None:
            config = OpenAIModelConfig(provider="openai", base_url=BASE, api_key_env="", whole_upstream=False)
            chat = config.create({}, transport=httpx.MockTransport(rec))
        else:
            chat = provider(rec)
        deltas = await drain(chat.stream(req))
        assert "".join(d.text for d in deltas) == "ok" and deltas[-1].finish_reason == "stop"
        assert deltas[-1].timing is not None and deltas[-1].timing.ttft_ms is not None
        assert rec.bodies[0]["stream"] is True


async def test_whole_timeout_is_the_read_timeout_of_a_whole_call_only() -> None:
    rec = replying(answer())
    config = OpenAIModelConfig(provider="openai", base_url=BASE, api_key_env="", timeout_s=7, whole_timeout_s=90)
    await drain(config.create({}, transport=httpx.MockTransport(rec)).stream(whole()))
    timeout = rec.requests[0].extensions["timeout"]
    assert timeout["read"] == 90 and timeout["connect"] == 7 and timeout["pool"] == 7


# --------------------------------------------------------------------------- errors, typed as in a stream


async def test_status_errors_of_a_whole_call_are_typed() -> None:
    rate = replying({"error": {"message": "slow down", "type": "rate_limit"}}, 429, {"retry-after": "3"})
    with pytest.raises(ProviderRateLimited) as info:
        await drain(provider(rate).stream(whole()))
    assert info.value.retry_after == 3
    down = replying({"error": {"message": "overloaded"}}, 503)
    with pytest.raises(ProviderUnavailable, match="overloaded"):
        await drain(provider(down).stream(whole()))
    long = replying({"error": {"message": "maximum context length is 8192 tokens", "code": "context_length_exceeded"}}, 400)
    with pytest.raises(ContextLengthExceeded):
        await drain(provider(long).stream(whole()))


async def test_error_document_in_a_200_answer_is_the_upstreams_error() -> None:
    body = {"error": {"message": f"server error (key {KEY})", "type": "server_error"}}
    with pytest.raises(ProviderUnavailable, match="reported an error in its answer") as info:
        await drain(provider(replying(body)).stream(whole()))
    assert KEY not in str(info.value)


async def test_answer_without_a_choice_is_unavailable_and_non_json_is_named() -> None:
    with pytest.raises(ProviderUnavailable, match="without a choice"):
        await drain(provider(replying({"id": "x", "choices": []})).stream(whole()))
    with pytest.raises(ProviderError, match="not a JSON object") as info:
        await drain(provider(replying(b"<html>gateway</html>")).stream(whole()))
    assert not info.value.retryable


async def test_connection_cut_or_stall_in_the_body_is_broken_or_a_timeout() -> None:
    part = json.dumps(answer()).encode()[:20]
    cut = provider(lambda _: httpx.Response(200, stream=CutBody([part], httpx.ReadError("reset by peer"))))
    with pytest.raises(StreamBroken, match="broke in the middle"):
        await drain(cut.stream(whole()))

    stall = provider(lambda _: httpx.Response(200, stream=CutBody([part], httpx.ReadTimeout("timed out"))), whole_timeout_s=42)
    with pytest.raises(ProviderTimeout, match="42s") as info:
        await drain(stall.stream(whole()))
    assert "whole_timeout_s" in (info.value.hint or "")

    def silent(_: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out")

    with pytest.raises(ProviderTimeout, match="before answering"):
        await drain(provider(silent, whole_timeout_s=42).stream(whole()))
