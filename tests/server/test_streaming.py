"""Streamed answers on the wire: coalesced SSE writes, disconnects, back-pressure, spliced chunks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import orjson
import pytest

from aiestack.server import sse, translate
from aiestack.server.responses import dumps
from aiestack.types import Delta

pytestmark = pytest.mark.unit

SCOPE: dict[str, Any] = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []}


class Client:
    """The ASGI side of one client: what was sent to it, and a switch to disconnect."""

    def __init__(self) -> None:
        self.messages: list[MutableMapping[str, Any]] = []
        self.gone = asyncio.Event()

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        self.messages.append(message)

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages if m["type"] == "http.response.body")

    @property
    def bodies(self) -> list[MutableMapping[str, Any]]:
        return [m for m in self.messages if m["type"] == "http.response.body"]


async def test_events_ready_together_leave_in_one_write_with_the_end_of_the_body() -> None:
    async def ready() -> AsyncIterator[bytes]:
        for i in range(10):
            yield b"data: %d\n\n" % i

    client = Client()
    await sse.EventStreamResponse(ready(), media_type="text/event-stream")(SCOPE, client.receive, client.send)
    assert client.messages[0]["type"] == "http.response.start" and client.messages[0]["status"] == 200
    assert client.bodies == [{"type": "http.response.body", "body": b"".join(b"data: %d\n\n" % i for i in range(10)), "more_body": False}]


async def test_an_event_is_sent_as_soon_as_the_body_waits_for_the_next() -> None:
    step = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"data: first\n\n"
        await step.wait()
        yield b"data: second\n\n"

    client = Client()
    task = asyncio.create_task(sse.EventStreamResponse(slow())(SCOPE, client.receive, client.send))
    for _ in range(20):
        await asyncio.sleep(0)
    assert client.body == b"data: first\n\n" and client.bodies[-1]["more_body"] is True
    step.set()
    await asyncio.wait_for(task, 5)
    assert client.body == b"data: first\n\ndata: second\n\n" and client.bodies[-1]["more_body"] is False


async def test_a_client_that_goes_away_closes_the_body() -> None:
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        try:
            yield b"data: one\n\n"
            await asyncio.Event().wait()  # the upstream never sends more
        finally:
            closed.set()

    client = Client()
    task = asyncio.create_task(sse.EventStreamResponse(endless())(SCOPE, client.receive, client.send))
    for _ in range(20):
        await asyncio.sleep(0)
    client.gone.set()
    await asyncio.wait_for(task, 5)
    assert closed.is_set() and client.body == b"data: one\n\n"
    assert all(m.get("more_body", True) for m in client.bodies)  # never ended as if complete


async def test_a_slow_client_holds_the_body_once_the_buffer_is_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "MAX_BUFFERED_BYTES", 10)
    produced: list[int] = []
    unblock = asyncio.Event()

    async def many() -> AsyncIterator[bytes]:
        for i in range(100):
            produced.append(i)
            yield b"data: %02d\n\n" % i  # 10 bytes each

    client = Client()

    async def stuck_send(message: MutableMapping[str, Any]) -> None:
        client.messages.append(message)
        if message["type"] == "http.response.body":
            await unblock.wait()  # the socket's buffer is full

    task = asyncio.create_task(sse.EventStreamResponse(many())(SCOPE, client.receive, stuck_send))
    for _ in range(50):
        await asyncio.sleep(0)
    assert len(produced) < 10  # held while the first write waits
    unblock.set()
    await asyncio.wait_for(task, 5)
    assert client.body == b"".join(b"data: %02d\n\n" % i for i in range(100))


@pytest.mark.parametrize("text", ["Hello", ' "quoted" \\ back', "line\nbreak\ttab", "café ☕ 🙂", "\u2063", "\x00"])
def test_spliced_text_chunks_are_the_bytes_of_the_full_chunk(text: str) -> None:
    render = translate.chat_text_chunk(exchange_id="ex_abc", model='m"odel', created=1700000000)
    assert render is not None
    full = dumps(translate.chat_chunk_json(exchange_id="ex_abc", model='m"odel', created=1700000000, delta=Delta(text=text)))
    assert render(text) == full
    assert orjson.loads(render(text))["choices"][0]["delta"] == {"content": text}
