"""N-gram overlap metrics, computed by the reference libraries themselves.

BLEU and chrF come from sacrebleu and ROUGE from Google's rouge-score, rather than from a
re-implementation, so numbers match what papers and leaderboards report. Scales follow the
libraries: sacrebleu reports BLEU and chrF on 0–100, rouge-score reports an F-measure on 0–1.

Sentence-level BLEU uses sacrebleu's ``effective_order`` (as ``sacrebleu.sentence_bleu`` does) so
short sentences do not collapse to 0; corpus BLEU/chrF, which is what BLEU was designed for, are
:class:`~aiestack.evals.base.CorpusMetric` s computed over all of a system's samples at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, cast

from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF

from aiestack.evals.base import Sample, Score
from aiestack.evals.metrics.options import ReferenceOptions, reference_texts


class BleuOptions(ReferenceOptions):
    tokenize: Literal[
        "13a", "none", "intl", "char", "zh", "ja-mecab", "ko-mecab", "flores101", "flores200"
    ] = "13a"
    lowercase: bool = False


class ChrfOptions(ReferenceOptions):
    word_order: int = 0  # 2 gives chrF++
    char_order: int = 6
    beta: int = 2
    lowercase: bool = False


class RougeOptions(ReferenceOptions):
    use_stemmer: bool = True
    measure: Literal["fmeasure", "precision", "recall"] = "fmeasure"


class _SacreSentence:
    """A sacrebleu metric applied per sample (all references at once, as sacrebleu does)."""

    higher_is_better = True

    def __init__(self, name: str, metric: BLEU | CHRF, reference_key: str | None) -> None:
        self.name = name
        self._metric = metric
        self._key = reference_key

    async def score(self, sample: Sample) -> Score:
        refs = reference_texts(sample, self._key)
        if not refs:
            return Score(None, error="the example has no reference")
        result = self._metric.sentence_score(sample.output, list(refs))
        return Score(float(result.score), {"signature": str(self._metric.get_signature())})


class _SacreCorpus:
    """A sacrebleu corpus score over all samples; samples without a reference are left out."""

    higher_is_better = True

    def __init__(self, name: str, metric: BLEU | CHRF, reference_key: str | None) -> None:
        self.name = name
        self._metric = metric
        self._key = reference_key

    def corpus_score(self, samples: Sequence[Sample]) -> float:
        pairs = [(s.output, reference_texts(s, self._key)) for s in samples]
        pairs = [(out, refs) for out, refs in pairs if refs]
        if not pairs:
            return float("nan")
        width = max(len(refs) for _, refs in pairs)
        # sacrebleu takes one stream per reference position; a sample with fewer references pads with None.
        streams = [[refs[i] if i < len(refs) else None for _, refs in pairs] for i in range(width)]
        # sacrebleu accepts None for a missing reference at run time; its annotation says str only.
        padded = cast("list[list[str]]", streams)
        return float(self._metric.corpus_score([out for out, _ in pairs], padded).score)


def _bleu(opts: BleuOptions, *, sentence: bool) -> BLEU:
    return BLEU(tokenize=opts.tokenize, lowercase=opts.lowercase, effective_order=sentence)


def _chrf(opts: ChrfOptions) -> CHRF:
    return CHRF(
        char_order=opts.char_order, word_order=opts.word_order, beta=opts.beta, lowercase=opts.lowercase
    )


def bleu(name: str, opts: BleuOptions) -> _SacreSentence:
    return _SacreSentence(name, _bleu(opts, sentence=True), opts.reference_key)


def corpus_bleu(name: str, opts: BleuOptions) -> _SacreCorpus:
    return _SacreCorpus(name, _bleu(opts, sentence=False), opts.reference_key)


def chrf(name: str, opts: ChrfOptions) -> _SacreSentence:
    return _SacreSentence(name, _chrf(opts), opts.reference_key)


def corpus_chrf(name: str, opts: ChrfOptions) -> _SacreCorpus:
    return _SacreCorpus(name, _chrf(opts), opts.reference_key)


class Rouge:
    """ROUGE-1/2/L (or Lsum) from rouge-score; with several references, the best one counts."""

    higher_is_better = True

    def __init__(self, name: str, variant: str, opts: RougeOptions) -> None:
        self.name = name
        self._variant = variant
        self._measure = opts.measure
        self._key = opts.reference_key
        self._scorer = rouge_scorer.RougeScorer([variant], use_stemmer=opts.use_stemmer)

    async def score(self, sample: Sample) -> Score:
        refs = reference_texts(sample, self._key)
        if not refs:
            return Score(None, error="the example has no reference")
        # rouge-score's signature is score(target, prediction).
        values = [
            getattr(self._scorer.score(ref, sample.output)[self._variant], self._measure) for ref in refs
        ]
        return Score(float(max(values)), {"measure": self._measure})
