"""Fusing ranked lists from several retrievers into one: reciprocal rank fusion and weighted scores.

Both take lists of :class:`~aiestack.types.Hit` (best first, one list per retriever) and return one
list, best first, whose hits carry the fused score and ``retriever="hybrid"``. A chunk found by
several retrievers appears once.

- :func:`rrf` — reciprocal rank fusion (Cormack et al., 2009): ``score = Σ wᵢ / (k + rankᵢ)``, ranks
  from 1. Scores of different retrievers are never compared, only ranks, so it needs no tuning of
  scales; ``k`` damps the weight of the top ranks (60 in the paper; smaller favours the top).
- :func:`weighted` — a convex combination of normalised scores: divided by the list's best score
  (``s / max``, "max": the lower end stays 0, where BM25 and cosine similarity put "unrelated", so
  a list whose best hit is weak keeps low values, which min-max and z-scores stretch to the same
  range as a strong list's; a list whose best score is not positive falls back to min-max), min-max
  (``(s - min) / (max - min)``) or z-scores (``(s - mean) / std``). A chunk missing from a list gets
  that list's lowest normalised score (it ranked below everything the retriever returned).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from aiestack.types import Chunk, Hit

Norm = Literal["max", "minmax", "z"]
HYBRID = "hybrid"


def rrf(lists: Sequence[Sequence[Hit]], *, k: float = 60.0, weights: Sequence[float] | None = None) -> list[Hit]:
    """Reciprocal rank fusion of ``lists``; ``weights`` (one per list) default to 1."""
    if k < 0:
        raise ValueError(f"the RRF constant k must be at least 0, got {k}")
    ws = _weights(lists, weights)
    scores: dict[str, float] = {}
    chunks: dict[str, Chunk] = {}
    for hits, w in zip(lists, ws, strict=True):
        for rank, hit in enumerate(_unique(hits), start=1):
            cid = hit.chunk.id
            scores[cid] = scores.get(cid, 0.0) + w / (k + rank)
            chunks.setdefault(cid, hit.chunk)
    return _ranked(scores, chunks)


def weighted(
    lists: Sequence[Sequence[Hit]], *, weights: Sequence[float] | None = None, norm: Norm = "minmax"
) -> list[Hit]:
    """A weighted sum of each list's normalised scores (``weights`` default to equal shares)."""
    ws = _weights(lists, weights)
    normalised = [_normalise([h.score for h in _unique(hits)], norm) for hits in lists]
    floors = [min(n, default=0.0) for n in normalised]
    chunks: dict[str, Chunk] = {}
    parts: dict[str, dict[int, float]] = {}
    for i, hits in enumerate(lists):
        for hit, value in zip(_unique(hits), normalised[i], strict=True):
            chunks.setdefault(hit.chunk.id, hit.chunk)
            parts.setdefault(hit.chunk.id, {})[i] = value
    scores = {
        cid: sum(w * got.get(i, floors[i]) for i, w in enumerate(ws)) for cid, got in parts.items()
    }
    return _ranked(scores, chunks)


def _normalise(scores: list[float], norm: Norm) -> list[float]:
    if not scores:
        return []
    if norm == "max" and max(scores) > 0:
        top = max(scores)
        return [s / top for s in scores]
    if norm in ("max", "minmax"):
        lo, hi = min(scores), max(scores)
        span = hi - lo
        return [1.0 if span == 0 else (s - lo) / span for s in scores]
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    return [0.0 if std == 0 else (s - mean) / std for s in scores]


def _weights(lists: Sequence[Sequence[Hit]], weights: Sequence[float] | None) -> list[float]:
    if weights is None:
        return [1.0] * len(lists)
    if len(weights) != len(lists):
        raise ValueError(f"got {len(weights)} weights for {len(lists)} ranked lists")
    if any(w < 0 for w in weights):
        raise ValueError(f"fusion weights must not be negative, got {list(weights)}")
    return list(weights)


def _unique(hits: Sequence[Hit]) -> list[Hit]:
    """Each chunk once, at its best (first) rank."""
    seen: set[str] = set()
    out = []
    for h in hits:
        if h.chunk.id not in seen:
            seen.add(h.chunk.id)
            out.append(h)
    return out


def _ranked(scores: dict[str, float], chunks: dict[str, Chunk]) -> list[Hit]:
    # Ties keep first-seen order (dicts are ordered), so fusion is deterministic.
    order = sorted(scores, key=lambda cid: -scores[cid])
    return [Hit(chunk=chunks[cid], score=scores[cid], retriever=HYBRID) for cid in order]
