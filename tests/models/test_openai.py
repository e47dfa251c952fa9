"""The openai provider against httpx.MockTransport: wire translation, streaming, errors, health.

Also covers the shared HTTP layer (SSE parsing, Retry-After, error shapes) that the other
HTTP providers use.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from aiestack.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    StreamBroken,
)
from aiestack.models import http
from aiestack.models.base import ChatModel
from aiestack.models.openai import OpenAIChatModel, OpenAIModelConfig
from aiestack.models.openai_wire import ChunkParser, WireOptions, chat_body
from aiestack.streams import collect
from aiestack.types import (
    ChatRequest,
    Completion,
    ContentPart,
    Delta,
    Message,
    Params,
    ResponseFormat,
    Tool,
    ToolCall,
    Usage,
)

pytestmark = pytest.mark.unit

BASE = "http://llm.test/v1"
KEY = "sk-test-secret-123"


# --------------------------------------------------------------------------- helpers


def sse(*events: Mapping[str, Any] | str) -> bytes:
    """An SSE body: each event a JSON object (or a raw string such as ``[DONE]``)."""
    out = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    return "".join(out).encode()


def chunk(
    content: str | None = None,
    *,
    finish: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    logprobs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
    choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
    if logprobs is not None:
        choice["logprobs"] = logprobs
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}


def usage_chunk(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


class Recorder:
    """A MockTransport handler that answers from a script and remembers the requests."""

    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.content]


def streaming(body: bytes, status: int = 200, headers: Mapping[str, str] | None = None) -> Recorder:
    return Recorder(
        lambda _: httpx.Response(
            status, content=body, headers={"content-type": "text/event-stream", **(headers or {})}
        )
    )


def provider(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> OpenAIChatModel:
    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("api_key_env", "OPENAI_API_KEY")
    return OpenAIChatModel(base_url=BASE, transport=httpx.MockTransport(handler), **kwargs)


def request(text: str = "hi", *, stream: bool = True, **params: Any) -> ChatRequest:
    """A request; streamed unless ``stream=False`` (a whole answer, asked of the upstream whole:
    tests/models/test_openai_whole.py)."""
    return ChatRequest(
        model="m", messages=(Message(role="user", content=text),), params=Params(**params), stream=stream
    )


async def complete(model: ChatModel, req: ChatRequest) -> Completion:
    """What the pipeline does: wrap the provider's stream in a completion and collect it."""
    streamed = Completion(
        message=Message(role="assistant"), model=req.model, provider=model.provider, stream=model.stream(req)
    )
    return await collect(streamed)


async def drain(stream: AsyncIterator[Delta]) -> list[Delta]:
    return [d async for d in stream]


class CutStream(httpx.AsyncByteStream):
    """A body that yields ``parts`` and then fails like a dropped connection (or just ends)."""

    def __init__(self, parts: Iterable[bytes], error: Exception | None = None) -> None:
        self.parts = list(parts)
        self.error = error
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part
        if self.error is not None:
            raise self.error

    async def aclose(self) -> None:
        self.closed = True


# --------------------------------------------------------------------------- streaming


async def test_streamed_text_is_assembled_with_usage_and_timing() -> None:
    body = sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        chunk("Hel"),
        chunk("lo"),
        chunk(None, finish="stop"),
        usage_chunk(12, 2, cached=4),
        "[DONE]",
    )
    rec = streaming(body)
    model = provider(rec)

    deltas = await drain(model.stream(request("say hello")))

    assert [d.text for d in deltas] == ["Hel", "lo", ""]
    assert all(d.finish_reason is None and d.usage is None for d in deltas[:-1])
    last = deltas[-1]
    assert last.finish_reason == "stop"
    assert last.usage == Usage(input_tokens=12, output_tokens=2, cached_tokens=4)
    assert last.timing is not None and last.timing.ttft_ms is not None
    assert last.timing.total_ms >= last.timing.ttft_ms
    assert last.timing.tpot_ms is not None  # two output tokens: one interval

    sent = rec.requests[0]
    assert sent.url == httpx.URL(f"{BASE}/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert rec.bodies[0]["stream"] is True
    assert rec.bodies[0]["stream_options"] == {"include_usage": True}
    assert rec.bodies[0]["messages"] == [{"role": "user", "content": "say hello"}]
    await model.aclose()


async def test_collect_builds_the_completion() -> None:
    model = provider(streaming(sse(chunk("4"), chunk(None, finish="length"), usage_chunk(5, 1), "[DONE]")))
    done = await complete(model, request("2+2?"))
    assert done.text == "4"
    assert done.finish_reason == "length"
    assert done.usage == Usage(5, 1, 0)


async def test_without_usage_the_stream_still_finishes_with_zero_usage() -> None:
    model = provider(streaming(sse(chunk("a"), chunk("b"), chunk("c", finish="stop"), "[DONE]")))
    deltas = await drain(model.stream(request()))
    assert "".join(d.text for d in deltas) == "abc"
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage == Usage()
    assert deltas[-1].timing is not None and deltas[-1].timing.ttft_ms is not None


async def test_tool_call_fragments_across_chunks_are_assembled() -> None:
    body = sse(
        chunk(tool_calls=[{"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather"}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": '{"ci'}}]),
        chunk(tool_calls=[{"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]),
        chunk(tool_calls=[{"index": 1, "id": "call_2", "function": {"name": "time", "arguments": "{}"}}]),
        chunk(None, finish="tool_calls"),
        usage_chunk(30, 12),
        "[DONE]",
    )
    done = await complete(provider(streaming(body)), request("weather and time in Oslo?"))
    assert done.finish_reason == "tool_calls"
    assert done.message.tool_calls == (
        ToolCall(id="call_1", name="weather", arguments='{"city": "Oslo"}'),
        ToolCall(id="call_2", name="time", arguments="{}"),
    )


def test_tool_calls_without_index_are_numbered_by_id() -> None:
    parser = ChunkParser()
    first = parser.feed(chunk(tool_calls=[{"id": "a", "function": {"name": "f", "arguments": {"x": 1}}}]))
    second = parser.feed(chunk(tool_calls=[{"id": "b", "function": {"name": "g", "arguments": "{}"}}]))
    assert first.tool_calls[0].index == 0 and first.tool_calls[0].arguments == '{"x": 1}'
    assert second.tool_calls[0].index == 1


async def test_logprobs_become_token_logprobs() -> None:
    lp = {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.1,
                "top_logprobs": [{"token": "Hi", "logprob": -0.1}, {"token": "Yo", "logprob": -2.5}],
            }
        ]
    }
    body = sse(chunk("Hi", logprobs=lp), chunk(None, finish="stop"), "[DONE]")
    done = await complete(provider(streaming(body)), request(logprobs=True, top_logprobs=2))
    assert len(done.logprobs) == 1
    assert done.logprobs[0].token == "Hi"
    assert done.logprobs[0].logprob == pytest.approx(-0.1)
    assert done.logprobs[0].top == (("Hi", -0.1), ("Yo", -2.5))


async def test_stream_cut_mid_answer_raises_stream_broken() -> None:
    model = provider(streaming(sse(chunk("Once"), chunk(" upon"))))  # no finish_reason, no [DONE]
    seen: list[str] = []
    with pytest.raises(StreamBroken, match="ended before the answer finished"):
        async for delta in model.stream(request()):
            seen.append(delta.text)
    assert seen == ["Once", " upon"]


async def test_done_without_finish_reason_is_broken() -> None:
    model = provider(streaming(sse(chunk("Once"), "[DONE]")))
    with pytest.raises(StreamBroken):
        await drain(model.stream(request()))


async def test_truncated_event_is_broken() -> None:
    body = sse(chunk("Once")) + b'data: {"choices": [{"index": 0, "del'
    with pytest.raises(StreamBroken, match="malformed"):
        await drain(provider(streaming(body)).stream(request()))


async def test_connection_dropped_mid_body_is_broken() -> None:
    body = CutStream([sse(chunk("Once"))], httpx.ReadError("connection reset by peer"))
    model = provider(lambda _: httpx.Response(200, stream=body))
    with pytest.raises(StreamBroken, match="broke in the middle"):
        await drain(model.stream(request()))


async def test_stall_mid_body_is_a_timeout() -> None:
    body = CutStream([sse(chunk("Once"))], httpx.ReadTimeout("timed out"))
    model = provider(lambda _: httpx.Response(200, stream=body), timeout_s=7)
    with pytest.raises(ProviderTimeout, match="in the middle") as info:
        await drain(model.stream(request()))
    assert "7s" in str(info.value)


async def test_consumer_closing_early_releases_the_response() -> None:
    body = CutStream([sse(chunk("a")), sse(chunk("b")), sse(chunk(None, finish="stop"), "[DONE]")])
    model = provider(lambda _: httpx.Response(200, stream=body))
    stream = model.stream(request())
    assert (await anext(stream)).text == "a"
    await stream.aclose()  # type: ignore[attr-defined]
    assert body.closed


async def test_error_event_in_stream_raises_provider_error() -> None:
    err = {"error": {"message": "The server had an error while processing", "type": "server_error"}}
    model = provider(streaming(sse(chunk("par"), err)))
    with pytest.raises(ProviderUnavailable, match="server had an error"):
        await drain(model.stream(request()))


async def test_vllm_style_error_event_maps_by_code() -> None:
    err = {"object": "error", "message": "This model's maximum context length is 4096 tokens.", "code": 400}
    with pytest.raises(ContextLengthExceeded):
        await drain(provider(streaming(sse(err))).stream(request()))


# --------------------------------------------------------------------------- request translation


def test_every_param_is_translated() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    params = Params(
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        max_tokens=128,
        stop=("\n\n", "END"),
        seed=7,
        logprobs=True,
        top_logprobs=3,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        response_format=ResponseFormat(type="json_schema", schema=schema, name="answer", strict=True),
        tools=(
            Tool(name="search", description="Search the web", parameters={"type": "object"}),
            Tool(name="now"),
        ),
        tool_choice="search",
    )
    body = chat_body(ChatRequest(model="gpt-x", messages=(Message("user", "q"),), params=params, user="u1"))
    assert body == {
        "model": "gpt-x",
        "messages": [{"role": "user", "content": "q"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 128,
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "stop": ["\n\n", "END"],
        "logprobs": True,
        "top_logprobs": 3,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema, "strict": True},
        },
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "search",
                    "description": "Search the web",
                    "parameters": {"type": "object"},
                },
            },
            {"type": "function", "function": {"name": "now"}},
        ],
        "tool_choice": {"type": "function", "function": {"name": "search"}},
        "user": "u1",
    }


def test_wire_options_pick_top_k_and_the_max_tokens_name() -> None:
    req = request(top_k=20, max_tokens=50, tool_choice="required")
    body = chat_body(req, WireOptions(max_tokens_field="max_completion_tokens", send_top_k=True))
    assert body["top_k"] == 20
    assert body["max_completion_tokens"] == 50 and "max_tokens" not in body
    assert body["tool_choice"] == "required"
    assert "top_k" not in chat_body(req)


def test_unset_params_are_left_to_the_upstream() -> None:
    body = chat_body(request(response_format=ResponseFormat(type="text")))
    assert set(body) == {"model", "messages", "stream", "stream_options"}
    json_object = chat_body(request(response_format=ResponseFormat(type="json_object")))
    assert json_object["response_format"] == {"type": "json_object"}


def test_json_schema_without_schema_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="without a schema"):
        chat_body(request(response_format=ResponseFormat(type="json_schema")))


def test_messages_with_parts_tool_calls_and_results() -> None:
    messages = (
        Message("system", "be brief"),
        Message(
            "user",
            (
                ContentPart("text", text="what is this?"),
                ContentPart("image_url", url="data:image/png;base64,AAA"),
            ),
            name="ann",
        ),
        Message("assistant", "", tool_calls=(ToolCall("c1", "lookup", '{"q": "x"}'),)),
        Message("tool", "found it", tool_call_id="c1"),
    )
    body = chat_body(ChatRequest(model="m", messages=messages))
    assert body["messages"] == [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
            ],
            "name": "ann",
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "found it"},
    ]


# --------------------------------------------------------------------------- error mapping


def error_body(message: str, code: str | None = None, kind: str = "invalid_request_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, error_body("too long", code="context_length_exceeded"), ContextLengthExceeded),
        (400, error_body("This model's maximum context length is 8192 tokens."), ContextLengthExceeded),
        (400, error_body("the request exceeds the available context size"), ContextLengthExceeded),
        (400, error_body("temperature must be at most 2"), ProviderBadRequest),
        (404, error_body("The model `nope` does not exist", code="model_not_found"), ProviderBadRequest),
        (422, b'{"detail": "field required"}', ProviderBadRequest),
        (401, error_body("Incorrect API key provided", kind="invalid_request_error"), ProviderAuthError),
        (403, error_body("Forbidden"), ProviderAuthError),
        (500, error_body("internal", kind="server_error"), ProviderUnavailable),
        (503, b"Service Unavailable", ProviderUnavailable),
        (429, error_body("Rate limit reached", kind="requests"), ProviderRateLimited),
    ],
)
async def test_http_status_maps_to_typed_error(
    status: int, body: bytes, expected: type[ProviderError]
) -> None:
    model = provider(Recorder(lambda _: httpx.Response(status, content=body)))
    with pytest.raises(ProviderError) as info:
        await drain(model.stream(request()))
    err = info.value
    assert type(err) is expected
    assert err.status == status
    assert err.provider == "openai"
    assert f"HTTP {status}" in str(err)


async def test_error_text_carries_upstream_message_but_never_the_key() -> None:
    body = error_body(f"Incorrect API key provided: {KEY}. Find yours at the dashboard.")
    model = provider(Recorder(lambda _: httpx.Response(401, content=body)))
    with pytest.raises(ProviderAuthError) as info:
        await drain(model.stream(request()))
    text = str(info.value)
    assert "Incorrect API key provided" in text
    assert KEY not in text
    assert "OPENAI_API_KEY" in text  # the hint names the variable to set


async def test_auth_error_without_key_env_says_how_to_configure_one() -> None:
    model = provider(Recorder(lambda _: httpx.Response(401, content=b"{}")), api_key=None, api_key_env=None)
    with pytest.raises(ProviderAuthError, match="api_key_env"):
        await drain(model.stream(request()))


async def test_rate_limit_reads_retry_after_seconds() -> None:
    model = provider(Recorder(lambda _: httpx.Response(429, content=b"{}", headers={"retry-after": "3"})))
    with pytest.raises(ProviderRateLimited) as info:
        await drain(model.stream(request()))
    assert info.value.retry_after == 3.0
    assert info.value.retryable
    assert "after 3s" in str(info.value)


async def test_rate_limit_reads_openai_reset_headers() -> None:
    headers = {"x-ratelimit-reset-requests": "120ms", "x-ratelimit-reset-tokens": "1m30s"}
    model = provider(Recorder(lambda _: httpx.Response(429, content=b"{}", headers=headers)))
    with pytest.raises(ProviderRateLimited) as info:
        await drain(model.stream(request()))
    assert info.value.retry_after == pytest.approx(90.0)


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    later = format_datetime(datetime.fromtimestamp(now + 42, tz=UTC), usegmt=True)
    iso = (datetime.fromtimestamp(now, tz=UTC) + timedelta(seconds=8)).isoformat().replace("+00:00", "Z")
    assert http.retry_after({"Retry-After": "2.5"}, now=now) == 2.5
    assert http.retry_after({"retry-after": later}, now=now) == pytest.approx(42.0)
    assert http.retry_after({"retry-after-ms": "1500", "retry-after": "9"}, now=now) == 1.5
    assert http.retry_after({"x-ratelimit-reset-tokens": "6m0s"}, now=now) == 360.0
    assert http.retry_after({"anthropic-ratelimit-tokens-reset": iso}, now=now) == pytest.approx(8.0)
    assert http.retry_after({"retry-after": "not a time"}, now=now) is None
    assert http.retry_after({}, now=now) is None
    past = format_datetime(datetime.fromtimestamp(now - 10, tz=UTC), usegmt=True)
    assert http.retry_after({"retry-after": past}, now=now) == 0.0


async def test_insufficient_quota_says_check_billing() -> None:
    body = error_body("You exceeded your current quota", code="insufficient_quota", kind="insufficient_quota")
    model = provider(Recorder(lambda _: httpx.Response(429, content=body)))
    with pytest.raises(ProviderRateLimited, match="billing"):
        await drain(model.stream(request()))


async def test_connection_refused_is_a_connection_error() -> None:
    def refuse(_: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    with pytest.raises(ProviderConnectionError) as info:
        await drain(provider(refuse).stream(request()))
    assert "Connection refused" in str(info.value)
    assert f"Is the server at {BASE} running" in str(info.value)
    assert info.value.retryable


async def test_timeout_before_answering_is_a_timeout() -> None:
    def stall(_: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out")

    with pytest.raises(ProviderTimeout, match="before answering"):
        await drain(provider(stall).stream(request()))


async def test_sse_parser_follows_the_format() -> None:
    async def lines() -> AsyncIterator[str]:
        for line in [": keep-alive", "event: delta", "data: a", "data: b", "id: 7", "", "", "data:c"]:
            yield line

    events = [e async for e in http.parse_sse(lines())]
    assert events == [http.SSEEvent("delta", "a\nb"), http.SSEEvent(None, "c")]


# --------------------------------------------------------------------------- check, config


async def test_check_ok_and_says_whether_the_model_is_listed() -> None:
    listing = {"object": "list", "data": [{"id": "llama-3"}, {"id": "qwen"}]}
    rec = Recorder(lambda _: httpx.Response(200, json=listing))
    model = provider(rec)
    listed = await model.check("qwen")
    missing = await model.check("gpt-9")
    assert listed.ok and "'qwen' is listed" in listed.detail
    assert missing.ok and "not among the 2 listed models" in missing.detail and "llama-3" in missing.detail
    assert rec.requests[0].method == "GET" and rec.requests[0].url == httpx.URL(f"{BASE}/models")
    assert listed.latency_ms is not None


async def test_check_fails_with_the_reason() -> None:
    unauthorised = await provider(Recorder(lambda _: httpx.Response(401, content=b"{}"))).check("m")
    assert not unauthorised.ok and "OPENAI_API_KEY" in unauthorised.detail

    def refuse(_: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused")

    down = await provider(refuse).check("m")
    assert not down.ok and "could not connect" in down.detail


async def test_config_builds_a_provider_reading_the_key_from_the_environment() -> None:
    cfg = OpenAIModelConfig.model_validate(
        {
            "provider": "openai",
            "base_url": "http://vllm.local:8000/v1/",
            "headers": {"x-team": "a"},
            "api_key_env": "MY_KEY",
        }
    )
    assert cfg.upstream("local-llama") == "local-llama"
    rec = streaming(sse(chunk("ok", finish="stop"), "[DONE]"))
    model = cfg.create({"MY_KEY": "k-1"}, transport=httpx.MockTransport(rec))
    assert isinstance(model, ChatModel)
    await drain(model.stream(request()))
    assert rec.requests[0].url == httpx.URL("http://vllm.local:8000/v1/chat/completions")
    assert rec.requests[0].headers["authorization"] == "Bearer k-1"
    assert rec.requests[0].headers["x-team"] == "a"


async def test_config_without_key_sends_no_authorization() -> None:
    for cfg in (
        OpenAIModelConfig(provider="openai", api_key_env=""),
        OpenAIModelConfig(provider="openai", api_key_env="UNSET_VAR_FOR_TEST"),
    ):
        rec = streaming(sse(chunk("ok", finish="stop"), "[DONE]"))
        await drain(cfg.create({}, transport=httpx.MockTransport(rec)).stream(request()))
        assert "authorization" not in rec.requests[0].headers


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValidationError):
        OpenAIModelConfig.model_validate({"provider": "openai", "base_uri": "http://x"})
    with pytest.raises(ValidationError):
        OpenAIModelConfig.model_validate({"provider": "openai", "timeout_s": 0})
    with pytest.raises(ValidationError):
        OpenAIModelConfig.model_validate({"provider": "anthropic"})
