"""Stored runs: a RunResult as a record and steps, under the content-tracing rules."""

from __future__ import annotations

import json

import pytest

from aiestack.agents import Agent, RunResult, tool
from aiestack.agents.runs import NOT_STORED, run_record
from aiestack.build import Stack
from aiestack.models.fake import FakeModel, Script
from aiestack.stores.exchanges_memory import MemoryExchangeStore

from .conftest import TextOnlyModel

pytestmark = pytest.mark.unit
Fixture = tuple[Stack, FakeModel, TextOnlyModel]
EMAIL = "jane.doe@example.com"
SECRET = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"


@tool
def lookup(person: str) -> str:
    """Look a person up."""
    return f"{person} writes from {EMAIL} with key {SECRET}"


async def _run(agent_stack: Fixture) -> RunResult:
    stack, model, _ = agent_stack
    model.enqueue([Script(tool_calls=[("c1", "lookup", json.dumps({"person": EMAIL}))]), f"Mail {EMAIL}."])
    return await Agent(model="m", stack=stack, tools=[lookup], name="helper").run(f"Who is {EMAIL}?", tenant="acme")


async def test_without_content_tracing_no_content_is_stored(agent_stack: Fixture) -> None:
    result = await _run(agent_stack)
    record, steps = run_record(result, agent="helper", model="m", tenant="acme", created_at=1.0, updated_at=2.0)
    stored = json.dumps([steps, record.task, record.answer])
    assert EMAIL not in stored and SECRET not in stored and "jane" not in stored
    assert record.task == NOT_STORED and record.answer == NOT_STORED and record.pending is None
    by_type = {s["type"]: s for s in steps}
    assert by_type["tool_result"]["content"] == NOT_STORED and by_type["tool_call"]["arguments"] == NOT_STORED
    assert by_type["tool_result"]["name"] == "lookup" and by_type["tool_result"]["error"] is None  # not content
    assert [s["type"] for s in steps] == [type(e).type for e in result.events]
    assert record.steps == 2 and record.input_tokens == result.stopped.input_tokens > 0
    store = MemoryExchangeStore()
    store.put_run(record, steps)
    assert store.run_steps(result.run_id, tenant="acme") == steps


async def test_with_content_tracing_content_is_stored_masked(agent_stack: Fixture) -> None:
    stack = agent_stack[0]
    result = await _run(agent_stack)
    record, steps = run_record(
        result, agent="helper", model="m", tenant="acme", created_at=1.0, updated_at=2.0,
        content=True, redact=stack.tracing.redact,
    )  # fmt: skip
    stored = json.dumps([steps, record.task, record.answer])
    assert EMAIL not in stored and SECRET not in stored
    assert "<EMAIL>" in record.task and "<EMAIL>" in (record.answer or "")
    by_type = {s["type"]: s for s in steps}
    assert "<EMAIL>" in by_type["tool_result"]["content"] and "writes from" in by_type["tool_result"]["content"]
    first_call = next(s for s in steps if s["type"] == "model_call")
    assert "<EMAIL>" in first_call["tool_calls"][0]["arguments"]


async def test_a_waiting_run_keeps_what_it_resumes_from(agent_stack: Fixture) -> None:
    @tool(approval=True)
    def send(to: str) -> str:
        """Send a mail."""
        return "sent"

    stack, model, _ = agent_stack
    model.enqueue([Script(tool_calls=[("c1", "send", json.dumps({"to": EMAIL}))])])
    result = await Agent(model="m", stack=stack, tools=[send]).run("mail jane")
    record, steps = run_record(result, agent="a", model="m", tenant="acme", created_at=1.0, updated_at=2.0)
    assert record.status == "waiting" and record.pending is not None
    assert record.pending["approval"]["needs_approval"] == ["c1"]
    assert EMAIL in record.pending["messages"][-1]["tool_calls"][0]["function"]["arguments"]  # runs as asked
    assert EMAIL not in json.dumps(steps)
