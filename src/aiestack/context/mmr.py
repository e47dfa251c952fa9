"""Maximal marginal relevance (Carbonell & Goldstein, 1998): relevant hits that are not near-copies.

Each step picks the candidate maximising ``λ · rel(c) − (1 − λ) · max_{s ∈ picked} sim(c, s)``.
``λ = 1`` is plain relevance order; smaller values trade relevance for diversity. Relevance is the
cosine of the candidate to the query when vectors are given, and similarity between candidates
the cosine of their vectors; without vectors both fall back to token-set overlap (Jaccard), which
still catches the common case of near-duplicate chunks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from aiestack.types import Hit

_WORD = re.compile(r"\w+", re.UNICODE)


def mmr(
    hits: Sequence[Hit],
    *,
    k: int,
    lambda_: float = 0.7,
    query_vector: Sequence[float] | None = None,
    vectors: Sequence[Sequence[float]] | None = None,
) -> list[Hit]:
    """The first ``k`` hits in MMR order (hits keep their own scores)."""
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"the MMR lambda must be between 0 and 1, got {lambda_}")
    if not hits or k <= 0:
        return []
    if vectors is not None and query_vector is not None:
        m = _unit(np.asarray(vectors, dtype=np.float32))
        q = _unit(np.asarray(query_vector, dtype=np.float32)[None, :])[0]
        relevance = m @ q
        similarity = m @ m.T
    else:
        relevance = _rank_relevance(len(hits))
        similarity = _jaccard_matrix([h.chunk.text for h in hits])
    return [hits[i] for i in _select(relevance, similarity, k, lambda_)]


def _select(relevance: np.ndarray, similarity: np.ndarray, k: int, lambda_: float) -> list[int]:
    n = len(relevance)
    picked: list[int] = []
    left = list(range(n))
    max_sim = np.full(n, -np.inf)
    while left and len(picked) < k:
        penalty = np.where(np.isneginf(max_sim), 0.0, max_sim)
        values = lambda_ * relevance[left] - (1.0 - lambda_) * penalty[left]
        best = left[int(np.argmax(values))]
        picked.append(best)
        left.remove(best)
        max_sim = np.maximum(max_sim, similarity[best])
    return picked


def _unit(m: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(m, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return m / norms


def _rank_relevance(n: int) -> np.ndarray:
    """Without vectors, relevance follows the retriever's order: 1 for the first, down to 1/n."""
    return np.asarray([1.0 - i / max(n, 1) for i in range(n)], dtype=np.float64)


def _jaccard_matrix(texts: Sequence[str]) -> np.ndarray:
    sets = [frozenset(w.lower() for w in _WORD.findall(t)) for t in texts]
    n = len(sets)
    out = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            union = len(sets[i] | sets[j])
            out[i, j] = out[j, i] = len(sets[i] & sets[j]) / union if union else 0.0
    return out
