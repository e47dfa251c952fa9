"""Agent runs scored: task success, tool-call accuracy, invalid tool calls, steps, cost and time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiestack.agents import Agent, tool
from aiestack.build import build_stack
from aiestack.evals.agent_scores import score_run
from aiestack.models.fake import FakeModel, Script
from aiestack.models.registry import ModelEntry
from aiestack.settings import Settings
from aiestack.stores.exchanges_memory import MemoryExchangeStore

pytestmark = pytest.mark.unit


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _calls(*specs: tuple[str, str, object]) -> Script:
    return Script(tool_calls=[(cid, name, args if isinstance(args, str) else json.dumps(args)) for cid, name, args in specs])


async def test_a_run_is_scored_on_success_tool_calls_invalid_calls_steps_and_cost(tmp_path: Path) -> None:
    model = FakeModel()
    settings = Settings(data_dir=tmp_path, embedded_model=False, default_model="m", pricing={"m": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}})
    stack = build_stack(settings, store=MemoryExchangeStore(), models=[ModelEntry("m", model, "m")])
    try:
        model.enqueue([_calls(("c1", "add", '{"a": "two"}')), _calls(("c2", "add", {"a": 2, "b": 3})), "The sum is 5."])
        result = await Agent(model="m", stack=stack, tools=[add]).run("What is 2 + 3?")
        expected = [{"name": "add", "arguments": {"a": 2, "b": 3}}]
        scores = score_run(result, expected_answer=5, expected_tool_calls=expected)
        # The bad first call counts as invalid and as a call the run made (so the calls are not exactly the expected ones).
        assert scores["success"] == 1.0 and scores["invalid_tool_calls"] == 1.0 and scores["tool_call_accuracy"] == 0.0
        assert scores["steps"] == 3.0 and (scores["cost_usd"] or 0) > 0 and scores["duration_ms"] is not None

        model.enqueue([_calls(("c1", "add", {"a": 2, "b": 3})), "It is 6."])
        result = await Agent(model="m", stack=stack, tools=[add]).run("What is 2 + 3?")
        scores = score_run(result, expected_answer="5", expected_tool_calls=expected)
        assert scores["tool_call_accuracy"] == 1.0 and scores["invalid_tool_calls"] == 0.0
        assert scores["success"] == 0.0  # a wrong final answer
        assert score_run(result)["tool_call_accuracy"] is None  # nothing expected: not applicable
    finally:
        await stack.aclose()
