"""Ranked-retrieval metrics: nDCG@k, recall@k, precision@k and MRR@k.

Convention (the same for all four):

- *Ranked ids* are what the system retrieved, best first: by default parsed from ``sample.output``
  (a JSON list of ids, or ids separated by newlines or commas); with ``ranked_from: contexts``,
  ``sample.contexts`` are the ids.
- *Relevant ids* come from the example's reference (or ``reference_key``): a mapping
  ``{id: grade}`` (graded relevance, as in BEIR qrels; grade ≤ 0 means not relevant), a list of
  ids (each grade 1), or a single id.

The measures themselves are :mod:`aiestack.retrieval_metrics` (shared with the BEIR runner).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Literal

from pydantic import Field

from aiestack.evals.base import Sample, Score
from aiestack.evals.metrics.options import ReferenceOptions, lookup
from aiestack.retrieval_metrics import mrr_at_k, ndcg_at_k, precision_at_k, recall_at_k

Kind = Literal["ndcg", "recall", "precision", "mrr"]
_SEPARATORS = re.compile(r"[\n,]+")


class RetrievalOptions(ReferenceOptions):
    k: int = Field(default=10, ge=1)
    ranked_from: Literal["output", "contexts"] = "output"


def parse_ranked(text: str) -> list[str]:
    """Ids from a JSON list, or from text with one id per line or comma-separated ids."""
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, list):
            return [str(v) for v in value]
    return [part.strip() for part in _SEPARATORS.split(stripped) if part.strip()]


def relevance_grades(value: object) -> dict[str, float]:
    """``{id: grade}`` from a mapping, a list of ids or one id; an unusable value gives ``{}``."""
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return {str(v): 1.0 for v in value}
    if isinstance(value, str | int):
        return {str(value): 1.0}
    return {}


_FUNCTIONS = {"ndcg": ndcg_at_k, "recall": recall_at_k, "precision": precision_at_k, "mrr": mrr_at_k}


class RetrievalMetric:
    higher_is_better = True

    def __init__(self, name: str, kind: Kind, opts: RetrievalOptions) -> None:
        self.name = name
        self._fn = _FUNCTIONS[kind]
        self._opts = opts

    async def score(self, sample: Sample) -> Score:
        grades = relevance_grades(lookup(sample, self._opts.reference_key))
        if not any(g > 0 for g in grades.values()):
            return Score(None, error="the example lists no relevant ids")
        ranked = (
            list(sample.contexts) if self._opts.ranked_from == "contexts" else parse_ranked(sample.output)
        )
        value = self._fn(ranked, grades, self._opts.k)
        return Score(value, {"k": self._opts.k, "retrieved": len(ranked)})
