"""The agent loop: native and text tool calls, stop reasons, run ids on exchanges and spans."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from aiestack.agents import (
    Agent,
    FinalAnswer,
    ModelCall,
    RunStarted,
    RunStopped,
    ToolCalled,
    ToolResult,
    event_from_dict,
    event_to_dict,
    tool,
)
from aiestack.agents.protocol import read_reply, reply_schema
from aiestack.build import Stack
from aiestack.models.fake import FakeModel, Script
from aiestack.tracing import AGENT_RUN_ID, AGENT_STEP, GEN_AI_TOOL_CALL_RESULT, GEN_AI_TOOL_NAME

from .conftest import TextOnlyModel, make_stack

pytestmark = pytest.mark.unit
Fixture = tuple[Stack, FakeModel, TextOnlyModel]


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
async def wait(seconds: float) -> str:
    """Sleep, then say so."""
    await asyncio.sleep(seconds)
    return f"slept {seconds}"


def calls(*specs: tuple[str, str, dict[str, object]]) -> Script:
    return Script(tool_calls=[(cid, name, json.dumps(args)) for cid, name, args in specs])


async def test_native_tool_call_then_answer_with_every_event(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    model.enqueue([calls(("c1", "add", {"a": 2, "b": 3})), "The sum is 5."])
    agent = Agent(model="m", stack=stack, tools=[add], instructions="Use tools.")
    result = await agent.run("What is 2 + 3?")
    assert result.status == "finished" and result.stop_reason == "final_answer"
    assert result.answer == "The sum is 5."
    kinds = [type(e) for e in result.events]
    assert kinds == [RunStarted, ModelCall, ToolCalled, ToolResult, ModelCall, FinalAnswer, RunStopped]
    tool_result = result.tool_results[0]
    assert tool_result.content == "5" and tool_result.ok and tool_result.call_id == "c1"
    # The second model call saw the tool result, answering the call it made.
    second = model.requests[1]
    assert second.messages[0].text == "Use tools."  # (the canary guard may add a system message after it)
    assert [m.role for m in second.messages][-3:] == ["user", "assistant", "tool"]
    assert second.messages[-1].tool_call_id == "c1" and second.messages[-1].text == "5"
    assert [t.name for t in second.params.tools] == ["add"]
    assert result.steps == 2 and result.cost_usd > 0


async def test_each_model_call_is_an_exchange_linked_to_the_run(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    model.enqueue([calls(("c1", "add", {"a": 1, "b": 1})), "2"])
    result = await Agent(model="m", stack=stack, tools=[add]).run("1+1?")
    stack.writer.flush(timeout=10)
    ids = [e.exchange_id for e in result.model_calls]
    records = [stack.store.get_exchange(i) for i in ids]
    assert all(r is not None for r in records)
    assert [r.attributes[AGENT_RUN_ID] for r in records if r] == [result.run_id] * 2
    assert [r.attributes[AGENT_STEP] for r in records if r] == [1, 2]
    spans = stack.store.spans(trace_id=records[0].trace_id)  # type: ignore[union-attr]
    names = {s.name for s in spans}
    assert "invoke_agent agent" in names and "execute_tool add" in names
    roots = [s for s in spans if s.name.startswith("chat ")]
    assert len(roots) == 2 and all(s.attributes[AGENT_RUN_ID] == result.run_id for s in roots)
    run_span = next(s for s in spans if s.name == "invoke_agent agent")
    tool_span = next(s for s in spans if s.name == "execute_tool add")
    assert tool_span.parent_id == run_span.span_id and all(s.parent_id == run_span.span_id for s in roots)
    assert (
        tool_span.attributes[GEN_AI_TOOL_NAME] == "add"
        and tool_span.attributes[GEN_AI_TOOL_CALL_RESULT] == "2"
    )
    assert run_span.attributes["aiestack.agent.stop_reason"] == "final_answer"


async def test_parallel_tool_calls_run_concurrently(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    model.enqueue([calls(*((f"c{i}", "wait", {"seconds": 0.3 + i / 1000}) for i in range(4))), "done"])
    result = await Agent(model="m", stack=stack, tools=[wait]).run("wait four times")
    results = result.tool_results
    assert [r.call_id for r in results] == ["c0", "c1", "c2", "c3"]  # in the order the model asked
    started = [e.at for e in result.events if isinstance(e, ToolCalled)]
    finished = max(r.at for r in results)
    # Run one after another, four 0.3 s sleeps take 1.2 s; concurrently about 0.3 s.
    assert finished - min(started) < 1.0


async def test_max_steps_stops_a_model_that_never_answers(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    model.enqueue([calls((f"c{i}", "add", {"a": i, "b": 0})) for i in range(5)])
    result = await Agent(model="m", stack=stack, tools=[add], max_steps=3).run("count")
    assert result.stop_reason == "max_steps" and result.status == "stopped" and result.steps == 3
    assert len(result.tool_results) == 3 and result.answer is None


async def test_repeated_identical_call_stops_as_a_loop(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    same = {"b": 1, "a": 1}
    model.enqueue([calls((f"c{i}", "add", same if i % 2 else {"a": 1, "b": 1})) for i in range(5)])
    result = await Agent(model="m", stack=stack, tools=[add], max_identical_calls=2).run("loop")
    assert result.stop_reason == "loop" and "in 3 steps" in result.detail
    assert len(result.tool_results) == 2  # the third identical call was not made


async def test_unknown_tool_stops_with_the_name(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    model.enqueue([calls(("c1", "delete_everything", {}))])
    result = await Agent(model="m", stack=stack, tools=[add]).run("go")
    assert (
        result.stop_reason == "unknown_tool"
        and "delete_everything" in result.detail
        and "add" in result.detail
    )
    assert not result.tool_results


async def test_budget_and_tokens_stop_the_run(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    model.enqueue([calls((f"c{i}", "add", {"a": i, "b": 2})) for i in range(5)])
    # Priced at $0.001 a token: the first call's prompt (a dozen words) already costs more than $0.001.
    result = await Agent(model="m", stack=stack, tools=[add], budget_usd=0.001).run(
        "add these numbers for me"
    )
    assert result.stop_reason == "budget" and result.steps == 1
    model.enqueue([calls((f"d{i}", "add", {"a": i, "b": 3})) for i in range(5)])
    result = await Agent(model="m", stack=stack, tools=[add], max_tokens=5).run("add these numbers for me")
    assert result.stop_reason == "max_tokens" and result.steps == 1


async def test_timeout_stops_a_slow_model(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    model.enqueue([Script(pieces=["a"] * 100, delay_s=0.05)])
    result = await Agent(model="m", stack=stack, tools=[add], timeout_s=0.3).run("go")
    assert result.stop_reason == "timeout" and result.stopped.duration_ms < 3000


async def test_model_error_is_a_stop_not_a_raise(agent_stack: Fixture) -> None:
    from aiestack.errors import ProviderUnavailable

    stack, model, _ = agent_stack
    model.enqueue([Script(error=ProviderUnavailable("down", provider="fake"))])
    result = await Agent(model="m", stack=stack, tools=[add]).run("go")
    assert result.stop_reason == "model_error" and result.status == "failed" and "down" in result.detail


async def test_stream_yields_the_events_run_returns(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    model.enqueue([calls(("c1", "add", {"a": 2, "b": 2})), "4"])
    events = [e async for e in Agent(model="m", stack=stack, tools=[add]).stream("2+2")]
    assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunStopped)
    assert events[-1].reason == "final_answer"
    for event in events:  # every event survives JSON and back
        assert event_from_dict(json.loads(json.dumps(event_to_dict(event)))) == event


async def test_an_abandoned_stream_ends_the_run_span(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    model.enqueue([calls(("c1", "add", {"a": 2, "b": 2})), "4"])
    stream = Agent(model="m", stack=stack, tools=[add]).stream("2+2")
    async for event in stream:
        if isinstance(event, ModelCall):
            break
    await stream.aclose()  # type: ignore[attr-defined]
    stack.writer.flush(timeout=10)
    record = stack.store.get_exchange(event.exchange_id)
    assert record is not None
    spans = [s for s in stack.store.spans(trace_id=record.trace_id) if s.name == "invoke_agent agent"]
    assert len(spans) == 1 and spans[0].attributes["aiestack.agent.stop_reason"] == "cancelled"


# ---------------------------------------------------------------- the text protocol


async def test_text_protocol_for_a_model_without_native_tools(agent_stack: Fixture) -> None:
    stack, _, text = agent_stack
    text.enqueue(['{"tool": "add", "arguments": {"a": 20, "b": 22}}', '{"answer": "42"}'])
    agent = Agent(model="t", stack=stack, tools=[add])
    assert agent.protocol == "text"
    result = await agent.run("What is 20 + 22?")
    assert result.answer == "42" and result.tool_results[0].content == "42"
    first = text.requests[0]
    assert not first.params.tools and first.params.response_format is not None
    assert first.params.response_format.type == "json_schema"
    assert '"tool"' in first.messages[0].text and "add" in first.messages[0].text


async def test_the_schema_guard_reasks_an_unreadable_reply_within_the_step(agent_stack: Fixture) -> None:
    stack, _, text = agent_stack
    text.enqueue(["I think the answer is", '{"answer": "fine"}'])
    result = await Agent(model="t", stack=stack, tools=[add]).run("go")
    assert result.answer == "fine" and result.steps == 1  # the pipeline's json_schema guard asked again
    assert "rejected" in text.requests[1].messages[-1].text


async def test_unreadable_text_replies_are_corrected_then_stop(tmp_path: Path) -> None:
    stack, _, text = make_stack(
        tmp_path, guards={"json_schema": "off", "injection": "off"}
    )  # the loop corrects
    try:
        text.enqueue(["I think the answer is", '```json\n{"answer": "fine"}\n```'])
        result = await Agent(model="t", stack=stack, tools=[add]).run("go")
        assert result.answer == "fine"
        first = result.model_calls[0]
        assert first.error == "the reply is not a JSON object"
        assert "could not be read" in text.requests[1].messages[-1].text
        text.enqueue(["nope", "{not json", '{"neither": 1}'])
        result = await Agent(model="t", stack=stack, tools=[add], max_invalid_replies=3).run("go")
        assert result.stop_reason == "invalid_reply" and result.steps == 3
        assert "neither" in result.detail
    finally:
        await stack.aclose()


def test_reply_schema_offers_each_tool_and_the_answer() -> None:
    schema = reply_schema([add, wait])
    names = [c["properties"].get("tool", {}).get("const") for c in schema["anyOf"]]
    assert names == ["add", "wait", None]
    assert schema["anyOf"][0]["properties"]["arguments"]["required"] == ["a", "b"]
    assert read_reply('{"tool": "add", "arguments": {"a": 1, "b": 2}}', "x").call is not None
    assert read_reply('{"tool": "add", "arguments": [1]}', "x").error == '"arguments" must be a JSON object'


def test_agent_refuses_bad_limits(agent_stack: Fixture) -> None:
    stack, _, _ = agent_stack
    with pytest.raises(ValueError, match="max_steps"):
        Agent(model="m", stack=stack, max_steps=0)
    with pytest.raises(ValueError, match="budget_usd"):
        Agent(model="m", stack=stack, budget_usd=-1)


async def test_native_calls_over_the_openai_wire_against_the_scripted_upstream(tmp_path: Path) -> None:
    import httpx

    from aiestack.build import build_stack
    from aiestack.models.openai import OpenAIChatModel
    from aiestack.models.registry import ModelEntry
    from aiestack.settings import Settings
    from aiestack.stores.exchanges_memory import MemoryExchangeStore
    from aiestack.testing.upstream import create_app

    upstream = OpenAIChatModel(base_url="http://upstream/v1", transport=httpx.ASGITransport(create_app()))
    settings = Settings(data_dir=tmp_path, embedded_model=False, default_model="mock", guards={"enabled": False})
    stack = build_stack(settings, store=MemoryExchangeStore(), models=[ModelEntry("mock", upstream, "mock")])
    try:
        agent = Agent(model="mock", stack=stack, tools=[add, wait])
        result = await agent.run("[agent steps=3 parallel=2] add things")
    finally:
        await stack.aclose()
    assert result.answer == "done after 3 steps" and result.steps == 4
    calls = [e for e in result.events if isinstance(e, ToolCalled)]
    assert [(c.step, c.call_id, json.loads(c.arguments)) for c in calls[:2]] == [
        (1, "call_1_0", {"a": 1, "b": 1}),
        (1, "call_1_1", {"a": 1, "b": 1}),
    ]
    assert [r.content for r in result.tool_results] == ["2", "2", "4", "4", "6", "6"]


async def test_auto_protocol_asks_the_stack_about_every_model_a_route_reaches(tmp_path: Path) -> None:
    stack, _, _ = make_stack(
        tmp_path,
        routes={"mixed": {"deployments": ["m"], "fallbacks": ["t"]}, "native": {"deployments": ["m"]}},
    )
    try:
        assert stack.native_tools("m") and not stack.native_tools("t")
        assert stack.native_tools("native") and not stack.native_tools("mixed")  # the fallback cannot
        assert Agent(model="mixed", stack=stack, tools=[add]).protocol == "text"
        assert Agent(model="mixed", stack=stack, tools=[add], protocol="native").protocol == "native"
    finally:
        await stack.aclose()


async def test_a_tool_that_needs_approval_pauses_the_run_before_any_call_of_its_step(agent_stack: Fixture) -> None:
    from aiestack.agents import ApprovalRequested, RunResult

    ran: list[str] = []

    @tool(approval=True)
    def delete_file(path: str) -> str:
        """Delete a file."""
        ran.append(path)
        return "deleted"

    stack, model, _ = agent_stack
    model.enqueue([Script(tool_calls=[("c1", "add", '{"a": 1, "b": 2}'), ("c2", "delete_file", '{"path": "/x"}')])])
    result = await Agent(model="m", stack=stack, tools=[add, delete_file]).run("clean up")
    assert result.status == "waiting" and result.stop_reason == "waiting" and "delete_file" in result.detail
    (asked,) = [e for e in result.events if isinstance(e, ApprovalRequested)]
    assert [c.id for c in asked.calls] == ["c1", "c2"] and asked.needs_approval == ("c2",)
    assert not ran and not result.tool_results  # nothing of the step ran
    assert result.messages[-1].role == "assistant" and len(result.messages[-1].tool_calls) == 2
    again = RunResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result  # what a store keeps of a waiting run is the run
