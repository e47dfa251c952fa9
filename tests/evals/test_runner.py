"""The runner against a real stack with the scripted fake model: cache, resume, concurrency, storage."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiestack.build import Stack, open_stack
from aiestack.errors import ProviderUnavailable
from aiestack.evals.call_cache import CallCache
from aiestack.evals.datasets import load_examples
from aiestack.evals.runner import EvalRunner
from aiestack.evals.suite import Suite, parse_suite
from aiestack.models.fake import FakeModel, Script
from aiestack.models.registry import ModelEntry
from aiestack.settings import Settings
from aiestack.stores.base import EvalStore
from aiestack.types import ChatRequest, Exchange

pytestmark = pytest.mark.unit


def _suite(tmp_path: Path, n: int, **extra: object) -> Suite:
    rows = [{"id": f"q{i}", "q": f"w{i}", "a": f"w{i}" if i % 2 else "x"} for i in range(n)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    doc = {
        "name": "t",
        "dataset": {"path": "d.jsonl", "id": "id", "input": "q", "reference": "a"},
        "prompt": "Say {{ input }}",
        "systems": [{"name": "s", "model": "scripted"}],
        "metrics": [{"name": "contains"}, {"name": "latency"}],
        **extra,
    }
    return parse_suite(doc, base_dir=tmp_path)


def _store(stack: Stack) -> EvalStore:
    assert isinstance(stack.store, EvalStore)
    return stack.store


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, FakeModel]]:
    """A stack whose model 'scripted' is a FakeModel the test holds (its requests count the calls)."""
    model = FakeModel()
    settings = Settings(
        data_dir=tmp_path / "data",
        embedded_model=False,
        default_model="fake",
        models={"fake": {"provider": "fake"}},
    )
    async with open_stack(
        settings, models=[ModelEntry(name="scripted", provider=model, upstream="scripted")]
    ) as s:
        yield s, model


async def test_results_are_scored_stored_and_linked_to_exchanges(
    tmp_path: Path, stack: tuple[Stack, FakeModel]
) -> None:
    s, model = stack
    suite = _suite(tmp_path, 6)
    runner = EvalRunner(s.chat, _store(s), judge=s.side_calls.caller("eval.judge"))
    result = await runner.run(suite, load_examples(suite.dataset, suite.dataset_path))
    assert result.calls == 6 and len(model.requests) == 6
    assert model.requests[0].messages[-1].text == "Say w0"
    by_id = {r.example_id: r for r in result.results}
    assert by_id["q1"].scores["contains"] == 1.0 and by_id["q0"].scores["contains"] == 0.0
    assert all(r.exchange_id and r.exchange_id.startswith("ex_") for r in result.results)
    summary = result.run.summary["systems"]["s"]
    assert summary["metrics"]["contains"]["mean"] == pytest.approx(0.5)
    assert _store(s).get_eval_run(result.run.id).summary["status"] == "finished"  # type: ignore[union-attr]


async def test_a_re_run_with_unchanged_inputs_makes_no_model_calls(
    tmp_path: Path, stack: tuple[Stack, FakeModel]
) -> None:
    s, model = stack
    suite = _suite(tmp_path, 10)
    examples = load_examples(suite.dataset, suite.dataset_path)
    cache = CallCache(tmp_path / "cache.db")
    first = await EvalRunner(s.chat, _store(s), cache=cache, judge=s.side_calls.caller("eval.judge")).run(suite, examples)
    second = await EvalRunner(s.chat, _store(s), cache=cache, judge=s.side_calls.caller("eval.judge")).run(suite, examples)
    assert len(model.requests) == 10 and second.calls == 0 and second.cache_hits == 10
    old = {r.example_id: r for r in first.results}
    for r in second.results:
        assert (
            r.cached
            and r.exchange_id == old[r.example_id].exchange_id
            and r.output == old[r.example_id].output
        )
    changed = suite.model_copy(update={"prompt": "Please say {{ input }}"})
    third = await EvalRunner(s.chat, _store(s), cache=cache, judge=s.side_calls.caller("eval.judge")).run(changed, examples)
    assert third.calls == 10  # a changed prompt is a different call


async def test_errors_are_stored_not_cached_and_retried_on_resume(
    tmp_path: Path, stack: tuple[Stack, FakeModel]
) -> None:
    s, model = stack
    suite = _suite(tmp_path, 3, concurrency=1)
    examples = load_examples(suite.dataset, suite.dataset_path)
    model.enqueue([Script(error=ProviderUnavailable("down", provider="fake")), "w1", "w2"])
    cache = CallCache(tmp_path / "cache.db")
    runner = EvalRunner(s.chat, _store(s), cache=cache, judge=s.side_calls.caller("eval.judge"))
    first = await runner.run(suite, examples)
    failed = [r for r in first.results if r.error]
    assert len(failed) == 1 and "down" in (failed[0].error or "") and failed[0].scores == {}
    assert first.run.summary["systems"]["s"]["errors"] == 1
    resumed = await runner.run(suite, examples, run_id=first.run.id)
    assert resumed.calls == 1 and resumed.resumed == 2
    assert all(r.error is None for r in resumed.results) and len(resumed.results) == 3


async def test_an_interrupted_run_resumes_with_the_missing_examples_only(
    tmp_path: Path, stack: tuple[Stack, FakeModel]
) -> None:
    s, model = stack
    suite = _suite(tmp_path, 20, concurrency=2)
    examples = load_examples(suite.dataset, suite.dataset_path)
    # The first 8 calls answer; the next ones hang until the run is cancelled (an interrupted run,
    # at a point fixed by the test, not by the machine's speed).
    answered = 8
    calls = 0
    hanging = asyncio.Event()

    async def chat(request: ChatRequest) -> Exchange:
        nonlocal calls
        calls += 1
        if calls > answered:
            hanging.set()
            await asyncio.Event().wait()  # until cancelled
        return await s.chat(request)

    runner = EvalRunner(chat, _store(s), flush_every=1)
    task = asyncio.create_task(runner.run(suite, examples))
    await asyncio.wait_for(hanging.wait(), timeout=30)
    run_id = _store(s).list_eval_runs(limit=1)[0].id
    for _ in range(3000):  # wait (a condition, not a duration) until the answered ones are stored
        if len(_store(s).eval_results(run_id)) == answered:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    run = _store(s).list_eval_runs(limit=1)[0]
    assert run.summary["status"] == "interrupted"
    done = {r.example_id for r in _store(s).eval_results(run.id)}
    assert len(done) == answered
    before = len(model.requests)
    runner = EvalRunner(s.chat, _store(s), flush_every=1, judge=s.side_calls.caller("eval.judge"))
    resumed = await runner.run(suite, examples, run_id=run.id)
    asked = [r.metadata["eval_example"] for r in model.requests[before:]]
    assert resumed.calls == 20 - len(done) and not set(asked) & done
    assert sorted(r.example_id for r in resumed.results) == sorted(e.id for e in examples)


async def test_concurrency_is_bounded(tmp_path: Path, stack: tuple[Stack, FakeModel]) -> None:
    s, model = stack
    suite = _suite(tmp_path, 32, concurrency=8)
    model.default_delay_s = 0.02
    in_flight = peak = 0

    async def counting_chat(request: ChatRequest) -> Exchange:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await s.chat(request)
        finally:
            in_flight -= 1

    result = await EvalRunner(counting_chat, _store(s)).run(suite, load_examples(suite.dataset, suite.dataset_path))
    assert result.calls == 32
    assert peak == 8  # the limit is reached (calls overlap) and never exceeded


async def test_a_missing_template_field_is_a_config_error(
    tmp_path: Path, stack: tuple[Stack, FakeModel]
) -> None:
    s, _ = stack
    suite = _suite(tmp_path, 2).model_copy(update={"prompt": "{{ nope }}"})
    from aiestack.errors import ConfigError

    with pytest.raises(ConfigError, match="nope"):
        await EvalRunner(s.chat, _store(s), judge=s.side_calls.caller("eval.judge")).run(suite, load_examples(suite.dataset, suite.dataset_path))


async def test_the_suites_judge_params_reach_the_judge_metrics_calls(tmp_path: Path) -> None:
    """``judge: {model, params}`` applies to every judge metric's call, keeping the metric's JSON schema."""
    judge = FakeModel()
    judge.enqueue([json.dumps({"reasoning": "fine", "score": 4})] * 2)
    settings = Settings(data_dir=tmp_path / "data", embedded_model=False, default_model="fake", models={"fake": {"provider": "fake"}})
    entries = [ModelEntry(name="scripted", provider=FakeModel(), upstream="scripted"), ModelEntry(name="judge-m", provider=judge, upstream="judge-m")]
    async with open_stack(settings, models=entries) as s:
        suite = _suite(
            tmp_path, 2,
            metrics=[{"name": "judge", "rubric": "Is it right?"}],
            judge={"model": "judge-m", "params": {"temperature": 0.3, "max_tokens": 77}},
        )
        result = await EvalRunner(s.chat, _store(s), judge=s.side_calls.caller("eval.judge")).run(suite, load_examples(suite.dataset, suite.dataset_path))
    assert len(judge.requests) == 2
    for request in judge.requests:
        assert request.params.temperature == 0.3 and request.params.max_tokens == 77
        assert request.params.response_format is not None and request.params.response_format.type == "json_schema"
    assert all(r.scores["judge"] is not None for r in result.results)


def test_a_judge_response_format_is_refused_on_load(tmp_path: Path) -> None:
    from aiestack.errors import ConfigError

    with pytest.raises(ConfigError, match=r"judge\.params\.response_format"):
        _suite(tmp_path, 1, judge={"model": "m", "params": {"response_format": {"type": "text"}}})
