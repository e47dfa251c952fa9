"""Plan-then-execute and reflection on scripted models: validation, re-planning, critiques."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiestack.agents import (
    Agent,
    FinalAnswer,
    ModelCall,
    PlanMade,
    Planning,
    Reflected,
    Reflection,
    RunStarted,
    RunStopped,
    ToolCalled,
    ToolResult,
    event_from_dict,
    event_to_dict,
    tool,
)
from aiestack.agents.patterns import AGENT_PURPOSE
from aiestack.agents.planning import parse_plan, plan_schema
from aiestack.agents.reflection import VERDICT_SCHEMA
from aiestack.agents.runs import run_record
from aiestack.build import Stack
from aiestack.models.fake import FakeModel, Script
from aiestack.tracing import AGENT_RUN_ID, AGENT_STEP

from .conftest import TextOnlyModel, make_stack

pytestmark = pytest.mark.unit
Fixture = tuple[Stack, FakeModel, TextOnlyModel]


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def lookup(city: str) -> str:
    """The population of a city."""
    known = {"Oslo": "709000"}
    if city not in known:
        raise KeyError(f"no city {city}")
    return known[city]


def plan(*steps: tuple[str, str | None]) -> str:
    return json.dumps({"steps": [{"description": d, "tool": t} for d, t in steps]})


def calls(*specs: tuple[str, str, dict[str, object]]) -> Script:
    return Script(tool_calls=[(cid, name, json.dumps(args)) for cid, name, args in specs])


async def test_a_plan_is_made_validated_then_executed(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    model.enqueue([plan(("Add 2 and 3", "add"), ("Answer with the sum", None)), calls(("c1", "add", {"a": 2, "b": 3})), "5"])
    result = await Agent(model="m", stack=stack, tools=[add], planning=Planning()).run("What is 2 + 3?")
    assert result.answer == "5" and result.stop_reason == "final_answer"
    kinds = [type(e) for e in result.events]
    assert kinds == [RunStarted, PlanMade, ModelCall, ToolCalled, ToolResult, ModelCall, FinalAnswer, RunStopped]
    made = result.events[1]
    assert isinstance(made, PlanMade) and made.error is None and made.revision == 0
    assert [s["tool"] for s in made.steps] == ["add", None] and made.exchange_id
    # The planner was asked with the plan's schema (tools enumerated), without tools to call.
    asked = model.requests[0]
    assert asked.params.response_format is not None and not asked.params.tools
    schema = asked.params.response_format.schema
    assert schema is not None and schema["properties"]["steps"]["items"]["properties"]["tool"]["enum"] == ["add", None]
    # The executor saw the plan after the task; the plan call counts as a step, with its own exchange.
    assert "1. Add 2 and 3 (tool: add)" in model.requests[1].messages[-1].text
    assert result.steps == 3
    stack.writer.flush(timeout=10)
    record = stack.store.get_exchange(made.exchange_id or "")
    assert record is not None and record.attributes[AGENT_RUN_ID] == result.run_id
    assert record.attributes[AGENT_PURPOSE] == "plan" and record.attributes[AGENT_STEP] == 1


async def test_an_invalid_plan_is_reported_and_asked_again_then_stops_the_run(tmp_path: Path) -> None:
    stack, model, _ = make_stack(tmp_path, guards={"json_schema": "off", "injection": "off"})  # the planner checks
    try:
        model.enqueue(['{"steps": []}', plan(("Add", "multiply")), plan(("Add them", "add")), calls(("c1", "add", {"a": 1, "b": 1})), "2"])
        result = await Agent(model="m", stack=stack, tools=[add], planning=Planning()).run("1 + 1?")
        plans = [e for e in result.events if isinstance(e, PlanMade)]
        assert [p.error is None for p in plans] == [False, False, True]
        assert "should be non-empty" in (plans[0].error or "") and "multiply" in (plans[1].error or "")
        assert plans[0].steps == () and result.answer == "2"
        assert "not valid" in model.requests[1].messages[-1].text  # the problem was spelled out

        model.enqueue(["no plan", "{", '{"steps": "x"}'])
        result = await Agent(model="m", stack=stack, tools=[add], planning=Planning(max_attempts=3)).run("1 + 1?")
        assert result.stop_reason == "invalid_plan" and result.status == "stopped" and result.steps == 3
        assert "3 plans in a row" in result.detail and result.answer is None
    finally:
        await stack.aclose()


async def test_the_schema_guard_reasks_a_bad_plan_inside_the_pipeline(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    model.enqueue(["a plan in words", plan(("Answer", None)), "done"])
    result = await Agent(model="m", stack=stack, tools=[add], planning=Planning()).run("say done")
    plans = [e for e in result.events if isinstance(e, PlanMade)]
    assert len(plans) == 1 and plans[0].error is None and result.answer == "done"
    assert "rejected" in model.requests[1].messages[-1].text  # the json_schema guard asked again


async def test_a_failed_step_triggers_a_replan_and_the_run_goes_on(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    model.enqueue([
        plan(("Look up Olso", "lookup"), ("Answer", None)),
        calls(("c1", "lookup", {"city": "Olso"})),  # fails: the step fails
        plan(("Look up Oslo (spelled right)", "lookup"), ("Answer", None)),
        calls(("c2", "lookup", {"city": "Oslo"})),
        "Oslo has 709000 people.",
    ])  # fmt: skip
    result = await Agent(model="m", stack=stack, tools=[lookup], planning=Planning()).run("How many people live in Oslo?")
    assert result.answer == "Oslo has 709000 people." and result.stop_reason == "final_answer"
    plans = [e for e in result.events if isinstance(e, PlanMade)]
    assert [p.revision for p in plans] == [0, 1]
    assert "lookup" in plans[1].reason and "no city Olso" in plans[1].reason
    # The re-planner saw the old plan, what was done and the failure; the executor saw the new plan.
    replanned = model.requests[2].messages[-1].text
    assert "Look up Olso" in replanned and "no city Olso" in replanned
    assert "Revised plan" in model.requests[3].messages[-1].text and "spelled right" in model.requests[3].messages[-1].text
    kinds = [e.type for e in result.events]
    assert kinds.index("tool_result") < kinds.index("plan", 2) < kinds.index("model_call", 4)


async def test_replans_are_bounded(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    model.enqueue([
        plan(("Look up", "lookup")), calls(("c1", "lookup", {"city": "A"})),
        plan(("Look up again", "lookup")), calls(("c2", "lookup", {"city": "B"})),
        "I could not find it.",
    ])  # fmt: skip
    result = await Agent(model="m", stack=stack, tools=[lookup], planning=Planning(max_replans=1)).run("Population of A?")
    assert [e.revision for e in result.events if isinstance(e, PlanMade)] == [0, 1]
    assert result.answer == "I could not find it."  # the second failure went back to the model as usual


async def test_text_protocol_plans_carry_the_schema_as_a_grammar_constraint(agent_stack: Fixture) -> None:
    stack, _, text = agent_stack
    text.enqueue([plan(("Add", "add")), '{"tool": "add", "arguments": {"a": 1, "b": 2}}', '{"answer": "3"}'])
    result = await Agent(model="t", stack=stack, tools=[add], planning=Planning()).run("1 + 2?")
    assert result.answer == "3"
    fmt = text.requests[0].params.response_format
    assert fmt is not None and fmt.type == "json_schema" and fmt.name == "agent_plan"
    llama_grammar = pytest.importorskip("llama_cpp.llama_grammar")
    for schema in (plan_schema(["add", "lookup"], 8), VERDICT_SCHEMA):
        assert "root ::=" in llama_grammar.json_schema_to_gbnf(json.dumps(schema))


def test_parse_plan_reads_a_fenced_plan_and_refuses_unknown_tools() -> None:
    schema = plan_schema(["add"], 2)
    assert parse_plan("```json\n" + plan(("Add", "add")) + "\n```", schema) == ({"description": "Add", "tool": "add"},)
    with pytest.raises(ValueError, match="is not one of"):
        parse_plan(plan(("Add", "sub")), schema)
    with pytest.raises(ValueError, match="too long"):
        parse_plan(plan(("a", None), ("b", None), ("c", None)), schema)
    with pytest.raises(ValueError, match="empty description"):
        parse_plan(plan(("  ", None)), schema)


async def test_reflection_sends_the_answer_back_then_accepts(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    model.enqueue([
        "The sum is 6.",
        json.dumps({"accept": False, "feedback": "Check the sum with the add tool."}),
        calls(("c1", "add", {"a": 2, "b": 3})),
        "The sum is 5.",
        json.dumps({"accept": True, "feedback": ""}),
    ])  # fmt: skip
    result = await Agent(model="m", stack=stack, tools=[add], reflection=Reflection()).run("What is 2 + 3?")
    assert result.answer == "The sum is 5." and result.stop_reason == "final_answer"
    critiques = [e for e in result.events if isinstance(e, Reflected)]
    assert [(c.round, c.accepted) for c in critiques] == [(1, False), (2, True)]
    assert critiques[0].feedback == "Check the sum with the add tool." and critiques[0].exchange_id
    assert "sent your answer back" in model.requests[2].messages[-1].text
    assert "Check the sum" in model.requests[2].messages[-1].text
    # The critic saw the task, the work and the candidate answer, and answered with the verdict schema.
    review = model.requests[4]
    assert review.params.response_format is not None and review.params.response_format.schema == VERDICT_SCHEMA
    assert "result of add: 5" in review.messages[-1].text and "The sum is 5." in review.messages[-1].text
    finals = [e for e in result.events if isinstance(e, FinalAnswer)]
    assert len(finals) == 1 and result.steps == 5


async def test_reflection_rounds_are_bounded_and_a_broken_critic_never_blocks(tmp_path: Path) -> None:
    stack, model, _ = make_stack(tmp_path, guards={"json_schema": "off", "injection": "off"})
    try:
        model.enqueue(["first", json.dumps({"accept": False, "feedback": "no"}), "second"])
        result = await Agent(model="m", stack=stack, reflection=Reflection(max_rounds=1)).run("answer")
        assert result.answer == "second" and len([e for e in result.events if isinstance(e, Reflected)]) == 1
        model.enqueue(["an answer", "I think it is fine"])
        result = await Agent(model="m", stack=stack, reflection=Reflection()).run("answer")
        critique = next(e for e in result.events if isinstance(e, Reflected))
        assert critique.accepted and critique.error and result.answer == "an answer"
    finally:
        await stack.aclose()


async def test_pattern_events_round_trip_and_are_stored_under_the_content_policy(agent_stack: Fixture) -> None:
    stack, model, _ = agent_stack
    model.enqueue([plan(("Answer", None)), "ok", json.dumps({"accept": True, "feedback": ""})])
    result = await Agent(model="m", stack=stack, planning=Planning(), reflection=Reflection()).run("What is the capital of France?")
    for event in result.events:
        assert event_from_dict(event_to_dict(event)) == event
    from aiestack.cli.agents import describe

    lines = [describe(e) for e in result.events if e.type in ("plan", "reflection")]
    assert lines == ["  step 1 plan: 1. Answer", "  step 3 critique 1: accepted"]
    _, steps = run_record(result, agent="a", model="m", tenant="t", created_at=0, updated_at=0, content=False)
    stored = next(s for s in steps if s["type"] == "plan")
    assert stored["steps"][0]["description"].startswith("[not stored")
    assert stored["steps"][0]["tool"] is None


async def test_pattern_calls_count_against_the_run_limits_and_their_failures_stop_it(agent_stack: Fixture) -> None:
    from aiestack.errors import ProviderUnavailable

    stack, model, _ = agent_stack
    model.enqueue([plan(("Answer", None))])
    result = await Agent(model="m", stack=stack, planning=Planning(), max_steps=1).run("What is the capital of France?")
    assert result.stop_reason == "max_steps" and result.steps == 1  # the plan was the one model call allowed
    model.enqueue([Script(error=ProviderUnavailable("the upstream is down", provider="fake"))] * 5)
    result = await Agent(model="m", stack=stack, planning=Planning()).run("What is the capital of France?")
    assert result.stop_reason == "model_error" and result.status == "failed"
    assert "upstream is down" in result.detail and not [e for e in result.events if isinstance(e, PlanMade)]
    model._queue.clear()  # the errors the route's retries did not use
    model.enqueue(["Paris.", json.dumps({"accept": True, "feedback": ""})])
    result = await Agent(model="m", stack=stack, reflection=Reflection(), budget_usd=1e-9).run("What is the capital of France?")
    assert result.answer == "Paris." and not [e for e in result.events if isinstance(e, Reflected)]  # no budget left: it stands
