"""Conformance tests every :class:`~aiestack.batch.BatchRunner` passes, and the tasks they run.

Subclass :class:`BatchRunnerConformance` and provide a ``runner`` fixture (function or module
scoped). The tasks live here, in an importable module, so that runners that ship them to other
processes (Ray) can unpickle them there.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

import pytest


def square(x: int) -> int:
    return x * x


def digest(text: str) -> str:
    """A pure function of its input, the same wherever it runs."""
    return hashlib.sha256(text.encode()).hexdigest()


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three is not allowed")
    return x


class CountingLoader:
    """A task with expensive setup (think: loading a model) done on its first call in each worker.

    Returns ``(pid, loads so far in this worker)``: a runner that ships the function once per
    worker sees 1 for every item, one that ships it with every item sees the setup repeated.
    """

    def __init__(self) -> None:
        self._loads = 0
        self._loaded = False
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__()  # type: ignore[misc]

    def __call__(self, item: int) -> tuple[int, int]:
        with self._lock:
            if not self._loaded:
                self._loaded = True
                self._loads += 1
            return os.getpid(), self._loads


class BatchRunnerConformance:
    """The behaviour every batch runner promises. Needs a ``runner`` fixture."""

    async def test_results_come_back_in_item_order(self, runner: Any) -> None:
        items = list(range(40))
        assert await runner.map(square, items) == [x * x for x in items]

    async def test_results_equal_calling_the_function_here(self, runner: Any) -> None:
        texts = [f"text {i} " * (i % 7 + 1) for i in range(25)]
        assert await runner.map(digest, texts) == [digest(t) for t in texts]

    async def test_no_items_give_no_results(self, runner: Any) -> None:
        assert await runner.map(square, []) == []

    async def test_an_error_in_the_function_is_raised(self, runner: Any) -> None:
        with pytest.raises(ValueError, match="three is not allowed"):
            await runner.map(fail_on_three, [1, 2, 3, 4])

    async def test_a_task_is_set_up_once_per_worker_not_per_item(self, runner: Any) -> None:
        results = await runner.map(CountingLoader(), list(range(12)))
        assert {loads for _, loads in results} == {1}

    async def test_the_runner_can_be_used_again(self, runner: Any) -> None:
        assert await runner.map(square, [1, 2]) == [1, 4]
        assert await runner.map(square, [3]) == [9]

    async def test_an_eval_run_scored_here_scores_what_an_inline_run_scores(self, runner: Any, tmp_path: Any) -> None:
        """Eval scoring through the runner: the same scores and details as scoring inline, metric by metric."""
        import json

        from aiestack.build import open_stack
        from aiestack.evals.call_cache import CallCache
        from aiestack.evals.datasets import load_examples
        from aiestack.evals.runner import EvalRunner
        from aiestack.evals.suite import parse_suite
        from aiestack.models.fake import FakeModel
        from aiestack.models.registry import ModelEntry
        from aiestack.settings import GuardSettings, Settings

        rows = [{"id": f"q{i}", "q": f"w{i} and {'{}' if i % 3 else 'x'}", "a": f"w{i}" if i % 2 else "y"}
                for i in range(10)]
        (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
        suite = parse_suite(
            {
                "name": "batch",
                "dataset": {"path": "d.jsonl", "id": "id", "input": "q", "reference": "a"},
                "prompt": "{{ input }}",
                "systems": [{"name": "s", "model": "fake"}],
                "judge": {"model": "judge"},
                "metrics": [{"name": "contains"}, {"name": "token_f1"}, {"name": "rouge1"}, {"name": "json_valid"},
                            {"name": "regex", "pattern": "w[0-9]+"}, {"name": "latency"}, {"name": "judge"},
                            {"name": "corpus_bleu"}],
            },
            base_dir=tmp_path,
        )
        examples = load_examples(suite.dataset, suite.dataset_path)
        # Injection flags, not blocks: these made-up inputs ("w8 and {}") are not what the guard's
        # heads learned, and two of them score over 0.5; this suite compares scoring, not guarding.
        settings = Settings(data_dir=tmp_path / "data", embedded_model=False, default_model="fake",
                            models={"fake": {"provider": "fake"}}, guards=GuardSettings(injection="flag"))
        cache = CallCache(tmp_path / "calls.db")  # both runs score the very same answers
        try:
            judge = FakeModel().enqueue(['{"reasoning": "fine", "score": 4}'] * len(examples))
            async with open_stack(settings, models=[ModelEntry(name="judge", provider=judge, upstream="judge")]) as stack:
                inline = await EvalRunner(stack.chat, stack.store, cache=cache, judge=stack.side_calls.caller("eval.judge")).run(suite, examples)  # type: ignore[arg-type]
                batched = await EvalRunner(stack.chat, stack.store, cache=cache, batch=runner, judge=stack.side_calls.caller("eval.judge")).run(suite, examples)  # type: ignore[arg-type]
        finally:
            cache.close()
        assert inline.calls == 2 * len(examples)  # the answers and the judge's calls
        assert batched.calls == 0 and batched.cache_hits == len(examples)  # all from the cache: the same answers

        def scored(result: Any) -> dict[str, Any]:
            return {r.example_id: (list(r.scores.items()), r.details, r.output) for r in result.results}

        assert scored(batched) == scored(inline)
        assert {r.scores["judge"] for r in inline.results} == {0.75}  # the judge ran here: 4 on 1..5
        assert len(batched.results) == len(examples)
        assert batched.run.summary["systems"]["s"]["metrics"] == inline.run.summary["systems"]["s"]["metrics"]
