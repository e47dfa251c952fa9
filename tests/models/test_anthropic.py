"""The anthropic provider against httpx.MockTransport: Messages API translation, events, errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from aiestack.errors import (
    ContextLengthExceeded,
    InvalidRequest,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderError,
    ProviderRateLimited,
    ProviderUnavailable,
    StreamBroken,
)
from aiestack.models.anthropic import AnthropicChatModel, AnthropicModelConfig
from aiestack.models.anthropic_wire import RESPONSE_TOOL, messages_body
from aiestack.models.base import ChatModel
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

BASE = "http://claude.test"
KEY = "sk-ant-test-secret"


# --------------------------------------------------------------------------- helpers


def sse(*events: Mapping[str, Any]) -> bytes:
    """An Anthropic SSE body: each event named by its ``type``."""
    return "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in events).encode()


def start(input_tokens: int = 10, cache_read: int = 0, cache_write: int = 0) -> dict[str, Any]:
    usage = {
        "input_tokens": input_tokens,
        "output_tokens": 1,
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_write,
    }
    message = {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "usage": usage}
    return {"type": "message_start", "message": message}


def text_block(index: int, *pieces: str) -> list[dict[str, Any]]:
    return [
        {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
        *(
            {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": p}}
            for p in pieces
        ),
        {"type": "content_block_stop", "index": index},
    ]


def tool_block(index: int, call_id: str, name: str, *fragments: str) -> list[dict[str, Any]]:
    block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
    return [
        {"type": "content_block_start", "index": index, "content_block": block},
        *(
            {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": f},
            }
            for f in fragments
        ),
        {"type": "content_block_stop", "index": index},
    ]


def finish(reason: str, output_tokens: int) -> list[dict[str, Any]]:
    return [
        {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
        },
        {"type": "message_stop"},
    ]


class Recorder:
    def __init__(self, answer: Callable[[httpx.Request], httpx.Response]) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


def streaming(body: bytes) -> Recorder:
    return Recorder(
        lambda _: httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    )


def provider(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> AnthropicChatModel:
    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("api_key_env", "ANTHROPIC_API_KEY")
    return AnthropicChatModel(base_url=BASE, transport=httpx.MockTransport(handler), **kwargs)


def request(*messages: Message, **params: Any) -> ChatRequest:
    return ChatRequest(
        model="claude-x", messages=messages or (Message("user", "hi"),), params=Params(**params)
    )


async def complete(model: ChatModel, req: ChatRequest) -> Completion:
    """What the pipeline does: wrap the provider's stream in a completion and collect it."""
    streamed = Completion(
        message=Message(role="assistant"), model=req.model, provider=model.provider, stream=model.stream(req)
    )
    return await collect(streamed)


async def drain(stream: AsyncIterator[Delta]) -> list[Delta]:
    return [d async for d in stream]


# --------------------------------------------------------------------------- streaming


async def test_streamed_text_with_usage_from_start_and_delta() -> None:
    body = sse(
        start(10, cache_read=5, cache_write=2),
        {"type": "ping"},
        *text_block(0, "Bon", "jour"),
        *finish("end_turn", 7),
    )
    rec = streaming(body)
    model = provider(rec)

    deltas = await drain(model.stream(request(Message("user", "say hello in French"))))

    assert [d.text for d in deltas] == ["Bon", "jour", ""]
    assert all(d.finish_reason is None for d in deltas[:-1])
    last = deltas[-1]
    assert last.finish_reason == "stop"
    assert last.usage == Usage(input_tokens=17, output_tokens=7, cached_tokens=5, cache_write_tokens=2)
    assert last.timing is not None and last.timing.ttft_ms is not None and last.timing.tpot_ms is not None

    sent = rec.requests[0]
    assert sent.url == httpx.URL(f"{BASE}/v1/messages")
    assert sent.headers["x-api-key"] == KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent.headers
    assert json.loads(sent.content)["stream"] is True
    await model.aclose()


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
    ],
)
async def test_stop_reasons_map_to_finish_reasons(reason: str, expected: str) -> None:
    done = await complete(
        provider(streaming(sse(start(), *text_block(0, "x"), *finish(reason, 1)))), request()
    )
    assert done.finish_reason == expected


async def test_tool_use_blocks_become_tool_calls() -> None:
    body = sse(
        start(),
        *text_block(0, "Let me look."),
        *tool_block(1, "toolu_1", "weather", '{"city":', ' "Oslo"}'),
        *tool_block(2, "toolu_2", "now"),  # no input streamed: empty input
        *finish("tool_use", 40),
    )
    done = await complete(provider(streaming(body)), request())
    assert done.text == "Let me look."
    assert done.finish_reason == "tool_calls"
    assert done.message.tool_calls == (
        ToolCall(id="toolu_1", name="weather", arguments='{"city": "Oslo"}'),
        ToolCall(id="toolu_2", name="now", arguments="{}"),
    )


async def test_response_format_is_answered_through_the_answer_tool() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    body = sse(
        start(), *tool_block(0, "toolu_9", RESPONSE_TOOL, '{"city"', ': "Oslo"}'), *finish("tool_use", 9)
    )
    rec = streaming(body)
    req = request(response_format=ResponseFormat(type="json_schema", schema=schema, name="place"))
    done = await complete(provider(rec), req)
    assert json.loads(done.text) == {"city": "Oslo"}
    assert done.finish_reason == "stop"
    assert done.message.tool_calls == ()
    sent = json.loads(rec.requests[0].content)
    assert sent["tools"][-1]["name"] == RESPONSE_TOOL and sent["tools"][-1]["input_schema"] == schema
    assert sent["tool_choice"] == {"type": "tool", "name": RESPONSE_TOOL}


async def test_stream_cut_before_message_delta_is_broken() -> None:
    model = provider(streaming(sse(start(), *text_block(0, "Once", " upon"))))
    seen: list[str] = []
    with pytest.raises(StreamBroken, match="no stop_reason"):
        async for delta in model.stream(request()):
            seen.append(delta.text)
    assert seen == ["Once", " upon"]


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("overloaded_error", ProviderUnavailable),
        ("api_error", ProviderUnavailable),
        ("rate_limit_error", ProviderRateLimited),
        ("invalid_request_error", ProviderBadRequest),
    ],
)
async def test_error_event_mid_stream_raises(kind: str, expected: type[ProviderError]) -> None:
    error = {"type": "error", "error": {"type": kind, "message": f"upstream says {kind}"}}
    model = provider(streaming(sse(start(), *text_block(0, "par"), error)))
    with pytest.raises(ProviderError) as info:
        await drain(model.stream(request()))
    assert type(info.value) is expected
    assert f"upstream says {kind}" in str(info.value)


# --------------------------------------------------------------------------- request translation


def test_messages_body_translates_the_chat_shape() -> None:
    messages = (
        Message("system", "You are terse."),
        Message(
            "user",
            (
                ContentPart("text", text="What is shown?"),
                ContentPart("image_url", url="data:image/jpeg;base64,QUJD"),
            ),
        ),
        Message(
            "assistant",
            "Checking.",
            tool_calls=(ToolCall("t1", "lookup", '{"q": "x"}'), ToolCall("t2", "now", "")),
        ),
        Message("tool", "result one", tool_call_id="t1"),
        Message("tool", "12:00", tool_call_id="t2"),
        Message("user", "thanks"),
        Message("system", "Answer in English."),
    )
    params = Params(
        temperature=0.3,
        top_p=0.8,
        top_k=5,
        max_tokens=200,
        stop=("END",),
        seed=1,
        logprobs=True,
        presence_penalty=1.0,
        tools=(
            Tool(
                name="lookup",
                description="Look up",
                parameters={"type": "object", "properties": {"q": {"type": "string"}}},
            ),
            Tool(name="now"),
        ),
        tool_choice="required",
    )
    body = messages_body(
        ChatRequest(model="claude-x", messages=messages, params=params, user="u-1"), max_tokens_default=1024
    )
    assert body == {
        "model": "claude-x",
        "max_tokens": 200,
        "stream": True,
        "system": "You are terse.\n\nAnswer in English.",
        "temperature": 0.3,
        "top_p": 0.8,
        "top_k": 5,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-1"},
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is shown?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/jpeg", "data": "QUJD"},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"q": "x"}},
                    {"type": "tool_use", "id": "t2", "name": "now", "input": {}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "result one"},
                    {"type": "tool_result", "tool_use_id": "t2", "content": "12:00"},
                    {"type": "text", "text": "thanks"},
                ],
            },
        ],
        "tools": [
            {
                "name": "lookup",
                "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}},
                "description": "Look up",
            },
            {"name": "now", "input_schema": {"type": "object", "properties": {}}},
        ],
        "tool_choice": {"type": "any"},
    }


def test_max_tokens_default_and_tool_choice_forms() -> None:
    assert messages_body(request(), max_tokens_default=321)["max_tokens"] == 321
    assert messages_body(request(tool_choice="auto"), max_tokens_default=1)["tool_choice"] == {"type": "auto"}
    assert messages_body(request(tool_choice="none"), max_tokens_default=1)["tool_choice"] == {"type": "none"}
    assert messages_body(request(tool_choice="lookup"), max_tokens_default=1)["tool_choice"] == {
        "type": "tool",
        "name": "lookup",
    }
    openai_style = {"type": "function", "function": {"name": "lookup"}}
    assert messages_body(request(tool_choice=openai_style), max_tokens_default=1)["tool_choice"] == {
        "type": "tool",
        "name": "lookup",
    }
    remote = Message("user", (ContentPart("image_url", url="https://example.com/cat.png"),))
    assert messages_body(request(remote), max_tokens_default=1)["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    ]


def test_response_format_beside_real_tools_requires_some_tool() -> None:
    req = request(tools=(Tool(name="search"),), response_format=ResponseFormat(type="json_object"))
    body = messages_body(req, max_tokens_default=1)
    assert [t["name"] for t in body["tools"]] == ["search", RESPONSE_TOOL]
    assert body["tools"][1]["input_schema"] == {"type": "object"}
    assert body["tool_choice"] == {"type": "any"}


def test_invalid_inputs_are_refused_with_a_fix() -> None:
    with pytest.raises(InvalidRequest, match="not valid JSON"):
        messages_body(
            request(Message("assistant", "", tool_calls=(ToolCall("t", "f", "{oops"),))), max_tokens_default=1
        )
    with pytest.raises(InvalidRequest, match="tool_call_id"):
        messages_body(request(Message("tool", "r")), max_tokens_default=1)
    with pytest.raises(InvalidRequest, match="without a schema"):
        messages_body(request(response_format=ResponseFormat(type="json_schema")), max_tokens_default=1)


# --------------------------------------------------------------------------- errors, check, config


def anthropic_error(kind: str, message: str) -> bytes:
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            anthropic_error("invalid_request_error", "prompt is too long: 250000 tokens > 200000 maximum"),
            ContextLengthExceeded,
        ),
        (400, anthropic_error("invalid_request_error", "max_tokens: must be at least 1"), ProviderBadRequest),
        (401, anthropic_error("authentication_error", "invalid x-api-key"), ProviderAuthError),
        (529, anthropic_error("overloaded_error", "Overloaded"), ProviderUnavailable),
        (
            429,
            anthropic_error("rate_limit_error", "Number of request tokens has exceeded your rate limit"),
            ProviderRateLimited,
        ),
    ],
)
async def test_http_errors_map_to_typed_errors(
    status: int, body: bytes, expected: type[ProviderError]
) -> None:
    model = provider(Recorder(lambda _: httpx.Response(status, content=body, headers={"retry-after": "4"})))
    with pytest.raises(ProviderError) as info:
        await drain(model.stream(request()))
    assert type(info.value) is expected
    assert json.loads(body)["error"]["message"] in str(info.value)
    assert KEY not in str(info.value)
    if status == 429:
        assert info.value.retry_after == 4.0
    if status == 401:
        assert "ANTHROPIC_API_KEY" in str(info.value)


async def test_check_lists_models_with_the_key_headers() -> None:
    rec = Recorder(
        lambda _: httpx.Response(200, json={"data": [{"id": "claude-x", "type": "model"}], "has_more": False})
    )
    health = await provider(rec).check("claude-x")
    assert health.ok and "is listed" in health.detail
    sent = rec.requests[0]
    assert sent.url == httpx.URL(f"{BASE}/v1/models")
    assert sent.headers["x-api-key"] == KEY and sent.headers["anthropic-version"] == "2023-06-01"

    alias = await provider(rec).check("claude-latest")
    assert alias.ok and "not among" in alias.detail


async def test_check_fails_on_bad_key() -> None:
    health = await provider(
        Recorder(
            lambda _: httpx.Response(
                401, content=anthropic_error("authentication_error", "invalid x-api-key")
            )
        )
    ).check("m")
    assert not health.ok
    assert "invalid x-api-key" in health.detail and "ANTHROPIC_API_KEY" in health.detail


async def test_config_builds_a_provider() -> None:
    cfg = AnthropicModelConfig.model_validate(
        {
            "provider": "anthropic",
            "model": "claude-sonnet-4-0",
            "base_url": "http://proxy.test/v1",
            "anthropic_version": "2024-01-01",
            "max_tokens_default": 64,
            "headers": {"anthropic-beta": "prompt-caching"},
        }
    )
    assert cfg.upstream("sonnet") == "claude-sonnet-4-0"
    rec = streaming(sse(start(), *text_block(0, "ok"), *finish("end_turn", 1)))
    model = cfg.create({"ANTHROPIC_API_KEY": "k-2"}, transport=httpx.MockTransport(rec))
    assert isinstance(model, ChatModel)
    await drain(model.stream(request()))
    sent = rec.requests[0]
    assert sent.url == httpx.URL("http://proxy.test/v1/messages")  # a trailing /v1 is not doubled
    assert sent.headers["x-api-key"] == "k-2"
    assert sent.headers["anthropic-version"] == "2024-01-01"
    assert sent.headers["anthropic-beta"] == "prompt-caching"
    assert json.loads(sent.content)["max_tokens"] == 64
    with pytest.raises(ValidationError):
        AnthropicModelConfig.model_validate({"provider": "anthropic", "max_tokens_default": 0})
    with pytest.raises(ValidationError):
        AnthropicModelConfig.model_validate({"provider": "anthropic", "version": "x"})
