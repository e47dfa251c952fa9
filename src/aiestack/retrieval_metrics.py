"""Ranked-retrieval measures: nDCG@k, recall@k, precision@k and MRR@k, once for every caller.

Used by the BEIR runner (:mod:`aiestack.context.beir`) and the eval metrics
(:mod:`aiestack.evals.metrics.retrieval`). ``ranked`` is what a system retrieved, best first;
``grades`` maps an id to its graded relevance (as in BEIR qrels; a grade ≤ 0 means not relevant).
An id retrieved twice counts at its first (best) rank only: repeating it earns nothing. nDCG uses
linear gain ``grade / log2(rank + 1)`` as trec_eval and BEIR do; precision@k divides by k even when
fewer than k ids were returned (returning fewer is not rewarded).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence


def ndcg_at_k(ranked: Sequence[str], grades: Mapping[str, float], k: int) -> float:
    dcg = sum(grades.get(d, 0.0) / math.log2(i + 2) for i, d in enumerate(_dedupe(ranked)[:k]))
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at_k(ranked: Sequence[str], grades: Mapping[str, float], k: int) -> float:
    relevant = {d for d, g in grades.items() if g > 0}
    return len(relevant.intersection(_dedupe(ranked)[:k])) / len(relevant) if relevant else 0.0


def precision_at_k(ranked: Sequence[str], grades: Mapping[str, float], k: int) -> float:
    return sum(1 for d in _dedupe(ranked)[:k] if grades.get(d, 0.0) > 0) / k


def mrr_at_k(ranked: Sequence[str], grades: Mapping[str, float], k: int) -> float:
    for i, d in enumerate(_dedupe(ranked)[:k]):
        if grades.get(d, 0.0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def _dedupe(ranked: Sequence[str]) -> list[str]:
    """Keep each id's first (best) rank."""
    return list(dict.fromkeys(ranked))
