"""Evaluations measure the system under test, not the gateway's caches.

The stack here is the default configuration (exact and semantic caches on, the semantic cache
active because an embedding model is loaded), the systems run at temperature 0 (cacheable), and the
model is scripted so that a prompt variant truly changes accuracy: the variant must be measured as
the change it is, and every latency and token figure must come from a real call.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from aiestack.build import Stack, open_stack
from aiestack.evals.call_cache import CallCache
from aiestack.evals.datasets import load_examples
from aiestack.evals.runner import EvalRunner, RunResult
from aiestack.evals.suite import Suite, parse_suite
from aiestack.models.fake import FakeModel, Script
from aiestack.models.registry import ModelEntry
from aiestack.settings import Settings
from aiestack.stores.base import EvalStore
from aiestack.testing.embeddings import BagOfWordsEmbeddings
from aiestack.types import ChatRequest, Exchange, Message, Params

pytestmark = pytest.mark.unit

N = 10
HARD = {0, 1, 2, 3}  # the questions the terse variant gets wrong: accuracy 1.0 -> 0.6


class Arithmetic(FakeModel):
    """Adds the two numbers of the question; under the terse variant it gets the HARD ones wrong."""

    def _next(self, request: ChatRequest) -> Script:
        text = request.messages[-1].text
        a, b = (int(x) for x in re.findall(r"\d+", text)[:2])
        wrong = "reply fast" in text and a in HARD
        answer = a + b + (1 if wrong else 0)
        return Script(pieces=[f"The answer is {answer}", "."], delay_s=0.001)


def _suite(tmp_path: Path, prompt: str, **extra: object) -> Suite:
    rows = [{"id": f"q{i}", "q": f"What is {i} plus {i + 3}?", "a": str(2 * i + 3)} for i in range(N)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    doc = {
        "name": "adding",
        "dataset": {"path": "d.jsonl", "id": "id", "input": "q", "reference": "a"},
        "prompt": prompt,
        "systems": [{"name": "s", "model": "adder", "params": {"temperature": 0}}],
        "metrics": [{"name": "numeric_match"}, {"name": "latency"}],
        "gates": [{"metric": "numeric_match", "max_drop": 0.05}],
        **extra,
    }
    return parse_suite(doc, base_dir=tmp_path)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[Stack, Arithmetic]]:
    """The default cache configuration, with the semantic cache live on a bag-of-words embedder.

    ``embedder = "embeddings"`` makes the cache embed with the stack's embedding model (set below),
    so the test needs no packaged model; the default static embedder is loaded by ``serve``'s warm-up,
    and until then the cache answers exact repeats only, which would hide the premise.
    """
    model = Arithmetic()
    settings = Settings(
        data_dir=tmp_path / "data", embedded_model=False, default_model="adder", cache={"embedder": "embeddings"}
    )
    assert settings.cache.enabled and settings.cache.exact and settings.cache.semantic
    async with open_stack(settings, models=[ModelEntry(name="adder", provider=model, upstream="adder")]) as s:
        s.resources.use(embeddings=BagOfWordsEmbeddings(dim=512))  # what `serve`, RAG or the router would have loaded
        yield s, model


def _store(stack: Stack) -> EvalStore:
    assert isinstance(stack.store, EvalStore)
    return stack.store


def _accuracy(result: RunResult) -> float:
    return float(result.run.summary["systems"]["s"]["metrics"]["numeric_match"]["mean"])


async def _run(
    stack: Stack, suite: Suite, cache: CallCache | None = None, seen: dict[str, Exchange] | None = None
) -> RunResult:
    """Run the suite; ``seen`` collects the exchanges the runner's calls produced."""

    async def chat(request: ChatRequest) -> Exchange:
        ex = await stack.chat(request)
        if seen is not None:
            seen[ex.id] = ex
        return ex

    examples = load_examples(suite.dataset, suite.dataset_path)
    return await EvalRunner(chat, _store(stack), cache=cache).run(suite, examples)


def _ask(text: str) -> ChatRequest:
    return ChatRequest(model="adder", messages=(Message("user", text),), params=Params(temperature=0))


async def test_the_gateway_caches_would_hide_the_change_this_stack_is_set_up_to_show(
    tmp_path: Path, stack: tuple[Stack, Arithmetic]
) -> None:
    """The premise: outside an evaluation, the stack's semantic cache answers the variant with the old answers."""
    s, model = stack
    base = await s.chat(_ask("What is 0 plus 3?"))
    again = await s.chat(_ask("What is 0 plus 3? reply fast."))
    assert base.outcome == "ok" and again.outcome == "cached" and len(model.requests) == 1


async def test_a_prompt_change_is_measured_as_the_change_it_is(
    tmp_path: Path, stack: tuple[Stack, Arithmetic]
) -> None:
    s, model = stack
    baseline = await _run(s, _suite(tmp_path, "{{ input }}"))
    exchanges: dict[str, Exchange] = {}
    variant = await _run(s, _suite(tmp_path, "{{ input }} reply fast."), seen=exchanges)
    assert _accuracy(baseline) == 1.0
    assert _accuracy(variant) == pytest.approx(0.6)  # the full 40-point drop, not what a cache remembered
    assert variant.calls == N and len(model.requests) == 2 * N
    for result in (baseline, variant):
        for record in result.results:
            assert not record.cached
            assert record.latency_ms is not None and record.latency_ms > 0
    for record in variant.results:
        ex = exchanges[record.exchange_id or ""]
        assert ex.outcome == "ok" and ex.attributes.get("aiestack.cache") == "bypass"
        assert ex.completion is not None and ex.completion.usage.total_tokens > 0
    # and the suite's max_drop gate sees it
    from aiestack.evals.gates import compare

    comparison = compare(
        variant.results, baseline.results, {"numeric_match": True}, _suite(tmp_path, "x").gates
    )
    assert comparison.failed


async def test_a_second_identical_run_calls_the_model_again_without_the_eval_cache(
    tmp_path: Path, stack: tuple[Stack, Arithmetic]
) -> None:
    """The issue's first report: '15 model calls, 0 from the cache' while every exchange was a gateway hit."""
    s, model = stack
    suite = _suite(tmp_path, "{{ input }}")
    await _run(s, suite)
    second = await _run(s, suite)
    assert second.calls == N and second.gateway_hits == 0 and len(model.requests) == 2 * N
    assert all(r.latency_ms and r.latency_ms > 0 and not r.cached for r in second.results)


async def test_the_eval_cache_still_answers_a_re_run_and_keeps_the_real_figures(
    tmp_path: Path, stack: tuple[Stack, Arithmetic]
) -> None:
    s, model = stack
    suite = _suite(tmp_path, "{{ input }}")
    cache = CallCache(tmp_path / "eval_cache.db")
    first = await _run(s, suite, cache)
    second = await _run(s, suite, cache)
    assert second.calls == 0 and second.cache_hits == N and len(model.requests) == N
    latency = {r.example_id: r.latency_ms for r in first.results}
    assert all(r.cached and r.latency_ms == latency[r.example_id] for r in second.results)
    changed = await _run(s, _suite(tmp_path, "{{ input }} reply fast."), cache)
    assert changed.calls == N and _accuracy(changed) == pytest.approx(0.6)
    cache.close()


async def test_a_suite_may_opt_in_to_the_gateway_caches_and_hits_are_counted_as_such(
    tmp_path: Path, stack: tuple[Stack, Arithmetic]
) -> None:
    s, model = stack
    suite = _suite(tmp_path, "{{ input }}", gateway_cache=True)
    await _run(s, suite)
    second = await _run(s, suite)
    assert len(model.requests) == N  # every answer of the second run came from the gateway's exact cache
    assert second.calls == N and second.gateway_hits == N
    assert all(r.cached for r in second.results)


async def test_judges_are_side_calls_that_bypass_the_gateway_caches(tmp_path: Path) -> None:
    """A judge reaches its model through the side-call seam (an exchange of its own, purpose
    ``eval.judge``), marked ``cache = "off"``: the same judge question asked again in a second run is
    asked of the model again, never answered by the gateway's exact cache."""
    from aiestack.cache.stage import REQUEST_FLAG
    from aiestack.sidecalls import SIDE_CALL_PURPOSE

    judge = FakeModel().enqueue([json.dumps({"reasoning": "fine", "score": 4})] * (2 * N))
    settings = Settings(data_dir=tmp_path / "data", embedded_model=False, default_model="adder")
    assert settings.cache.enabled and settings.cache.exact
    entries = [ModelEntry(name="adder", provider=Arithmetic(), upstream="adder"), ModelEntry(name="judge-m", provider=judge, upstream="judge-m")]
    async with open_stack(settings, models=entries) as s:
        suite = _suite(
            tmp_path, "{{ input }}", judge={"model": "judge-m"}, metrics=[{"name": "judge", "rubric": "Is it right?"}], gates=[]
        )
        examples = load_examples(suite.dataset, suite.dataset_path)
        for _ in range(2):
            result = await EvalRunner(s.chat, _store(s), judge=s.side_calls.caller("eval.judge")).run(suite, examples)
            assert all(r.scores["judge"] == pytest.approx(0.75) for r in result.results)
        assert len(judge.requests) == 2 * N  # the second run asked the model again: no gateway cache hit
        assert all(r.metadata.get(REQUEST_FLAG) == "off" for r in judge.requests)
        s.writer.flush(timeout=30)
        judged = [r for r in s.store.list_exchanges(limit=1000) if r.attributes.get(SIDE_CALL_PURPOSE) == "eval.judge"]
    assert len(judged) == 2 * N and all(r.model == "judge-m" and r.outcome == "ok" for r in judged)
