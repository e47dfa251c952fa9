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

Key stores and usage summaries (:class:`KeyStoreConformance`, :class:`UsageConformance`) use the
same ``store`` fixture. KV backends pass :class:`KVConformance`, which needs a ``kv`` fixture
yielding an empty KV (its tests are ``async``; they run under pytest-asyncio).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import random
from typing import Any

import numpy as np
import pytest

from aiestack.stores.base import (
    EmbeddingCacheStore,
    ExchangeRecord,
    ExchangeStore,
    KeyRecord,
    KeyStore,
    UsageRow,
    UsageStore,
)
from aiestack.stores.kv import KV
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
        guard_action="redact",
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


# --------------------------------------------------------------------------- virtual keys


def sample_key(key_id: str = "key_1", **changes: Any) -> KeyRecord:
    """A key with every field set to a value other than its default."""
    record = KeyRecord(
        id=key_id,
        tenant="acme",
        secret_hash=text_hash(f"secret of {key_id}"),
        prefix="aie-AbC123",
        created_at=1_750_000_000.25,
        name=f"name of {key_id} — ünïcode",
        rpm=60,
        tpm=100_000,
        budget_day_usd=5.5,
        budget_month_usd=100.125,
        models=("gpt-4o-mini", "support-bot"),
        revoked_at=None,
    )
    return dataclasses.replace(record, **changes)


class KeyStoreConformance:
    """The :class:`~aiestack.stores.base.KeyStore` contract. Needs a ``store`` fixture."""

    def test_is_a_key_store(self, store: KeyStore) -> None:
        assert isinstance(store, KeyStore)

    def test_key_fields_round_trip(self, store: KeyStore) -> None:
        record = sample_key(revoked_at=1_750_000_100.5)
        store.add_key(record)
        assert store.get_key(record.id) == record
        assert store.find_key(record.secret_hash) == record

    def test_key_optional_fields_round_trip_as_none(self, store: KeyStore) -> None:
        record = KeyRecord(id="key_min", tenant="t", secret_hash="h", prefix="aie-x", created_at=1.0)
        store.add_key(record)
        got = store.get_key("key_min")
        assert got == record
        assert got is not None and got.models == () and got.rpm is None and got.budget_day_usd is None

    def test_unknown_keys_are_none(self, store: KeyStore) -> None:
        assert store.get_key("key_nope") is None
        assert store.find_key(text_hash("nope")) is None

    def test_ids_and_secret_hashes_are_unique(self, store: KeyStore) -> None:
        store.add_key(sample_key("key_1"))
        with pytest.raises(ValueError):
            store.add_key(sample_key("key_1", secret_hash=text_hash("other")))
        with pytest.raises(ValueError):
            store.add_key(sample_key("key_2", secret_hash=sample_key("key_1").secret_hash))
        assert [k.id for k in store.list_keys()] == ["key_1"]

    def test_keys_list_oldest_first_and_filter(self, store: KeyStore) -> None:
        keys = [
            sample_key("key_c", created_at=30.0, tenant="t1"),
            sample_key("key_a", created_at=10.0, tenant="t2"),
            sample_key("key_b2", created_at=20.0, tenant="t1"),
            sample_key("key_b1", created_at=20.0, tenant="t1"),
        ]
        for key in keys:
            store.add_key(key)
        assert [k.id for k in store.list_keys()] == ["key_a", "key_b1", "key_b2", "key_c"]
        assert [k.id for k in store.list_keys(tenant="t1")] == ["key_b1", "key_b2", "key_c"]
        assert store.list_keys(tenant="nobody") == []

    def test_revoked_keys_are_listed_only_when_asked(self, store: KeyStore) -> None:
        store.add_key(sample_key("key_1", created_at=1.0))
        store.add_key(sample_key("key_2", created_at=2.0, secret_hash=text_hash("2")))
        revoked = store.revoke_key("key_1", at=50.0)
        assert revoked == sample_key("key_1", created_at=1.0, revoked_at=50.0)
        assert [k.id for k in store.list_keys()] == ["key_2"]
        assert [k.id for k in store.list_keys(include_revoked=True)] == ["key_1", "key_2"]
        found = store.find_key(sample_key("key_1").secret_hash)
        assert found is not None and found.revoked and found.revoked_at == 50.0

    def test_revoking_again_keeps_the_first_time(self, store: KeyStore) -> None:
        store.add_key(sample_key())
        store.revoke_key("key_1", at=50.0)
        again = store.revoke_key("key_1", at=99.0)
        assert again is not None and again.revoked_at == 50.0
        assert store.revoke_key("key_unknown", at=1.0) is None

    def test_has_keys_counts_revoked_keys_too(self, store: KeyStore) -> None:
        assert store.has_keys() is False
        store.add_key(sample_key())
        assert store.has_keys() is True
        store.revoke_key("key_1", at=2.0)
        assert store.has_keys() is True


# --------------------------------------------------------------------------- usage

#: 2025-06-15 23:59:59 UTC and the next second, 2025-06-16 00:00:00 UTC.
LAST_SECOND_OF_DAY = dt.datetime(2025, 6, 15, 23, 59, 59, tzinfo=dt.UTC).timestamp()
MIDNIGHT = LAST_SECOND_OF_DAY + 1


def usage_exchanges() -> list[ExchangeRecord]:
    """Exchanges over two keys, two tenants, two models and two UTC days (one second apart)."""

    def ex(i: int, at: float, key: str | None, tenant: str, model: str, **changes: Any) -> ExchangeRecord:
        base = dict(input_tokens=10 * i, output_tokens=i, cost_usd=0.001 * i, outcome="ok")
        return minimal_exchange(
            f"ex_{i}", created_at=at, key_id=key, tenant=tenant, model=model, **{**base, **changes}
        )

    return [
        ex(1, LAST_SECOND_OF_DAY - 3600, "key_a", "acme", "m1"),
        ex(2, LAST_SECOND_OF_DAY, "key_a", "acme", "m2", outcome="error", output_tokens=0, cost_usd=None),
        ex(3, MIDNIGHT, "key_a", "acme", "m1"),
        ex(4, MIDNIGHT + 60, "key_b", "beta", "m1"),
        ex(5, MIDNIGHT + 120, None, "default", "m2", cost_usd=None),
    ]


class UsageConformance:
    """The :class:`~aiestack.stores.base.UsageStore` contract. Needs a ``store`` fixture that is
    also an :class:`~aiestack.stores.base.ExchangeStore` (to write the exchanges summarised)."""

    @pytest.fixture
    def usage_store(self, store: Any) -> Any:
        store.write_exchanges(usage_exchanges())
        return store

    def test_is_a_usage_store(self, store: UsageStore) -> None:
        assert isinstance(store, UsageStore)

    def test_usage_by_key(self, usage_store: UsageStore) -> None:
        rows = usage_store.usage_summary(by=["key"])
        assert [r.key_id for r in rows] == [None, "key_a", "key_b"]
        none, a, b = rows
        assert (a.requests, a.input_tokens, a.output_tokens, a.errors) == (3, 60, 4, 1)
        assert a.cost_usd == pytest.approx(0.004)
        assert (b.requests, b.input_tokens, b.output_tokens, b.errors) == (1, 40, 4, 0)
        assert none.cost_usd == 0.0 and none.requests == 1  # an unknown cost adds nothing
        assert a.tenant is None and a.model is None and a.day is None

    def test_usage_by_utc_day_splits_at_midnight(self, usage_store: UsageStore) -> None:
        rows = usage_store.usage_summary(by=["day"])
        assert [(r.day, r.requests) for r in rows] == [("2025-06-15", 2), ("2025-06-16", 3)]

    def test_usage_by_several_groups_in_the_order_asked(self, usage_store: UsageStore) -> None:
        rows = usage_store.usage_summary(by=["model", "tenant"])
        assert [(r.model, r.tenant, r.requests) for r in rows] == [
            ("m1", "acme", 2),
            ("m1", "beta", 1),
            ("m2", "acme", 1),
            ("m2", "default", 1),
        ]
        rows = usage_store.usage_summary(by=["day", "key", "model"])
        assert [(r.day, r.key_id, r.model) for r in rows] == [
            ("2025-06-15", "key_a", "m1"),
            ("2025-06-15", "key_a", "m2"),
            ("2025-06-16", None, "m2"),
            ("2025-06-16", "key_a", "m1"),
            ("2025-06-16", "key_b", "m1"),
        ]

    def test_usage_with_no_groups_is_one_total(self, usage_store: UsageStore) -> None:
        (total,) = usage_store.usage_summary(by=())
        assert (total.requests, total.input_tokens, total.output_tokens, total.errors) == (5, 150, 13, 1)
        assert total.cost_usd == pytest.approx(0.008)

    def test_usage_since_is_inclusive_and_until_exclusive(self, usage_store: UsageStore) -> None:
        rows = usage_store.usage_summary(by=["day"], since=LAST_SECOND_OF_DAY, until=MIDNIGHT + 60)
        assert [(r.day, r.requests) for r in rows] == [("2025-06-15", 1), ("2025-06-16", 1)]
        assert usage_store.usage_summary(by=["key"], since=MIDNIGHT + 1000) == []

    def test_usage_of_no_exchanges_is_no_rows(self, store: UsageStore) -> None:
        assert store.usage_summary(by=["key"]) == []
        assert store.usage_summary(by=()) == []

    def test_usage_refuses_unknown_or_repeated_groups(self, store: UsageStore) -> None:
        with pytest.raises(ValueError, match="unknown"):
            store.usage_summary(by=["colour"])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="repeat"):
            store.usage_summary(by=["key", "key"])

    def test_usage_rows_are_usage_rows(self, usage_store: UsageStore) -> None:
        row = usage_store.usage_summary(by=["tenant"])[0]
        assert isinstance(row, UsageRow) and isinstance(row.requests, int) and isinstance(row.cost_usd, float)

    def test_spend_is_one_keys_known_cost_since_a_time(self, usage_store: UsageStore) -> None:
        assert usage_store.spend("key_a", since=0.0) == pytest.approx(0.004)
        assert usage_store.spend("key_a", since=MIDNIGHT) == pytest.approx(0.003)
        assert usage_store.spend("key_a", since=MIDNIGHT + 1) == 0.0
        assert usage_store.spend("key_unknown", since=0.0) == 0.0


# --------------------------------------------------------------------------- KV

#: Short enough to keep the suite fast, long enough to survive a slow CI machine's scheduling.
SHORT_TTL_S = 0.3


class KVConformance:
    """The :class:`~aiestack.stores.kv.KV` contract. Needs a ``kv`` fixture yielding an empty KV."""

    def test_is_a_kv(self, kv: KV) -> None:
        assert isinstance(kv, KV)

    async def test_counters_start_absent_and_add_up(self, kv: KV) -> None:
        assert await kv.get("c") is None
        assert await kv.incr("c") == 1
        assert await kv.incr("c", 41) == 42
        assert await kv.incr("c", -50) == -8
        assert await kv.get("c") == -8
        assert await kv.get("other") is None

    async def test_counters_hold_large_values(self, kv: KV) -> None:
        # Redis scripts compute in Lua doubles, exact to 2**53: micro-USD up to $9 billion.
        big = 2**52
        assert await kv.incr("c", big) == big
        assert await kv.incr("c", 1) == big + 1

    async def test_ttl_is_set_when_created_and_never_extended(self, kv: KV) -> None:
        await kv.incr("c", 1, ttl_s=SHORT_TTL_S)
        await asyncio.sleep(SHORT_TTL_S / 2)
        assert await kv.incr("c", 1, ttl_s=60) == 2
        await asyncio.sleep(SHORT_TTL_S / 2 + 0.1)
        assert await kv.get("c") is None
        assert await kv.incr("c", 5) == 5  # a fresh counter after expiry

    async def test_set_if_absent_seeds_once(self, kv: KV) -> None:
        assert await kv.set_if_absent("s", 100, ttl_s=60) is True
        assert await kv.set_if_absent("s", 7) is False
        assert await kv.get("s") == 100
        assert await kv.incr("s", 1) == 101
        assert await kv.set_if_absent("t", 3, ttl_s=SHORT_TTL_S) is True
        await asyncio.sleep(SHORT_TTL_S + 0.1)
        assert await kv.get("t") is None
        assert await kv.set_if_absent("t", 4) is True and await kv.get("t") == 4

    async def test_window_admits_up_to_the_limit_exactly(self, kv: KV) -> None:
        results = [await kv.window_add("w", 2, 5, 60) for _ in range(3)]
        assert [(r.allowed, r.current) for r in results] == [(True, 2), (True, 4), (False, 4)]
        assert 0 < results[2].retry_after_s <= 60
        assert (await kv.window_add("w", 1, 5, 60)).allowed  # exactly at the limit is fine
        assert not (await kv.window_add("w", 1, 5, 60)).allowed
        assert await kv.get("w") == 5

    async def test_corrections_are_always_applied(self, kv: KV) -> None:
        await kv.window_add("w", 5, 5, 60)
        refund = await kv.window_add("w", -3, 5, 60)
        assert refund.allowed and refund.current == 2
        assert (await kv.window_add("w", 3, 5, 60)).allowed

    async def test_a_request_larger_than_the_limit_is_refused_without_a_trace(self, kv: KV) -> None:
        refused = await kv.window_add("w", 6, 5, 60)
        assert not refused.allowed and refused.current == 0
        assert await kv.get("w") is None

    async def test_the_window_resets_when_it_expires(self, kv: KV) -> None:
        assert (await kv.window_add("w", 1, 1, SHORT_TTL_S)).allowed
        blocked = await kv.window_add("w", 1, 1, SHORT_TTL_S)
        assert not blocked.allowed and blocked.retry_after_s <= SHORT_TTL_S
        await asyncio.sleep(SHORT_TTL_S + 0.1)
        assert (await kv.window_add("w", 1, 1, SHORT_TTL_S)).allowed

    async def test_concurrent_callers_get_exactly_the_limit(self, kv: KV) -> None:
        results = await asyncio.gather(*(kv.window_add("w", 1, 50, 60) for _ in range(200)))
        assert sum(r.allowed for r in results) == 50
        assert await kv.get("w") == 50

    async def test_kv_delete(self, kv: KV) -> None:
        await kv.incr("a")
        await kv.incr("b")
        await kv.delete("a", "missing")
        await kv.delete()
        assert await kv.get("a") is None and await kv.get("b") == 1

    async def test_kv_ping(self, kv: KV) -> None:
        await kv.ping()
