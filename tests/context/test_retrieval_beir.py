"""IR metrics against hand-computed values, BEIR loading, and an evaluation run on a tiny BEIR fixture."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from aiestack.context.beir import (
    evaluate,
    index_corpus,
    load_corpus,
    load_split,
    run_queries,
)
from aiestack.context.retrieval import Retriever, SearchOptions
from aiestack.errors import InvalidRequest
from aiestack.retrieval_metrics import mrr_at_k, ndcg_at_k, recall_at_k
from aiestack.stores.documents_memory import MemoryDocumentStore

from ._rag_kit import BowEmbeddings

pytestmark = pytest.mark.unit

TINY = Path(__file__).parent / "data" / "beir_tiny"


def test_ndcg_binary_by_hand() -> None:
    # relevant d1, d3; ranked d3 (rank 1), d5, d1 (rank 3): DCG = 1 + 1/2, IDCG = 1 + 1/log2(3)
    assert ndcg_at_k(["d3", "d5", "d1"], {"d1": 1, "d3": 1}, 10) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    assert ndcg_at_k(["d3", "d5", "d1"], {"d1": 1, "d3": 1}, 10) == pytest.approx(0.919720, abs=1e-6)


def test_ndcg_graded_and_cut_off() -> None:
    grades = {"d2": 2, "d4": 1}
    # d4 at rank 2 (gain 1), d2 at rank 3 (gain 2): DCG = 1/log2(3) + 2/2; IDCG = 2 + 1/log2(3)
    assert ndcg_at_k(["d5", "d4", "d2"], grades, 10) == pytest.approx(0.619907, abs=1e-6)
    assert ndcg_at_k(["d5", "d4", "d2"], grades, 1) == 0.0
    assert ndcg_at_k([], grades, 10) == 0.0


def test_recall_and_mrr_by_hand() -> None:
    grades = {"d1": 1, "d3": 1, "d9": 0}
    assert recall_at_k(["d3", "d5", "d1"], grades, 10) == 1.0
    assert recall_at_k(["d3", "d5", "d1"], grades, 2) == 0.5
    assert mrr_at_k(["d5", "d1"], grades, 10) == 0.5
    assert mrr_at_k(["d5", "d1"], grades, 1) == 0.0
    # a duplicate counts at its best rank only
    assert mrr_at_k(["d5", "d5", "d1"], grades, 2) == 0.5


def test_evaluate_averages_over_judged_queries() -> None:
    qrels = {"q1": {"d1": 1, "d3": 1}, "q2": {"d2": 2, "d4": 1}, "q3": {"d7": 0}}
    runs = {"q1": ["d3", "d5", "d1"], "q2": ["d5", "d4", "d2"], "q3": ["d7"]}
    m = evaluate(runs, qrels)
    assert m["ndcg@10"] == pytest.approx((0.919720 + 0.619907) / 2, abs=1e-6)
    assert m["recall@10"] == 1.0 and m["recall@100"] == 1.0
    assert m["mrr@10"] == pytest.approx((1 + 0.5) / 2)
    with pytest.raises(InvalidRequest):
        evaluate({}, {"q": {"d": 0}})


def test_load_beir_layout() -> None:
    docs = load_corpus(TINY)
    assert [d.id for d in docs] == ["d1", "d2", "d3", "d4", "d5"]
    assert docs[0].text == "Aspirin\nAspirin reduces the risk of heart attacks." and docs[0].title == "Aspirin"
    test = load_split(TINY, "test")
    assert set(test.queries) == {"q1", "q2", "q3"}  # q4 is train, q5 has no judgements
    assert test.qrels["q3"] == {"d5": 1.0, "d2": 1.0}
    assert set(load_split(TINY, "train").queries) == {"q4"}
    with pytest.raises(InvalidRequest, match=r"qrels/dev\.tsv"):
        load_split(TINY, "dev")
    with pytest.raises(InvalidRequest, match="BEIR"):
        load_corpus(TINY / "qrels")


async def test_bm25_run_on_the_tiny_set_gives_the_known_figures() -> None:
    store, emb = MemoryDocumentStore(), BowEmbeddings()
    docs = load_corpus(TINY)
    assert await index_corpus(store, emb, "tiny", docs) == 5
    assert await index_corpus(store, emb, "tiny", docs) == 0  # nothing to do the second time
    assert len(emb.calls) == 1
    split = load_split(TINY, "test")
    runs, latencies = await run_queries(Retriever(store, emb), "tiny", split.queries, SearchOptions(mode="bm25"))
    assert runs["q1"] == ["d1"] and runs["q2"] == ["d3"] and runs["q3"] == ["d5"]
    assert len(latencies) == 3
    m = evaluate(runs, split.qrels)
    # q1, q2 perfect; q3 finds d5 (rank 1) but not d2: nDCG 1/(1 + 1/log2 3), recall 0.5
    assert m["ndcg@10"] == pytest.approx((2 + 1 / (1 + 1 / math.log2(3))) / 3)
    assert m["recall@10"] == pytest.approx(2.5 / 3) and m["mrr@10"] == 1.0
