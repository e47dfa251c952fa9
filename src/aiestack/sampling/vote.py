"""Self-consistency's answer extraction and majority vote (Wang et al. 2022, "Self-Consistency").

Each sample's text is reduced to the answer it votes for; samples with no answer do not vote. The
answer with most votes wins; a tie goes to the answer whose first vote came first (the order the
samples were requested in), so a vote is deterministic given the samples.

Extractors (``extract`` in ``[routes.NAME.sampling]``):

- ``final_number``: the number after ``####``, else the last number (GSM8K), compared as numbers
  (``72``, ``72.0`` and ``$72`` are one vote);
- ``text``: the whole answer, SQuAD-normalised (case, punctuation, articles, spaces ignored);
- ``regex``: the first group of the first match of ``pattern`` (or the whole match), SQuAD-normalised.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiestack.answers import final_number, normalize_answer

#: ``extract(text) -> the answer it votes for`` (None: no answer, no vote).
Extractor = Callable[[str], "str | None"]


def _number(text: str) -> str | None:
    value = final_number(text)
    if value is None:
        return None
    return str(int(value)) if value.is_integer() else repr(value)


def _text(text: str) -> str | None:
    return normalize_answer(text) or None


def extractor(kind: str, pattern: str | None = None) -> Extractor:
    """The extractor called ``kind``; ``regex`` compiles ``pattern`` (a ValueError says why it cannot)."""
    if kind == "final_number":
        return _number
    if kind == "text":
        return _text
    if kind == "regex":
        try:
            compiled = re.compile(pattern or "", re.IGNORECASE)
        except re.error as exc:
            raise ValueError(f"the pattern does not compile ({exc})") from None

        def regex(text: str) -> str | None:
            match = compiled.search(text)
            if match is None:
                return None
            found = next((g for g in match.groups() if g is not None), match.group(0))
            return normalize_answer(found) or None

        return regex
    raise ValueError(f"unknown extractor {kind!r}: use final_number, text or regex")


@dataclass(frozen=True, slots=True)
class Vote:
    """A majority vote: the winning answer (None when nobody voted), the index of its first sample, the counts."""

    answer: str | None
    index: int
    counts: tuple[tuple[str, int], ...]  # answers by votes, most first (ties by first appearance)
    voters: int

    @property
    def agreement(self) -> float:
        """The winner's share of the votes cast (0.0 when none was cast)."""
        return (self.counts[0][1] / self.voters) if self.voters else 0.0


def majority(answers: Sequence[str | None]) -> Vote:
    """The majority vote over ``answers`` (``None`` abstains); with no vote cast, sample 0 is chosen."""
    first: dict[str, int] = {}
    for i, answer in enumerate(answers):
        if answer is not None:
            first.setdefault(answer, i)
    counts = Counter(a for a in answers if a is not None)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], first[item[0]]))
    if not ranked:
        return Vote(None, 0, (), 0)
    winner = ranked[0][0]
    return Vote(winner, first[winner], tuple(ranked), sum(counts.values()))
