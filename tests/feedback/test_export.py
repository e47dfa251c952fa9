"""Finetuning exports: SFT lines with corrections applied, preference pairs from three sources."""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import pytest

from aiestack.feedback import ExportStats, explicit_feedback, export_feedback
from aiestack.stores.base import ExchangeRecord
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.feedback import FeedbackRecord

pytestmark = pytest.mark.unit

T0 = 1_760_000_000.0


def exchange(i: int, question: str, answer: str | None, *, content: bool = True) -> ExchangeRecord:
    request: dict[str, Any] = {"model": "m", "params": {}, "stream": False}
    if content:
        request["messages"] = [
            {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
            {"role": "user", "parts": [{"type": "text", "content": question}]},
        ]
    return ExchangeRecord(
        id=f"ex_{i}", created_at=T0 + i, model="m", outcome="ok", route="help", request=request,
        response=answer if content else None,
    )


def implicit(target: str, kind: str, by: str, at: float) -> FeedbackRecord:
    return FeedbackRecord(id=f"fbi_{target}_{kind}", exchange_id=target, created_at=at, kind=kind, source="implicit", value=0.0, detail={"by": by})


@pytest.fixture
def store() -> MemoryExchangeStore:
    store = MemoryExchangeStore()
    ex = {
        1: exchange(1, "2+2?", "4"),
        2: exchange(2, "Capital of France?", "Lyon"),
        3: exchange(3, "2+2?", "5"),
        4: exchange(4, "A joke?", "No."),
        5: exchange(5, "A joke?", "Why did the chicken cross the road?"),
        6: exchange(6, "Secret?", None, content=False),
        7: exchange(7, "Meh?", "Meh."),
        8: exchange(8, "Long?", "Very long answer"),
    }
    store.write_exchanges(list(ex.values()))
    store.write_feedback(
        [
            explicit_feedback(ex[1], thumbs="up", now=T0 + 10),
            explicit_feedback(ex[2], rating=2, correction="Paris", now=T0 + 11),
            explicit_feedback(ex[3], thumbs="down", now=T0 + 12),
            implicit("ex_4", "regenerated", "ex_5", T0 + 13),
            explicit_feedback(ex[6], thumbs="up", now=T0 + 14),
            explicit_feedback(ex[7], score=0.6, now=T0 + 15),
            implicit("ex_8", "stopped_early", "ex_8", T0 + 16),
            FeedbackRecord(id="fb_orphan", exchange_id="ex_gone", created_at=T0 + 17, kind="thumbs", value=1.0, thumbs=1),
        ]
    )
    return store


def run(store: MemoryExchangeStore, format: str, **kwargs: Any) -> tuple[list[dict[str, Any]], ExportStats]:
    out = io.StringIO()
    stats = export_feedback(store, store, out, format=format, **kwargs)  # type: ignore[arg-type]
    return [json.loads(line) for line in out.getvalue().splitlines()], stats


def test_sft_keeps_good_answers_and_applies_corrections(store: MemoryExchangeStore) -> None:
    rows, stats = run(store, "sft")
    assert rows == [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]},
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": "Paris"},
            ]
        },
    ]
    assert (stats.written, stats.by_source, stats.missing_content, stats.missing_exchange) == (2, {"rated": 1, "correction": 1}, 1, 1)
    assert stats.exchanges == 8


def test_sft_threshold_and_metadata(store: MemoryExchangeStore) -> None:
    rows, _ = run(store, "sft", min_value=0.5, metadata=True)
    assert [r["metadata"]["exchange_id"] for r in rows] == ["ex_1", "ex_2", "ex_7"]
    assert rows[1]["metadata"]["source"] == "correction" and rows[0]["metadata"]["route"] == "help"


def test_preference_pairs_from_corrections_judgements_and_regenerations(store: MemoryExchangeStore) -> None:
    rows, stats = run(store, "preference")
    pairs = [(r["prompt"][-1]["content"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows]
    assert pairs == [
        ("Capital of France?", "Paris", "Lyon"),
        ("2+2?", "4", "5"),
        ("A joke?", "Why did the chicken cross the road?", "No."),
    ]
    assert stats.by_source == {"correction": 1, "judged": 1, "regeneration": 1}
    assert all(r["chosen"][0]["role"] == r["rejected"][0]["role"] == "assistant" for r in rows)
    assert rows[0]["prompt"][0] == {"role": "system", "content": "Be brief."}


def test_a_regenerated_answer_that_was_regenerated_again_is_not_chosen(store: MemoryExchangeStore) -> None:
    store.write_exchanges([exchange(9, "A joke?", "Knock knock.")])
    store.write_feedback([implicit("ex_5", "regenerated", "ex_9", T0 + 20)])
    rows, _ = run(store, "preference")
    regenerations = [(r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in rows if r["prompt"][-1]["content"] == "A joke?"]
    assert regenerations == [("Knock knock.", "Why did the chicken cross the road?")]


def test_an_unknown_format_is_refused(store: MemoryExchangeStore) -> None:
    with pytest.raises(ValueError, match="unknown export format"):
        run(store, "csv")


def test_rag_exchanges_are_exported_with_the_sources_the_model_was_given() -> None:
    """The stored hits (as the Trace stage records them under content tracing) go with the row."""
    store = MemoryExchangeStore()
    hits = [
        {"chunk_id": "c1", "document_id": "d1", "position": 0, "score": 0.9, "retriever": "hybrid", "text": "Refunds take 5 days."},
        {"chunk_id": "c7", "document_id": "d2", "position": 3, "score": 0.4, "retriever": "hybrid", "text": "Shipping is free."},
    ]
    rag = dataclasses.replace(exchange(1, "How long do refunds take?", "Ten days."), attributes={"hits": hits})
    store.write_exchanges([rag])
    store.write_feedback([explicit_feedback(rag, thumbs="down", correction="Five days.", now=T0 + 5)])
    sources = [{"chunk_id": "c1", "document_id": "d1", "text": "Refunds take 5 days."}, {"chunk_id": "c7", "document_id": "d2", "text": "Shipping is free."}]
    rows, _ = run(store, "sft")
    assert len(rows) == 1 and rows[0]["sources"] == sources
    assert rows[0]["messages"][-1] == {"role": "assistant", "content": "Five days."}
    rows, _ = run(store, "preference")
    assert len(rows) == 1 and rows[0]["sources"] == sources and rows[0]["rejected"][0]["content"] == "Ten days."
    plain, _ = run(_plain_store(), "sft")
    assert all("sources" not in r for r in plain)


def _plain_store() -> MemoryExchangeStore:
    store = MemoryExchangeStore()
    ex = exchange(1, "2+2?", "4")
    store.write_exchanges([ex])
    store.write_feedback([explicit_feedback(ex, thumbs="up", now=T0 + 1)])
    return store
