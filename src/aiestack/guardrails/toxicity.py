"""Toxicity (content moderation): hate speech and offensive language, sentence by sentence.

A lexical classifier shipped with the package (``data/toxicity.npz``): logistic-regression heads over
hashed word and character n-grams (:mod:`aiestack.guardrails.features`, no embedding model, well
under a millisecond per sentence), trained by ``scripts/train_toxicity.py`` on the *train* part of
a seeded split of Davidson et al. (2017), English tweets labelled hate speech, offensive language or
neither. Heads:

- ``toxic``: hate speech or offensive language (the data set's classes 0 and 1) against neither;
- ``hate``: hate speech against the rest (offensive but not hateful, or neither).

Each head's decision threshold was chosen by cross-validation on the train part and folded into
its intercept, so 0.5 means it. A text is judged one sentence or line at a time
(:func:`aiestack.guardrails.segments.segments`): one abusive sentence in a long answer is found
and located (a finding carries its span, so ``redact`` can remove just that sentence), and the
classifier sees pieces as short as the tweets it learned from.

Limits (docs/guardrails.md): tweets from 2017, English only; the authors document a racial bias in
the labels (African-American English is labelled offensive more often), so the guard is off by
default and a route opts in.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np

from aiestack.guardrails.features import hashed_ngrams_sparse
from aiestack.guardrails.segments import segments
from aiestack.types import Finding

#: The classifier's heads, in the order of the weight rows.
LABELS = ("toxic", "hate")
#: Shortest piece judged: an insult can be two words.
MIN_CHARS = 3
_MENTION = re.compile(r"@\w+")
_URL = re.compile(r"https?://\S+|www\.\S+")
_RETWEET = re.compile(r"^\s*(?:rt\b[:\s]*)+", re.IGNORECASE)


def normalise(text: str) -> str:
    """The text as the classifier reads it: HTML entities decoded, @mentions and URLs replaced by a
    marker, a leading ``RT`` dropped (what a tweet carries and an answer does not)."""
    text = html.unescape(text)
    text = _URL.sub(" url ", text)
    text = _MENTION.sub(" user ", text)
    return _RETWEET.sub("", text)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-z))
    return out


class ToxicityClassifier:
    """The packaged classifier: per head, ``sigmoid(w · hashed_ngrams(normalise(text)) + b)``."""

    def __init__(self, path: Path | None = None) -> None:
        if path is None:
            ref = resources.files("aiestack.guardrails") / "data" / "toxicity.npz"
            with resources.as_file(ref) as p, np.load(p, allow_pickle=False) as data:
                self._load(data)
        else:
            with np.load(path, allow_pickle=False) as data:
                self._load(data)

    def _load(self, data: np.lib.npyio.NpzFile) -> None:
        self.heads: tuple[str, ...] = tuple(str(h) for h in data["heads"])
        self.hash_dim = int(data["hash_dim"])
        self._w = data["w_hash"].astype(np.float32)
        self._bias = data["bias"].astype(np.float32)

    def scores(self, text: str) -> dict[str, float]:
        """Probability per head for one piece of text (a sentence, a tweet)."""
        idx, values = hashed_ngrams_sparse(normalise(text), self.hash_dim)
        z = self._w[:, idx] @ values + self._bias
        return {h: float(p) for h, p in zip(self.heads, _sigmoid(z), strict=True)}


class ToxicityDetector:
    """A :class:`~aiestack.guardrails.base.Detector`: a finding per sentence or line that a counted head flags.

    ``labels`` are the heads that count (``toxic`` includes hate speech; ``hate`` alone lets
    profanity through). Findings carry the span, the head as their label and the score, never the text.
    """

    name = "toxicity"

    def __init__(self, classifier: ToxicityClassifier, *, threshold: float = 0.5, labels: Sequence[str] = ("toxic",)) -> None:
        unknown = sorted(set(labels) - set(classifier.heads))
        if unknown:
            raise ValueError(f"unknown toxicity labels {unknown}; use some of {', '.join(classifier.heads)}")
        self.classifier = classifier
        self.threshold = threshold
        self.labels = tuple(labels)

    def detect(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        for seg in segments(text, min_chars=MIN_CHARS):
            scores = self.classifier.scores(seg.text)
            head, best = max(((h, scores[h]) for h in self.labels), key=lambda hp: hp[1])
            if best >= self.threshold:
                raw = text[seg.start : seg.end]  # the span without the whitespace around the sentence
                start, end = seg.start + len(raw) - len(raw.lstrip()), seg.end - (len(raw) - len(raw.rstrip()))
                found.append(Finding(kind=f"toxicity.{head}", start=start, end=end, score=round(best, 4), label=head))
        return found

    def score(self, text: str) -> float:
        """The highest score of a counted head over the sentences of ``text`` (0.0 for empty text)."""
        best = 0.0
        for seg in segments(text, min_chars=MIN_CHARS):
            scores = self.classifier.scores(seg.text)
            best = max(best, *(scores[h] for h in self.labels))
        return best
