from __future__ import annotations

import math

import pytest

from aiestack.evals.metrics import build_metric
from aiestack.types import Completion, Message, Timing, TokenLogprob

pytestmark = pytest.mark.unit


def _completion(logprobs=(), cost=None, total_ms=0.0) -> Completion:
    return Completion(
        message=Message(role="assistant", content="x"),
        model="m",
        provider="fake",
        logprobs=tuple(TokenLogprob(f"t{i}", lp) for i, lp in enumerate(logprobs)),
        cost_usd=cost,
        timing=Timing(total_ms=total_ms),
    )


async def test_mean_logprob_and_perplexity(make_sample) -> None:
    sample = make_sample("x", completion=_completion([-0.5, -1.5]))
    mean = await build_metric("mean_logprob", {}).score(sample)
    ppl_metric = build_metric("perplexity", {})
    assert mean.value == -1.0 and mean.detail["tokens"] == 2
    assert (await ppl_metric.score(sample)).value == pytest.approx(math.e)
    assert ppl_metric.higher_is_better is False


async def test_logprob_metrics_are_none_without_logprobs(make_sample) -> None:
    for sample in (make_sample("x"), make_sample("x", completion=_completion())):
        score = await build_metric("perplexity", {}).score(sample)
        assert score.value is None and "logprobs" in (score.error or "")


async def test_latency_and_cost(make_sample) -> None:
    latency, cost = build_metric("latency", {}), build_metric("cost", {})
    assert not latency.higher_is_better and not cost.higher_is_better
    assert (await latency.score(make_sample("x", latency_ms=12.5))).value == 12.5
    assert (await latency.score(make_sample("x", completion=_completion(total_ms=40.0)))).value == 40.0
    assert (await latency.score(make_sample("x"))).value is None
    assert (await cost.score(make_sample("x", cost_usd=0.002))).value == 0.002
    assert (await cost.score(make_sample("x", completion=_completion(cost=0.5)))).value == 0.5
    assert (await cost.score(make_sample("x"))).value is None


async def test_embedding_similarity_picks_the_closest_reference(make_sample, embeddings) -> None:
    metric = build_metric("embedding_similarity", {}, embeddings=embeddings)
    same = await metric.score(make_sample("abc", ["xyz", "cab"]))
    assert same.value == pytest.approx(1.0) and same.detail["best_reference"] == "cab"
    apart = await metric.score(make_sample("aaa", "bbb"))
    assert apart.value == 0.0
    assert embeddings.calls[0] == ["abc", "xyz", "cab"]


async def test_answer_relevance_compares_question_and_answer(make_sample, embeddings) -> None:
    metric = build_metric("answer_relevance", {}, embeddings=embeddings)
    close = await metric.score(make_sample("dog", input={"question": "god"}))
    far = await metric.score(make_sample("xyz", input={"question": "abc"}))
    assert close.value == pytest.approx(1.0) and far.value == 0.0
    assert (await metric.score(make_sample("x", input={"prompt": "p"}))).value is None
