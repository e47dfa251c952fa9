"""Conformance tests for dataset stores, as a mixin for store backends.

Use it like :mod:`aiestack.testing.conformance`: subclass in a ``Test*`` class and provide a
``store`` fixture yielding a migrated, empty store::

    class TestMyStore(DatasetStoreConformance):
        @pytest.fixture
        def store(self): ...
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from aiestack.stores.datasets import DatasetRow, DatasetStore

UNICODE = "Grüße, 世界! — emoji 🚀 and a quote ' and \" and a backslash \\"
BASE = 1_750_000_000.0


def chat_row(question: str, answer: str, **lineage: Any) -> DatasetRow:
    data = {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
    return DatasetRow(data=data, lineage=lineage)


ROWS = [
    chat_row("What is 2 + 2?", "4", exchange_id="ex_1", feedback_ids=["fb_1"]),
    chat_row(UNICODE, "Hallo", exchange_id="ex_2", nested={"n": [1, 2.5, None]}),
    chat_row("Capital of France?", "Paris", file="seed.jsonl", line=3),
]


class DatasetStoreConformance:
    """What every :class:`~aiestack.stores.datasets.DatasetStore` guarantees."""

    def test_is_a_dataset_store(self, store: Any) -> None:
        assert isinstance(store, DatasetStore)

    def test_a_push_round_trips_every_field_and_row_in_order(self, store: DatasetStore) -> None:
        version, created = store.push_dataset(
            "support-sft", "chat", ROWS, created_at=BASE + 0.25, source={"from": "exchanges", "filters": {"route": "support"}},
            parent="seed@2", message=UNICODE,
        )
        assert created and version.version == 1 and version.rows == 3 and version.ref == "support-sft@1"
        assert store.get_dataset("support-sft") == version
        assert store.get_dataset("support-sft", 1) == version
        assert version.source == {"from": "exchanges", "filters": {"route": "support"}}
        assert version.parent == "seed@2" and version.message == UNICODE and version.created_at == BASE + 0.25
        assert store.dataset_rows("support-sft", 1) == ROWS
        assert [r.id for r in store.dataset_rows("support-sft", 1)] == [r.id for r in ROWS]

    def test_the_same_content_is_not_a_new_version(self, store: DatasetStore) -> None:
        first, _ = store.push_dataset("d", "chat", ROWS, created_at=BASE)
        relabelled = [DatasetRow(data=r.data, lineage={"other": True}) for r in ROWS]
        again, created = store.push_dataset("d", "chat", relabelled, created_at=BASE + 5)
        assert not created and again == first  # lineage is not content
        reordered, created = store.push_dataset("d", "chat", list(reversed(ROWS)), created_at=BASE + 6)
        assert created and reordered.version == 2 and reordered.content_hash != first.content_hash

    def test_versions_are_immutable_and_numbered(self, store: DatasetStore) -> None:
        store.push_dataset("d", "chat", ROWS[:1], created_at=BASE)
        store.push_dataset("d", "chat", ROWS[:2], created_at=BASE + 1)
        store.push_dataset("d", "chat", ROWS, created_at=BASE + 2)
        assert [v.version for v in store.dataset_versions("d")] == [1, 2, 3]
        assert [v.rows for v in store.dataset_versions("d")] == [1, 2, 3]
        assert store.dataset_rows("d", 1) == ROWS[:1]  # an older version still reads as it was
        assert store.get_dataset("d").version == 3  # type: ignore[union-attr]

    def test_unknown_names_and_versions(self, store: DatasetStore) -> None:
        assert store.get_dataset("nope") is None
        assert store.dataset_versions("nope") == []
        assert store.dataset_rows("nope", 1) == []
        store.push_dataset("d", "chat", ROWS, created_at=BASE)
        assert store.get_dataset("d", 9) is None
        assert store.dataset_rows("d", 9) == []

    def test_rows_page_by_offset_and_limit(self, store: DatasetStore) -> None:
        store.push_dataset("d", "chat", ROWS, created_at=BASE)
        assert store.dataset_rows("d", 1, offset=1) == ROWS[1:]
        assert store.dataset_rows("d", 1, offset=1, limit=1) == ROWS[1:2]
        assert store.dataset_rows("d", 1, offset=5) == []

    def test_an_empty_version_is_allowed(self, store: DatasetStore) -> None:
        version, created = store.push_dataset("empty", "preference", [], created_at=BASE)
        assert created and version.rows == 0 and store.dataset_rows("empty", 1) == []

    def test_list_shows_the_newest_version_of_each_by_name(self, store: DatasetStore) -> None:
        store.push_dataset("b", "chat", ROWS[:1], created_at=BASE)
        store.push_dataset("a", "chat", ROWS[:1], created_at=BASE)
        store.push_dataset("b", "chat", ROWS, created_at=BASE + 1)
        assert [(v.name, v.version) for v in store.list_datasets()] == [("a", 1), ("b", 2)]

    def test_bad_names_and_kinds_are_refused_and_store_nothing(self, store: DatasetStore) -> None:
        for name in ("", "Upper", "-dash", "has space", "x" * 200):
            with pytest.raises(ValueError, match="dataset name"):
                store.push_dataset(name, "chat", ROWS, created_at=BASE)
        with pytest.raises(ValueError, match="kind"):
            store.push_dataset("d", "sft", ROWS, created_at=BASE)  # type: ignore[arg-type]
        store.push_dataset("d", "chat", ROWS, created_at=BASE)
        with pytest.raises(ValueError, match="holds chat rows"):
            store.push_dataset("d", "preference", [], created_at=BASE)
        assert store.list_datasets()[0].ref == "d@1"

    def test_concurrent_pushes_never_share_a_number(self, store: DatasetStore) -> None:
        errors: list[BaseException] = []

        def push(i: int) -> None:
            try:
                store.push_dataset("race", "chat", [chat_row(f"q{i}", "a")], created_at=BASE + i)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=push, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        versions = store.dataset_versions("race")
        assert sorted(v.version for v in versions) == [1, 2, 3, 4]
        assert sorted(store.dataset_rows("race", v.version)[0].data["messages"][0]["content"] for v in versions) == [
            "q0", "q1", "q2", "q3",
        ]
