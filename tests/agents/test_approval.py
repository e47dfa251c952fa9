"""Approving and denying waiting runs: resumed from the store (also after a restart), never run twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aiestack.agents import Agent, ApprovalDecided, ToolCalled, tool
from aiestack.agents.runs import RunKeeper, RunNotWaiting
from aiestack.build import Stack
from aiestack.models.fake import FakeModel, Script
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.exchanges_sql import SqlExchangeStore

from .conftest import TextOnlyModel

pytestmark = pytest.mark.unit
Fixture = tuple[Stack, FakeModel, TextOnlyModel]


def make_agent(stack: Stack, sent: list[str]) -> Agent:
    @tool(approval=True)
    def send_mail(to: str) -> str:
        """Send a mail."""
        sent.append(to)
        return f"sent to {to}"

    @tool
    def lookup(name: str) -> str:
        """Find an address."""
        return f"{name} lives in Oslo"

    return Agent(model="m", stack=stack, tools=[send_mail, lookup], name="mailer")


def ask_to_send(model: FakeModel, *answers: str) -> None:
    model.enqueue([
        Script(tool_calls=[("c1", "lookup", '{"name": "ann"}'), ("c2", "send_mail", '{"to": "ann@example.org"}')]),
        *answers,
    ])  # fmt: skip


async def test_approving_runs_the_calls_once_and_finishes(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    sent: list[str] = []
    store = MemoryExchangeStore()
    keeper = RunKeeper(store)
    agent = make_agent(stack, sent)
    ask_to_send(model, "Mail sent.")
    waiting = await keeper.run(agent, "mail ann", tenant="acme")
    assert waiting.status == "waiting" and not sent
    stored = store.get_run(waiting.run_id, tenant="acme")
    assert stored is not None and stored.status == "waiting" and stored.pending is not None
    seen: list[str] = []
    done = await keeper.decide(agent, waiting.run_id, approve=True, tenant="acme", on_event=lambda e: seen.append(e.type))
    assert done.status == "finished" and done.answer == "Mail sent." and sent == ["ann@example.org"]
    assert seen[0] == "approval_decided" and seen[-1] == "run_stopped"
    assert [e.call_id for e in done.events if isinstance(e, ToolCalled)] == ["c1", "c2"]
    last = model.requests[-1].messages
    assert [m.tool_call_id for m in last if m.role == "tool"] == ["c1", "c2"]
    record = store.get_run(waiting.run_id)
    assert record is not None and record.status == "finished" and record.pending is None and record.steps == 2
    types = [s["type"] for s in store.run_steps(waiting.run_id)]
    assert types[:1] == ["run_started"] and "approval_requested" in types and "approval_decided" in types
    assert types.count("run_stopped") == 2 and types[-1] == "run_stopped"
    with pytest.raises(RunNotWaiting, match="is finished"):
        await keeper.decide(agent, waiting.run_id, approve=True)
    assert sent == ["ann@example.org"]  # never twice


async def test_denying_tells_the_model_why_and_runs_only_the_other_calls(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    sent: list[str] = []
    keeper = RunKeeper(MemoryExchangeStore())
    agent = make_agent(stack, sent)
    ask_to_send(model, "I did not send it.")
    waiting = await keeper.run(agent, "mail ann")
    done = await keeper.decide(agent, waiting.run_id, approve=False, reason="not on weekends")
    assert done.status == "finished" and not sent
    results = {r.call_id: r for r in done.tool_results}
    assert results["c1"].ok and results["c2"].error == "denied"
    tool_messages = {m.tool_call_id: m.text for m in model.requests[-1].messages if m.role == "tool"}
    assert tool_messages["c2"] == "A person denied this call: not on weekends"
    assert tool_messages["c1"] == "ann lives in Oslo"
    decided = [e for e in done.events if isinstance(e, ApprovalDecided)]
    assert decided[0].call_ids == ("c2",) and not decided[0].approved


async def test_a_run_resumes_after_a_restart_from_the_store(agent_stack: Fixture, tmp_path: Path) -> None:
    stack, model, _ = agent_stack
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    sent: list[str] = []
    first = SqlExchangeStore(url)
    first.migrate()
    ask_to_send(model, "Mail sent.")
    waiting = await RunKeeper(first).run(make_agent(stack, sent), "mail ann", tenant="acme")
    first.close()
    second = SqlExchangeStore(url)  # a new process: a new store, a new agent, a new keeper
    keeper = RunKeeper(second)
    with pytest.raises(RunNotWaiting, match="no run"):
        await keeper.decide(make_agent(stack, sent), waiting.run_id, approve=True, tenant="other")
    done = await keeper.decide(make_agent(stack, sent), waiting.run_id, approve=True, tenant="acme")
    assert done.status == "finished" and sent == ["ann@example.org"]
    assert second.get_run(waiting.run_id).status == "finished"  # type: ignore[union-attr]
    second.close()


async def test_two_approvals_at_once_run_the_tool_once(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    sent: list[str] = []
    keeper = RunKeeper(MemoryExchangeStore())
    agent = make_agent(stack, sent)
    ask_to_send(model, "Mail sent.", "Mail sent.")
    waiting = await keeper.run(agent, "mail ann")
    outcomes = await asyncio.gather(
        keeper.decide(agent, waiting.run_id, approve=True),
        keeper.decide(agent, waiting.run_id, approve=True),
        return_exceptions=True,
    )
    assert sorted(type(o).__name__ for o in outcomes) == ["RunNotWaiting", "RunResult"]
    assert sent == ["ann@example.org"]


async def test_cancelling_a_waiting_run(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    store = MemoryExchangeStore()
    keeper = RunKeeper(store)
    agent = make_agent(stack, [])
    ask_to_send(model)
    waiting = await keeper.run(agent, "mail ann")
    record = await keeper.cancel(waiting.run_id)
    assert record.status == "stopped" and record.stop_reason == "cancelled" and record.pending is None
    assert store.run_steps(waiting.run_id)[-1]["reason"] == "cancelled"
    with pytest.raises(RunNotWaiting, match="has ended"):
        await keeper.cancel(waiting.run_id)


def test_resuming_from_something_else_is_refused(agent_stack: Fixture) -> None:
    agent = make_agent(agent_stack[0], [])
    with pytest.raises(ValueError, match="not the state of a waiting run"):
        agent.resume_stream({"messages": []}, run_id="run_x", approve=True)


async def test_an_interrupted_run_is_stored_as_cancelled(agent_stack: Fixture) -> None:
    @tool
    async def slow() -> str:
        """Take a while."""
        await asyncio.sleep(30)
        return "done"

    stack, model, _ = agent_stack
    store = MemoryExchangeStore()
    model.enqueue([Script(tool_calls=[("c1", "slow", "{}")])])
    seen: list[str] = []
    task = asyncio.create_task(
        RunKeeper(store).run(Agent(model="m", stack=stack, tools=[slow]), "wait", on_event=lambda e: seen.append(e.type))
    )
    while "tool_call" not in seen:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (record,) = store.list_runs()
    assert record.status == "stopped" and record.stop_reason == "cancelled"
    assert store.run_steps(record.run_id)[-1]["reason"] == "cancelled"
