"""Conformance tests for feedback, conversation turns and prompts, as mixins for store backends.

Use them like :mod:`aiestack.testing.conformance`: subclass in a ``Test*`` class and provide a
``store`` fixture yielding a migrated, empty store that is also an exchange store::

    class TestMyStore(FeedbackStoreConformance, PromptStoreConformance):
        @pytest.fixture
        def store(self): ...
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from aiestack.stores.base import ExchangeRecord
from aiestack.stores.feedback import (
    FeedbackRecord,
    FeedbackStore,
    PendingFeedback,
    PendingFeedbackStore,
    TurnRecord,
)
from aiestack.stores.prompts import PROMPT_NAME_ATTR, PROMPT_VERSION_ATTR, PromptStore

UNICODE = "Grüße, 世界! — emoji 🚀 and a quote ' and \" and a backslash \\"
BASE = 1_750_000_000.0  # 2025-06-15T15:06:40Z
DAY = 86_400.0


def feedback(feedback_id: str = "fb_1", **changes: Any) -> FeedbackRecord:
    """A feedback record with every field set to a value other than its default."""
    record = FeedbackRecord(
        id=feedback_id,
        exchange_id="ex_1",
        created_at=BASE + 0.123456,
        kind="thumbs",
        source="explicit",
        tenant="acme",
        key_id="key_1",
        user="user-7",
        route="support",
        prompt="support-system",
        prompt_version=3,
        value=1.0,
        thumbs=1,
        rating=5,
        score=0.875,
        comment=UNICODE,
        correction="The right answer is 42.",
        tags=("helpful", "fast"),
        detail={"by": "ex_2", "nested": {"n": [1, 2.5, None]}},
    )
    return dataclasses.replace(record, **changes)


def turn(exchange_id: str, conversation: str, turn_hash: str, at: float, **changes: Any) -> TurnRecord:
    return dataclasses.replace(
        TurnRecord(exchange_id=exchange_id, conversation=conversation, turn=turn_hash, created_at=at), **changes
    )


class FeedbackStoreConformance:
    """What every :class:`~aiestack.stores.feedback.FeedbackStore` guarantees."""

    def test_is_a_feedback_store(self, store: Any) -> None:
        assert isinstance(store, FeedbackStore)

    def test_every_field_round_trips(self, store: FeedbackStore) -> None:
        record = feedback()
        store.write_feedback([record])
        assert store.get_feedback("fb_1") == record

    def test_defaults_round_trip(self, store: FeedbackStore) -> None:
        record = FeedbackRecord(id="fb_min", exchange_id="ex_9", created_at=BASE, kind="comment")
        store.write_feedback([record])
        assert store.get_feedback("fb_min") == record
        assert store.get_feedback("fb_missing") is None

    def test_writing_again_replaces(self, store: FeedbackStore) -> None:
        store.write_feedback([feedback(), feedback(comment="first")])  # the last of a batch wins
        assert store.get_feedback("fb_1").comment == "first"  # type: ignore[union-attr]
        store.write_feedback([feedback(comment="second")])
        assert [r.comment for r in store.list_feedback()] == ["second"]

    def test_list_is_newest_first_with_paging_and_filters(self, store: FeedbackStore) -> None:
        records = [
            feedback("fb_a", created_at=BASE + 1, exchange_id="ex_1", route="r1", source="explicit"),
            feedback("fb_b", created_at=BASE + 2, exchange_id="ex_2", route="r2", source="implicit", kind="regenerated"),
            feedback("fb_c", created_at=BASE + 2, exchange_id="ex_1", route="r1", tenant="other"),
            feedback("fb_d", created_at=BASE + 3, exchange_id="ex_3", route="r1", prompt_version=4),
        ]
        store.write_feedback(records)
        assert [r.id for r in store.list_feedback()] == ["fb_d", "fb_c", "fb_b", "fb_a"]
        assert [r.id for r in store.list_feedback(limit=2)] == ["fb_d", "fb_c"]
        assert [r.id for r in store.list_feedback(before=BASE + 2)] == ["fb_a"]
        assert [r.id for r in store.list_feedback(since=BASE + 2)] == ["fb_d", "fb_c", "fb_b"]
        assert [r.id for r in store.list_feedback(exchange_id="ex_1")] == ["fb_c", "fb_a"]
        assert [r.id for r in store.list_feedback(route="r2")] == ["fb_b"]
        assert [r.id for r in store.list_feedback(tenant="other")] == ["fb_c"]
        assert [r.id for r in store.list_feedback(source="implicit")] == ["fb_b"]
        assert [r.id for r in store.list_feedback(kind="regenerated")] == ["fb_b"]
        assert [r.id for r in store.list_feedback(prompt="support-system", prompt_version=4)] == ["fb_d"]
        with pytest.raises(ValueError):
            store.list_feedback(limit=0)

    def test_summary_by_route_and_prompt_version(self, store: FeedbackStore) -> None:
        store.write_feedback(
            [
                feedback("f1", route="r1", prompt_version=1, value=1.0, correction=None, source="explicit"),
                feedback("f2", route="r1", prompt_version=1, value=0.0, correction=None, source="implicit"),
                feedback("f3", route="r1", prompt_version=2, value=0.75, correction="fixed"),
                feedback("f4", route=None, prompt=None, prompt_version=None, value=None, correction=None),
            ]
        )
        by_route = store.feedback_summary(by=("route",))
        assert [(r.route, r.count, r.positive, r.negative, r.corrections, r.implicit) for r in by_route] == [
            (None, 1, 0, 0, 0, 0),
            ("r1", 3, 2, 1, 1, 1),
        ]
        assert by_route[0].mean_value is None and by_route[0].positive_rate is None
        assert by_route[1].mean_value == pytest.approx(1.75 / 3)
        assert by_route[1].positive_rate == pytest.approx(2 / 3)
        versions = store.feedback_summary(by=("prompt", "prompt_version"))
        assert [(r.prompt, r.prompt_version, r.count) for r in versions] == [
            (None, None, 1),
            ("support-system", 1, 2),
            ("support-system", 2, 1),
        ]
        total = store.feedback_summary(by=())
        assert len(total) == 1 and total[0].count == 4 and total[0].route is None

    def test_summary_filters_and_days(self, store: FeedbackStore) -> None:
        midnight = 1_750_032_000.0  # 2025-06-16T00:00:00Z
        store.write_feedback(
            [
                feedback("f1", created_at=midnight - 1, source="explicit"),
                feedback("f2", created_at=midnight, source="implicit"),
                feedback("f3", created_at=midnight + 5, tenant="other"),
            ]
        )
        days = store.feedback_summary(by=("day",))
        assert [(r.day, r.count) for r in days] == [("2025-06-15", 1), ("2025-06-16", 2)]
        assert [r.count for r in store.feedback_summary(by=(), since=midnight, until=midnight + 5)] == [1]
        assert [r.count for r in store.feedback_summary(by=(), tenant="other")] == [1]
        assert [r.count for r in store.feedback_summary(by=(), source="implicit")] == [1]
        assert store.feedback_summary(by=(), since=midnight + 100) == []
        with pytest.raises(ValueError):
            store.feedback_summary(by=("color",))  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            store.feedback_summary(by=("route", "route"))

    def test_feedback_counts_per_exchange(self, store: FeedbackStore) -> None:
        store.write_feedback(
            [
                feedback("f1", exchange_id="ex_1", value=1.0),
                feedback("f2", exchange_id="ex_1", value=0.0, source="implicit"),
                feedback("f3", exchange_id="ex_2", value=1.0, correction=None),
            ]
        )
        counts = store.feedback_counts(["ex_1", "ex_2", "ex_3"])
        assert set(counts) == {"ex_1", "ex_2"}
        assert (counts["ex_1"].count, counts["ex_1"].positive, counts["ex_1"].negative, counts["ex_1"].implicit) == (2, 1, 1, 1)
        assert counts["ex_2"].corrections == 0
        assert store.feedback_counts([]) == {}

    def test_turns_round_trip_and_are_found_newest_first(self, store: FeedbackStore) -> None:
        full = turn("ex_1", "c1", "t1", BASE, tenant="acme", route="r", prompt="p", prompt_version=2, answer="a1")
        store.write_turns(
            [full, turn("ex_2", "c1", "t2", BASE + 2), turn("ex_3", "c2", "t1", BASE + 1), turn("ex_4", "c1", "t1", BASE + 3)]
        )
        assert [t.exchange_id for t in store.find_turns(conversation="c1")] == ["ex_4", "ex_2", "ex_1"]
        assert [t.exchange_id for t in store.find_turns(turn="t1")] == ["ex_4", "ex_3", "ex_1"]
        assert [t.exchange_id for t in store.find_turns(conversation="c1", turn="t1")] == ["ex_4", "ex_1"]
        assert [t.exchange_id for t in store.find_turns(conversation="c1", since=BASE + 2)] == ["ex_4", "ex_2"]
        assert [t.exchange_id for t in store.find_turns(conversation="c1", limit=1)] == ["ex_4"]
        assert store.find_turns(turn="t1", conversation="c1")[-1] == full
        store.write_turns([dataclasses.replace(full, answer="a2")])
        assert store.find_turns(conversation="c1")[-1].answer == "a2"
        with pytest.raises(ValueError):
            store.find_turns()
        assert store.prune_turns(BASE + 2) == 2  # ex_1 and ex_3
        assert sorted(t.exchange_id for t in store.find_turns(conversation="c1")) == ["ex_2", "ex_4"]
        assert store.find_turns(turn="t1", conversation="c2") == []
        assert store.prune_turns(BASE) == 0


def pending(item_id: str, at: float, **changes: Any) -> PendingFeedback:
    """A pending feedback item with every field set."""
    body = {"kind": "thumbs", "value": 0.0, "thumbs": -1, "comment": UNICODE, "tags": ["a", "b"], "user": None}
    item = PendingFeedback(id=item_id, exchange_id="ex_9", created_at=at, tenant="acme", key_id="key_1", body=body)
    return dataclasses.replace(item, **changes)


class PendingFeedbackStoreConformance:
    """What every :class:`~aiestack.stores.feedback.PendingFeedbackStore` guarantees."""

    def test_is_a_pending_feedback_store(self, store: Any) -> None:
        assert isinstance(store, PendingFeedbackStore)

    def test_items_round_trip_oldest_first(self, store: PendingFeedbackStore) -> None:
        admin = pending("fb_3", BASE + 0.5, tenant=None, key_id=None, body={"kind": "score", "score": 0.25})
        store.write_pending_feedback([pending("fb_2", BASE + 1), admin, pending("fb_1", BASE + 1)])
        assert store.list_pending_feedback() == [admin, pending("fb_1", BASE + 1), pending("fb_2", BASE + 1)]
        assert [i.id for i in store.list_pending_feedback(limit=1)] == ["fb_3"]
        store.write_pending_feedback([pending("fb_1", BASE + 1, exchange_id="ex_8")])  # same id: replaced
        assert [i.exchange_id for i in store.list_pending_feedback()] == ["ex_9", "ex_8", "ex_9"]
        with pytest.raises(ValueError):
            store.list_pending_feedback(limit=0)

    def test_settling_stores_records_and_removes_items_once(self, store: Any) -> None:
        store.write_pending_feedback([pending("fb_1", BASE), pending("fb_2", BASE + 1), pending("fb_3", BASE + 2)])
        record = feedback("fb_1", exchange_id="ex_9")
        store.settle_pending_feedback([record], ["fb_3"])
        assert [i.id for i in store.list_pending_feedback()] == ["fb_2"]
        assert store.get_feedback("fb_1") == record and store.get_feedback("fb_3") is None
        store.settle_pending_feedback([record], ["fb_3"])  # another process settled the same items
        assert store.list_feedback(exchange_id="ex_9") == [record]
        assert [i.id for i in store.list_pending_feedback()] == ["fb_2"]
        store.settle_pending_feedback([], [])
        assert [i.id for i in store.list_pending_feedback()] == ["fb_2"]


class PromptStoreConformance:
    """What every :class:`~aiestack.stores.prompts.PromptStore` guarantees."""

    def test_is_a_prompt_store(self, store: Any) -> None:
        assert isinstance(store, PromptStore)

    def test_versions_are_numbered_and_identical_pushes_are_no_ops(self, store: PromptStore) -> None:
        v1, new1 = store.push_prompt("support", "Hello {{ name }}", variables=["name"], created_at=BASE, message="first", metadata={"a": 1})
        same, new_again = store.push_prompt("support", "Hello {{ name }}", created_at=BASE + 1)
        v2, new2 = store.push_prompt("support", f"Hi {{{{ name }}}} {UNICODE}", created_at=BASE + 2)
        v3, new3 = store.push_prompt("support", "Hello {{ name }}", created_at=BASE + 3)  # a revert is a new version
        other, _ = store.push_prompt("other", "x", created_at=BASE + 4)
        assert (v1.version, new1, same.version, new_again, v2.version, new2, v3.version, new3) == (1, True, 1, False, 2, True, 3, True)
        assert other.version == 1
        assert v1.variables == ("name",) and v1.message == "first" and dict(v1.metadata) == {"a": 1}
        assert len(v1.content_hash) == 64 and v1.content_hash == v3.content_hash != v2.content_hash
        assert store.get_prompt("support") == v3
        assert store.get_prompt("support", 1) == v1
        assert store.get_prompt("support", 2) == v2
        assert store.get_prompt("support", 9) is None and store.get_prompt("nope") is None
        assert [v.version for v in store.prompt_versions("support")] == [1, 2, 3]
        assert store.prompt_versions("nope") == []

    def test_labels_move_and_resolve(self, store: PromptStore) -> None:
        store.push_prompt("support", "one", created_at=BASE)
        store.push_prompt("support", "two", created_at=BASE + 1)
        store.set_label("support", "production", 1, at=BASE + 2)
        store.set_label("support", "staging", 2, at=BASE + 3)
        assert store.resolve_label("support", "production").template == "one"  # type: ignore[union-attr]
        assert store.resolve_label("support", "latest").template == "two"  # type: ignore[union-attr]
        moved = store.set_label("support", "production", 2, at=BASE + 4)
        assert (moved.version, moved.updated_at) == (2, BASE + 4)
        assert store.resolve_label("support", "production").template == "two"  # type: ignore[union-attr]
        assert [(lb.label, lb.version) for lb in store.prompt_labels("support")] == [("production", 2), ("staging", 2)]
        assert store.resolve_label("support", "canary") is None
        with pytest.raises(KeyError):
            store.set_label("support", "production", 7, at=BASE)
        with pytest.raises(KeyError):
            store.set_label("ghost", "production", 1, at=BASE)

    def test_list_prompts(self, store: PromptStore) -> None:
        assert store.list_prompts() == []
        store.push_prompt("b-prompt", "one", created_at=BASE)
        store.push_prompt("b-prompt", "two", created_at=BASE + 5)
        store.push_prompt("a-prompt", "x", created_at=BASE + 1)
        store.set_label("b-prompt", "production", 1, at=BASE + 6)
        listed = store.list_prompts()
        assert [(s.name, s.latest_version, s.created_at, s.updated_at, dict(s.labels)) for s in listed] == [
            ("a-prompt", 1, BASE + 1, BASE + 1, {}),
            ("b-prompt", 2, BASE, BASE + 5, {"production": 1}),
        ]

    def test_concurrent_pushes_never_reuse_a_number(self, store: PromptStore) -> None:
        errors: list[BaseException] = []

        def push(i: int) -> None:
            try:
                store.push_prompt("busy", f"template {i}", created_at=BASE + i)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=push, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        versions = store.prompt_versions("busy")
        assert sorted(v.version for v in versions) == [1, 2, 3, 4]
        assert sorted(v.template for v in versions) == [f"template {i}" for i in range(4)]

    def test_usage_counts_come_from_exchange_attributes(self, store: Any) -> None:
        def ex(i: int, name: str | None, version: int | None, at: float) -> ExchangeRecord:
            attributes: dict[str, Any] = {}
            if name is not None:
                attributes = {PROMPT_NAME_ATTR: name, PROMPT_VERSION_ATTR: version}
            return ExchangeRecord(id=f"ex_{i}", created_at=at, model="m", outcome="ok", attributes=attributes)

        store.write_exchanges(
            [
                ex(1, "support", 1, BASE),
                ex(2, "support", 2, BASE + 1),
                ex(3, "support", 2, BASE + 2),
                ex(4, "other", 2, BASE + 3),
                ex(5, None, None, BASE + 4),
            ]
        )
        assert store.prompt_usage("support") == {1: 1, 2: 2}
        assert store.prompt_usage("support", since=BASE + 1) == {2: 2}
        assert store.prompt_usage("nope") == {}
        assert store.prompt_usage_all() == {"support": {1: 1, 2: 2}, "other": {2: 1}}
        assert store.prompt_usage_all(since=BASE + 3) == {"other": {2: 1}}
