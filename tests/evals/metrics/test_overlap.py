"""BLEU, chrF and ROUGE must equal the reference libraries' own values on fixed examples."""

from __future__ import annotations

import math

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from aiestack.evals.metrics import build_metric

pytestmark = pytest.mark.unit

HYPS = [
    "The cat sat on the mat.",
    "A quick brown fox jumps over the lazy dog",
    "Paris is the capital city of France.",
]
REFS = [
    ["The cat is sitting on the mat.", "There is a cat on the mat."],
    ["The quick brown fox jumped over the lazy dog."],
    ["The capital of France is Paris."],
]


@pytest.fixture
def samples(make_sample):
    return [make_sample(h, r, example_id=f"e{i}") for i, (h, r) in enumerate(zip(HYPS, REFS, strict=True))]


async def test_sentence_bleu_equals_sacrebleu(samples) -> None:
    metric = build_metric("bleu", {})
    for sample, hyp, refs in zip(samples, HYPS, REFS, strict=True):
        assert (await metric.score(sample)).value == sacrebleu.sentence_bleu(hyp, refs).score


async def test_sentence_chrf_equals_sacrebleu(samples) -> None:
    metric = build_metric("chrf", {})
    plus = build_metric("chrf", {"word_order": 2, "name": "chrf++"})
    for sample, hyp, refs in zip(samples, HYPS, REFS, strict=True):
        assert (await metric.score(sample)).value == sacrebleu.sentence_chrf(hyp, refs).score
        assert (await plus.score(sample)).value == sacrebleu.sentence_chrf(hyp, refs, word_order=2).score


def test_corpus_bleu_and_chrf_equal_sacrebleu_with_uneven_references(samples) -> None:
    streams = [[refs[0] for refs in REFS], [refs[1] if len(refs) > 1 else None for refs in REFS]]
    bleu = build_metric("corpus_bleu", {})
    chrf = build_metric("corpus_chrf", {})
    assert bleu.corpus_score(samples) == sacrebleu.corpus_bleu(HYPS, streams).score
    assert chrf.corpus_score(samples) == sacrebleu.corpus_chrf(HYPS, streams).score
    assert 0 < bleu.corpus_score(samples) < 100


@pytest.mark.parametrize("variant", ["rouge1", "rouge2", "rougeL", "rougeLsum"])
async def test_rouge_equals_rouge_score(samples, variant: str) -> None:
    metric = build_metric(variant, {})
    scorer = rouge_scorer.RougeScorer([variant], use_stemmer=True)
    for sample, hyp, refs in zip(samples, HYPS, REFS, strict=True):
        expected = max(scorer.score(ref, hyp)[variant].fmeasure for ref in refs)
        assert (await metric.score(sample)).value == expected


async def test_rouge_recall_measure_and_identical_text(make_sample) -> None:
    recall = build_metric("rouge1", {"measure": "recall", "use_stemmer": False})
    scorer = rouge_scorer.RougeScorer(["rouge1"])
    assert (await recall.score(make_sample("a b", "a b c d"))).value == scorer.score("a b c d", "a b")[
        "rouge1"
    ].recall
    assert (
        await build_metric("bleu", {}).score(make_sample("same words here", "same words here"))
    ).value == pytest.approx(100.0)


def test_corpus_metric_without_references_is_nan(make_sample) -> None:
    assert math.isnan(build_metric("corpus_bleu", {}).corpus_score([make_sample("x")]))
