from __future__ import annotations

import pytest

from aiestack.errors import ConfigError
from aiestack.evals.base import CorpusMetric, Metric
from aiestack.evals.metrics import available_metrics, build_metric

pytestmark = pytest.mark.unit


def test_every_listed_metric_builds_with_its_dependencies(judge_call, embeddings, tmp_path) -> None:
    (tmp_path / "db.sql").write_text("CREATE TABLE t (x INTEGER);", encoding="utf-8")
    required = {
        "regex": {"pattern": "x"},
        "label_match": {"labels": ["yes", "no"]},
        "sql_execution": {"database": "db.sql"},
    }
    for name in available_metrics():
        metric = build_metric(
            name, required.get(name, {}), judge_call=judge_call, embeddings=embeddings, base_dir=tmp_path
        )
        assert isinstance(metric, Metric | CorpusMetric)
        assert isinstance(metric.higher_is_better, bool)


def test_issue_metrics_are_all_available() -> None:
    wanted = {
        "exact_match", "normalized_exact_match", "token_f1", "contains", "regex", "json_valid", "json_schema",
        "bleu", "chrf", "corpus_bleu", "corpus_chrf", "rouge1", "rouge2", "rougeL", "embedding_similarity",
        "functional_correctness", "numeric_match", "perplexity", "mean_logprob", "latency", "cost", "ndcg",
        "recall", "mrr", "precision", "context_precision", "context_recall", "faithfulness",
        "lexical_groundedness", "answer_relevance", "judge", "judge_reference",
    }  # fmt: skip
    assert wanted <= set(available_metrics())


def test_unknown_metric_suggests_the_closest_name() -> None:
    with pytest.raises(ConfigError, match="did you mean 'token_f1'"):
        build_metric("token_f2", {})


def test_unknown_option_is_named() -> None:
    with pytest.raises(ConfigError, match=r"metrics\.bleu\.tokenise.*did you mean 'tokenize'"):
        build_metric("bleu", {"tokenise": "13a"})


def test_bad_option_value_is_named() -> None:
    with pytest.raises(ConfigError, match=r"metrics\.regex\.pattern"):
        build_metric("regex", {"pattern": "("})
    with pytest.raises(ConfigError, match=r"metrics\.judge\.scale"):
        build_metric("judge", {"scale": [5, 1]}, judge_call=lambda r: r)


def test_missing_dependencies_say_what_to_configure() -> None:
    with pytest.raises(ConfigError, match="needs a judge model"):
        build_metric("judge", {})
    with pytest.raises(ConfigError, match="needs an embedding model"):
        build_metric("embedding_similarity", {})


def test_at_k_only_for_retrieval_metrics() -> None:
    assert build_metric("mrr@5", {}).name == "mrr@5"
    with pytest.raises(ConfigError, match="only retrieval metrics"):
        build_metric("bleu@4", {})
