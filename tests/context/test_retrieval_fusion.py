"""Fusion (RRF, weighted max, min-max and z) and MMR, against scores computed by hand."""

from __future__ import annotations

import math

import pytest

from aiestack.context.fusion import rrf, weighted
from aiestack.context.mmr import mmr
from aiestack.types import Chunk, Hit

pytestmark = pytest.mark.unit


def hit(cid: str, score: float, retriever: str = "bm25", text: str = "") -> Hit:
    return Hit(Chunk(cid, "d-" + cid, text or cid), score, retriever)


BM25 = [hit("a", 12.0), hit("b", 9.0), hit("c", 3.0)]
VEC = [hit("c", 0.9, "vector"), hit("a", 0.8, "vector"), hit("d", 0.2, "vector")]


def test_rrf_sums_reciprocal_ranks() -> None:
    fused = rrf([BM25, VEC], k=60)
    scores = {h.chunk.id: h.score for h in fused}
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["b"] == pytest.approx(1 / 62)
    assert scores["d"] == pytest.approx(1 / 63)
    assert [h.chunk.id for h in fused] == ["a", "c", "b", "d"]
    assert {h.retriever for h in fused} == {"hybrid"}


def test_rrf_k_and_weights_change_the_order() -> None:
    # b is 2nd in bm25 only; d is 3rd in vector only. With vector weighted 3x, d beats b.
    fused = rrf([BM25, VEC], k=1, weights=[0.25, 0.75])
    order = [h.chunk.id for h in fused]
    assert order.index("d") < order.index("b")
    assert fused[0].score == pytest.approx(max(0.25 / 2 + 0.75 / 3, 0.25 / 4 + 0.75 / 2))


def test_rrf_counts_a_duplicate_once_at_its_best_rank() -> None:
    fused = rrf([[hit("a", 3), hit("a", 2), hit("b", 1)]], k=0)
    assert [(h.chunk.id, h.score) for h in fused] == [("a", 1.0), ("b", 0.5)]


def test_weighted_minmax_by_hand() -> None:
    fused = weighted([BM25, VEC], weights=[0.5, 0.5], norm="minmax")
    scores = {h.chunk.id: h.score for h in fused}
    # bm25 min-max: a 1, b 6/9, c 0; vector: c 1, a 6/7, d 0. Missing = that list's floor (0).
    assert scores["a"] == pytest.approx(0.5 * 1 + 0.5 * 6 / 7)
    assert scores["b"] == pytest.approx(0.5 * 6 / 9 + 0.0)
    assert scores["c"] == pytest.approx(0.5 * 0 + 0.5 * 1)
    assert scores["d"] == pytest.approx(0.0)
    assert [h.chunk.id for h in fused] == ["a", "c", "b", "d"]


def test_weighted_max_by_hand() -> None:
    fused = weighted([BM25, VEC], weights=[0.5, 0.5], norm="max")
    scores = {h.chunk.id: h.score for h in fused}
    # bm25 / 12: a 1, b 0.75, c 0.25; vector / 0.9: c 1, a 8/9, d 2/9. Missing = that list's floor.
    assert scores["a"] == pytest.approx(0.5 * 1 + 0.5 * 0.8 / 0.9)
    assert scores["b"] == pytest.approx(0.5 * 0.75 + 0.5 * 0.2 / 0.9)
    assert scores["c"] == pytest.approx(0.5 * 0.25 + 0.5 * 1)
    assert scores["d"] == pytest.approx(0.5 * 0.25 + 0.5 * 0.2 / 0.9)
    assert [h.chunk.id for h in fused] == ["a", "c", "b", "d"]


def test_weighted_max_keeps_a_weak_list_low_where_min_max_stretches_it() -> None:
    strong = [hit("a", 20.0), hit("b", 10.0)]
    weak = [hit("b", 0.30, "vector"), hit("a", 0.25, "vector")]  # barely related, nearly tied
    by_max = {h.chunk.id: h.score for h in weighted([strong, weak], weights=[0.5, 0.5], norm="max")}
    by_minmax = {h.chunk.id: h.score for h in weighted([strong, weak], weights=[0.5, 0.5], norm="minmax")}
    assert by_max["a"] > by_max["b"]  # the weak list's small gap moves little
    assert by_minmax["a"] == pytest.approx(by_minmax["b"])  # stretched to 0..1, it cancels the strong one


def test_weighted_max_falls_back_to_min_max_without_a_positive_score() -> None:
    distances = [hit("a", -0.1, "vector"), hit("b", -0.5, "vector"), hit("c", -0.9, "vector")]
    assert [h.score for h in weighted([distances], norm="max")] == pytest.approx([1.0, 0.5, 0.0])


def test_weighted_z_scores_by_hand() -> None:
    fused = weighted([BM25, VEC], weights=[1.0, 0.0], norm="z")
    scores = {h.chunk.id: h.score for h in fused}
    mean = 8.0
    std = math.sqrt(((12 - 8) ** 2 + (9 - 8) ** 2 + (3 - 8) ** 2) / 3)
    assert scores["a"] == pytest.approx((12 - mean) / std)
    assert scores["b"] == pytest.approx((9 - mean) / std)
    # d is missing from bm25: it gets bm25's lowest z-score (c's)
    assert scores["d"] == pytest.approx((3 - mean) / std)


def test_fusion_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="weights"):
        rrf([BM25, VEC], weights=[1.0])
    with pytest.raises(ValueError, match="negative"):
        weighted([BM25, VEC], weights=[-1.0, 1.0])
    with pytest.raises(ValueError, match="at least 0"):
        rrf([BM25], k=-1)


def test_mmr_with_vectors_skips_a_near_duplicate() -> None:
    hits = [hit("a", 3), hit("a2", 2), hit("b", 1)]
    q = [1.0, 0.0]
    vectors = [[1.0, 0.1], [1.0, 0.12], [0.6, -0.8]]
    assert [h.chunk.id for h in mmr(hits, k=2, lambda_=0.5, query_vector=q, vectors=vectors)] == ["a", "b"]
    # lambda 1 is pure relevance: the duplicate stays
    assert [h.chunk.id for h in mmr(hits, k=2, lambda_=1.0, query_vector=q, vectors=vectors)] == ["a", "a2"]


def test_mmr_without_vectors_uses_word_overlap() -> None:
    hits = [
        hit("a", 3, text="cats purr and sleep all day"),
        hit("a2", 2, text="cats purr and sleep all day long"),
        hit("b", 1, text="dogs bark at the mail carrier"),
    ]
    assert [h.chunk.id for h in mmr(hits, k=2, lambda_=0.5)] == ["a", "b"]
    assert mmr([], k=3) == []
    with pytest.raises(ValueError, match="lambda"):
        mmr(hits, k=2, lambda_=1.5)
