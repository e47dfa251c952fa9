"""Groundedness: how much of an answer is supported by the retrieved chunks (lexical, cheap).

Each answer sentence with enough content words is *supported* when at least ``support`` of its
content words (lower-cased, stop words removed, light suffix stripping) occur in one retrieved
chunk. The score is the share of content words that sit in supported sentences: 1.0 means every
claim can be traced to the context, 0.0 that none can. Unsupported sentences become findings with
their spans, so a reader can see which claims lack a source.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from aiestack.types import Finding

_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_STOP_WORDS = (
    """a an the and or but if then else of to in on at by for with from as is are was were be been being it its
    this that these those there here which who whom whose what when where why how not no yes do does did done have
    has had can could will would shall should may might must i you he she we they me him her us them my your his
    our their so such than too very just also only into over under about after before between both each few more
    most other some any all own same up down out off again further once because while during through per via
    der die das und oder ist sind war ein eine einer einen nicht mit von zu im in den dem des auf für als auch es"""
)
_STOP = frozenset(_STOP_WORDS.split())


def content_words(text: str) -> list[str]:
    out = []
    for w in _WORD.findall(text.lower()):
        if w in _STOP or (len(w) < 3 and not w.isdigit()):
            continue
        for suffix in ("ing", "ed", "es", "s"):
            if len(w) > len(suffix) + 3 and w.endswith(suffix):
                w = w[: -len(suffix)]
                break
        out.append(w)
    return out


def groundedness(answer: str, chunks: Iterable[str], *, support: float = 0.6, min_words: int = 3) -> tuple[float, list[Finding]]:
    """``(score, unsupported sentences)`` of ``answer`` against ``chunks``; ``(1.0, [])`` with nothing to check."""
    bags: Sequence[frozenset[str]] = [frozenset(content_words(c)) for c in chunks]
    if not bags:
        return 1.0, []
    total = grounded = 0
    findings: list[Finding] = []
    for m in _SENTENCE.finditer(answer):
        words = content_words(m.group())
        if len(words) < min_words:
            continue
        best = max(sum(1 for w in words if w in bag) / len(words) for bag in bags)
        total += len(words)
        if best >= support:
            grounded += len(words)
        else:
            findings.append(Finding(kind="grounding.unsupported", start=m.start(), end=m.end(), score=round(1 - best, 3), label="unsupported_sentence"))
    if total == 0:
        return 1.0, []
    return grounded / total, findings
