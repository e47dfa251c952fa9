"""Conformance tests every store backend passes, as mixins a plugin's test suite subclasses.

Subclass in a test module whose class name starts with ``Test`` and provide a ``store`` fixture
that yields a migrated, empty store (and cleans it up afterwards)::

    import pytest
    from aiestack.testing.conformance import EmbeddingCacheConformance, ExchangeStoreConformance

    class TestMyStore(ExchangeStoreConformance, EmbeddingCacheConformance):
        @pytest.fixture
        def store(self, tmp_path):
            store = MyStore(tmp_path / "db")
            store.migrate()
            yield store
            store.close()

The tests pin the behaviour callers rely on, beyond the protocol's signatures: every field
round-trips exactly (``None``, unicode, nested JSON, floats), writes are idempotent, lists are
newest first with ``(created_at, id)`` descending as the tie-break, and embeddings come back as
their float32 values.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Any

import numpy as np
import pytest

from aiestack.stores.base import EmbeddingCacheStore, ExchangeRecord, ExchangeStore
from aiestack.types import SpanRecord

UNICODE_TEXT = "Grüße, 世界! Ünïcödé — emoji 🚀 and a quote ' and \" and a backslash \\"

#: Nanosecond timestamps near the present, where 64-bit integers (not 32) are needed.
BASE_NS = 1_750_000_000_000_000_000


def full_exchange(exchange_id: str = "ex_full", **changes: Any) -> ExchangeRecord:
    """An exchange with every field set to a value other than its default."""
    record = ExchangeRecord(
        id=exchange_id,
        created_at=1_750_000_000.123456,
        model="gpt-test",
        outcome="ok",
        tenant="acme",
        key_id="key_1",
        route="support-bot",
        provider="openai",
        stream=True,
        finish_reason="stop",
        error_type="provider_timeout",
        error_message=UNICODE_TEXT,
        input_tokens=1234,
        output_tokens=56,
        cached_tokens=7,
        queue_ms=0.25,
        ttft_ms=120.5,
        tpot_ms=12.125,
        total_ms=987.0625,
        cost_usd=0.000123,
        cached=True,
        trace_id="0af7651916cd43dd8448eb211c80319c",
        request={
            "model": "gpt-test",
            "params": {"temperature": 0.7, "max_tokens": 256, "stop": ["\n\n"], "seed": None},
            "messages": [{"role": "user", "content": UNICODE_TEXT}],
        },
        response=UNICODE_TEXT,
        attributes={"labels": {"team": "ml", "tier": 2}, "flags": [True, False, None], "score": -1.5},
    )
    return dataclasses.replace(record, **changes)


def minimal_exchange(exchange_id: str = "ex_min", **changes: Any) -> ExchangeRecord:
    """An exchange with only the required fields: every optional one left at its default."""
    record = ExchangeRecord(id=exchange_id, created_at=1_750_000_000.0, model="m", outcome="error")
    return dataclasses.replace(record, **changes)


def span(span_id: str, start_offset_ns: int, **changes: Any) -> SpanRecord:
    """A span of trace ``trace-a`` starting ``start_offset_ns`` after :data:`BASE_NS`."""
    record = SpanRecord(
        trace_id="trace-a",
        span_id=span_id,
        parent_id="root",
        name=f"stage {span_id}",
        start_ns=BASE_NS + start_offset_ns,
        end_ns=BASE_NS + start_offset_ns + 1_500_000,
        status="ok",
        attributes={"gen_ai.request.model": "m", "gen_ai.usage.input_tokens": 3, "note": UNICODE_TEXT},
        exchange_id="ex_1",
    )
    return dataclasses.replace(record, **changes)


class ExchangeStoreConformance:
    """The :class:`~aiestack.stores.base.ExchangeStore` contract. Needs a ``store`` fixture."""

    # ------------------------------------------------------------------ round trips

    def test_is_an_exchange_store(self, store: ExchangeStore) -> None:
        assert isinstance(store, ExchangeStore)

    def test_every_field_round_trips(self, store: ExchangeStore) -> None:
        record = full_exchange()
        defaults = minimal_exchange()
        unset = [
            f.name
            for f in dataclasses.fields(ExchangeRecord)
            if f.name != "id" and getattr(record, f.name) == getattr(defaults, f.name)
        ]
        assert unset == [], f"the sample must set every field; add a value for {unset}"
        store.write_exchanges([record])
        assert store.get_exchange(record.id) == record

    def test_defaults_and_nones_round_trip(self, store: ExchangeStore) -> None:
        record = minimal_exchange()
        store.write_exchanges([record])
        got = store.get_exchange(record.id)
        assert got == record
        assert got is not None and got.key_id is None and got.cost_usd is None and got.request == {}

    def test_get_missing_exchange_is_none(self, store: ExchangeStore) -> None:
        assert store.get_exchange("ex_does_not_exist") is None

    def test_later_changes_to_the_callers_dict_do_not_leak_in(self, store: ExchangeStore) -> None:
        attributes: dict[str, Any] = {"k": [1, 2]}
        store.write_exchanges([minimal_exchange(attributes=attributes)])
        attributes["k"].append(3)
        got = store.get_exchange("ex_min")
        assert got is not None and got.attributes == {"k": [1, 2]}

    # ------------------------------------------------------------------ idempotent writes

    def test_writing_twice_keeps_one_record(self, store: ExchangeStore) -> None:
        record = full_exchange()
        store.write_exchanges([record])
        store.write_exchanges([record])
        assert store.list_exchanges(limit=10) == [record]

    def test_a_record_with_an_existing_id_replaces_the_old_one(self, store: ExchangeStore) -> None:
        store.write_exchanges([full_exchange()])
        updated = full_exchange(outcome="error", output_tokens=0, response=None, attributes={"retried": True})
        store.write_exchanges([updated])
        assert store.get_exchange("ex_full") == updated
        assert len(store.list_exchanges(limit=10)) == 1

    def test_the_last_duplicate_in_one_batch_wins(self, store: ExchangeStore) -> None:
        first, last = minimal_exchange(outcome="error"), minimal_exchange(outcome="ok")
        store.write_exchanges([first, last])
        assert store.list_exchanges(limit=10) == [last]

    def test_empty_writes_do_nothing(self, store: ExchangeStore) -> None:
        store.write_exchanges([])
        store.write_spans([])
        assert store.list_exchanges(limit=10) == []

    # ------------------------------------------------------------------ listing

    def test_list_is_newest_first_with_id_breaking_ties(self, store: ExchangeStore) -> None:
        records = [minimal_exchange(f"ex_{i}", created_at=1000.0 + i // 2) for i in range(6)]
        store.write_exchanges(random.Random(7).sample(records, len(records)))
        got = [r.id for r in store.list_exchanges(limit=10)]
        assert got == ["ex_5", "ex_4", "ex_3", "ex_2", "ex_1", "ex_0"]

    def test_paging_with_before_visits_each_record_once(self, store: ExchangeStore) -> None:
        records = [minimal_exchange(f"ex_{i:02d}", created_at=2000.0 + i * 0.5) for i in range(11)]
        store.write_exchanges(records)
        seen: list[str] = []
        before: float | None = None
        while page := store.list_exchanges(limit=4, before=before):
            assert len(page) <= 4
            seen += [r.id for r in page]
            before = page[-1].created_at
        assert seen == [r.id for r in reversed(records)]

    def test_before_is_exclusive(self, store: ExchangeStore) -> None:
        store.write_exchanges(
            [minimal_exchange("ex_a", created_at=10.0), minimal_exchange("ex_b", created_at=20.0)]
        )
        assert [r.id for r in store.list_exchanges(before=20.0)] == ["ex_a"]
        assert store.list_exchanges(before=10.0) == []

    def test_filters_by_model_and_tenant(self, store: ExchangeStore) -> None:
        store.write_exchanges(
            [
                minimal_exchange("ex_1", created_at=1.0, model="a", tenant="t1"),
                minimal_exchange("ex_2", created_at=2.0, model="b", tenant="t1"),
                minimal_exchange("ex_3", created_at=3.0, model="a", tenant="t2"),
                minimal_exchange("ex_4", created_at=4.0, model="a", tenant="t1"),
            ]
        )
        assert [r.id for r in store.list_exchanges(model="a")] == ["ex_4", "ex_3", "ex_1"]
        assert [r.id for r in store.list_exchanges(tenant="t1")] == ["ex_4", "ex_2", "ex_1"]
        assert [r.id for r in store.list_exchanges(model="a", tenant="t1")] == ["ex_4", "ex_1"]
        assert [r.id for r in store.list_exchanges(model="a", tenant="t1", before=4.0)] == ["ex_1"]
        assert store.list_exchanges(model="nope") == []

    def test_limit_is_respected_and_must_be_positive(self, store: ExchangeStore) -> None:
        store.write_exchanges([minimal_exchange(f"ex_{i}", created_at=float(i)) for i in range(5)])
        assert [r.id for r in store.list_exchanges(limit=2)] == ["ex_4", "ex_3"]
        with pytest.raises(ValueError, match="limit"):
            store.list_exchanges(limit=0)

    # ------------------------------------------------------------------ spans

    def test_span_fields_round_trip(self, store: ExchangeStore) -> None:
        root = span("root", 0, parent_id=None, status="unset", attributes={}, exchange_id=None)
        child = span("child", 10, status="error", attributes={"nested": {"list": [1, "two", None]}, "x": 0.5})
        store.write_spans([root, child])
        assert store.spans(trace_id="trace-a") == [root, child]

    def test_spans_are_ordered_by_start(self, store: ExchangeStore) -> None:
        shuffled = [span(f"s{i}", offset) for i, offset in enumerate([50, 10, 40, 0, 30, 20])]
        store.write_spans(shuffled)
        got = store.spans(trace_id="trace-a")
        assert [s.start_ns for s in got] == sorted(s.start_ns for s in shuffled)

    def test_spans_by_exchange_and_by_trace(self, store: ExchangeStore) -> None:
        store.write_spans(
            [
                span("a1", 0, trace_id="t1", exchange_id="ex_1"),
                span("a2", 5, trace_id="t1", exchange_id="ex_1"),
                span("b1", 1, trace_id="t2", exchange_id="ex_2"),
                span("n1", 2, trace_id="t1", exchange_id=None),
            ]
        )
        assert [s.span_id for s in store.spans(exchange_id="ex_1")] == ["a1", "a2"]
        assert [s.span_id for s in store.spans(trace_id="t1")] == ["a1", "n1", "a2"]
        assert [s.span_id for s in store.spans(trace_id="t2", exchange_id="ex_2")] == ["b1"]
        assert store.spans(trace_id="t3") == []

    def test_duplicate_spans_are_ignored(self, store: ExchangeStore) -> None:
        original = span("s1", 0)
        store.write_spans([original])
        store.write_spans([span("s1", 0, name="a retried copy"), span("s2", 1)])
        assert [(s.span_id, s.name) for s in store.spans(trace_id="trace-a")] == [
            ("s1", original.name),
            ("s2", "stage s2"),
        ]

    def test_spans_need_a_trace_or_an_exchange(self, store: ExchangeStore) -> None:
        with pytest.raises(ValueError):
            store.spans()

    # ------------------------------------------------------------------ lifecycle

    def test_ping_succeeds_when_reachable(self, store: ExchangeStore) -> None:
        store.ping()  # raises StoreError if not

    def test_migrate_again_keeps_the_data(self, store: ExchangeStore) -> None:
        store.write_exchanges([full_exchange()])
        store.write_spans([span("s1", 0)])
        store.migrate()
        assert store.get_exchange("ex_full") == full_exchange()
        assert store.spans(trace_id="trace-a") == [span("s1", 0)]


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class EmbeddingCacheConformance:
    """The :class:`~aiestack.stores.base.EmbeddingCacheStore` contract. Needs a ``store`` fixture."""

    def test_is_an_embedding_cache_store(self, store: EmbeddingCacheStore) -> None:
        assert isinstance(store, EmbeddingCacheStore)

    def test_float32_vectors_round_trip_exactly(self, store: EmbeddingCacheStore) -> None:
        rng = np.random.default_rng(0)
        vectors = {
            text_hash(f"text {i}"): rng.standard_normal(384).astype(np.float32).tolist() for i in range(5)
        }
        vectors[text_hash("extremes")] = [
            float(np.float32(x)) for x in (0.0, -0.0, 1e-40, 3.4e38, -1.0, 1 / 3)
        ]
        store.put_embeddings("all-MiniLM-L6-v2", vectors)
        assert store.get_embeddings("all-MiniLM-L6-v2", list(vectors)) == vectors

    def test_values_are_stored_as_float32(self, store: EmbeddingCacheStore) -> None:
        store.put_embeddings("m", {"h": [0.1, 1 / 3]})
        got = store.get_embeddings("m", ["h"])["h"]
        assert got == [float(np.float32(0.1)), float(np.float32(1 / 3))]
        assert got != [0.1, 1 / 3]

    def test_misses_are_absent_and_models_are_separate(self, store: EmbeddingCacheStore) -> None:
        store.put_embeddings("m1", {"h1": [1.0, 2.0]})
        assert store.get_embeddings("m1", ["h1", "h2"]) == {"h1": [1.0, 2.0]}
        assert store.get_embeddings("m2", ["h1"]) == {}
        assert store.get_embeddings("m1", []) == {}

    def test_putting_again_replaces(self, store: EmbeddingCacheStore) -> None:
        store.put_embeddings("m", {"h": [1.0, 2.0]})
        store.put_embeddings("m", {"h": [3.0, 4.0, 5.0]})
        assert store.get_embeddings("m", ["h"]) == {"h": [3.0, 4.0, 5.0]}

    def test_many_hashes_in_one_call(self, store: EmbeddingCacheStore) -> None:
        vectors = {text_hash(str(i)): [float(i), float(-i)] for i in range(2500)}
        store.put_embeddings("m", vectors)
        wanted = [*vectors, "absent"]
        assert store.get_embeddings("m", wanted) == vectors
