"""Reading a short answer out of a model's text: the final number (GSM8K style) and SQuAD normalisation.

One definition for every wing that compares answers: the eval metrics (``numeric_match``,
``normalized_exact_match``) and the self-consistency vote of a sampling route
(:mod:`aiestack.sampling`) extract and normalise answers the same way.

:func:`final_number` takes the number after ``####`` when there is one, else the last number in the
text. Thousands separators, a currency sign, a percent sign, a sign and decimals are understood
(``-$1,234.50`` → -1234.5; ``50%`` → 50, the number as written). :func:`normalize_answer` is the
official SQuAD v1.1 normalisation (lowercase, no punctuation, no articles, single spaces).
"""

from __future__ import annotations

import re
import string

_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-−]?)[$€£]?(?P<sign2>-?)(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)?(?P<frac>\.\d+)?(?!\w)"
)
_FINAL = re.compile(r"####\s*(.*)$", re.DOTALL)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = frozenset(string.punctuation)


def final_number(text: str) -> float | None:
    """The final number in ``text`` (after ``####`` when present), or None when there is none."""
    final = _FINAL.search(text)
    scope = final.group(1) if final else text
    last: float | None = None
    for match in _NUMBER.finditer(scope):
        digits, frac = match.group("int"), match.group("frac")
        if digits is None and frac is None:
            continue
        value = float((digits or "0").replace(",", "") + (frac or ""))
        negative = bool(match.group("sign")) or bool(match.group("sign2"))
        last = -value if negative else value
    return last


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())
