"""Where dataset rows come from: stored exchanges, files, eval suites and conversation exports.

Each builder returns a :class:`Built` — the rows in a deterministic order, a ``source`` object that
says how they were selected (stored with the version), and counts of what was left out and why —
and never writes anything: :func:`aiestack.datasets.build_dataset` pushes the version.

Every row keeps its lineage: ``exchange_id`` (and ``feedback_ids``) for rows from exchanges,
``file``/``line`` for rows from files, ``suite``/``example_id`` for rows from eval suites,
``conversation``/``message_id`` for imported conversations.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiestack.context.citations import cited_indices
from aiestack.context.stage import RAG_COLLECTION, RAG_HITS
from aiestack.datasets.rows import RowError, kind_of, normalise
from aiestack.errors import ConfigError
from aiestack.feedback.export import chat_messages, feedback_rows
from aiestack.stores.base import ExchangeRecord, ExchangeStore
from aiestack.stores.datasets import DatasetKind, DatasetRow
from aiestack.stores.feedback import FeedbackStore
from aiestack.stores.prompts import PROMPT_NAME_ATTR, PROMPT_VERSION_ATTR
from aiestack.stores.queries import Cursor, ExchangeFilter, exchange_queries

GuardFilter = Literal["any", "none", "flag", "redact"]
_PAGE = 500
_FILE_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class Built:
    """Rows ready to push, how they were chosen, and what was left out (reason → count)."""

    kind: DatasetKind
    rows: list[DatasetRow]
    source: dict[str, Any]
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


@dataclass(frozen=True, slots=True)
class ExchangeSelection:
    """Which stored exchanges become rows. ``None`` means: any.

    ``min_feedback`` keeps only exchanges with explicit feedback whose mean is at least this (0-1)
    and none negative; a correction replaces the answer (the rules of ``feedback export``).
    ``guard``: ``none`` keeps exchanges no guardrail acted on, ``flag``/``redact`` only those.
    Blocked, failed and cache-answered exchanges are never rows (they hold no model answer).
    """

    route: str | None = None
    model: str | None = None
    tenant: str | None = None
    since: float | None = None
    until: float | None = None
    min_feedback: float | None = None
    guard: GuardFilter = "any"
    prompt: str | None = None
    prompt_version: int | None = None
    limit: int | None = None

    def describe(self) -> dict[str, Any]:
        return {k: v for k, v in (("route", self.route), ("model", self.model), ("tenant", self.tenant),
                ("since", self.since), ("until", self.until), ("min_feedback", self.min_feedback),
                ("guard", self.guard if self.guard != "any" else None), ("prompt", self.prompt),
                ("prompt_version", self.prompt_version), ("limit", self.limit)) if v is not None}

    def keeps(self, record: ExchangeRecord) -> bool:
        """The filters no index answers: guard verdicts, prompt, version, time window, route."""
        if self.guard == "none" and record.guard_action is not None:
            return False
        if self.guard in ("flag", "redact") and record.guard_action != self.guard:
            return False
        if self.prompt is not None and record.attributes.get(PROMPT_NAME_ATTR) != self.prompt:
            return False
        if self.prompt_version is not None and record.attributes.get(PROMPT_VERSION_ATTR) != self.prompt_version:
            return False
        if self.route is not None and record.route != self.route:
            return False
        if self.model is not None and record.model != self.model:
            return False
        if self.until is not None and record.created_at >= self.until:
            return False
        return record.outcome == "ok"


def from_exchanges(store: ExchangeStore, selection: ExchangeSelection, kind: DatasetKind = "chat") -> Built:
    """Rows from the stored exchanges that pass ``selection``, oldest first.

    A preference dataset, or any selection with ``min_feedback``, reads the feedback (pairs come
    from corrections, judged answers and regenerations). The messages are stored only with content
    tracing on (``tracing.content = true``); exchanges without them are counted, not guessed.
    """
    built = Built(kind, [], {"from": "exchanges", "filters": selection.describe()})
    if kind == "preference" or selection.min_feedback is not None:
        if not isinstance(store, FeedbackStore):
            raise ConfigError("store.url", f"the store {type(store).__name__} holds no feedback", "use SQLite, PostgreSQL or memory")
        rows, stats = feedback_rows(
            store, store, format="sft" if kind == "chat" else "preference",
            min_value=selection.min_feedback if selection.min_feedback is not None else 0.75,
            tenant=selection.tenant, since=selection.since, metadata=True, keep=selection.keeps,
        )
        for row in rows:
            meta = row.pop("metadata")
            lineage = {k: v for k, v in meta.items() if v is not None and v != []}
            if kind == "chat" and (sources := rag_sources(store.get_exchange(str(meta.get("exchange_id"))), row)):
                row["sources"] = sources
            built.rows.append(DatasetRow(normalise(row, kind), lineage))
            if selection.limit is not None and len(built.rows) >= selection.limit:
                break
        for reason, count in (("no stored content", stats.missing_content), ("exchange not found", stats.missing_exchange)):
            if count:
                built.skipped[reason] = count
        return built
    picked: list[ExchangeRecord] = []
    for record in _exchanges(store, selection):
        messages = chat_messages(record.request)
        if messages is None or record.response is None:
            built.skip("no stored content")
            continue
        if not record.response.strip():
            built.skip("empty answer")
            continue
        picked.append(record)
        if selection.limit is not None and len(picked) >= selection.limit:
            break
    for record in reversed(picked):  # oldest first
        data = {"messages": [*(chat_messages(record.request) or []), {"role": "assistant", "content": record.response}]}
        if sources := rag_sources(record, data):
            data["sources"] = sources
        try:
            row = normalise(data, "chat")
        except RowError:
            built.skip("not a chat exchange")
            continue
        lineage = {"exchange_id": record.id, "route": record.route, "model": record.model,
                   "prompt": record.attributes.get(PROMPT_NAME_ATTR), "prompt_version": record.attributes.get(PROMPT_VERSION_ATTR)}
        built.rows.append(DatasetRow(row, {k: v for k, v in lineage.items() if v is not None}))
    return built


def rag_sources(record: ExchangeRecord | None, row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The retrieved passages the row's answer cites — ``[n]`` markers, numbered as the RAG prompt listed
    them — as sources: a rated RAG exchange's "clicks", so the row is also a relevance judgement
    (``datasets export --format qrels``, ``aiestack finetune embeddings``). Empty when the exchange
    retrieved nothing or the answer cites nothing."""
    hits = record.attributes.get(RAG_HITS) if record is not None else None
    messages = row.get("messages") or []
    if not hits or not isinstance(hits, list) or not messages:
        return []
    answer = str(messages[-1].get("content") or "")
    collection = record.attributes.get(RAG_COLLECTION) if record is not None else None
    out = []
    for n in cited_indices(answer, len(hits)):
        hit = hits[n - 1]
        if isinstance(hit, Mapping) and hit.get("chunk_id"):
            source = {k: hit[k] for k in ("chunk_id", "document_id", "source") if hit.get(k)}
            out.append({**source, **({"collection": collection} if collection else {})})
    return out


def _exchanges(store: ExchangeStore, selection: ExchangeSelection) -> Iterator[ExchangeRecord]:
    """Newest first, a page at a time, through the store's indexed queries."""
    queries = exchange_queries(store)
    guard = selection.guard if selection.guard in ("flag", "redact") else None
    flt = ExchangeFilter(since=selection.since, until=selection.until, tenant=selection.tenant, route=selection.route,
                         model=selection.model, outcome="ok", guard_action=guard)
    after: Cursor | None = None
    while True:
        page, _ = queries.page_exchanges(flt, after=after, limit=_PAGE, scan_window=10**9)
        yield from (r for r in page if selection.keeps(r))
        if len(page) < _PAGE:
            return
        after = Cursor(page[-1].created_at, page[-1].id)


def from_file(path: Path, kind: DatasetKind | None = None, *, skip_invalid: bool = False) -> Built:
    """Rows from a JSONL, JSON (a list), CSV or Parquet file, in file order.

    ``kind`` defaults to what the first record looks like. A record that is not a valid row is an
    error naming its line (or, with ``skip_invalid``, counted under its reason).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(str(path), "the file does not exist", "check the path")
    fmt = _FILE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ConfigError(str(path), f"cannot read {path.suffix or 'a file without an extension'}", "use .jsonl, .json, .csv or .parquet")
    built: Built | None = None
    for line, record in _records(path, fmt):
        if built is None:
            built = Built(kind or kind_of(record), [], {"from": "file", "file": path.name, "format": fmt})
        try:
            built.rows.append(DatasetRow(normalise(record, built.kind), {"file": path.name, "line": line}))
        except RowError as exc:
            if not skip_invalid:
                raise ConfigError(f"{path.name}:{line}", str(exc), "fix the row, or pass --skip-invalid to leave such rows out") from None
            built.skip(str(exc))
    if built is None:
        raise ConfigError(str(path), "the file holds no records", "add rows to it")
    return built


def _records(path: Path, fmt: str) -> Iterator[tuple[int, Any]]:
    if fmt == "jsonl":
        with path.open(encoding="utf-8") as handle:
            for n, text in enumerate(handle, 1):
                if text.strip():
                    yield n, _json_line(text, path, n)
    elif fmt == "json":
        data = _json_line(path.read_text(encoding="utf-8"), path, 1)
        if not isinstance(data, list):
            raise ConfigError(str(path), "a .json dataset must hold a list of records", "write a list, or use JSONL")
        yield from enumerate(data, 1)
    elif fmt == "csv":
        with path.open(encoding="utf-8", newline="") as handle:
            yield from enumerate(csv.DictReader(handle), 2)  # line 1 is the header
    else:
        yield from enumerate(_parquet_rows(path), 1)


def _json_line(text: str, path: Path, line: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path.name}:{line}", f"not valid JSON ({exc.msg})", "fix the line") from None


def _parquet_rows(path: Path) -> Iterator[Mapping[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(str(path), "reading Parquet needs pyarrow", "pip install 'aiestack[flywheel]'") from None
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        yield from batch.to_pylist()


def from_suite(path: Path, *, limit: int | None = None) -> Built:
    """Chat rows from an eval suite: the messages the suite sends (its prompt templates rendered for
    each example), answered by the example's reference. Examples without a reference are counted."""
    from aiestack.evals.datasets import load_examples
    from aiestack.evals.runner import render_messages, suite_templates
    from aiestack.evals.suite import load_suite

    suite = load_suite(path)
    user, system = suite_templates(suite)
    built = Built("chat", [], {"from": "suite", "suite": suite.name, "file": Path(path).name})
    for example in load_examples(suite.dataset, suite.dataset_path):
        reference = example.reference[0] if isinstance(example.reference, list) and example.reference else example.reference
        if reference is None or not str(reference).strip():
            built.skip("no reference answer")
            continue
        messages = [{"role": m.role, "content": m.content} for m in render_messages(user, system, example)]
        data = {"messages": [*messages, {"role": "assistant", "content": str(reference)}]}
        built.rows.append(DatasetRow(normalise(data, "chat"), {"suite": suite.name, "example_id": example.id}))
        if limit is not None and len(built.rows) >= limit:
            break
    return built


def from_conversations(path: Path) -> Built:
    """Chat rows from a ChatGPT or Claude data export (``conversations.json`` or its ``.zip``): each
    assistant turn with the conversation before it, as ``import-conversations`` reads them."""
    from aiestack.feedback.imports import detect, exchanges_from_export, load_export

    data = load_export(Path(path).expanduser())
    source = detect(data)
    built = Built("chat", [], {"from": "conversations", "export": source, "file": Path(path).name})
    records = sorted(exchanges_from_export(data, source=source), key=lambda r: (r.created_at, r.id))
    for record in records:
        messages = chat_messages(record.request)
        if messages is None or not (record.response or "").strip():
            built.skip("empty turn")
            continue
        try:
            row = normalise({"messages": [*messages, {"role": "assistant", "content": record.response}]}, "chat")
        except RowError as exc:
            built.skip(str(exc))
            continue
        built.rows.append(DatasetRow(row, {"export": source, "exchange_id": record.id}))
    return built
