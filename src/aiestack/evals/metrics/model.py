"""Metrics read from the model call itself (logprobs, latency, cost) and embedding similarity.

Nothing here invents a value: a provider that returned no logprobs, or a sample with no recorded
cost, scores ``None`` (not applicable) so averages and gates skip it instead of counting a 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from aiestack.evals.base import Sample, Score
from aiestack.evals.metrics.options import MetricOptions, ReferenceOptions, lookup, reference_texts
from aiestack.models.base import EmbeddingModel


class Logprob:
    """Mean token logprob of the answer (higher is better), or its perplexity ``exp(-mean)`` (lower is better)."""

    def __init__(self, name: str, kind: Literal["mean_logprob", "perplexity"]) -> None:
        self.name = name
        self._kind = kind
        self.higher_is_better = kind == "mean_logprob"

    async def score(self, sample: Sample) -> Score:
        logprobs = sample.completion.logprobs if sample.completion is not None else ()
        if not logprobs:
            return Score(None, error="the provider returned no logprobs (ask for them with params.logprobs)")
        mean = sum(t.logprob for t in logprobs) / len(logprobs)
        value = mean if self._kind == "mean_logprob" else math.exp(-mean)
        return Score(value, {"tokens": len(logprobs)})


class Latency:
    """The sample's end-to-end latency in milliseconds (lower is better)."""

    higher_is_better = False

    def __init__(self, name: str, opts: MetricOptions) -> None:
        self.name = name

    async def score(self, sample: Sample) -> Score:
        if sample.latency_ms is not None:
            return Score(sample.latency_ms)
        if sample.completion is not None and sample.completion.timing.total_ms > 0:
            return Score(sample.completion.timing.total_ms, {"source": "completion.timing"})
        return Score(None, error="no latency was recorded for this sample")


class Cost:
    """The sample's cost in US dollars (lower is better); ``None`` when the model has no price."""

    higher_is_better = False

    def __init__(self, name: str, opts: MetricOptions) -> None:
        self.name = name

    async def score(self, sample: Sample) -> Score:
        cost = sample.cost_usd
        if cost is None and sample.completion is not None:
            cost = sample.completion.cost_usd
        if cost is None:
            return Score(None, error="no cost is known for this sample (the model has no price configured)")
        return Score(cost)


def cosine(u: Sequence[float], v: Sequence[float]) -> float:
    """Cosine similarity; 0.0 when either vector is all zeros."""
    dot = sum(a * b for a, b in zip(u, v, strict=True))
    norm = math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v))
    return dot / norm if norm else 0.0


class EmbeddingSimilarity:
    """Cosine similarity between the embeddings of the output and the (best) reference."""

    higher_is_better = True

    def __init__(self, name: str, opts: ReferenceOptions, embeddings: EmbeddingModel) -> None:
        self.name = name
        self._key = opts.reference_key
        self._embeddings = embeddings

    async def score(self, sample: Sample) -> Score:
        refs = reference_texts(sample, self._key)
        if not refs:
            return Score(None, error="the example has no reference")
        out, *ref_vectors = await self._embeddings.embed([sample.output, *refs])
        values = [cosine(out, r) for r in ref_vectors]
        best = max(range(len(values)), key=values.__getitem__)
        return Score(values[best], {"model": self._embeddings.name, "best_reference": refs[best]})


class RelevanceOptions(MetricOptions):
    question_key: str = "question"


class AnswerRelevance:
    """Embedding cosine similarity between the question and the answer.

    A cheap, judge-free proxy for "does the answer address the question" (RAGAS computes it from
    questions generated back from the answer; this compares directly). Use a ``judge`` metric with
    a relevance rubric when a judge model is available and the proxy is too coarse.
    """

    higher_is_better = True

    def __init__(self, name: str, opts: RelevanceOptions, embeddings: EmbeddingModel) -> None:
        self.name = name
        self._key = opts.question_key
        self._embeddings = embeddings

    async def score(self, sample: Sample) -> Score:
        question = lookup(sample, self._key)
        if not isinstance(question, str) or not question.strip():
            return Score(None, error=f"the example has no '{self._key}' text to compare the answer with")
        if not sample.output.strip():
            return Score(0.0, {"reason": "empty answer"})
        q, a = await self._embeddings.embed([question, sample.output])
        return Score(cosine(q, a), {"model": self._embeddings.name})
