"""The official ``openai`` SDK, unchanged, against a live aiestack server on loopback.

Sync, async and streaming chat; tools and response_format reaching the provider; logprobs;
legacy completions; models; embeddings (the SDK asks for base64 by default); the headers; and the
SDK's exception classes for every kind of failure, a stream broken half way included.
"""

from __future__ import annotations

import base64
import json
import struct

import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageFunctionToolCall, ChatCompletionToolParam
from openai.types.shared_params import ResponseFormatJSONSchema

from aiestack.errors import (
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    StreamBroken,
)
from aiestack.models.fake import Script
from aiestack.types import ResponseFormat

from .conftest import EMBED_MODEL, Live, vector

pytestmark = pytest.mark.integration


def client(live: Live) -> OpenAI:
    return OpenAI(base_url=live.base_url, api_key="sk-anything", max_retries=0, timeout=20)


def test_sync_chat_echoes_and_reports_usage(live: Live) -> None:
    reply = client(live).chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "tell me a story"}]
    )
    assert reply.choices[0].message.content == "tell me a story"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "fake"
    assert reply.usage is not None and reply.usage.completion_tokens == 4
    assert reply.id.startswith("chatcmpl-")


async def test_async_chat(live: Live) -> None:
    aclient = openai.AsyncOpenAI(base_url=live.base_url, api_key="x", max_retries=0)
    async with aclient:
        reply = await aclient.chat.completions.create(
            model="fake",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "async works"}],
        )
    assert reply.choices[0].message.content == "async works"


def test_streaming_chat_with_usage(live: Live) -> None:
    stream = client(live).chat.completions.create(
        model="fake",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert not chunks[-1].choices and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 3
    assert len({c.id for c in chunks}) == 1


def test_streaming_without_include_usage_sends_no_usage_chunk(live: Live) -> None:
    chunks = list(
        client(live).chat.completions.create(
            model="fake", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_response_format_json_schema_reaches_the_provider(live: Live) -> None:
    schema: dict[str, object] = {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    }
    live.fake.enqueue(['{"city": "Lyon"}'])
    response_format: ResponseFormatJSONSchema = {
        "type": "json_schema",
        "json_schema": {"name": "place", "schema": schema, "strict": True},
    }
    reply = client(live).chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "where?"}], response_format=response_format
    )
    assert json.loads(reply.choices[0].message.content or "") == {"city": "Lyon"}
    sent = live.fake.requests[-1].params.response_format
    assert sent == ResponseFormat(type="json_schema", schema=schema, name="place", strict=True)


def test_parameters_reach_the_provider(live: Live) -> None:
    client(live).chat.completions.create(
        model="fake",
        messages=[{"role": "developer", "content": "rules"}, {"role": "user", "content": "hi"}],
        temperature=0.2,
        top_p=0.9,
        max_tokens=7,
        stop=["\n"],
        seed=42,
    )
    request = live.fake.requests[-1]
    assert request.messages[0].role == "system"  # developer is the system role under another name
    params = request.params
    assert (params.temperature, params.top_p, params.max_tokens, params.stop, params.seed) == (
        0.2,
        0.9,
        7,
        ("\n",),
        42,
    )


TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def test_tool_call_round_trip(live: Live) -> None:
    live.fake.enqueue([Script(tool_calls=[("call_1", "get_weather", '{"city": "Oslo"}')]), "It is cold."])
    sdk = client(live)
    first = sdk.chat.completions.create(
        model="fake",
        messages=[{"role": "user", "content": "weather in Oslo?"}],
        tools=TOOLS,
        tool_choice="auto",
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert isinstance(call, ChatCompletionMessageFunctionToolCall)
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "call_1",
        "get_weather",
        {"city": "Oslo"},
    )
    tools_sent = live.fake.requests[-1].params.tools
    assert [t.name for t in tools_sent] == ["get_weather"]
    assert live.fake.requests[-1].params.tool_choice == "auto"

    second = sdk.chat.completions.create(
        model="fake",
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "weather in Oslo?"},
            choice.message.model_dump(exclude_none=True),  # type: ignore[list-item]
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": -3}'},
        ],
    )
    assert second.choices[0].message.content == "It is cold."
    history = live.fake.requests[-1].messages
    assert history[1].tool_calls[0].name == "get_weather"
    assert (history[2].role, history[2].tool_call_id) == ("tool", "call_1")


def test_streamed_tool_call(live: Live) -> None:
    live.fake.enqueue([Script(tool_calls=[("call_9", "get_weather", '{"city": "Rome"}')])])
    chunks = list(
        client(live).chat.completions.create(
            model="fake", messages=[{"role": "user", "content": "Rome?"}], tools=TOOLS, stream=True
        )
    )
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].id == "call_9" and calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    assert "".join(tc.function.arguments or "" for tc in calls if tc.function) == '{"city": "Rome"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_logprobs_shape(live: Live) -> None:
    reply = client(live).chat.completions.create(
        model="lp", messages=[{"role": "user", "content": "hi"}], logprobs=True, top_logprobs=2
    )
    content = reply.choices[0].logprobs.content  # type: ignore[union-attr]
    assert content is not None
    assert [(t.token, t.logprob) for t in content] == [("Hi", -0.25), ("!", -1.5)]
    assert content[0].bytes == list(b"Hi")
    assert [(t.token, t.logprob) for t in content[0].top_logprobs] == [("Hi", -0.25), ("Yo", -3.0)]

    streamed = list(
        client(live).chat.completions.create(
            model="lp", messages=[{"role": "user", "content": "hi"}], logprobs=True, stream=True
        )
    )
    tokens = [
        t.token
        for c in streamed
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content or []
    ]
    assert tokens == ["Hi", "!"]


def test_legacy_completions(live: Live) -> None:
    sdk = client(live)
    reply = sdk.completions.create(model="fake", prompt="Once upon a time")
    assert reply.choices[0].text == "Once upon a time"
    assert reply.object == "text_completion"
    # Not "Say: ": without the embedding model the injection guard's lexical head scores that 0.8.
    echoed = sdk.completions.create(model="lp", prompt="Hello: ", echo=True, logprobs=1)
    assert echoed.choices[0].text == "Hello: Hi!"
    logprobs = echoed.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens == ["Hi", "!"]
    assert logprobs.text_offset == [7, 9]
    streamed = list(sdk.completions.create(model="fake", prompt="a b c", stream=True))
    assert "".join(c.choices[0].text for c in streamed if c.choices) == "a b c"


def test_models_list_and_retrieve(live: Live) -> None:
    sdk = client(live)
    ids = {m.id: m.owned_by for m in sdk.models.list()}
    assert ids == {"fake": "fake", "lp": "lp", EMBED_MODEL: "aiestack-embeddings"}
    assert sdk.models.retrieve("fake").id == "fake"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("gpt-9")


def test_embeddings_float_and_base64(live: Live) -> None:
    sdk = client(live)
    # The SDK asks for base64 unless told otherwise, and decodes it: this checks the packing.
    packed = sdk.embeddings.create(model=EMBED_MODEL, input=["alpha", "beta gamma"])
    assert [d.index for d in packed.data] == [0, 1]
    assert packed.data[1].embedding == pytest.approx(vector("beta gamma"), rel=1e-6)
    assert packed.usage.prompt_tokens == 3  # whitespace words: an approximation
    floats = sdk.embeddings.create(model=EMBED_MODEL, input="alpha", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vector("alpha"), rel=1e-6)
    raw = sdk.embeddings.with_raw_response.create(model=EMBED_MODEL, input="alpha", encoding_format="base64")
    b64 = raw.http_response.json()["data"][0]["embedding"]
    assert list(struct.unpack("<8f", base64.b64decode(b64))) == pytest.approx(vector("alpha"), rel=1e-6)


def test_embeddings_errors(live: Live) -> None:
    sdk = client(live)
    with pytest.raises(openai.NotFoundError, match=EMBED_MODEL):
        sdk.embeddings.create(model="text-embedding-3-small", input="x")
    with pytest.raises(openai.BadRequestError, match="token ids"):
        sdk.embeddings.create(model=EMBED_MODEL, input=[[1, 2, 3]])
    with pytest.raises(openai.BadRequestError, match="8-dimensional"):
        sdk.embeddings.create(model=EMBED_MODEL, input="x", dimensions=4)


def test_headers_carry_exchange_id_and_overhead(live: Live) -> None:
    raw = client(live).chat.completions.with_raw_response.create(
        model="fake", messages=[{"role": "user", "content": "hi"}]
    )
    exchange_id = raw.headers["x-aiestack-exchange-id"]
    assert exchange_id.startswith("ex_")
    assert raw.parse().id == "chatcmpl-" + exchange_id.removeprefix("ex_")
    overhead = float(raw.headers["x-aiestack-overhead-ms"])
    assert 0 <= overhead < 250


def test_unknown_model_is_not_found(live: Live) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client(live).chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "model_not_found"
    assert "fake" in info.value.message  # it names what is configured


@pytest.mark.parametrize(
    ("error", "exc_class", "status"),
    [
        (
            ProviderRateLimited("slow down", provider="fake", status=429, retry_after=7),
            openai.RateLimitError,
            429,
        ),
        (ProviderUnavailable("upstream 500", provider="fake", status=500), openai.InternalServerError, 502),
        (ProviderTimeout("no answer", provider="fake"), openai.InternalServerError, 504),
    ],
)
def test_provider_errors_map_to_statuses(
    live: Live, error: Exception, exc_class: type[openai.APIStatusError], status: int
) -> None:
    live.fake.enqueue([Script(error=error)])  # type: ignore[arg-type]
    with pytest.raises(exc_class) as info:
        client(live).chat.completions.create(model="fake", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == status
    assert info.value.response.headers["x-aiestack-exchange-id"].startswith("ex_")
    if status == 429:
        assert info.value.response.headers["retry-after"] == "7"
        assert info.value.code == "provider_rate_limited"


@pytest.mark.parametrize(
    ("script", "says"),
    [
        (Script(pieces=["Half", " an", " answer"], break_after=2), "scripted break"),  # the provider raises
        (Script(pieces=["Half", " an"], break_after=2), "ended before the answer finished"),  # it just stops
    ],
)
def test_stream_broken_mid_answer_raises_while_iterating(live: Live, script: Script, says: str) -> None:
    live.fake.enqueue([script])
    stream = client(live).chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "x"}], stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIError) as info:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == "Half an"
    assert says in info.value.message
    assert isinstance(info.value.body, dict) and info.value.body["code"] == StreamBroken.code


def test_stream_error_mid_answer_raises_too(live: Live) -> None:
    live.fake.enqueue(
        [Script(pieces=["a", " b"], error=ProviderUnavailable("died", provider="fake"), error_after=1)]
    )
    stream = client(live).chat.completions.create(
        model="fake", messages=[{"role": "user", "content": "x"}], stream=True
    )
    with pytest.raises(openai.APIError, match="died"):
        list(stream)
