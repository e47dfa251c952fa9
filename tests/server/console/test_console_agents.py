"""The console's agent pages: the run list and one run's timeline (steps, calls, arguments, results, costs)."""

from __future__ import annotations

import pytest

from aiestack.agents import Agent, tool
from aiestack.agents.runs import RunKeeper
from aiestack.models.fake import FakeModel, Script
from aiestack.stores.runs import RunStore

from .conftest import Console

pytestmark = pytest.mark.unit


@tool(approval=True)
def refund(order: str) -> str:
    """Refund an order."""
    return f"refunded {order}"


@tool
def find_order(customer: str) -> str:
    """Find a customer's last order."""
    return f"order A-17 of {customer}"


async def test_the_timeline_shows_every_step(console: Console) -> None:
    stack = console.stack
    fake = stack.models.resolve("fake").provider
    assert isinstance(fake, FakeModel) and isinstance(stack.store, RunStore)
    fake.enqueue([
        Script(tool_calls=[("c1", "find_order", '{"customer": "Ann"}')]),
        Script(tool_calls=[("c2", "refund", '{"order": "A-17"}')]),
        "Refunded A-17.",
    ])  # fmt: skip
    keeper = RunKeeper(stack.store, content=stack.tracing.content, redact=stack.tracing.redact)
    agent = Agent(model="fake", stack=stack, tools=[find_order, refund], name="support")
    waiting = await keeper.run(agent, "refund Ann's last order")
    page = (await console.client.get(f"/agents/runs/{waiting.run_id}")).text
    assert "waiting-calls" in page and "<code>refund</code>" in page and "A-17" in page
    refused = await console.client.post(f"/agents/runs/{waiting.run_id}/decide", data={"decision": "approve"})
    assert refused.status_code == 403  # no CSRF token
    # the agent is not in aiestack.toml: the console cannot build it, and says so (nothing runs)
    unknown = await console.client.post(
        f"/agents/runs/{waiting.run_id}/decide", data={"decision": "approve", "csrf_token": console.csrf}
    )
    assert unknown.status_code == 409 and "no agent" in unknown.text
    assert stack.store.get_run(waiting.run_id).status == "waiting"  # type: ignore[union-attr]
    await keeper.decide(agent, waiting.run_id, approve=True)
    listed = await console.client.get("/agents?status=finished")
    assert listed.status_code == 200 and waiting.run_id in listed.text and "support" in listed.text
    assert waiting.run_id not in (await console.client.get("/agents?status=waiting")).text
    timeline = (await console.client.get(f"/agents/runs/{waiting.run_id}")).text
    for kind in ("run_started", "model_call", "tool_call", "tool_result", "approval_requested", "approval_decided", "final_answer", "run_stopped"):
        assert f'class="event-{kind}"' in timeline, kind
    assert "order A-17 of Ann" in timeline and "refunded A-17" in timeline  # results (content tracing on)
    assert "&#34;customer&#34;" in timeline or "&quot;customer&quot;" in timeline  # arguments, escaped
    assert "finished (final_answer)" in timeline and "waiting-calls" not in timeline
    missing = await console.client.get("/agents/runs/run_nope")
    assert missing.status_code == 404 and "No agent run" in missing.text


async def test_a_waiting_run_is_denied_from_the_console(console: Console) -> None:
    from aiestack.agents.config import agent_specs

    stack = console.stack
    stack.agent_specs = agent_specs({"calc": {"tools": ["calculator"], "approval": ["calculator"]}})
    fake = stack.models.resolve("fake").provider
    assert isinstance(fake, FakeModel) and isinstance(stack.store, RunStore)
    fake.enqueue([Script(tool_calls=[("c1", "calculator", '{"expression": "1 + 1"}')]), "Not calculated."])
    made = await console.client.post("/v1/agents/calc/runs", json={"task": "add"}, headers={"authorization": "Bearer admin-secret"})
    run_id = made.json()["run_id"]
    decided = await console.client.post(
        f"/agents/runs/{run_id}/decide", data={"decision": "deny", "reason": "not now", "csrf_token": console.csrf}
    )
    assert decided.status_code == 303 and decided.headers["location"] == f"/agents/runs/{run_id}"
    assert [m.text for m in fake.requests[-1].messages if m.role == "tool"] == ["A person denied this call: not now"]
    page = (await console.client.get(f"/agents/runs/{run_id}")).text
    assert "denied c1: not now" in page and "finished (final_answer)" in page


async def test_the_agent_pages_need_a_session(console: Console) -> None:
    console.client.cookies.clear()
    response = await console.client.get("/agents")
    assert response.status_code in (302, 303, 401)


async def test_a_running_run_is_stopped_from_the_console(console: Console) -> None:
    import asyncio

    stack = console.stack
    fake = stack.models.resolve("fake").provider
    assert isinstance(fake, FakeModel) and isinstance(stack.store, RunStore)
    fake.enqueue([Script(pieces=["slow"] * 100, delay_s=0.1)])  # a model call of 10 s
    keeper = RunKeeper(stack.store, content=stack.tracing.content, redact=stack.tracing.redact, poll_s=0.05)
    seen: list[object] = []
    task = asyncio.ensure_future(keeper.run(Agent(model="fake", stack=stack, name="talker"), "talk", on_event=seen.append))
    while not fake.requests or not seen:
        await asyncio.sleep(0.01)
    run_id = seen[0].run_id  # type: ignore[attr-defined]
    page = (await console.client.get(f"/agents/runs/{run_id}")).text
    assert 'id="stop"' in page and "Stop the run" in page and 'id="decide"' not in page
    stopped = await console.client.post(
        f"/agents/runs/{run_id}/decide", data={"decision": "cancel", "reason": "enough", "csrf_token": console.csrf}
    )
    assert stopped.status_code == 303
    assert (await asyncio.wait_for(task, 5)).stop_reason == "cancelled"
    page = (await console.client.get(f"/agents/runs/{run_id}")).text
    assert "stopped (cancelled) — enough" in page and 'id="stop"' not in page


async def test_the_timeline_shows_plans_critiques_and_summaries(console: Console) -> None:
    import json

    from aiestack.agents import Planning, Reflection

    stack = console.stack
    fake = stack.models.resolve("fake").provider
    assert isinstance(fake, FakeModel) and isinstance(stack.store, RunStore)
    plan = {"steps": [{"description": "Find the order", "tool": "find_order"}, {"description": "Answer", "tool": None}]}
    fake.enqueue([
        json.dumps(plan),
        Script(tool_calls=[("c1", "find_order", '{"customer": "Ann"}')]),
        "Ann's last order is A-17.",
        json.dumps({"accept": False, "feedback": "Say which customer you looked up."}),
        "Ann's last order is A-17 (customer Ann).",
        json.dumps({"accept": True, "feedback": ""}),
    ])  # fmt: skip
    keeper = RunKeeper(stack.store, content=stack.tracing.content, redact=stack.tracing.redact)
    agent = Agent(model="fake", stack=stack, tools=[find_order], name="support", planning=Planning(), reflection=Reflection())
    done = await keeper.run(agent, "Which is the last order of our customer Ann?")
    assert done.stop_reason == "final_answer", done.detail
    timeline = (await console.client.get(f"/agents/runs/{done.run_id}")).text
    assert 'class="event-plan"' in timeline and "<li>Find the order (<code>find_order</code>)</li>" in timeline
    assert 'class="event-reflection"' in timeline and "sent back — Say which customer you looked up." in timeline
    assert "critique 2: accepted" in timeline
