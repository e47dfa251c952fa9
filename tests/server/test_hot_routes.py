"""HotRoutes: a whole answer's trace record is made after its response has been sent."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response

from aiestack.errors import InvalidRequest
from aiestack.server.middleware import HotRoutes
from aiestack.tracing import defer

pytestmark = pytest.mark.unit


async def _call(handler: Any) -> list[str]:
    events: list[str] = []

    async def work() -> None:
        events.append("recorded")

    async def wrapped(request: Request) -> Response:
        assert defer(work)  # the handler runs inside deferring()
        return await handler(request)

    async def fallback(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("a hot route must not reach the app")

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        events.append(message["type"])

    hot = HotRoutes(fallback, routes={("POST", "/v1/chat/completions"): wrapped})
    scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": [], "query_string": b""}
    await hot(scope, receive, send)
    return events


async def test_deferred_work_runs_after_the_response_is_sent() -> None:
    async def answer(request: Request) -> Response:
        return Response(b"{}", media_type="application/json")

    assert await _call(answer) == ["http.response.start", "http.response.body", "recorded"]


async def test_deferred_work_runs_after_an_error_response_too() -> None:
    async def fails(request: Request) -> Response:
        raise InvalidRequest("bad", hint="send a good one")

    assert await _call(fails) == ["http.response.start", "http.response.body", "recorded"]


def test_nothing_is_deferred_outside_a_hot_route() -> None:
    async def work() -> None:
        return None

    assert defer(work) is False
