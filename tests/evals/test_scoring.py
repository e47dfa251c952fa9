"""Eval scoring as a batch step: which metrics a batch runner scores, and the task it runs.

That a run scored through a runner equals an inline run is part of the runners' conformance suite
(:class:`aiestack.testing.batch.BatchRunnerConformance`, run for the in-process runners and Ray in
tests/test_batch.py).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from aiestack.batch import InProcessRunner
from aiestack.build import open_stack
from aiestack.errors import ConfigError
from aiestack.evals.base import Sample
from aiestack.evals.datasets import load_examples
from aiestack.evals.metrics import available_metrics, build_metric, needs_model
from aiestack.evals.runner import EvalRunner
from aiestack.evals.scoring import ScoreSamples, portable
from aiestack.evals.suite import parse_suite
from aiestack.settings import Settings
from aiestack.types import Example

pytestmark = pytest.mark.unit


def test_exactly_the_metrics_that_call_a_model_stay_with_the_stack() -> None:
    model_metrics = {name for name in available_metrics() if needs_model(name)}
    assert model_metrics == {"judge", "judge_reference", "faithfulness", "embedding_similarity", "answer_relevance"}
    for name in model_metrics:  # built without a model, each one asks for it
        with pytest.raises(ConfigError):
            build_metric(name, {})
    assert needs_model("judge") and not needs_model("ndcg@10") and not needs_model("functional_correctness")
    assert portable("token_f1", {}) and not portable("judge", {})
    assert not portable("my_metric", {"my_metric": object()})  # plugins run where they were registered


def test_the_task_pickles_without_its_built_metrics_and_scores_in_spec_order(tmp_path: Path) -> None:
    task = ScoreSamples([("contains", {}), ("regex", {"pattern": "w[0-9]"}), ("token_f1", {"name": "f1"})], tmp_path)
    sample = Sample(Example(id="e", input={"q": "w1"}, reference="w1"), "s", "w1 it is")
    first = task([sample])
    copy = pickle.loads(pickle.dumps(task))
    assert copy([sample]) == first
    (scores,) = first
    assert [s.value for s in scores] == [1.0, 1.0, 0.5]  # F1: precision 1/3, recall 1
    task.close()


class _Recording:
    """An in-process runner that records what it was asked to run."""

    name = "recording"

    def __init__(self) -> None:
        self._inner = InProcessRunner(2)
        self.tasks: list[Any] = []
        self.items = 0

    async def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        self.tasks.append(fn)
        self.items += sum(len(batch) for batch in items)
        return await self._inner.map(fn, items)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_the_runner_scores_the_metrics_that_need_no_model_and_the_judge_stays_here(tmp_path: Path) -> None:
    rows = [{"id": f"q{i}", "q": f"w{i}", "a": f"w{i}"} for i in range(5)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    suite = parse_suite(
        {
            "name": "t",
            "dataset": {"path": "d.jsonl", "id": "id", "input": "q", "reference": "a"},
            "prompt": "{{ input }}",
            "systems": [{"name": "s", "model": "fake"}],
            "judge": {"model": "fake"},
            "metrics": [{"name": "judge"}, {"name": "contains"}, {"name": "corpus_bleu"}, {"name": "exact_match"}],
        },
        base_dir=tmp_path,
    )
    settings = Settings(data_dir=tmp_path / "data", embedded_model=False, default_model="fake",
                        models={"fake": {"provider": "fake"}})
    runner = _Recording()
    async with open_stack(settings) as stack:
        result = await EvalRunner(stack.chat, stack.store, batch=runner, judge=stack.side_calls.caller("eval.judge")).run(  # type: ignore[arg-type]
            suite, load_examples(suite.dataset, suite.dataset_path)
        )
    (task,) = {id(t): t for t in runner.tasks}.values()
    assert isinstance(task, ScoreSamples)
    assert [name for name, _ in task.__getstate__()["specs"]] == ["contains", "exact_match"]
    assert runner.items == 5
    for record in result.results:
        assert list(record.scores) == ["judge", "contains", "exact_match"]  # the suite's order, as inline
        assert record.scores["contains"] == 1.0 and record.scores["exact_match"] == 1.0
    await runner.aclose()


async def test_a_failed_call_is_stored_without_going_to_the_runner(tmp_path: Path) -> None:
    from aiestack.errors import ProviderUnavailable
    from aiestack.models.fake import FakeModel, Script
    from aiestack.models.registry import ModelEntry

    (tmp_path / "d.jsonl").write_text(json.dumps({"id": "q0", "q": "w0", "a": "w0"}), encoding="utf-8")
    suite = parse_suite(
        {"name": "t", "dataset": {"path": "d.jsonl", "id": "id", "input": "q", "reference": "a"},
         "prompt": "{{ input }}", "systems": [{"name": "s", "model": "scripted"}], "metrics": [{"name": "contains"}]},
        base_dir=tmp_path,
    )
    model = FakeModel().enqueue([Script(error=ProviderUnavailable("down", provider="fake"))] * 5)
    settings = Settings(data_dir=tmp_path / "data", embedded_model=False, default_model="fake",
                        models={"fake": {"provider": "fake"}})
    runner = _Recording()
    async with open_stack(settings, models=[ModelEntry(name="scripted", provider=model, upstream="scripted")]) as s:
        result = await EvalRunner(s.chat, s.store, batch=runner, judge=s.side_calls.caller("eval.judge")).run(  # type: ignore[arg-type]
            suite, load_examples(suite.dataset, suite.dataset_path)
        )
    (record,) = result.results
    assert record.error and record.scores == {} and runner.items == 0
    await runner.aclose()
