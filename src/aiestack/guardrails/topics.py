"""Banned terms and topics: words or phrases that must not appear, and keyword-defined topics.

``terms`` match as whole words, case-insensitively (``"acme corp"`` does not match ``"acme corporation"``).
A *topic* is a name with keywords; it matches when at least ``min_hits`` different keywords of it occur
(one stray word is not a topic). Findings name the term or topic as their label, which is config,
not user content.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from aiestack.types import Finding


def _pattern(words: Iterable[str]) -> re.Pattern[str] | None:
    alternatives = sorted({w.strip().lower() for w in words if w.strip()}, key=len, reverse=True)
    if not alternatives:
        return None
    return re.compile(r"(?<!\w)(?:" + "|".join(r"\s+".join(re.escape(w) for w in a.split()) for a in alternatives) + r")(?!\w)", re.IGNORECASE)


class BannedTopics:
    """Finds banned ``terms`` and ``topics`` (name → keywords) in a text."""

    name = "topics"

    def __init__(self, terms: Iterable[str] = (), topics: Mapping[str, Iterable[str]] | None = None, *, min_hits: int = 2) -> None:
        self._terms = _pattern(terms)
        self._topics = {name: p for name, words in (topics or {}).items() if (p := _pattern(words)) is not None}
        self.min_hits = min_hits

    @property
    def empty(self) -> bool:
        return self._terms is None and not self._topics

    def detect(self, text: str) -> list[Finding]:
        found: list[Finding] = []
        if self._terms is not None:
            found += [Finding(kind="banned_term", start=m.start(), end=m.end(), score=1.0, label=m.group().lower()) for m in self._terms.finditer(text)]
        for name, pattern in self._topics.items():
            matches = list(pattern.finditer(text))
            if len({m.group().lower() for m in matches}) >= self.min_hits:
                found.append(Finding(kind="banned_topic", start=matches[0].start(), end=matches[-1].end(), score=1.0, label=name))
        return found
