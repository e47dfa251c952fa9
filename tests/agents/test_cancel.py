"""Cancelling runs while they run: from another keeper (as from another process), or by the caller's task."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from aiestack.agents import Agent, tool
from aiestack.agents.events import ToolCalled
from aiestack.agents.runs import RunKeeper, RunNotActive
from aiestack.agents.supervise import CANCELLED_CALL
from aiestack.build import Stack
from aiestack.models.fake import FakeModel, Script

from .conftest import make_stack

pytestmark = pytest.mark.unit
POLL_S = 0.05


@tool(timeout_s=60)
async def sleepy(seconds: float) -> str:
    """Sleep, then say so."""
    await asyncio.sleep(seconds)
    return "awake"


@tool(approval=True)
def send(to: str) -> str:
    """Send a mail (needs approval)."""
    return f"sent to {to}"


@pytest.fixture
async def stack(tmp_path: Path) -> Any:
    stack, model, _ = make_stack(tmp_path, guards={"injection": "off"})
    yield stack, model
    await stack.aclose()


async def until(check: Any, what: str, timeout_s: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def keeper_of(s: Stack) -> RunKeeper:
    return RunKeeper(s.store, content=True, poll_s=POLL_S)  # type: ignore[arg-type]


def sleeping_call(seconds: float) -> Script:
    return Script(tool_calls=[("c1", "sleepy", json.dumps({"seconds": seconds}))])


async def test_a_running_tool_call_is_cancelled_from_another_keeper(stack: tuple[Stack, FakeModel]) -> None:
    s, model = stack
    model.enqueue([sleeping_call(30), "never"])
    runner, other = keeper_of(s), keeper_of(s)  # two keepers on one store: as two processes
    seen: list[Any] = []
    task = asyncio.ensure_future(runner.run(Agent(model="m", stack=s, tools=[sleepy]), "sleep", on_event=seen.append))
    called = await until(lambda: next((e for e in seen if isinstance(e, ToolCalled)), None), "the tool call")
    started = time.monotonic()
    record = await other.cancel(called.run_id, reason="taking too long")
    assert time.monotonic() - started < 2
    assert record.status == "stopped" and record.stop_reason == "cancelled" and record.detail == "taking too long"
    result = await asyncio.wait_for(task, 2)
    assert result.status == "stopped" and result.stop_reason == "cancelled" and result.steps == 1
    steps = s.store.run_steps(called.run_id)  # type: ignore[attr-defined]
    assert [st["type"] for st in steps] == ["run_started", "model_call", "tool_call", "tool_result", "run_stopped"]
    assert steps[3]["error"] == "cancelled" and steps[3]["content"] == CANCELLED_CALL
    assert steps[-1]["reason"] == "cancelled" and steps[-1]["input_tokens"] == steps[1]["input_tokens"] > 0
    assert record.input_tokens == steps[1]["input_tokens"] and record.cost_usd == pytest.approx(steps[1]["cost_usd"])
    s.writer.flush(timeout=10)
    exchange = s.store.get_exchange(steps[1]["exchange_id"])
    assert exchange is not None
    spans = {sp.name: sp for sp in s.store.spans(trace_id=exchange.trace_id)}
    assert spans["execute_tool sleepy"].attributes["aiestack.tool.error"] == "cancelled"
    assert spans["invoke_agent agent"].attributes["aiestack.agent.stop_reason"] == "cancelled"
    with pytest.raises(RunNotActive, match="has ended"):
        await other.cancel(called.run_id)
    with pytest.raises(RunNotActive, match="no run"):
        await other.cancel("run_nope")


async def test_a_model_call_in_flight_is_cancelled(stack: tuple[Stack, FakeModel]) -> None:
    s, model = stack
    model.enqueue([Script(pieces=["slow"] * 50, delay_s=0.2)])
    keeper = keeper_of(s)
    seen: list[Any] = []
    task = asyncio.ensure_future(keeper.run(Agent(model="m", stack=s), "talk", on_event=seen.append, deltas=True))
    await until(lambda: model.requests, "the model call")  # it takes 10 s
    run_id = seen[0].run_id
    record = await keeper.cancel(run_id)
    assert record.status == "stopped" and record.stop_reason == "cancelled"
    result = await asyncio.wait_for(task, 2)
    assert result.stop_reason == "cancelled"
    steps = s.store.run_steps(run_id)  # type: ignore[attr-defined]
    assert [st["type"] for st in steps] == ["run_started", "run_stopped"]


async def test_a_cancel_request_is_seen_later_when_no_one_waits(stack: tuple[Stack, FakeModel]) -> None:
    s, model = stack
    model.enqueue([sleeping_call(30), "never"])
    keeper = keeper_of(s)
    seen: list[Any] = []
    task = asyncio.ensure_future(keeper.run(Agent(model="m", stack=s, tools=[sleepy]), "sleep", on_event=seen.append))
    called = await until(lambda: next((e for e in seen if isinstance(e, ToolCalled)), None), "the tool call")
    asked = await keeper.cancel(called.run_id, wait_s=0)
    assert asked.status == "cancelling"
    again = await keeper.cancel(called.run_id)  # asked already: waits for the stop like the first asker
    assert again.status == "stopped"
    assert (await asyncio.wait_for(task, 2)).stop_reason == "cancelled"


async def test_a_resumed_run_is_cancelled_with_its_earlier_usage(stack: tuple[Stack, FakeModel]) -> None:
    s, model = stack
    model.enqueue([Script(tool_calls=[("c1", "send", '{"to": "ann"}')]), sleeping_call(30), "never"])
    keeper = keeper_of(s)
    agent = Agent(model="m", stack=s, tools=[send, sleepy])
    waiting = await keeper.run(agent, "mail ann")
    assert waiting.status == "waiting"
    seen: list[Any] = []
    task = asyncio.ensure_future(keeper.decide(agent, waiting.run_id, approve=True, on_event=seen.append))
    await until(lambda: any(isinstance(e, ToolCalled) and e.name == "sleepy" for e in seen), "the second tool call")
    record = await keeper.cancel(waiting.run_id)
    assert record.status == "stopped" and record.steps == 2
    assert record.input_tokens > waiting.stopped.input_tokens  # the first part's tokens count on
    assert (await asyncio.wait_for(task, 2)).stop_reason == "cancelled"
    types = [st["type"] for st in s.store.run_steps(waiting.run_id)]  # type: ignore[attr-defined]
    assert types[-7:] == [
        "approval_decided", "tool_call", "tool_result", "model_call", "tool_call", "tool_result", "run_stopped",
    ]  # fmt: skip


async def test_a_caller_that_goes_away_leaves_a_complete_record(stack: tuple[Stack, FakeModel]) -> None:
    s, model = stack
    model.enqueue([sleeping_call(30), "never"])
    keeper = keeper_of(s)
    seen: list[Any] = []
    task = asyncio.ensure_future(keeper.run(Agent(model="m", stack=s, tools=[sleepy]), "sleep", on_event=seen.append))
    called = await until(lambda: next((e for e in seen if isinstance(e, ToolCalled)), None), "the tool call")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    record = s.store.get_run(called.run_id)  # type: ignore[attr-defined]
    assert record.status == "stopped" and record.stop_reason == "cancelled" and record.detail == "the run was interrupted"
    types = [st["type"] for st in s.store.run_steps(called.run_id)]  # type: ignore[attr-defined]
    assert types == ["run_started", "model_call", "tool_call", "tool_result", "run_stopped"]


async def test_a_run_in_flight_beats_and_one_whose_process_died_is_stopped_by_the_canceller(
    stack: tuple[Stack, FakeModel],
) -> None:
    from aiestack.stores.runs import RunRecord

    s, model = stack
    model.enqueue([sleeping_call(30), "never"])
    keeper = RunKeeper(s.store, content=True, poll_s=0.02, heartbeat_s=0.05, stale_s=5)  # type: ignore[arg-type]
    seen: list[Any] = []
    task = asyncio.ensure_future(keeper.run(Agent(model="m", stack=s, tools=[sleepy]), "sleep", on_event=seen.append))
    called = await until(lambda: next((e for e in seen if isinstance(e, ToolCalled)), None), "the tool call")
    first = s.store.get_run(called.run_id)  # type: ignore[attr-defined]
    await until(lambda: s.store.get_run(called.run_id).updated_at > first.updated_at, "a heartbeat")  # type: ignore[attr-defined]
    assert (await keeper.cancel(called.run_id)).status == "stopped"  # alive: its own keeper stops it
    await asyncio.wait_for(task, 2)
    # a run whose process was killed: "running", its last heartbeat two minutes old, nobody watching it
    orphan = RunRecord(run_id="run_orphan", tenant="default", agent="agent", model="m", status="running",
                       created_at=time.time() - 300, updated_at=time.time() - 120, steps=2, input_tokens=40)  # fmt: skip
    s.store.put_run(orphan)  # type: ignore[attr-defined]
    started = time.monotonic()
    stopped = await keeper.cancel("run_orphan", reason="cleaning up")
    assert time.monotonic() - started < 1  # not the 10 s wait: it is known to be gone
    assert stopped.status == "stopped" and stopped.stop_reason == "cancelled" and stopped.input_tokens == 40
    assert stopped.detail.startswith("cleaning up (the process running it has given no heartbeat for 12")
    assert s.store.run_steps("run_orphan")[-1]["type"] == "run_stopped"  # type: ignore[attr-defined]
    fresh = RunRecord(run_id="run_quiet", tenant="default", agent="agent", model="m", status="running",
                      created_at=time.time(), updated_at=time.time())  # fmt: skip
    s.store.put_run(fresh)  # type: ignore[attr-defined]
    asked = await keeper.cancel("run_quiet", wait_s=0.1)  # its process may still be alive: asked, not stopped
    assert asked.status == "cancelling"
