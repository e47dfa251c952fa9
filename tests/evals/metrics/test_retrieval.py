from __future__ import annotations

import math

import pytest

from aiestack.evals.metrics import build_metric
from aiestack.evals.metrics.retrieval import parse_ranked
from aiestack.retrieval_metrics import ndcg_at_k as ndcg

pytestmark = pytest.mark.unit


def test_parse_ranked_accepts_json_lines_and_commas() -> None:
    assert parse_ranked('["d1", 2]') == ["d1", "2"]
    assert parse_ranked("d1\nd2\n") == ["d1", "d2"]
    assert parse_ranked("d1, d2,d3") == ["d1", "d2", "d3"]


def test_graded_ndcg_matches_hand_computation() -> None:
    grades = {"a": 2.0, "b": 1.0}
    dcg = 0 / math.log2(2) + 1 / math.log2(3) + 2 / math.log2(4)
    idcg = 2 / math.log2(2) + 1 / math.log2(3)
    assert ndcg(["x", "b", "a"], grades, 10) == pytest.approx(dcg / idcg)
    assert ndcg(["a", "b"], grades, 10) == pytest.approx(1.0)


async def test_retrieval_metrics_on_one_ranking(make_sample) -> None:
    sample = make_sample("x\na\ny\nb\nz", ["a", "b", "c"])
    values = {}
    for name in ("recall@3", "precision@3", "mrr@3", "ndcg@3"):
        metric = build_metric(name, {})
        assert metric.name == name
        values[name] = (await metric.score(sample)).value
    assert values["recall@3"] == pytest.approx(1 / 3)
    assert values["precision@3"] == pytest.approx(1 / 3)
    assert values["mrr@3"] == pytest.approx(1 / 2)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert values["ndcg@3"] == pytest.approx((1 / math.log2(3)) / idcg)


async def test_duplicates_earn_nothing_and_contexts_can_hold_ids(make_sample) -> None:
    recall = build_metric("recall", {"k": 2, "ranked_from": "contexts"})
    sample = make_sample("", {"a": 1, "b": 1}, contexts=["a", "a", "b"])
    assert (await recall.score(sample)).value == 1.0  # the duplicate 'a' does not push 'b' out of the top 2


async def test_no_relevant_ids_is_not_applicable(make_sample) -> None:
    score = await build_metric("ndcg@10", {}).score(make_sample("a", {"a": 0}))
    assert score.value is None
