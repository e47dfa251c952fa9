"""The openai provider against a real HTTP server on 127.0.0.1 (uvicorn + Starlette in a thread).

MockTransport proves the translation; this proves the parts it cannot: real chunked SSE over a
socket, keep-alive connections reused from the pool, the pool's size bound, a connection dropped
mid-answer, and a refused connection. Nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from aiestack.errors import ProviderConnectionError, ProviderTimeout, StreamBroken
from aiestack.models.openai import OpenAIChatModel
from aiestack.testing.net import free_port
from aiestack.types import ChatRequest, Delta, Message, Usage

pytestmark = pytest.mark.integration

CHUNK_DELAY_S = 0.02


@dataclass
class MockOpenAI:
    """A tiny OpenAI-compatible server: streams the user's words back, one per chunk."""

    peers: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/models", self.models, methods=["GET"]),
            ]
        )

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "echo", "object": "model"}]})

    async def chat(self, request: Request) -> Response:
        assert request.client is not None
        with self.lock:
            self.peers.append((request.client.host, request.client.port))
        body = await request.json()
        words = body["messages"][-1]["content"].split()
        if body.get("stream"):
            return StreamingResponse(self._events(words), media_type="text/event-stream")
        # A whole answer: sent once all of it is "generated" (one chunk's delay per word).
        await asyncio.sleep(CHUNK_DELAY_S * len(words))
        usage = {"prompt_tokens": len(words), "completion_tokens": len(words), "total_tokens": 2 * len(words)}
        message = {"role": "assistant", "content": " ".join(words)}
        return JSONResponse({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}], "usage": usage})

    async def _events(self, words: list[str]) -> AsyncIterator[str]:
        for i, word in enumerate(words):
            await asyncio.sleep(CHUNK_DELAY_S)
            if word == "CUT":
                raise RuntimeError("simulated crash mid-stream")  # the server drops the connection
            piece = word if i == 0 else " " + word
            yield _data({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        yield _data({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        usage = {"prompt_tokens": len(words), "completion_tokens": len(words), "total_tokens": 2 * len(words)}
        yield _data({"choices": [], "usage": usage})
        yield "data: [DONE]\n\n"


def _data(obj: object) -> str:
    return f"data: {json.dumps(obj)}\n\n"




@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, MockOpenAI]]:
    mock = MockOpenAI()
    port = free_port()
    config = uvicorn.Config(mock.app(), host="127.0.0.1", port=port, log_level="critical", lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the mock OpenAI server did not start")
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}/v1", mock
    uv.should_exit = True
    thread.join(timeout=10)


def ask(text: str, *, stream: bool = True) -> ChatRequest:
    return ChatRequest(model="echo", messages=(Message("user", text),), stream=stream)


async def drain(stream: AsyncIterator[Delta]) -> list[Delta]:
    return [d async for d in stream]


async def test_real_sse_over_a_reused_pooled_connection(server: tuple[str, MockOpenAI]) -> None:
    base_url, mock = server
    model = OpenAIChatModel(base_url=base_url, api_key_env=None, timeout_s=10)
    try:
        first_peer = len(mock.peers)
        answers = [await drain(model.stream(ask(text))) for text in ("one two three", "four five")]
    finally:
        await model.aclose()
    assert "".join(d.text for d in answers[0]) == "one two three"
    assert "".join(d.text for d in answers[1]) == "four five"
    last = answers[0][-1]
    assert last.finish_reason == "stop" and last.usage == Usage(3, 3, 0)
    assert last.timing is not None and last.timing.ttft_ms is not None
    assert last.timing.ttft_ms >= CHUNK_DELAY_S * 1000 * 0.5
    assert last.timing.tpot_ms is not None and last.timing.tpot_ms >= CHUNK_DELAY_S * 1000 * 0.5
    peers = mock.peers[first_peer:]
    assert len(peers) == 2 and peers[0] == peers[1]  # the second request reused the keep-alive connection


async def test_whole_answer_asked_whole_over_a_reused_connection(server: tuple[str, MockOpenAI]) -> None:
    base_url, mock = server
    model = OpenAIChatModel(base_url=base_url, api_key_env=None, timeout_s=10)
    try:
        first_peer = len(mock.peers)
        answers = [await drain(model.stream(ask(text, stream=False))) for text in ("one two three", "four five")]
    finally:
        await model.aclose()
    assert [len(a) for a in answers] == [1, 1]  # one delta carries the whole answer
    assert answers[0][0].text == "one two three" and answers[1][0].text == "four five"
    done = answers[0][0]
    assert done.finish_reason == "stop" and done.usage == Usage(3, 3, 0)
    assert done.timing is not None and done.timing.tpot_ms is None
    assert done.timing.ttft_ms == done.timing.total_ms >= CHUNK_DELAY_S * 3 * 1000 * 0.5
    peers = mock.peers[first_peer:]
    assert len(peers) == 2 and peers[0] == peers[1]


async def test_whole_timeout_bounds_the_wait_for_a_whole_answer(server: tuple[str, MockOpenAI]) -> None:
    base_url, _ = server
    words = " ".join(["w"] * 10)  # the whole answer takes ~0.2 s, streamed chunks come every 0.02 s
    slow = OpenAIChatModel(base_url=base_url, api_key_env=None, timeout_s=10, whole_timeout_s=0.05)
    try:
        with pytest.raises(ProviderTimeout, match=r"0\.05s") as info:
            await drain(slow.stream(ask(words, stream=False)))
        assert "whole_timeout_s" in (info.value.hint or "")
        streamed = await drain(slow.stream(ask(words)))  # a stream's wait between chunks is timeout_s
    finally:
        await slow.aclose()
    assert "".join(d.text for d in streamed) == words


async def test_pool_size_bounds_concurrent_connections(server: tuple[str, MockOpenAI]) -> None:
    base_url, mock = server
    model = OpenAIChatModel(base_url=base_url, api_key_env=None, timeout_s=10, max_connections=2)
    try:
        first_peer = len(mock.peers)
        answers = await asyncio.gather(*(drain(model.stream(ask(f"w{i} x y"))) for i in range(6)))
    finally:
        await model.aclose()
    assert sorted("".join(d.text for d in a) for a in answers) == sorted(f"w{i} x y" for i in range(6))
    assert len(set(mock.peers[first_peer:])) <= 2


async def test_server_dropping_the_connection_mid_answer_is_broken(server: tuple[str, MockOpenAI]) -> None:
    base_url, _ = server
    model = OpenAIChatModel(base_url=base_url, api_key_env=None, timeout_s=10)
    seen: list[str] = []
    try:
        with pytest.raises(StreamBroken):
            async for delta in model.stream(ask("before the CUT after")):
                seen.append(delta.text)
    finally:
        await model.aclose()
    assert "".join(seen) == "before the"


async def test_check_against_the_real_server(server: tuple[str, MockOpenAI]) -> None:
    base_url, _ = server
    model = OpenAIChatModel(base_url=base_url, api_key_env=None)
    try:
        health = await model.check("echo")
    finally:
        await model.aclose()
    assert health.ok and "'echo' is listed" in health.detail


async def test_refused_connection_is_a_connection_error() -> None:
    base_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    model = OpenAIChatModel(base_url=base_url, api_key_env=None, timeout_s=5)
    try:
        with pytest.raises(ProviderConnectionError, match="Is the server at"):
            await drain(model.stream(ask("hello")))
        assert not (await model.check("echo")).ok
    finally:
        await model.aclose()
