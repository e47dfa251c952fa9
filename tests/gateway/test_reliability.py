"""Reliability over real HTTP (loopback only): two mock OpenAI-compatible upstreams behind one route.

- One of two upstream deployments is killed mid-traffic: at least 99% of requests still succeed.
- An upstream returns 500s for a while: its breaker opens, traffic moves to the other upstream,
  and when the upstream heals the breaker half-opens, closes, and traffic returns.

The upstreams are Starlette apps served by uvicorn in threads on free ports of 127.0.0.1; the
stack is built by ``build_stack`` from settings naming two ``openai`` models, with the pipeline
assembled here (Trace + Generate with the route table) until build.py wires routes itself.
Both tests are bounded in request count and in time.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from aiestack.build import Stack, build_stack
from aiestack.gateway.breaker import BreakerBoard
from aiestack.gateway.generate import ATTEMPT_LOG, BREAKERS_OPEN, DEPLOYMENT, Generate
from aiestack.gateway.routes import build_route_table, route_plans
from aiestack.pipeline import Pipeline
from aiestack.settings import Settings
from aiestack.streams import collect
from aiestack.tracing.stage import Trace
from aiestack.types import ChatRequest, Exchange, Message

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


class MockUpstream:
    """A tiny OpenAI-compatible chat server (SSE streaming and plain JSON) run by uvicorn in a thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fail_status: int | None = None  # answer every request with this HTTP status while set
        self.hits = 0
        self.served = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"])])
        config = uvicorn.Config(app, log_level="error", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name=f"upstream-{name}", daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"mock upstream {self.name} did not start")
            time.sleep(0.01)

    def kill(self) -> None:
        """Stop at once: close the listening socket and drop connections without waiting for them."""
        self._server.should_exit = True
        self._server.force_exit = True
        self._thread.join(timeout=10)

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        self.hits += 1
        if self.fail_status is not None:
            error = {"error": {"message": "upstream exploded", "type": "server_error"}}
            return JSONResponse(error, status_code=self.fail_status)
        self.served += 1
        words = [self.name, " says", " hi"]
        model = body.get("model", "mock")
        usage = {"prompt_tokens": 3, "completion_tokens": len(words), "total_tokens": 3 + len(words)}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(words)}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return JSONResponse(
                {"id": "c", "object": "chat.completion", "model": model, "choices": [choice], "usage": usage}
            )

        def chunk(delta: dict[str, Any], finish: str | None, **extra: Any) -> str:
            choices = [{"index": 0, "delta": delta, "finish_reason": finish}] if delta or finish else []
            return (
                "data: "
                + json.dumps(
                    {
                        "id": "c",
                        "object": "chat.completion.chunk",
                        "model": model,
                        "choices": choices,
                        **extra,
                    }
                )
                + "\n\n"
            )

        async def events() -> AsyncIterator[str]:
            for word in words:
                yield chunk({"content": word}, None)
            yield chunk({}, "stop")
            yield chunk({}, None, usage=usage)
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")


@pytest.fixture
def upstreams() -> Iterator[tuple[MockUpstream, MockUpstream]]:
    pair = (MockUpstream("one"), MockUpstream("two"))
    for upstream in pair:
        upstream.start()
    yield pair
    for upstream in pair:
        upstream.kill()


def _stack(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    up: tuple[MockUpstream, MockUpstream],
    route: dict[str, Any],
) -> tuple[Stack, BreakerBoard]:
    monkeypatch.delenv("AIESTACK_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)  # no aiestack.toml from the developer's working directory
    models = {
        u.name: {
            "provider": "openai",
            "base_url": u.base_url,
            "api_key_env": "",
            "model": "mock",
            "timeout_s": 5,
        }
        for u in up
    }
    settings = Settings(data_dir=tmp_path, embedded_model=False, default_model="one", models=models)
    stack = build_stack(settings)
    routes = build_route_table({"chat": route}, stack.models)
    board = BreakerBoard(routes.breaker_settings)
    generate = Generate(stack.models, stack.prices, routes=routes, breakers=board, metrics=stack.metrics)
    stack.pipeline = Pipeline(
        [Trace(stack.tracing, metrics=stack.metrics), generate], observer=stack.tracing, plans=route_plans(routes)
    )
    return stack, board


async def _ask(stack: Stack, *, stream: bool = False) -> Exchange:
    request = ChatRequest(model="chat", messages=(Message("user", "hello"),), stream=stream)
    ex = await stack.run(Exchange(request=request))
    assert ex.completion is not None
    final = await collect(ex.completion)
    assert final.text.endswith(" says hi") and final.finish_reason == "stop"
    return ex


async def test_killing_one_of_two_deployments_keeps_99_percent_of_requests_succeeding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstreams: tuple[MockUpstream, MockUpstream]
) -> None:
    one = upstreams[0]
    route = {
        "deployments": ["one", "two"],
        "retries": 1,
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
        "timeout_s": 2,
        "breaker": {"failures": 3, "cooldown_s": 30},
    }
    stack, board = _stack(tmp_path, monkeypatch, upstreams, route)
    total, workers, kill_after = 300, 8, 50
    outcomes: list[bool] = []
    answered_by: list[str] = []
    dead_calls: list[str] = []  # calls the dead upstream failed (answered requests' attempt logs)
    killed = asyncio.Event()
    counter = iter(range(total))

    async def worker() -> None:
        for _ in counter:
            try:
                ex = await _ask(stack)
            except Exception:
                outcomes.append(False)
            else:
                outcomes.append(True)
                answered_by.append(ex.attributes[DEPLOYMENT])
                dead_calls.extend(
                    e for e in ex.attributes[ATTEMPT_LOG] if e.startswith("one: ") and e not in ("one: ok", "one: breaker open")
                )
            if len(outcomes) == kill_after and not killed.is_set():
                killed.set()
                await asyncio.to_thread(one.kill)  # the other workers keep sending meanwhile

    try:
        await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(workers))), timeout=60)
    finally:
        await stack.aclose()
    assert killed.is_set() and len(outcomes) == total
    assert sum(outcomes) / total >= 0.99, f"{total - sum(outcomes)} of {total} requests failed"
    # The dead upstream cost a bounded number of calls: its breaker opened after 3 failures in a
    # row, and only the requests already past it (one per worker, with its one retry) failed there too.
    assert 1 <= len(dead_calls) <= 3 + 2 * workers, dead_calls
    assert one.served > 0 and "one" in answered_by[:kill_after]  # both deployments were in use before
    assert answered_by[-100:].count("two") == len(answered_by[-100:])  # afterwards only two answers
    assert board.get("one").state == "open"  # the dead upstream is skipped, not retried every time
    assert stack.metrics.registry.get_sample_value("aiestack_breaker_state", {"target": "one"}) == 2.0


async def test_a_failing_upstream_opens_its_breaker_and_recovers_when_it_heals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstreams: tuple[MockUpstream, MockUpstream]
) -> None:
    one, two = upstreams
    cooldown = 0.5
    route = {
        "deployments": ["one", "two"],
        "retries": 0,
        "timeout_s": 2,
        "breaker": {"failures": 3, "cooldown_s": cooldown},
    }
    stack, board = _stack(tmp_path, monkeypatch, upstreams, route)
    gauge = {"target": "one"}
    deadline = time.monotonic() + 15
    try:
        # Healthy: both upstreams take traffic.
        for _ in range(20):
            await _ask(stack, stream=True)
        assert one.served > 0 and two.served > 0

        # one starts answering 500: its breaker opens, and every request still succeeds via two.
        one.fail_status = 500
        skipped = 0
        while board.get("one").state != "open":
            assert time.monotonic() < deadline, "the breaker never opened"
            await _ask(stack, stream=True)
        assert stack.metrics.registry.get_sample_value("aiestack_breaker_state", gauge) == 2.0
        failed_at_open, opened = one.hits, time.monotonic()
        for _ in range(10):
            ex = await _ask(stack, stream=True)
            skipped += "one" in ex.attributes.get(BREAKERS_OPEN, ())
            assert ex.attributes[DEPLOYMENT] == "two"
        if time.monotonic() - opened < cooldown:  # still inside the cooldown: one saw no traffic at all
            assert one.hits == failed_at_open and skipped > 0

        # one heals: after the cooldown a probe goes through, the breaker closes, traffic returns.
        one.fail_status = None
        served_before = one.served
        await asyncio.sleep(cooldown)
        while board.get("one").state != "closed":
            assert time.monotonic() < deadline, f"the breaker did not recover: {board.get('one').state}"
            await _ask(stack, stream=True)
            await asyncio.sleep(0.01)
        assert stack.metrics.registry.get_sample_value("aiestack_breaker_state", gauge) == 0.0
        answered = [(await _ask(stack)).attributes[DEPLOYMENT] for _ in range(40)]
        assert one.served > served_before and "one" in answered and "two" in answered
        stack.writer.flush(timeout=10)
        records = stack.store.list_exchanges(limit=500)
        assert all(r.route == "chat" and r.outcome == "ok" for r in records)
        assert any(r.attributes.get(BREAKERS_OPEN) == ["one"] for r in records)  # recorded by tracing
    finally:
        await stack.aclose()
