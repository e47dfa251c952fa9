"""The input guard checks every text the model is sent, not only user turns (issue #13, defect 2),
and runs its CPU work off the event loop for large input (defect 1)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from aiestack.guardrails.input import map_request_text, request_chars
from aiestack.types import ChatRequest, Message, Params, Tool, ToolCall

pytestmark = pytest.mark.unit

Rig = Any
EMAIL = "jane.doe@example.com"
KEY = "sk-proj-" + "A1b2C3d4E5f6G7h8J9k0L1m2N3p4"


def _request() -> ChatRequest:
    call = ToolCall("c1", "send", json.dumps({"to": EMAIL, "key": KEY}))
    messages = (
        Message("system", f"You assist {EMAIL}. Use key {KEY}."),
        Message("user", "hi"),
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", f"sent to {EMAIL}", tool_call_id="c1"),
        Message("user", "thanks"),
    )
    tools = (Tool("send", f"mail {EMAIL}", {"type": "object", "properties": {"to": {"type": "string", "description": f"e.g. {EMAIL}"}}}),)
    return ChatRequest(model="fake", messages=messages, params=Params(stop=(EMAIL,), tools=tools), user=EMAIL)


async def test_no_text_field_reaches_the_model_unredacted(rig: Rig) -> None:
    ex = await rig.pipeline(__import__("aiestack.types", fromlist=["Exchange"]).Exchange(request=_request()))
    sent = rig.fake.requests[-1]
    seen = repr(sent)
    assert EMAIL not in seen and KEY not in seen
    assert sent.messages[0].text.startswith("You assist <EMAIL_1>")
    assert sent.params.stop == ("<EMAIL_1>",) and sent.user == "<EMAIL_1>"
    assert ex.outcome == "ok"


def test_map_request_text_reaches_every_text_field() -> None:
    seen: list[str] = []
    map_request_text(_request(), lambda t: seen.append(t) or t)  # type: ignore[func-returns-value]
    assert sum(EMAIL in t for t in seen) == 7  # system, tool-call args, tool result, stop, tool description, schema, user
    assert any(KEY in t for t in seen)
    assert request_chars(_request()) >= sum(len(t) for t in seen) - len(EMAIL)  # user id is not counted


async def test_a_large_message_is_checked_off_the_event_loop(rig: Rig) -> None:
    """While 360 KB are checked, the loop keeps running: a ticker gets many turns before the answer."""
    big = ("The quick brown fox jumps over the lazy dog. " * 8_000) + EMAIL
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    ex = await rig.run(big)
    elapsed = time.perf_counter() - started
    done.set()
    await task
    assert ex.outcome == "ok" and EMAIL not in rig.fake.requests[-1].messages[-1].text
    # On the loop the ticker would get no turn at all while the checks run (seconds of work).
    assert ticks > 10, (ticks, elapsed)
