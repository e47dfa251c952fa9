"""Contamination (AI Engineering, ch. 4 and 8): training rows that contain an eval suite's items.

An eval item (its input and reference answer) is contaminating a training row when at least
``min_overlap`` of the item's word ``ngram``-shingles appear in the row (an item shorter than
``ngram`` words counts when the row contains all of it). Verbatim copies score 1.0; lightly edited
ones (a few words or numbers changed) stay well above the default 0.5, while unrelated rows of the
same template share few 5-grams (bench/dedup.py measures both). An inverted index from shingle to
items keeps the check linear in the rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiestack.datasets.curate import Removal, StepReport
from aiestack.datasets.text import row_text, shingles, words
from aiestack.stores.datasets import DatasetRow


@dataclass(frozen=True, slots=True)
class EvalItem:
    suite: str
    example_id: str
    text: str


def suite_items(path: Path) -> list[EvalItem]:
    """Every example of the eval suite at ``path``: its input and reference answer."""
    from aiestack.evals.datasets import load_examples
    from aiestack.evals.suite import load_suite

    suite = load_suite(path)
    items = []
    for example in load_examples(suite.dataset, suite.dataset_path):
        reference = example.reference
        parts = [str(example.input.get("input", "")), *(map(str, reference) if isinstance(reference, list) else [str(reference or "")])]
        items.append(EvalItem(suite.name, example.id, "\n".join(p for p in parts if p)))
    return items


class ContaminationCheck:
    """Flags (and with ``remove``, removes) rows that overlap eval items; reports per suite."""

    name = "contamination"

    def __init__(self, items: Iterable[EvalItem], *, ngram: int = 5, min_overlap: float = 0.5, remove: bool = True) -> None:
        if not 0 < min_overlap <= 1:
            raise ValueError("min_overlap is the share of an eval item's n-grams found in the row, in (0, 1]")
        self.items = list(items)
        self.ngram, self.min_overlap, self.remove = ngram, min_overlap, remove
        self._grams = [shingles(words(item.text), ngram) for item in self.items]
        self._short = [i for i, item in enumerate(self.items) if 0 < len(words(item.text)) < ngram]
        self._index: dict[str, list[int]] = defaultdict(list)
        for i, grams in enumerate(self._grams):
            if i not in self._short:
                for gram in grams:
                    self._index[gram].append(i)

    def matches(self, text: str) -> list[tuple[EvalItem, float]]:
        """The eval items ``text`` contains, with the share of each item's n-grams found."""
        tokens = words(text)
        grams = shingles(tokens, self.ngram)
        hits: dict[int, int] = defaultdict(int)
        for gram in grams:
            for i in self._index.get(gram, ()):
                hits[i] += 1
        found = [(self.items[i], n / len(self._grams[i])) for i, n in hits.items() if n / len(self._grams[i]) >= self.min_overlap]
        if self._short:
            joined = f" {' '.join(tokens)} "
            found += [(self.items[i], 1.0) for i in self._short if f" {next(iter(self._grams[i]))} " in joined]
        return sorted(found, key=lambda f: -f[1])

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
