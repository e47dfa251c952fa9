"""Streaming runs: the model's deltas of each step, the final answer's text as it is written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aiestack.agents import Agent, tool
from aiestack.agents.events import (
    AnswerDelta,
    FinalAnswer,
    ModelCall,
    ModelDelta,
    RunStopped,
    event_from_dict,
    event_to_dict,
)
from aiestack.agents.streaming import AnswerText
from aiestack.build import Stack
from aiestack.errors import ProviderUnavailable
from aiestack.models.fake import FakeModel, Script
from aiestack.types import Message, ToolCall

from .conftest import TextOnlyModel, make_stack

pytestmark = pytest.mark.unit
Fixture = tuple[Stack, FakeModel, TextOnlyModel]


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.fixture
async def unchecked(tmp_path: Path) -> Any:
    """The JSON-schema guard off (it checks a JSON reply whole, so the text protocol would stream it
    as one delta), and the injection classifier (seconds to load, and not what these tests are about)."""
    stack, model, text = make_stack(tmp_path, guards={"json_schema": "off", "injection": "off"})
    yield stack, model, text
    await stack.aclose()


def answer_of(events: list[Any]) -> str:
    return "".join(e.text for e in events if isinstance(e, AnswerDelta))


async def test_native_steps_stream_their_deltas_and_the_answer(unchecked: Fixture) -> None:
    stack, model, _ = unchecked
    model.enqueue([Script(tool_calls=[("c1", "add", '{"a": 2, "b": 3}')]), "The sum is 5."])
    events = [e async for e in Agent(model="m", stack=stack, tools=[add]).stream("2+3?")]
    first_call = next(i for i, e in enumerate(events) if isinstance(e, ModelCall))
    tool_deltas = [e for e in events[:first_call] if isinstance(e, ModelDelta)]
    assert [(c.name, c.arguments) for d in tool_deltas for c in d.tool_calls] == [("add", '{"a": 2, "b": 3}')]
    assert not any(isinstance(e, AnswerDelta) for e in events[:first_call])  # a tool call is no answer
    texts = [e.text for e in events if isinstance(e, ModelDelta) and e.step == 2]
    assert len(texts) > 1 and "".join(texts) == "The sum is 5."  # piece by piece
    assert answer_of(events) == "The sum is 5."
    final = next(e for e in events if isinstance(e, FinalAnswer))
    assert events.index(final) > max(i for i, e in enumerate(events) if isinstance(e, AnswerDelta))
    assert isinstance(events[-1], RunStopped) and events[-1].reason == "final_answer"
    for event in events:  # deltas survive JSON and back like every event
        assert event_from_dict(json.loads(json.dumps(event_to_dict(event)))) == event


async def test_run_keeps_deltas_out_of_its_events_and_passes_them_on(unchecked: Fixture) -> None:
    stack, model, _ = unchecked
    seen: list[Any] = []
    model.enqueue(["four"])
    result = await Agent(model="m", stack=stack).run("2+2?", deltas=True, on_event=seen.append)
    assert not any(isinstance(e, ModelDelta | AnswerDelta) for e in result.events)
    assert [e.text for e in seen if isinstance(e, AnswerDelta)] == ["four"]
    assert model.requests[-1].stream
    model.enqueue(["four"])
    quiet: list[Any] = []
    await Agent(model="m", stack=stack).run("2+2?", on_event=quiet.append)
    assert not model.requests[-1].stream and not any(isinstance(e, ModelDelta) for e in quiet)


async def test_an_agent_without_tools_streams_its_answer_as_it_comes(unchecked: Fixture) -> None:
    stack, model, _ = unchecked
    model.enqueue(["Paris is the capital."])
    events = [e async for e in Agent(model="m", stack=stack).stream("Capital of France?")]
    call = next(i for i, e in enumerate(events) if isinstance(e, ModelCall))
    assert answer_of(events[:call]) == "Paris is the capital."  # before the step was over


async def test_text_protocol_answers_are_decoded_as_the_model_writes_them(unchecked: Fixture) -> None:
    stack, _, text = unchecked
    reply = '{"answer": "caf\\u00e9 \\"42\\"\\n\\ud83d\\ude00 ok"}'
    text.enqueue([['{"tool": "add", "arguments": ', '{"a": 20, "b": 22}}'], [reply[i : i + 3] for i in range(0, len(reply), 3)]])
    events = [e async for e in Agent(model="t", stack=stack, tools=[add]).stream("20+22?")]
    second = max(i for i, e in enumerate(events) if isinstance(e, ModelCall))
    live = [e.text for e in events[:second] if isinstance(e, AnswerDelta)]
    assert len(live) > 1 and "".join(live) == 'café "42"\n😀 ok'
    assert next(e for e in events if isinstance(e, FinalAnswer)).text == 'café "42"\n😀 ok'
    assert not any(isinstance(e, AnswerDelta) and e.step == 1 for e in events)


async def test_a_stream_that_fails_or_stalls_stops_the_run_with_a_reason(unchecked: Fixture) -> None:
    stack, model, _ = unchecked
    model.enqueue([Script(pieces=["a", "b", "c"], error=ProviderUnavailable("gone", provider="fake"), error_after=2)])
    events = [e async for e in Agent(model="m", stack=stack).stream("go")]
    assert isinstance(events[-1], RunStopped) and events[-1].reason == "model_error" and "gone" in events[-1].detail
    model.enqueue([Script(pieces=["a", "b"], break_after=1)])
    events = [e async for e in Agent(model="m", stack=stack).stream("go")]
    assert events[-1].reason == "model_error"  # type: ignore[union-attr]
    model.enqueue([Script(pieces=["a", "b", "c", "d"], delay_s=0.3)])
    events = [e async for e in Agent(model="m", stack=stack, timeout_s=0.5).stream("go")]
    assert events[-1].reason == "timeout" and events[-1].status == "stopped"  # type: ignore[union-attr]


async def test_earlier_turns_reach_the_model_without_the_callers_tool_calls(unchecked: Fixture) -> None:
    stack, model, _ = unchecked
    model.enqueue(["Still Paris."])
    history = [
        Message("system", "Be brief."),
        Message("user", "Capital of France?"),
        Message("assistant", "", tool_calls=(ToolCall("x1", "lookup", "{}"),)),
        Message("tool", "Paris", tool_call_id="x1"),
        Message("assistant", "Paris."),
    ]
    result = await Agent(model="m", stack=stack, instructions="Answer.").run("And now?", history=history)
    assert result.answer == "Still Paris."
    seen = [(m.role, m.text) for m in model.requests[-1].messages]
    assert seen[0] == ("system", "Answer.")
    assert [s for s in seen if s[0] != "system" or s[1] == "Be brief."] == [
        ("system", "Be brief."), ("user", "Capital of France?"), ("assistant", "Paris."), ("user", "And now?"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("pieces", "said"),
    [
        (['{"answer": "a', 'bc"}'], "abc"),
        (['  {  "answer"', ' :  "x\\', 'ny"}'], "x\ny"),
        (['{"answer": "\\u00', "e9", '\\ud83d', "\\ude00", '"}'], "é😀"),
        (['{"tool": "add", "arguments": {"answer": "no"}}'], ""),
        (["not json at all"], ""),
        (['{"answer": "done"} trailing "text"'], "done"),
    ],
)
def test_answer_text_decodes_only_the_answer_string(pieces: list[str], said: str) -> None:
    reader = AnswerText("json")
    assert "".join(reader.feed(p) for p in pieces) == said and reader.sent == said


def test_answer_text_sends_the_rest_of_an_answer_once_and_never_more() -> None:
    native = AnswerText("end")
    assert native.feed("Hello") == "" and native.rest("Hello") == "Hello" and native.rest("Hello") == ""
    diverged = AnswerText("json")
    diverged.feed('{"answer": "abc')
    assert diverged.rest("xyz") == ""  # what was sent cannot be taken back: nothing more is added
