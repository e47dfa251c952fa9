"""The providers' HTTP client (requests sent straight to the transport) and the SSE line splitter."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from aiestack.errors import ProviderConnectionError, ProviderTimeout
from aiestack.models import http

pytestmark = pytest.mark.unit

UPSTREAM = http.Upstream(provider="openai", base_url="http://llm.test/v1", timeout_s=7.5)


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def split(*parts: bytes) -> list[str]:
    return [line async for line in http.lines(chunks(*parts))]


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ((b"a\nb\n",), ["a", "b"]),
        ((b"a\r\nb\r\n\r\n",), ["a", "b", ""]),
        ((b"da", b"ta: x\n", b"\n"), ["data: x", ""]),
        ((b"one\r", b"\ntwo\n"), ["one", "two"]),  # \r\n split across chunks is one line ending
        ((b"one\r", b"two\r"), ["one", "two"]),  # bare \r ends a line too
        ((b"no end",), ["no end"]),
        ((b"caf\xc3", b"\xa9\n"), ["café"]),  # a character split across chunks
        ((b"",), []),
    ],
)
async def test_lines_split_like_the_sse_spec(parts: tuple[bytes, ...], expected: list[str]) -> None:
    assert await split(*parts) == expected


async def test_events_parse_from_split_chunks() -> None:
    body = b'data: {"a":1}\r\n\r\n: comment\n\nevent: e\ndata: x\ndata: y\n\n'
    parts = [body[i : i + 3] for i in range(0, len(body), 3)]
    events = [e async for e in http.parse_sse(http.lines(chunks(*parts)))]
    assert events == [http.SSEEvent(None, '{"a":1}'), http.SSEEvent("e", "x\ny")]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
@pytest.mark.parametrize(
    "body",
    [
        b'data: {"a":1}\r\n\r\n: comment\n\nevent: e\ndata: x\ndata: y\n\n',
        b"data: one\r\rdata: caf\xc3\xa9\r\n\r\ndata: [DONE]\n\n",
        b"event: only\n\ndata: no blank line at the end",  # an event without data is not dispatched
        b"data:no space\ndata:  two spaces\nid: 7\nretry: 10\n\n",
        b"",
    ],
)
async def test_sse_events_decode_bytes_like_parse_sse_of_lines(body: bytes, size: int) -> None:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    expected = [e async for e in http.parse_sse(http.lines(chunks(*parts)))]
    assert [e async for e in http.sse_events(chunks(*parts))] == expected


async def test_event_json_reads_what_the_standard_library_reads() -> None:
    # orjson refuses both NaN and integers past 64 bits; the standard library's reading is kept.
    value = http.event_json(http.SSEEvent(None, '{"n": NaN, "big": 123456789012345678901234567890}'), UPSTREAM)
    assert value["big"] == 123456789012345678901234567890 and value["n"] != value["n"]
    assert http.event_json(http.SSEEvent(None, '{"a": [1, "é"]}'), UPSTREAM) == {"a": [1, "é"]}


async def test_send_builds_the_request_httpx_would() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    client = http.make_client(
        base_url="http://llm.test/v1/",
        timeout_s=7.5,
        headers={"authorization": "Bearer k"},
        max_connections=3,
        transport=httpx.MockTransport(handler),
    )
    response = await client.send("POST", "chat/completions", body={"q": "é"}, headers={"x-extra": "1"})
    await response.aread()
    request = seen[0]
    assert str(request.url) == "http://llm.test/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer k"
    assert request.headers["user-agent"] == http.USER_AGENT
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-extra"] == "1"
    assert request.headers["content-length"] == str(len(request.content))
    assert json.loads(request.content) == {"q": "é"}
    assert request.extensions["timeout"] == {"connect": 7.5, "read": 7.5, "write": 7.5, "pool": 7.5}
    assert response.request is request and response.json() == {"ok": True}
    get = await client.send("GET", "/models")
    assert str(seen[1].url) == "http://llm.test/v1/models" and "content-type" not in seen[1].headers
    await get.aclose()
    await client.aclose()


async def test_transport_errors_become_provider_errors() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    for handler, error in ((refuse, ProviderConnectionError), (stall, ProviderTimeout)):
        client = http.make_client(
            base_url="http://llm.test/v1",
            timeout_s=7.5,
            headers={},
            max_connections=1,
            transport=httpx.MockTransport(handler),
        )
        with pytest.raises(error):
            await http.get_json(client, "models", UPSTREAM)
        with pytest.raises(error):
            await http.post_json(client, "embeddings", {"input": "x"}, UPSTREAM)
        with pytest.raises(error):
            [e async for e in http.stream_events(client, "chat/completions", {}, UPSTREAM)]


async def test_stream_events_closes_the_response_when_abandoned() -> None:
    closed: list[bool] = []

    class Body(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b"data: 1\n\ndata: 2\n\n"

        async def aclose(self) -> None:
            closed.append(True)

    client = http.make_client(
        base_url="http://llm.test/v1",
        timeout_s=5,
        headers={},
        max_connections=1,
        transport=httpx.MockTransport(lambda r: httpx.Response(200, stream=Body())),
    )
    events = http.stream_events(client, "chat/completions", {}, UPSTREAM)
    assert (await anext(events)).data == "1"
    await events.aclose()
    assert closed == [True]
