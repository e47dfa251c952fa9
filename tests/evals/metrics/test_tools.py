"""Tool-call metrics on plain model tool calls: accuracy, selection, invalid calls, count — and a suite offering tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aiestack.evals.base import Sample
from aiestack.evals.metrics import build_metric
from aiestack.types import Completion, Example, Message, ToolCall

pytestmark = pytest.mark.unit

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "metric": {"type": "boolean"}},
            "required": ["city"],
        },
    },
}


def _sample(reference: Any, *calls: tuple[str, str], tools: list[Any] | None = None) -> Sample:
    message = Message("assistant", "", tool_calls=tuple(ToolCall(f"c{i}", n, a) for i, (n, a) in enumerate(calls)))
    example = Example("1", {"input": "weather?", "tools": tools if tools is not None else [WEATHER]}, reference)
    return Sample(example, "s", "", completion=Completion(message=message, model="m", provider="fake"))


async def _score(metric: str, sample: Sample) -> float | None:
    return (await build_metric(metric, {}).score(sample)).value  # type: ignore[union-attr]


async def test_tool_call_accuracy_follows_bfcl_rules_in_any_order() -> None:
    ref = [{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_weather", "arguments": {"city": "Rome", "days": 3}}]
    right = _sample(ref, ("get_weather", '{"city": "rome", "days": 3}'), ("get_weather", '{"city": "Paris"}'))
    assert await _score("tool_call_accuracy", right) == 1.0
    assert await _score("tool_call_accuracy", _sample(ref, ("get_weather", '{"city": "Paris"}'))) == 0.0  # one missing
    wrong_arg = _sample(ref, ("get_weather", '{"city": "Paris"}'), ("get_weather", '{"city": "Rome", "days": 4}'))
    assert await _score("tool_call_accuracy", wrong_arg) == 0.0
    assert await _score("tool_call_accuracy", _sample([], )) == 1.0  # no call expected, none made
    bfcl_form = [{"get_weather": {"city": ["Paris", "paris, france"], "metric": ["", True]}}]
    assert await _score("tool_call_accuracy", _sample(bfcl_form, ("get_weather", '{"city": "Paris, France"}'))) == 1.0
    assert (await build_metric("tool_call_accuracy", {}).score(_sample("not calls"))).value is None  # type: ignore[union-attr]


async def test_tool_selection_invalid_calls_and_count() -> None:
    ref = [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    off = _sample(ref, ("get_weather", '{"city": "Lyon"}'))
    assert await _score("tool_selection", off) == 1.0 and await _score("tool_call_accuracy", off) == 0.0
    bad = _sample(ref, ("get_weather", "{not json"), ("get_time", "{}"), ("get_weather", '{"days": "three"}'), ("get_weather", '{"city": "x"}'))
    assert await _score("invalid_tool_calls", bad) == 3.0
    assert await _score("tool_calls", bad) == 4.0
    assert await _score("tool_selection", bad) == 0.0


async def test_a_suite_offers_the_examples_tools_and_scores_the_calls(tmp_path: Path) -> None:
    from aiestack.evals.runner import EvalRunner
    from aiestack.evals.suite import parse_suite
    from aiestack.models.fake import FakeModel, Script
    from aiestack.stores.exchanges_memory import MemoryExchangeStore
    from aiestack.types import ChatRequest, Exchange

    rows = [{"q": "weather in Paris?", "tools": [WEATHER], "calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    suite = parse_suite(
        {
            "name": "tools",
            "dataset": {"path": "d.jsonl", "input": "q", "reference": "calls", "tools": "tools"},
            "systems": [{"name": "fake", "model": "fake"}],
            "metrics": [{"name": "tool_call_accuracy"}, {"name": "invalid_tool_calls"}],
        },
        base_dir=tmp_path,
    )
    fake = FakeModel().enqueue([Script(tool_calls=[("c1", "get_weather", '{"city": "Paris"}')])])
    seen: list[ChatRequest] = []

    async def call(request: ChatRequest) -> Exchange:
        seen.append(request)
        from aiestack.streams import collect

        chunks = [d async for d in fake.stream(request)]

        async def replay():  # type: ignore[no-untyped-def]
            for d in chunks:
                yield d

        header = Completion(message=Message("assistant"), model="fake", provider="fake")
        from dataclasses import replace

        return Exchange(request=request, completion=await collect(replace(header, stream=replay())), outcome="ok")

    from aiestack.evals.datasets import load_examples

    store = MemoryExchangeStore()
    result = await EvalRunner(call, store).run(suite, load_examples(suite.dataset, suite.dataset_path))  # type: ignore[arg-type]
    assert [t.name for t in seen[0].params.tools] == ["get_weather"]
    scores = result.results[0].scores
    assert scores["tool_call_accuracy"] == 1.0 and scores["invalid_tool_calls"] == 0.0
