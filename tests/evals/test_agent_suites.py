"""Suites whose systems are agents: the runner runs the agent on each example and scores the run.

The shipped example (examples/evals/agent_calculator.yaml) runs on a scripted oracle that calls the
calculator with an expected expression and answers with its result: every quality score must be
perfect. An always-wrong model must score 0, and a run that stops without an answer is scored as a
failure, not dropped. Every call of every run bypasses the gateway caches, and the runs are stored.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiestack.agents.runs import RunKeeper
from aiestack.build import Stack, build_stack
from aiestack.cache.stage import REQUEST_FLAG as CACHE_FLAG
from aiestack.errors import ConfigError
from aiestack.evals.agent_systems import stack_agents
from aiestack.evals.datasets import load_examples
from aiestack.evals.runner import EvalRunner, RunResult
from aiestack.evals.suite import Suite, load_suite, parse_suite
from aiestack.models.fake import FakeModel, Script
from aiestack.models.registry import ModelEntry
from aiestack.settings import Settings
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.types import ChatRequest

pytestmark = pytest.mark.unit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "evals" / "agent_calculator.yaml"


class Oracle(FakeModel):
    """Calls the calculator with the example's first allowed expression, then answers with the result."""

    def __init__(self, expressions: dict[str, str], *, wrong: bool = False) -> None:
        super().__init__()
        self.expressions = expressions
        self.wrong = wrong

    def _next(self, request: ChatRequest) -> Script:
        if self._queue:
            return self._queue.popleft()
        task = next(m.text for m in request.messages if m.role == "user")
        if self.wrong:
            return Script(pieces=["The answer is 7."])
        if request.messages[-1].role == "tool":
            return Script(pieces=[f"The answer is {request.messages[-1].text}."])
        args = json.dumps({"expression": self.expressions[task]})
        return Script(tool_calls=[("c1", "calculator", args)])


def _expressions(suite: Suite) -> dict[str, str]:
    return {
        e.input["question"]: e.metadata["calls"][0]["calculator"]["expression"][0]
        for e in load_examples(suite.dataset, suite.dataset_path)
    }


@pytest.fixture
def suite(tmp_path: Path) -> Suite:
    folder = tmp_path / "evals"
    shutil.copytree(EXAMPLE.parent, folder)
    path = folder / EXAMPLE.name
    path.write_text(path.read_text(encoding="utf-8").replace("model: gemma-3-270m", "model: oracle"), encoding="utf-8")
    return load_suite(path)


@pytest.fixture
async def stack(tmp_path: Path, suite: Suite) -> AsyncIterator[tuple[Stack, Oracle]]:
    oracle = Oracle(_expressions(suite))
    settings = Settings(
        data_dir=tmp_path / "data", embedded_model=False, default_model="oracle",
        pricing={"oracle": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}},
        agents={"calc": {"model": "wrong", "tools": ["calculator"], "max_steps": 4}},
    )  # fmt: skip
    wrong = Oracle({}, wrong=True)
    models = [ModelEntry("oracle", oracle, "oracle"), ModelEntry("wrong", wrong, "wrong")]
    s = build_stack(settings, store=MemoryExchangeStore(), models=models)
    yield s, oracle
    await s.aclose()


async def _run(stack: Stack, suite: Suite) -> RunResult:
    keeper = RunKeeper(stack.store)  # type: ignore[arg-type]
    runner = EvalRunner(stack.chat, stack.store, agents=stack_agents(stack), run_agent=keeper.run)  # type: ignore[arg-type]
    return await runner.run(suite, load_examples(suite.dataset, suite.dataset_path))


async def test_the_example_agent_suite_scores_a_perfect_oracle_perfectly(stack: tuple[Stack, Oracle], suite: Suite) -> None:
    s, oracle = stack
    result = await _run(s, suite)
    assert len(result.results) == 8 and all(r.error is None for r in result.results)
    for r in result.results:
        assert r.scores["task_success"] == 1.0 and r.scores["tool_call_accuracy"] == 1.0, (r.example_id, r.details)
        assert r.scores["invalid_tool_calls"] == 0.0 and r.scores["agent_steps"] == 2.0
        assert (r.scores["cost"] or 0) > 0 and (r.scores["latency"] or 0) > 0
        assert r.output.startswith("The answer is") and r.details["agent"]["stop_reason"] == "final_answer"
    # Every step of every run bypassed the gateway caches; none was answered from the eval's cache.
    assert len(oracle.requests) == 16 and all(r.metadata.get(CACHE_FLAG) == "off" for r in oracle.requests)
    assert {r.metadata["eval_system"] for r in oracle.requests} == {"calculator-agent"}
    assert result.cache_hits == 0 and result.calls == 16  # the runs' model calls
    # The runs are stored like any agent run, linked from the results.
    stored = s.store.get_run(result.results[0].details["agent"]["run_id"])  # type: ignore[attr-defined]
    assert stored is not None and stored.agent == "calculator-agent" and stored.status == "finished"
    summary = result.run.summary["systems"]["calculator-agent"]
    assert summary["metrics"]["task_success"]["mean"] == 1.0


async def test_a_wrong_agent_scores_zero_and_a_run_without_an_answer_is_a_failure(
    stack: tuple[Stack, Oracle], suite: Suite
) -> None:
    s, oracle = stack
    oracle.wrong = True
    result = await _run(s, suite)
    assert all(r.scores["task_success"] == 0.0 and r.scores["tool_call_accuracy"] == 0.0 for r in result.results)
    assert all(r.scores["agent_steps"] == 1.0 for r in result.results)
    oracle.wrong = False
    # One run loops on its tool until max_steps: scored (a failure), not dropped as an error.
    first = next(iter(oracle.expressions.values()))
    looping = Script(tool_calls=[("c1", "calculator", json.dumps({"expression": first}))])
    oracle.enqueue([looping] * 4)
    only = suite.model_copy(update={"concurrency": 1, "dataset": suite.dataset.model_copy(update={"limit": 1})})
    result = await _run(s, only)
    (record,) = result.results
    assert record.error is None and record.scores["task_success"] == 0.0
    assert record.details["agent"]["stop_reason"] in ("max_steps", "loop") and record.output == ""


async def test_a_system_can_name_a_configured_agent_and_override_its_model(stack: tuple[Stack, Oracle], suite: Suite) -> None:
    s, _ = stack
    system = suite.systems[0]
    as_configured = suite.model_copy(update={"systems": [system.model_copy(update={"agent": "calc", "model": ""})]})
    result = await _run(s, as_configured)  # the agent's own model answers wrong
    assert [r.scores["task_success"] for r in result.results] == [0.0] * 8
    overridden = suite.model_copy(update={"systems": [system.model_copy(update={"agent": "calc"})]})  # model: oracle
    result = await _run(s, overridden)
    assert [r.scores["task_success"] for r in result.results] == [1.0] * 8
    missing = suite.model_copy(update={"systems": [suite.systems[0].model_copy(update={"agent": "nope"})]})
    with pytest.raises(ConfigError, match="no agent 'nope'"):
        await _run(s, missing)


@pytest.mark.parametrize(
    ("system", "key"),
    [
        ({"name": "a", "agent": {"tools": ["shell"]}}, "systems.0.agent.tools"),
        ({"name": "a", "agent": {"max_steps": 0}}, "systems.0.agent.max_steps"),
        ({"name": "a", "agent": "calc", "system_prompt": "Be brief."}, "systems.0.system_prompt"),
    ],
)
def test_bad_agent_systems_are_refused_when_the_suite_loads(system: dict[str, object], key: str) -> None:
    data = {"name": "s", "dataset": {"path": "x.jsonl"}, "systems": [system], "metrics": [{"name": "task_success"}]}
    with pytest.raises(ConfigError) as caught:
        parse_suite(data)
    assert key in caught.value.key


async def test_agent_metrics_on_a_model_system_say_they_need_a_run() -> None:
    from aiestack.evals.base import Sample
    from aiestack.evals.metrics import build_metric
    from aiestack.types import Example

    metric = build_metric("task_success", {})
    score = await metric.score(Sample(Example("1", {"input": "x"}, reference="y"), "s", "y"))  # type: ignore[union-attr]
    assert score.value is None and "agent runs" in (score.error or "")
