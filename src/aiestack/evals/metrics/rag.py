"""RAG metrics: context precision and recall, faithfulness (judge), lexical groundedness.

The retrieved passages are ``sample.contexts``. Context precision and recall here are **lexical**
(SQuAD-normalised token overlap), so they need no model and are deterministic:

- A retrieved context is *relevant* when its token F1 with some reference context reaches
  ``threshold``; with no reference contexts, when it contains at least ``threshold`` of the
  reference answer's tokens.
- **context_precision** is RAGAS's rank-aware form: the mean of precision@i over the ranks i that
  hold a relevant context (0 when none is relevant), so relevant passages ranked first score higher.
- **context_recall** is the share of reference contexts matched by some retrieved context; with
  only a reference answer, the share of the answer's tokens found in the retrieved contexts.

Reference contexts come from ``contexts_key`` (default ``contexts``) in the reference mapping,
metadata or input; the reference answer from ``reference_key``.

**faithfulness** asks a judge to list the answer's claims and check each against the contexts
(the share supported; RAGAS's definition). **lexical_groundedness** is the judge-free fallback,
named differently on purpose because it measures word overlap, not entailment: the share of the
answer's sentences whose tokens are mostly (``threshold``) present in the contexts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import Field

from aiestack.errors import AiestackError
from aiestack.evals.base import Sample, Score
from aiestack.evals.judge_prompts import load_prompt
from aiestack.evals.judges import JudgeCall, JudgeParseError, ask_judge, question_text
from aiestack.evals.metrics.options import MetricOptions, ReferenceOptions, lookup, reference_texts
from aiestack.evals.metrics.text import token_f1, tokens

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


class ContextOptions(ReferenceOptions):
    contexts_key: str = "contexts"
    threshold: float = Field(default=0.5, gt=0, le=1)


def _coverage(needle: Sequence[str], haystack: set[str]) -> float:
    """Share of ``needle`` tokens present in ``haystack`` (1.0 for an empty needle)."""
    return sum(t in haystack for t in needle) / len(needle) if needle else 1.0


class _ContextMetric:
    higher_is_better = True

    def __init__(self, name: str, opts: ContextOptions) -> None:
        self.name = name
        self._opts = opts

    def _references(self, sample: Sample) -> tuple[tuple[str, ...], tuple[str, ...]]:
        value = lookup(sample, self._opts.contexts_key)
        ref_contexts = (value,) if isinstance(value, str) else tuple(str(v) for v in value or ())
        if self._opts.reference_key is None and isinstance(sample.example.reference, Mapping):
            return ref_contexts, ()  # a mapping reference holds contexts; name the answer with reference_key
        return ref_contexts, reference_texts(sample, self._opts.reference_key)

    def _relevant(self, context: str, ref_contexts: Sequence[str], answers: Sequence[str]) -> bool:
        if ref_contexts:
            return max(token_f1(context, ref) for ref in ref_contexts) >= self._opts.threshold
        words = set(tokens(context))
        return any(_coverage(tokens(a), words) >= self._opts.threshold for a in answers)


class ContextPrecision(_ContextMetric):
    async def score(self, sample: Sample) -> Score:
        if not sample.contexts:
            return Score(None, error="the sample has no retrieved contexts")
        ref_contexts, answers = self._references(sample)
        if not ref_contexts and not answers:
            return Score(None, error="the example has neither reference contexts nor a reference answer")
        flags = [self._relevant(c, ref_contexts, answers) for c in sample.contexts]
        precisions = [sum(flags[: i + 1]) / (i + 1) for i, hit in enumerate(flags) if hit]
        value = sum(precisions) / len(precisions) if precisions else 0.0
        return Score(value, {"relevant": flags, "against": "contexts" if ref_contexts else "answer"})


class ContextRecall(_ContextMetric):
    async def score(self, sample: Sample) -> Score:
        ref_contexts, answers = self._references(sample)
        if not ref_contexts and not answers:
            return Score(None, error="the example has neither reference contexts nor a reference answer")
        if ref_contexts:
            found = [
                any(token_f1(c, ref) >= self._opts.threshold for c in sample.contexts) for ref in ref_contexts
            ]
            return Score(sum(found) / len(found), {"found": found, "against": "contexts"})
        words = {t for c in sample.contexts for t in tokens(c)}
        value = max(_coverage(tokens(a), words) for a in answers)
        return Score(value, {"against": "answer"})


class GroundednessOptions(MetricOptions):
    threshold: float = Field(default=0.5, gt=0, le=1)


class LexicalGroundedness:
    """Share of answer sentences whose normalised tokens are mostly found in the contexts."""

    higher_is_better = True

    def __init__(self, name: str, opts: GroundednessOptions) -> None:
        self.name = name
        self._threshold = opts.threshold

    async def score(self, sample: Sample) -> Score:
        if not sample.contexts:
            return Score(None, error="the sample has no retrieved contexts")
        sentences = [s for s in _SENTENCE.split(sample.output.strip()) if tokens(s)]
        if not sentences:
            return Score(None, error="the answer has no sentences to check")
        words = {t for c in sample.contexts for t in tokens(c)}
        grounded = [_coverage(tokens(s), words) >= self._threshold for s in sentences]
        return Score(sum(grounded) / len(grounded), {"sentences": len(sentences), "grounded": sum(grounded)})


class FaithfulnessOptions(MetricOptions):
    model: str = ""
    prompt: str = "faithfulness"
    question_key: str | None = None


_CLAIMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "claims": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "claim": {"type": "string"},
                    "supported": {"type": "boolean"},
                    "reason": {"type": "string"},
                },
                "required": ["claim", "supported"],
            },
        }
    },
    "required": ["claims"],
}


class Faithfulness:
    """Judge-based: the share of the answer's claims that the retrieved contexts support."""

    higher_is_better = True

    def __init__(self, name: str, opts: FaithfulnessOptions, judge_call: JudgeCall) -> None:
        self.name = name
        self._opts = opts
        self._call = judge_call
        self._prompt = load_prompt(opts.prompt)

    async def score(self, sample: Sample) -> Score:
        if not sample.contexts:
            return Score(None, error="the sample has no retrieved contexts")
        variables = {
            "contexts": "\n\n".join(f"[{i + 1}] {c}" for i, c in enumerate(sample.contexts)),
            "question": question_text(sample, self._opts.question_key),
            "answer": sample.output,
        }
        detail: dict[str, Any] = {"prompt": self._prompt.ref, "judge_model": self._opts.model or "(default)"}
        try:
            reply, raw = await ask_judge(
                self._call, self._prompt, variables, _CLAIMS_SCHEMA, model=self._opts.model
            )
        except (JudgeParseError, AiestackError) as exc:
            return Score(None, detail, error=f"judge failed: {exc}")
        claims = reply["claims"]
        if not isinstance(claims, list) or not all(isinstance(c, dict) and "supported" in c for c in claims):
            return Score(None, {**detail, "raw_reply": raw}, error="judge reply has no usable list of claims")
        if not claims:
            return Score(None, {**detail, "claims": []}, error="the judge found no claims in the answer")
        supported = [c.get("supported") is True for c in claims]
        detail["claims"] = [
            {"claim": str(c.get("claim", "")), "supported": s, "reason": str(c.get("reason", ""))}
            for c, s in zip(claims, supported, strict=True)
        ]
        return Score(sum(supported) / len(supported), detail)
