"""Curation (AI Engineering, ch. 8): steps that remove or clean rows, each reporting what and why.

A step takes rows and returns the rows it keeps (possibly changed) and a :class:`StepReport`: how many
came in, which were removed (each :class:`Removal` names the row, the reason and, for a duplicate,
the row it duplicates) and how many were changed. :func:`curate` runs steps in order and pushes the
result as a new version whose ``parent`` is the version it started from, so the lineage goes from
every training row back through each curation step to the exchanges.

Steps (``aiestack datasets curate --steps``):

- ``exact``: rows whose normalised text (case, punctuation and spacing aside) equals an earlier one's.
- ``near``: near duplicates by MinHash LSH (datasketch) over word shingles, each candidate confirmed
  by its true Jaccard similarity (so the LSH's false positives never remove a row).
- ``semantic``: rows whose prompt embeds within a cosine threshold of an earlier row's (paraphrases).
- ``quality``: too short or too long, not in the wanted language, repetitive, boilerplate refusals.
- ``pii``: PII and secrets masked in every message with the guardrails' detectors (rows changed, not removed).
- ``contamination``: rows that overlap an eval suite's items (see :mod:`aiestack.datasets.contamination`).

Earlier rows win: a dataset built oldest first keeps the first occurrence.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from aiestack.datasets.rows import answers
from aiestack.datasets.shingles import normalise_text, prompt_text, row_text, shingles, words
from aiestack.stores.datasets import DatasetRow, DatasetStore, DatasetVersion

Embed = Callable[[Sequence[str]], Sequence[Sequence[float]]]


@dataclass(frozen=True, slots=True)
class Removal:
    row_id: str
    step: str
    reason: str
    duplicate_of: str | None = None
    score: float | None = None


@dataclass
class StepReport:
    step: str
    rows_in: int
    removed: list[Removal] = field(default_factory=list)
    changed: int = 0
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def reasons(self) -> Counter[str]:
        return Counter(r.reason for r in self.removed)

    def summary(self) -> dict[str, Any]:
        """What the version's ``source`` records about this step (counts, not every id)."""
        out: dict[str, Any] = {"step": self.step, "in": self.rows_in, "removed": len(self.removed)}
        if self.changed:
            out["changed"] = self.changed
        if self.removed:
            out["reasons"] = dict(self.reasons)
        return {**out, **self.detail}


class CurationStep(Protocol):
    name: str

    def apply(self, rows: list[DatasetRow]) -> tuple[list[DatasetRow], StepReport]: ...


class ExactDedup:
    """Rows whose normalised text equals an earlier row's."""

    name = "exact"

    def apply(self, rows: list[DatasetRow]) -> tuple[list[DatasetRow], StepReport]:
        report = StepReport(self.name, len(rows))
        first: dict[str, str] = {}
        kept = []
        for row in rows:
            key = normalise_text(row_text(row.data))
            if key in first:
                report.removed.append(Removal(row.id, self.name, "exact duplicate", first[key], 1.0))
            else:
                first[key] = row.id
                kept.append(row)
        return kept, report


class NearDedup:
    """Near duplicates: MinHash LSH over word ``ngram``-shingles finds candidates; a candidate whose
    true Jaccard similarity is at least ``threshold`` is a duplicate."""

    name = "near"

    def __init__(self, threshold: float = 0.7, *, ngram: int = 3, num_perm: int = 128, seed: int = 1) -> None:
        if not 0 < threshold <= 1:
            raise ValueError("the near-duplicate threshold is a Jaccard similarity in (0, 1]")
        self.threshold, self.ngram, self.num_perm, self.seed = threshold, ngram, num_perm, seed

    def apply(self, rows: list[DatasetRow]) -> tuple[list[DatasetRow], StepReport]:
        try:
            from datasketch import MinHash, MinHashLSH
        except ImportError:
            raise RuntimeError("near-duplicate detection needs datasketch: pip install 'aiestack[flywheel]'") from None
        report = StepReport(self.name, len(rows), detail={"threshold": self.threshold, "ngram": self.ngram})
        # The LSH bands are tuned below the threshold, so that candidates are rarely missed; the
        # exact Jaccard check then keeps precision.
        lsh = MinHashLSH(threshold=max(0.1, self.threshold - 0.2), num_perm=self.num_perm)
        kept_shingles: dict[str, set[str]] = {}
        kept = []
        for i, row in enumerate(rows):
            grams = shingles(words(row_text(row.data)), self.ngram)
            signature = MinHash(num_perm=self.num_perm, seed=self.seed)
            signature.update_batch([g.encode() for g in grams])
            best, best_id = 0.0, None
            for key in lsh.query(signature):
                other = kept_shingles[key]
                score = len(grams & other) / len(grams | other) if grams or other else 1.0
                if score > best:
                    best, best_id = score, key
            if best_id is not None and best >= self.threshold:
                report.removed.append(Removal(row.id, self.name, "near duplicate", best_id.split("#")[0], round(best, 4)))
                continue
            key = f"{row.id}#{i}"
            lsh.insert(key, signature)
            kept_shingles[key] = grams
            kept.append(row)
        return kept, report


class SemanticDedup:
    """Rows that mean the same as an earlier kept row — the semantic cache's hit rule: the rows (prompt
    and answer) embed within cosine ``threshold`` *and* their prompts pass its lexical verifier (no
    negation, number, entity, unit or antonym differs: "Is aspirin safe?" and "Is aspirin not safe?"
    embed at ~0.95 but are not duplicates). ``verify=False`` uses the cosine alone.

    Compares every row with the rows kept so far (O(n²) dot products, numpy: about a second per 20k
    rows of 384 dimensions on two cores), checking candidates from the most similar down."""

    name = "semantic"

    def __init__(self, embed: Embed, threshold: float = 0.8, *, verify: bool = True, batch: int = 256, candidates: int = 5,
                 progress: Callable[[int, int], None] | None = None) -> None:
        """``progress(done, total)`` is called after each batch of texts is embedded."""
        if not 0 < threshold <= 1:
            raise ValueError("the semantic-duplicate threshold is a cosine similarity in (0, 1]")
        from aiestack.cache.verify import LexicalVerifier

        self.embed, self.threshold, self.batch, self.candidates = embed, threshold, batch, candidates
        self._progress = progress
        self._embedded = (0, 0)
        self._verifier = LexicalVerifier() if verify else None

    def apply(self, rows: list[DatasetRow]) -> tuple[list[DatasetRow], StepReport]:
        report = StepReport(self.name, len(rows), detail={"threshold": self.threshold, "verified": self._verifier is not None})
        if not rows:
            return [], report
        whole = [row_text(r.data) for r in rows]
        texts = [prompt_text(r.data) or w for r, w in zip(rows, whole, strict=True)]
        self._embedded = (0, len(whole) + (len(texts) if self._verifier is not None else 0))
        vectors = self._vectors(whole)
        # The verifier weighs a swapped word against the prompts' own similarity (shared answers
        # would inflate the rows').
        prompts = self._vectors(texts) if self._verifier is not None else vectors
        kept_index: list[int] = []
        kept_matrix = np.empty((max(len(rows), 1), vectors.shape[1]), dtype=np.float32)
        refused = 0
        for i, row in enumerate(rows):
            match = self._match(texts, prompts, kept_index, kept_matrix[: len(kept_index)] @ vectors[i], i) if kept_index else None
            if match is None:
                kept_matrix[len(kept_index)] = vectors[i]
                kept_index.append(i)
                continue
            j, sim = match
            if j < 0:
                refused += 1
                kept_matrix[len(kept_index)] = vectors[i]
                kept_index.append(i)
                continue
            report.removed.append(Removal(row.id, self.name, "semantic duplicate", rows[j].id, round(sim, 4)))
        if self._verifier is not None:
            report.detail["kept_by_verifier"] = refused
        return [rows[i] for i in kept_index], report

    def _vectors(self, texts: list[str]) -> np.ndarray:
        parts = []
        for i in range(0, len(texts), self.batch):
            parts.append(np.asarray(self.embed(texts[i : i + self.batch]), dtype=np.float32))
            done, total = self._embedded[0] + len(texts[i : i + self.batch]), self._embedded[1]
            self._embedded = (done, total)
            if self._progress is not None:
                self._progress(done, total)
        vectors = np.vstack(parts)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return vectors

    def _match(
        self, texts: list[str], prompts: np.ndarray, kept: list[int], sims: np.ndarray, i: int
    ) -> tuple[int, float] | None:
        """The kept row ``i`` duplicates (its index, similarity); ``(-1, sim)`` when only the verifier
        kept it apart; ``None`` when nothing is similar enough."""
        order = np.argsort(-sims)[: self.candidates]
        above = [int(k) for k in order if sims[k] >= self.threshold]
        if not above:
            return None
        for k in above:
            j = kept[k]
            if self._verifier is None:
                return j, float(sims[k])
            prompt_similarity = float(prompts[i] @ prompts[j])
            if self._verifier(texts[i], texts[j], similarity=prompt_similarity, threshold=self.threshold) is None:
                return j, float(sims[k])
        return -1, float(sims[above[0]])


_BOILERPLATE = re.compile(
    r"\bas an ai(?: language)? model\b|\bi(?:'m| am) (?:sorry|afraid),? but i (?:can(?:no|')t|am unable)"
    r"|\bi (?:cannot|can't|am unable to) (?:help|assist|comply) with\b|\bi don't have (?:personal )?(?:opinions|feelings)\b",
    re.IGNORECASE,
)


class QualityFilter:
    """Rows that are too short or too long, not in ``language``, repetitive, or boilerplate.

    - length: the answer has fewer than ``min_answer_words`` words, or the row more than ``max_chars``;
    - language (when set, an ISO 639-1 code): the answer's language by py3langid differs;
    - repetition: more than ``max_repetition`` of the answer's word 3-grams are repeats (Gopher's rule);
    - boilerplate: the answer is a refusal or an "as an AI" disclaimer.
    """

    name = "quality"

    def __init__(self, *, min_answer_words: int = 1, max_chars: int = 32_000, language: str | None = None,
                 max_repetition: float = 0.3, boilerplate: bool = True) -> None:
        self.min_answer_words, self.max_chars, self.language = min_answer_words, max_chars, language
        self.max_repetition, self.boilerplate = max_repetition, boilerplate
        self._classify: Callable[[str], tuple[str, float]] | None = None
        if language is not None:
            try:
                import py3langid
            except ImportError:
                raise RuntimeError("the language filter needs py3langid: pip install 'aiestack[flywheel]'") from None
            self._classify = py3langid.classify

    def reason(self, data: Mapping[str, Any]) -> str | None:
        texts = answers(data)
        if any(len(words(a)) < self.min_answer_words for a in texts):
            return "answer too short"
        if len(row_text(data)) > self.max_chars:
            return "too long"
        if self._classify is not None and any(self._classify(a)[0] != self.language for a in texts if len(words(a)) >= 3):
            return f"not in {self.language}"
        if any(_repetition(a) > self.max_repetition for a in texts):
            return "repetitive"
        if self.boilerplate and _BOILERPLATE.search(texts[0] if texts else ""):
            return "boilerplate"
        return None

    def apply(self, rows: list[DatasetRow]) -> tuple[list[DatasetRow], StepReport]:
        report = StepReport(self.name, len(rows))
        kept = []
        for row in rows:
            why = self.reason(row.data)
            if why is None:
                kept.append(row)
            else:
                report.removed.append(Removal(row.id, self.name, why))
        return kept, report


def _repetition(text: str) -> float:
    tokens = words(text)
    grams = [" ".join(tokens[i : i + 3]) for i in range(len(tokens) - 2)]
    if len(grams) < 4:
        return 0.0
    return 1 - len(set(grams)) / len(grams)


class PIIScrub:
    """Masks PII and secrets in every message with the guardrails' detectors (``<EMAIL>``, ``<OPENAI_KEY>``).
    Rows are changed, not removed; a changed row has a new id (its content changed)."""

    name = "pii"

    def __init__(self) -> None:
        from aiestack.guardrails.table import TraceRedactor

        self._redact = TraceRedactor()

    def apply(self, rows: list[DatasetRow]) -> tuple[list[DatasetRow], StepReport]:
        report = StepReport(self.name, len(rows))
        out = []
        for row in rows:
            data = _map_contents(row.data, self._redact)
            if data != row.data:
                report.changed += 1
                out.append(DatasetRow(data, {**row.lineage, "scrubbed_from": row.id}))
            else:
                out.append(row)
        return out, report


def _map_contents(data: Mapping[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("messages", "prompt", "chosen", "rejected"):
            out[key] = [{**m, "content": fn(m["content"])} if isinstance(m.get("content"), str) else dict(m) for m in value]
        else:
            out[key] = value
    return out


@dataclass
class CurationResult:
    rows: list[DatasetRow]
    reports: list[StepReport]

    @property
    def removed(self) -> list[Removal]:
        return [r for report in self.reports for r in report.removed]


def run_steps(rows: Sequence[DatasetRow], steps: Sequence[CurationStep]) -> CurationResult:
    current = list(rows)
    reports = []
    for step in steps:
        current, report = step.apply(current)
        reports.append(report)
    return CurationResult(current, reports)


def curate(
    store: DatasetStore, version: DatasetVersion, steps: Sequence[CurationStep], *, into: str | None = None,
    message: str | None = None, rows: Sequence[DatasetRow] | None = None,
) -> tuple[DatasetVersion, bool, CurationResult]:
    """Run ``steps`` over ``version``'s rows and push what is left as a new version of ``into``
    (default: the same dataset), with ``parent`` = ``version`` and the step summaries as its source."""
    from aiestack.datasets.export import iter_rows

    result = run_steps(list(rows) if rows is not None else list(iter_rows(store, version)), steps)
    source = {"from": "curation", "of": version.ref, "steps": [r.summary() for r in result.reports]}
    pushed, created = store.push_dataset(
        into or version.name, version.kind, result.rows, created_at=time.time(), source=source, parent=version.ref, message=message
    )
    return pushed, created, result


def build_steps(
    wanted: Sequence[str],
    *,
    near: float = 0.7,
    semantic: float = 0.8,
    language: str | None = None,
    min_answer_words: int = 1,
    max_chars: int = 32_000,
    against: Sequence[Any] = (),
    keep_contaminated: bool = False,
    embed: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[CurationStep]:
    """The curation steps named in ``wanted`` (exact, near, semantic, quality, pii, contamination), in order.
    ``against`` are eval suite files for the contamination step; ``embed`` embeds texts for the semantic one
    (``progress(done, total)`` after each batch)."""
    from aiestack.datasets.contamination import ContaminationCheck, suite_items

    built: list[CurationStep] = []
    for name in wanted:
        if name == "exact":
            built.append(ExactDedup())
        elif name == "near":
            built.append(NearDedup(near))
        elif name == "semantic":
            built.append(SemanticDedup(embed, semantic, progress=progress))
        elif name == "quality":
            built.append(QualityFilter(min_answer_words=min_answer_words, max_chars=max_chars, language=language))
        elif name == "pii":
            built.append(PIIScrub())
        elif name == "contamination":
            items = [item for path in against for item in suite_items(path)]
            built.append(ContaminationCheck(items, remove=not keep_contaminated))
        else:
            raise ValueError(f"unknown curation step {name!r}")
    return built
