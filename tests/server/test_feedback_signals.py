"""Implicit feedback over real HTTP: a client that disconnects mid-stream, and a regeneration."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiestack.build import Stack, build_stack
from aiestack.models.fake import Script
from aiestack.server.app import create_app

from .conftest import Live, serve, settings


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    """A served stack with guardrails off: an output guard that buffers the answer would hand the
    whole stream over at once, and this test needs the deltas to trickle out as the model makes them."""

    def factory() -> Stack:
        return build_stack(settings(tmp_path, guards={"enabled": False}, cache={"enabled": False}))

    with serve(create_app(factory)) as server:
        yield server

pytestmark = pytest.mark.unit


def implicit(live: Live, kind: str, timeout_s: float = 10.0) -> list[Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = live.stack.store.list_feedback(source="implicit", kind=kind)
        if found or time.monotonic() > deadline:
            return list(found)
        time.sleep(0.05)


def test_a_client_that_disconnects_mid_stream_leaves_a_stopped_early_signal(live: Live) -> None:
    live.fake.enqueue([Script(pieces=[f"word{i} " for i in range(50)], delay_s=0.05)])
    body = {"model": "fake", "stream": True, "messages": [{"role": "user", "content": "Tell me a long story"}]}
    with (
        httpx.Client(base_url=live.base_url, timeout=10) as client,
        client.stream("POST", "/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        exchange_id = response.headers["x-aiestack-exchange-id"]
        for line in response.iter_lines():
            if line.startswith("data: ") and "word0" in line:
                break  # the user pressed stop
    found = implicit(live, "stopped_early")
    assert [(f.exchange_id, f.source, f.value) for f in found] == [(exchange_id, "implicit", 0.0)]


def test_resending_the_same_conversation_marks_the_first_answer_regenerated(live: Live) -> None:
    live.fake.enqueue(["Blue.", "Green."])  # a regeneration is a new answer
    body = {"model": "fake", "messages": [{"role": "user", "content": "Name a colour"}]}
    with httpx.Client(base_url=live.base_url, timeout=10) as client:
        first = client.post("/chat/completions", json=body)
        assert first.status_code == 200
        implicit(live, "regenerated", timeout_s=0.3)  # give the first turn's background write a moment
        second = client.post("/chat/completions", json=body)
    found = implicit(live, "regenerated")
    assert [(f.exchange_id, f.detail["by"]) for f in found] == [
        (first.headers["x-aiestack-exchange-id"], second.headers["x-aiestack-exchange-id"])
    ]


def test_the_same_conversation_from_another_client_is_no_regeneration(live: Live) -> None:
    """Without API keys, the caller's address tells two clients apart (127.0.0.2 is loopback too)."""
    live.fake.enqueue(["Blue.", "Green.", "Red."])
    body = {"model": "fake", "messages": [{"role": "user", "content": "Name a colour"}]}
    other = httpx.HTTPTransport(local_address="127.0.0.2")
    with (
        httpx.Client(base_url=live.base_url, timeout=10) as one,
        httpx.Client(base_url=live.base_url, timeout=10, transport=other) as two,
    ):
        assert one.post("/chat/completions", json=body).status_code == 200
        implicit(live, "regenerated", timeout_s=0.3)
        assert two.post("/chat/completions", json=body).status_code == 200
        third = one.post("/chat/completions", json=body)  # the first client again: a regeneration
    found = implicit(live, "regenerated")  # signals are matched in order: the other client's came first
    assert [f.detail["by"] for f in found] == [third.headers["x-aiestack-exchange-id"]]
