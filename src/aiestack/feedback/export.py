"""Finetuning datasets from feedback (AI Engineering, ch. 7-8): SFT and preference pairs as JSONL.

- **SFT** (``--format sft``): one ``{"messages": [...]}`` line per good exchange, in the chat
  format finetuning APIs and TRL's ``SFTTrainer`` read: the request's messages, then the
  assistant answer. A corrected exchange is included with the (latest) correction in place of
  the answer; an uncorrected one only when its explicit judgements average at least
  ``min_value`` (default 0.75: thumbs up, rating 4-5, score ≥ 0.75) and none is negative.
- **Preference pairs** (``--format preference``): ``{"prompt": [...], "chosen": [...],
  "rejected": [...]}`` in TRL's conversational preference format (the DPO/ORPO/KTO trainers read
  it), from three sources: a correction (chosen) against the original answer (rejected); a
  positively against a negatively judged answer to the same messages; and a regeneration: the
  answer the user kept (chosen) against the one they regenerated (rejected), when the kept one
  was not judged negatively itself.

A RAG exchange's row also carries ``"sources"``: the retrieved passages the model was given with
the messages (``[{"chunk_id", "document_id", "text"}]``, in the order retrieved), because an answer
trained on without the sources it was grounded in teaches the model to answer from nowhere. The
stored messages are the client's; how the sources were put into the prompt is the route's RAG
template, so a trainer formats them into the prompt its own way.

Both need the messages, which are stored only with content tracing on
(``tracing.content = true``). Exchanges without them are counted in
:attr:`ExportStats.missing_content` and left out; the CLI says so.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from aiestack.stores.base import ExchangeRecord
from aiestack.stores.feedback import FeedbackRecord, FeedbackStore
from aiestack.stores.prompts import PROMPT_NAME_ATTR, PROMPT_VERSION_ATTR

ExportFormat = Literal["sft", "preference"]
_PAGE = 1000


class _Exchanges(Protocol):
    def get_exchange(self, exchange_id: str) -> ExchangeRecord | None: ...


@dataclass
class ExportStats:
    """What an export found: exchanges with feedback, lines written, and what was left out why."""

    exchanges: int = 0
    written: int = 0
    missing_content: int = 0
    missing_exchange: int = 0
    by_source: dict[str, int] = field(default_factory=dict)

    def count(self, source: str) -> None:
        self.written += 1
        self.by_source[source] = self.by_source.get(source, 0) + 1


@dataclass(frozen=True, slots=True)
class _Item:
    exchange: ExchangeRecord
    messages: list[dict[str, Any]]
    answer: str
    feedback: tuple[FeedbackRecord, ...]

    @property
    def prompt_key(self) -> str:
        return hashlib.sha256(json.dumps(self.messages, sort_keys=True).encode()).hexdigest()

    @property
    def sources(self) -> list[dict[str, Any]]:
        """The retrieved passages the model was given (stored with their text under content tracing)."""
        hits = self.exchange.attributes.get("hits")
        if not isinstance(hits, list):
            return []
        return [
            {"chunk_id": h.get("chunk_id"), "document_id": h.get("document_id"), "text": h["text"]}
            for h in hits
            if isinstance(h, Mapping) and isinstance(h.get("text"), str)
        ]

    @property
    def correction(self) -> str | None:
        corrected = [f for f in self.feedback if f.correction]
        return max(corrected, key=lambda f: f.created_at).correction if corrected else None

    @property
    def explicit_values(self) -> list[float]:
        return [f.value for f in self.feedback if f.source == "explicit" and f.value is not None]

    def judged(self, min_value: float) -> Literal["good", "bad", "none"]:
        values = self.explicit_values
        if not values:
            return "bad" if any(f.source == "implicit" and f.kind != "stopped_early" for f in self.feedback) else "none"
        if min(values) < 0.5:
            return "bad"
        return "good" if sum(values) / len(values) >= min_value else "none"


def chat_messages(request: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The stored request messages as ``[{"role", "content"}]`` (text parts joined), or ``None`` if not stored."""
    stored = request.get("messages")
    if not isinstance(stored, list):
        return None
    out: list[dict[str, Any]] = []
    for message in stored:
        if not isinstance(message, Mapping):
            continue
        parts = message.get("parts")
        if isinstance(parts, list):
            text = "".join(
                str(p.get("content", p.get("response", "")))
                for p in parts
                if isinstance(p, Mapping) and p.get("type") in ("text", "tool_call_response")
            )
        else:
            text = str(message.get("content", ""))
        out.append({"role": str(message.get("role", "user")), "content": text})
    return out


def all_feedback(store: FeedbackStore, *, tenant: str | None = None, since: float | None = None) -> Iterator[FeedbackRecord]:
    """Every feedback record, newest first, read a page at a time."""
    before: float | None = None
    seen: set[str] = set()
    while True:
        page = store.list_feedback(limit=_PAGE, before=before, tenant=tenant, since=since)
        fresh = [f for f in page if f.id not in seen]
        yield from fresh
        seen.update(f.id for f in fresh)
        if len(page) < _PAGE:
            return
        if not fresh:
            return
        # ``before`` is exclusive: step just past the last timestamp so that records sharing it
        # are read again (``seen`` skips the ones already yielded) rather than lost.
        before = math.nextafter(page[-1].created_at, math.inf)


def _items(
    store: FeedbackStore, exchanges: _Exchanges, stats: ExportStats, *, tenant: str | None, since: float | None
) -> dict[str, _Item]:
    grouped: dict[str, list[FeedbackRecord]] = {}
    for record in all_feedback(store, tenant=tenant, since=since):
        grouped.setdefault(record.exchange_id, []).append(record)
    items: dict[str, _Item] = {}
    for exchange_id, records in grouped.items():
        stats.exchanges += 1
        exchange = exchanges.get_exchange(exchange_id)
        if exchange is None:
            stats.missing_exchange += 1
            continue
        messages = chat_messages(exchange.request)
        if messages is None or exchange.response is None:
            stats.missing_content += 1
            continue
        items[exchange_id] = _Item(exchange, messages, exchange.response, tuple(records))
    # The answers kept after a regeneration: needed for preference pairs, feedback or not.
    kept = {str(f.detail.get("by")) for i in items.values() for f in i.feedback if f.kind == "regenerated"}
    for exchange_id in sorted(kept - set(items)):
        exchange = exchanges.get_exchange(exchange_id)
        messages = chat_messages(exchange.request) if exchange is not None else None
        if exchange is not None and messages is not None and exchange.response is not None:
            items[exchange_id] = _Item(exchange, messages, exchange.response, ())
    return items


def sft_rows(items: Mapping[str, _Item], stats: ExportStats, *, min_value: float, metadata: bool) -> Iterator[dict[str, Any]]:
    for item in sorted(items.values(), key=lambda i: (i.exchange.created_at, i.exchange.id)):
        correction = item.correction
        if correction is not None:
            answer, source = correction, "correction"
        elif item.judged(min_value) == "good":
            answer, source = item.answer, "rated"
        else:
            continue
        row: dict[str, Any] = {"messages": [*item.messages, {"role": "assistant", "content": answer}]}
        if item.sources:
            row["sources"] = item.sources
        if metadata:
            row["metadata"] = _metadata(item, source)
        stats.count(source)
        yield row


def preference_rows(
    items: Mapping[str, _Item], stats: ExportStats, *, min_value: float, metadata: bool, max_pairs_per_prompt: int = 4
) -> Iterator[dict[str, Any]]:
    seen: set[tuple[str, str, str]] = set()

    def pair(item: _Item, chosen: str, rejected: str, source: str) -> dict[str, Any] | None:
        key = (item.prompt_key, chosen, rejected)
        if chosen.strip() == rejected.strip() or key in seen:
            return None
        seen.add(key)
        row: dict[str, Any] = {
            "prompt": item.messages,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
        }
        if item.sources:
            row["sources"] = item.sources
        if metadata:
            row["metadata"] = _metadata(item, source)
        stats.count(source)
        return row

    ordered = sorted(items.values(), key=lambda i: (i.exchange.created_at, i.exchange.id))
    for item in ordered:  # corrections against the answers they correct
        correction = item.correction
        if correction is not None and (row := pair(item, correction, item.answer, "correction")) is not None:
            yield row
    by_prompt: dict[str, list[_Item]] = {}
    for item in ordered:
        by_prompt.setdefault(item.prompt_key, []).append(item)
    for group in by_prompt.values():  # judged good against judged bad, same messages
        good = [i for i in group if i.judged(min_value) == "good"]
        bad = [i for i in group if i.judged(min_value) == "bad" and i.correction is None]
        made = 0
        for g in good:
            for b in bad:
                if made < max_pairs_per_prompt and (row := pair(g, g.answer, b.answer, "judged")) is not None:
                    made += 1
                    yield row
    for item in ordered:  # the answer kept against the one regenerated
        for signal in item.feedback:
            if signal.kind != "regenerated":
                continue
            kept = items.get(str(signal.detail.get("by", "")))
            if kept is None or kept.prompt_key != item.prompt_key or kept.judged(min_value) == "bad":
                continue
            if any(f.kind == "regenerated" for f in kept.feedback):
                continue  # that one was regenerated too: only the last answer counts as kept
            if (row := pair(item, kept.answer, item.answer, "regeneration")) is not None:
                yield row


def _metadata(item: _Item, source: str) -> dict[str, Any]:
    ex = item.exchange
    return {
        "exchange_id": ex.id,
        "source": source,
        "route": ex.route,
        "model": ex.model,
        "prompt": ex.attributes.get(PROMPT_NAME_ATTR),
        "prompt_version": ex.attributes.get(PROMPT_VERSION_ATTR),
        "feedback_ids": sorted(f.id for f in item.feedback),
    }


def feedback_rows(
    store: FeedbackStore,
    exchanges: _Exchanges,
    *,
    format: ExportFormat,
    min_value: float = 0.75,
    tenant: str | None = None,
    since: float | None = None,
    metadata: bool = False,
    keep: Callable[[ExchangeRecord], bool] | None = None,
) -> tuple[Iterator[dict[str, Any]], ExportStats]:
    """The dataset's rows (a lazy iterator; ``stats`` is complete once it is exhausted), from the
    exchanges that have feedback and pass ``keep``."""
    stats = ExportStats()
    items = _items(store, exchanges, stats, tenant=tenant, since=since)
    if keep is not None:
        items = {k: i for k, i in items.items() if keep(i.exchange)}
    if format == "sft":
        return sft_rows(items, stats, min_value=min_value, metadata=metadata), stats
    if format == "preference":
        return preference_rows(items, stats, min_value=min_value, metadata=metadata), stats
    raise ValueError(f"unknown export format {format!r}; use 'sft' or 'preference'")


def export_feedback(
    store: FeedbackStore,
    exchanges: _Exchanges,
    out: Any,
    *,
    format: ExportFormat,
    min_value: float = 0.75,
    tenant: str | None = None,
    since: float | None = None,
    metadata: bool = False,
) -> ExportStats:
    """Write the JSONL dataset to ``out`` (a text stream); return what was found and left out."""
    rows, stats = feedback_rows(
        store, exchanges, format=format, min_value=min_value, tenant=tenant, since=since, metadata=metadata
    )
    for row in rows:
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return stats


def formats() -> Sequence[str]:
    return ("sft", "preference")
