"""String metrics: exact match, SQuAD-normalised exact match and token F1, contains, regex, labels.

Normalisation follows the official SQuAD v1.1 evaluation script (lowercase, drop punctuation, drop
the articles *a*, *an*, *the*, collapse whitespace), so scores are comparable with published ones.
With several acceptable references a sample gets its best score, as in SQuAD. A sample whose
example has no reference scores ``None`` (not applicable), never a made-up 0.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

from pydantic import Field, field_validator

from aiestack.answers import normalize_answer
from aiestack.evals.base import Sample, Score
from aiestack.evals.metrics.options import ReferenceOptions, reference_texts


def tokens(text: str) -> list[str]:
    """Normalised tokens, as SQuAD's F1 counts them."""
    return normalize_answer(text).split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between two texts (both empty: 1.0; one empty: 0.0)."""
    pred, ref = tokens(prediction), tokens(reference)
    if not pred or not ref:
        return float(pred == ref)
    common = Counter(pred) & Counter(ref)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


class _BestOfReferences:
    """Scores the output against each reference and keeps the best."""

    higher_is_better = True

    def __init__(self, name: str, reference_key: str | None, compare: Callable[[str, str], float]) -> None:
        self.name = name
        self._key = reference_key
        self._compare = compare

    async def score(self, sample: Sample) -> Score:
        refs = reference_texts(sample, self._key)
        if not refs:
            return Score(None, error="the example has no reference")
        values = [self._compare(sample.output, ref) for ref in refs]
        best = max(range(len(values)), key=values.__getitem__)
        return Score(values[best], {"best_reference": refs[best]})


class ExactMatchOptions(ReferenceOptions):
    strip: bool = True
    case_sensitive: bool = True


def exact_match(name: str, opts: ExactMatchOptions) -> _BestOfReferences:
    def compare(out: str, ref: str) -> float:
        if opts.strip:
            out, ref = out.strip(), ref.strip()
        if not opts.case_sensitive:
            out, ref = out.casefold(), ref.casefold()
        return float(out == ref)

    return _BestOfReferences(name, opts.reference_key, compare)


def normalized_exact_match(name: str, opts: ReferenceOptions) -> _BestOfReferences:
    return _BestOfReferences(
        name, opts.reference_key, lambda out, ref: float(normalize_answer(out) == normalize_answer(ref))
    )


def token_f1_metric(name: str, opts: ReferenceOptions) -> _BestOfReferences:
    return _BestOfReferences(name, opts.reference_key, token_f1)


class ContainsOptions(ReferenceOptions):
    """``value`` fixes the text to look for; otherwise the reference is looked for in the output."""

    value: str | None = None
    case_sensitive: bool = False
    normalize: bool = False


class Contains:
    """1.0 when the output contains the text (any of the references), else 0.0."""

    higher_is_better = True

    def __init__(self, name: str, opts: ContainsOptions) -> None:
        self.name = name
        self._opts = opts

    def _prep(self, text: str) -> str:
        if self._opts.normalize:
            return normalize_answer(text)
        return text if self._opts.case_sensitive else text.casefold()

    async def score(self, sample: Sample) -> Score:
        needles = (
            (self._opts.value,)
            if self._opts.value is not None
            else reference_texts(sample, self._opts.reference_key)
        )
        if not needles:
            return Score(None, error="no text to look for: set 'value' or give the example a reference")
        hay = self._prep(sample.output)
        found = [n for n in needles if self._prep(n) in hay]
        return Score(float(bool(found)), {"found": found[0]} if found else {})


class RegexOptions(ReferenceOptions):
    pattern: str
    ignore_case: bool = False
    fullmatch: bool = False

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"the pattern does not compile: {exc}") from None
        return value


class Regex:
    """1.0 when the pattern matches the output (searched anywhere, or the whole output with ``fullmatch``)."""

    higher_is_better = True

    def __init__(self, name: str, opts: RegexOptions) -> None:
        self.name = name
        self._re = re.compile(opts.pattern, re.IGNORECASE if opts.ignore_case else 0)
        self._full = opts.fullmatch

    async def score(self, sample: Sample) -> Score:
        text = sample.output.strip() if self._full else sample.output
        match = self._re.fullmatch(text) if self._full else self._re.search(text)
        return Score(float(match is not None), {"match": match.group(0)} if match else {})


class LabelOptions(ReferenceOptions):
    """Classification by the first label word the output mentions (e.g. HaluEval's yes/no)."""

    labels: list[str] = Field(min_length=2)


class LabelMatch:
    """Finds the first of ``labels`` (normalised, whole words) in the output and compares it to the reference.

    An output that names no label scores 0.0 with ``predicted: None`` in the detail: a model that
    fails to answer the question is wrong, not "not applicable".
    """

    higher_is_better = True

    def __init__(self, name: str, opts: LabelOptions) -> None:
        self.name = name
        self._key = opts.reference_key
        self._labels = {normalize_answer(label): label for label in opts.labels}
        alternatives = "|".join(re.escape(k) for k in sorted(self._labels, key=len, reverse=True))
        self._re = re.compile(rf"\b({alternatives})\b")

    async def score(self, sample: Sample) -> Score:
        refs = reference_texts(sample, self._key)
        if not refs:
            return Score(None, error="the example has no reference label")
        match = self._re.search(normalize_answer(sample.output))
        predicted = self._labels[match.group(1)] if match else None
        gold = {normalize_answer(r) for r in refs}
        correct = predicted is not None and normalize_answer(predicted) in gold
        return Score(float(correct), {"predicted": predicted, "reference": refs[0]})
