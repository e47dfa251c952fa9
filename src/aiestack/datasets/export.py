"""Writing a dataset version out for a trainer, and comparing two versions.

Formats (``aiestack datasets export --format``):

- ``openai``: OpenAI fine-tuning JSONL. Chat rows are ``{"messages": [...]}`` (plus ``"tools"`` when
  the row has them); preference rows are OpenAI's DPO shape ``{"input": {"messages": [...]},
  "preferred_output": [...], "non_preferred_output": [...]}``. Nothing else is written: the API
  rejects unknown keys.
- ``hf``: Hugging Face / TRL JSONL, which ``datasets.load_dataset("json", ...)`` reads and TRL's
  trainers take as they are: ``{"messages": [...]}`` for chat (SFTTrainer), ``{"prompt", "chosen",
  "rejected"}`` for preference (DPOTrainer); with ``lineage=True`` each line also has ``"id"`` and
  ``"lineage"``, and a RAG row keeps its ``"sources"``.
- ``preference``: the preference pairs alone, ``{"prompt", "chosen", "rejected"}`` (only for a
  preference dataset).
- ``qrels``: relevance judgements for retrieval evals and embedding training, one line per source of
  a chat row that has ``sources`` (synthetic questions, RAG exchanges): ``{"query_id", "query",
  "corpus_id", "chunk_id", "score": 1}`` (BEIR's names; ``corpus_id`` is the document id).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TextIO

from aiestack.stores.datasets import DatasetRow, DatasetStore, DatasetVersion

ExportFormat = Literal["openai", "hf", "preference", "qrels"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("openai", "hf", "preference", "qrels")
_PAGE = 1000


def resolve(store: DatasetStore, ref: str) -> DatasetVersion:
    """The version ``ref`` names: ``NAME`` (the newest) or ``NAME@VERSION``; ``KeyError`` saying what exists."""
    name, _, number = ref.partition("@")
    version: int | None = None
    if number:
        if not number.isdigit():
            raise KeyError(f"{ref!r}: a version is a number, as in {name}@2")
        version = int(number)
    found = store.get_dataset(name, version)
    if found is None:
        known = [v.version for v in store.dataset_versions(name)]
        hint = f"it has versions {', '.join(map(str, known))}" if known else "list them with `aiestack datasets list`"
        raise KeyError(f"there is no dataset {ref!r}; {hint}")
    return found


def iter_rows(store: DatasetStore, version: DatasetVersion) -> Iterator[DatasetRow]:
    """Every row of ``version`` in order, read a page at a time."""
    offset = 0
    while True:
        page = store.dataset_rows(version.name, version.version, offset=offset, limit=_PAGE)
        yield from page
        if len(page) < _PAGE:
            return
        offset += len(page)


def format_row(row: DatasetRow, kind: str, fmt: ExportFormat, *, lineage: bool = False) -> dict[str, Any]:
    """One line of the export (``ValueError`` for a format the kind cannot take)."""
    data = row.data
    if fmt == "qrels":
        raise ValueError("qrels has a line per source: use qrels_lines")
    if fmt == "openai":
        if kind == "chat":
            out: dict[str, Any] = {"messages": data["messages"]}
            if data.get("tools"):
                out["tools"] = data["tools"]
            return out
        return {"input": {"messages": data["prompt"]}, "preferred_output": data["chosen"], "non_preferred_output": data["rejected"]}
    if fmt == "preference" and kind != "preference":
        raise ValueError("a chat dataset holds no preference pairs; export it as openai or hf")
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    keys = ("messages", "sources", "tools") if kind == "chat" else ("prompt", "chosen", "rejected", "sources")
    out = {k: data[k] for k in keys if k in data}
    if lineage and fmt == "hf":
        out = {"id": row.id, **out, "lineage": dict(row.lineage)}
    return out


def export_dataset(store: DatasetStore, version: DatasetVersion, out: TextIO, fmt: ExportFormat, *, lineage: bool = False) -> int:
    """Write ``version`` to ``out`` as JSONL in ``fmt``; return the number of lines."""
    written = 0
    for row in iter_rows(store, version):
        lines = qrels_lines(row) if fmt == "qrels" else [format_row(row, version.kind, fmt, lineage=lineage)]
        for line in lines:
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            written += 1
    return written


def qrels_lines(row: DatasetRow) -> list[dict[str, Any]]:
    """The relevance judgements of a chat row with ``sources``: its question against each source."""
    data = row.data
    if "messages" not in data or not data.get("sources"):
        return []
    query = "\n".join(str(m.get("content") or "") for m in data["messages"][:-1] if m.get("role") == "user")
    return [{"query_id": row.id[:16], "query": query, "corpus_id": s.get("document_id"), "chunk_id": s.get("chunk_id"), "score": 1}
            for s in data["sources"]]


@dataclass(frozen=True, slots=True)
class DatasetDiff:
    """Rows (by content id) in ``new`` and not in ``old`` and the reverse; duplicates count."""

    old: DatasetVersion
    new: DatasetVersion
    added: tuple[DatasetRow, ...]
    removed: tuple[DatasetRow, ...]
    unchanged: int


def diff_versions(store: DatasetStore, old: DatasetVersion, new: DatasetVersion) -> DatasetDiff:
    old_rows = list(iter_rows(store, old))
    new_rows = list(iter_rows(store, new))
    old_ids, new_ids = Counter(r.id for r in old_rows), Counter(r.id for r in new_rows)
    added = _surplus(new_rows, new_ids - old_ids, other=old_rows)
    removed = _surplus(old_rows, old_ids - new_ids, other=new_rows)
    return DatasetDiff(old, new, added, removed, sum((old_ids & new_ids).values()))


def _surplus(rows: list[DatasetRow], wanted: Mapping[str, int], *, other: list[DatasetRow]) -> tuple[DatasetRow, ...]:
    """The ``wanted[id]`` copies of each id in ``rows`` that have no counterpart in ``other`` (the
    version compared with).

    Copies of one row (same content, so same id) differ by lineage: a copy whose lineage the other
    version still holds is the one kept (curation keeps the first occurrence, line 1, and drops the
    duplicate on line 13: the diff names line 13). Without a lineage match, the last copies go.
    """
    counterparts = Counter((r.id, _lineage_key(r)) for r in other if r.id in wanted)
    unmatched: list[int] = []
    matched: list[int] = []
    for i, row in enumerate(rows):
        if row.id not in wanted:
            continue
        key = (row.id, _lineage_key(row))
        if counterparts[key] > 0:
            counterparts[key] -= 1
            matched.append(i)
        else:
            unmatched.append(i)
    left = dict(wanted)
    chosen: list[int] = []
    for i in [*unmatched, *reversed(matched)]:
        if left[rows[i].id] > 0:
            left[rows[i].id] -= 1
            chosen.append(i)
    return tuple(rows[i] for i in sorted(chosen))


def _lineage_key(row: DatasetRow) -> str:
    return json.dumps(row.lineage, sort_keys=True, default=str)
