"""A step whose answer an output guard blocked still used the model: the run, its ModelCall and
the exchange record count those tokens and that cost (they said 0 tokens, $0)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiestack.agents import Agent, ModelCall, RunStopped, calculator
from aiestack.models.fake import Script

from .conftest import make_stack

pytestmark = pytest.mark.unit
#: A text-protocol reply cut off at max_tokens inside its JSON: the json_schema guard blocks it.
CUT_OFF = Script(pieces=['{"answer": "', "seventeen ", "times ", "twenty"], finish_reason="length")


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_blocked_step_counts_its_tokens(tmp_path: Path, streamed: bool) -> None:
    stack, _, text = make_stack(tmp_path, pricing={"t": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}})
    text.enqueue([CUT_OFF])
    agent = Agent(model="t", stack=stack, tools=[calculator])
    if streamed:
        events = [e async for e in agent.stream("What is 17 * 23?")]
    else:
        events = list((await agent.run("What is 17 * 23?")).events)
    stopped = events[-1]
    assert isinstance(stopped, RunStopped) and stopped.reason == "blocked"
    assert stopped.output_tokens == 4 and stopped.input_tokens > 0
    assert stopped.cost_usd == pytest.approx((stopped.input_tokens + 4) * 1000 / 1e6)
    calls = [e for e in events if isinstance(e, ModelCall)]
    if calls:  # the whole-answer path reports the step; a blocked stream stops the run at once
        assert calls[0].output_tokens == 4 and calls[0].cost_usd == stopped.cost_usd
    stack.writer.flush(timeout=10)
    (record,) = [r for r in stack.store.list_exchanges(limit=10) if r.error_type == "GuardrailBlocked"]
    assert (record.input_tokens, record.output_tokens) == (stopped.input_tokens, 4)
    assert record.cost_usd == pytest.approx(stopped.cost_usd)
    await stack.aclose()


async def test_a_blocked_planning_call_counts_its_tokens(tmp_path: Path) -> None:
    """Every reply of the planner failed the json_schema guard, so the pipeline blocked the call:
    its tokens went into the exchange record but not into the run (the run said 0 tokens, $0)."""
    from aiestack.agents import PlanMade, Planning

    stack, model, _ = make_stack(tmp_path)
    model.enqueue(["a plan in words"] * 8)
    result = await Agent(model="m", stack=stack, tools=[calculator], planning=Planning(max_attempts=1)).run("What is 2 + 3?")
    assert result.stop_reason == "invalid_plan"
    (made,) = [e for e in result.events if isinstance(e, PlanMade)]
    assert made.error is not None and made.exchange_id
    stack.writer.flush(timeout=10)
    record = stack.store.get_exchange(made.exchange_id)
    assert record is not None and record.error_type == "GuardrailBlocked" and record.output_tokens > 0
    stopped = result.events[-1]
    assert isinstance(stopped, RunStopped)
    assert (stopped.input_tokens, stopped.output_tokens) == (record.input_tokens, record.output_tokens)
    assert stopped.cost_usd == pytest.approx(record.cost_usd)
    await stack.aclose()
