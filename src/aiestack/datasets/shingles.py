"""The text of a row as curation sees it: normalised, tokenised into words and shingled into n-grams.

One definition, used by every dedup and contamination step, so that "the same text" means one thing.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from aiestack.datasets.rows import answers, prompt_messages

_WORD = re.compile(r"\w+", re.UNICODE)


def row_text(data: Mapping[str, Any]) -> str:
    """Every message of the row (prompt and answers) joined by newlines."""
    parts = [str(m.get("content") or "") for m in prompt_messages(data)]
    return "\n".join([*parts, *answers(data)])


def prompt_text(data: Mapping[str, Any]) -> str:
    """The user-side text of the row: what a model is asked (system messages left out)."""
    return "\n".join(str(m.get("content") or "") for m in prompt_messages(data) if m.get("role") != "system")


def normalise_text(text: str) -> str:
    """NFKC, case-folded, punctuation dropped, whitespace collapsed: what exact dedup compares."""
    return " ".join(words(text))


def words(text: str) -> list[str]:
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


def shingles(tokens: list[str], n: int) -> set[str]:
    """The word n-grams of ``tokens`` (the whole text as one shingle when it is shorter than ``n``)."""
    if len(tokens) < n:
        return {" ".join(tokens)} if tokens else set()
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}
