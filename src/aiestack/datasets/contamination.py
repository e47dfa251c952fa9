"""Contamination (AI Engineering, ch. 4 and 8): training rows that contain an eval suite's items.

An eval item contaminates a training row when at least ``min_overlap`` of the word
``ngram``-shingles of one of its parts (its input, its reference answer) appear in the row; a part
shorter than ``ngram`` words counts when the row contains all of it, and one shorter than three words
(an answer such as "72" or "Paris") is not checked: finding it says nothing. Numbers count as one token, so
an item with its numbers changed is still found. Verbatim copies score 1.0; lightly edited ones (a
few words replaced) stay well above the default 0.5, while other rows of the same template share few
5-grams (bench/dedup.py measures both). An inverted index from shingle to part keeps the check
linear in the rows.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiestack.datasets.curate import Removal, StepReport
from aiestack.datasets.shingles import row_text, shingles, words
from aiestack.stores.datasets import DatasetRow

_MIN_TOKENS = 3
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


@dataclass(frozen=True, slots=True)
class EvalItem:
    """One eval example; ``parts`` are checked one by one (its input, its reference answer): a row
    holding either part is contaminated."""

    suite: str
    example_id: str
    parts: tuple[str, ...]


def _tokens(text: str) -> list[str]:
    """Words, with every number as one token: changing an item's numbers is the lightest edit there is."""
    return ["0" if _NUMBER.fullmatch(w) else w for w in words(text)]


def _grams(tokens: list[str], n: int) -> set[str]:
    """The n-grams that say something: at least two words that are not numbers (a worked solution's
    "0 0 0 0 0" runs would otherwise match every other solution)."""
    return {g for g in shingles(tokens, n) if sum(t != "0" for t in g.split()) >= 2}


def suite_items(path: Path) -> list[EvalItem]:
    """Every example of the eval suite at ``path``: its input and reference answer."""
    from aiestack.evals.datasets import load_examples
    from aiestack.evals.suite import load_suite

    suite = load_suite(path)
    items = []
    for example in load_examples(suite.dataset, suite.dataset_path):
        reference = example.reference
        parts = [str(example.input.get("input", "")), *(map(str, reference) if isinstance(reference, list) else [str(reference or "")])]
        items.append(EvalItem(suite.name, example.id, tuple(p for p in parts if p.strip())))
    return items


class ContaminationCheck:
    """Flags (and with ``remove``, removes) rows that overlap eval items; reports per suite."""

    name = "contamination"

    def __init__(self, items: Iterable[EvalItem], *, ngram: int = 5, min_overlap: float = 0.5, remove: bool = True) -> None:
        if not 0 < min_overlap <= 1:
            raise ValueError("min_overlap is the share of an eval item's n-grams found in the row, in (0, 1]")
        self.items = list(items)
        self.ngram, self.min_overlap, self.remove = ngram, min_overlap, remove
        # One entry per part: (item index, its shingles); parts shorter than ngram are matched whole.
        self._parts: list[tuple[int, set[str]]] = []
        self._short: list[tuple[int, str]] = []
        self._index: dict[str, list[int]] = defaultdict(list)
        for i, item in enumerate(self.items):
            for part in item.parts:
                tokens = _tokens(part)
                if len(tokens) < _MIN_TOKENS or all(t == "0" for t in tokens):
                    continue  # "72" or "Paris" in a row says nothing about contamination
                if len(tokens) < ngram:
                    self._short.append((i, " ".join(tokens)))
                    continue
                grams = _grams(tokens, ngram)
                if not grams:
                    continue
                self._parts.append((i, grams))
                for gram in self._parts[-1][1]:
                    self._index[gram].append(len(self._parts) - 1)

    def matches(self, text: str) -> list[tuple[EvalItem, float]]:
        """The eval items ``text`` contains, with the largest share of a part's n-grams found."""
        tokens = _tokens(text)
        hits: dict[int, int] = defaultdict(int)
        for gram in _grams(tokens, self.ngram):
            for p in self._index.get(gram, ()):
                hits[p] += 1
        best: dict[int, float] = {}
        for p, n in hits.items():
            item, grams = self._parts[p]
            share = n / len(grams)
            if share >= self.min_overlap and share > best.get(item, 0.0):
                best[item] = share
        if self._short:
            joined = f" {' '.join(tokens)} "
            for item, part in self._short:
                if f" {part} " in joined:
                    best[item] = 1.0
        return sorted(((self.items[i], s) for i, s in best.items()), key=lambda f: -f[1])

    def apply(self, rows: list[DatasetRow]) -> tuple[list[DatasetRow], StepReport]:
        report = StepReport(self.name, len(rows), detail={"ngram": self.ngram, "min_overlap": self.min_overlap, "removing": self.remove})
        per_suite: dict[str, dict[str, int]] = defaultdict(lambda: {"rows": 0, "items": 0})
        items_hit: dict[str, set[str]] = defaultdict(set)
        flagged: list[Removal] = []
        kept = []
        for row in rows:
            found = self.matches(row_text(row.data))
            if not found:
                kept.append(row)
                continue
            item, score = found[0]
            flagged.append(Removal(row.id, self.name, f"contains {item.suite} item", f"{item.suite}:{item.example_id}", round(score, 4)))
            for suite in {i.suite for i, _ in found}:
                per_suite[suite]["rows"] += 1
            for i, _ in found:
                items_hit[i.suite].add(i.example_id)
            if not self.remove:
                kept.append(row)
        for suite, ids in items_hit.items():
            per_suite[suite]["items"] = len(ids)
        report.detail["suites"] = {s: dict(v) for s, v in sorted(per_suite.items())}
        if self.remove:
            report.removed = flagged
        else:
            report.detail["flagged"] = [{"row_id": f.row_id, "item": f.duplicate_of, "overlap": f.score} for f in flagged]
        return kept, report


def check_rows(rows: Sequence[DatasetRow], items: Iterable[EvalItem], **options: float | int) -> StepReport:
    """A report-only contamination check of ``rows`` (nothing removed)."""
    _, report = ContaminationCheck(items, remove=False, **options).apply(list(rows))  # type: ignore[arg-type]
    return report
