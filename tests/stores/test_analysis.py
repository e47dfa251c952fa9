"""The shared analyser's batch form (``Analyzer.postings``, what the PostgreSQL store's writes use)."""

from __future__ import annotations

from aiestack.stores import analysis

_TEXTS = [
    "Cells expressing the protein; cells, CELLS and cell's!",
    "",
    "the of and",  # stop words only: no terms, length 0
    "Running runs ran runner quickly — naïve café X-ray covid-19 " + "x" * 60,
    "protein protein protein cancer",
]


def _as_counts(batch: analysis.Postings, count: int) -> list[dict[str, int]]:
    out: list[dict[str, int]] = [{} for _ in range(count)]
    for text, term, tf in zip(batch.text.tolist(), batch.term.tolist(), batch.tf.tolist(), strict=True):
        assert batch.vocabulary[term] not in out[text]  # one pair per (text, term)
        out[text][batch.vocabulary[term]] = tf
    return out


def test_postings_of_a_batch_are_the_counts_of_each_text() -> None:
    analyzer = analysis.Analyzer()
    batch = analyzer.postings(_TEXTS)
    expected = [analyzer.counts(text) for text in _TEXTS]
    assert _as_counts(batch, len(_TEXTS)) == [dict(counts) for counts, _ in expected]
    assert batch.lengths.tolist() == [length for _, length in expected]
    pairs = list(zip(batch.text.tolist(), batch.term.tolist(), strict=True))
    assert pairs == sorted(pairs)  # by text, then term
    assert batch.vocabulary == list(dict.fromkeys(t for text in _TEXTS for t in analyzer.analyze(text)))  # first seen


def test_postings_of_nothing() -> None:
    batch = analysis.Analyzer().postings(["", "the"])
    assert batch.vocabulary == [] and len(batch.tf) == 0 and batch.lengths.tolist() == [0, 0]
    assert len(analysis.Analyzer().postings([]).lengths) == 0
