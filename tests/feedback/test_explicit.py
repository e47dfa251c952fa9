"""Explicit feedback records: normalised values, validation, the exchange's route and prompt copied in."""

from __future__ import annotations

import pytest

from aiestack.errors import InvalidRequest
from aiestack.feedback import explicit_feedback, normalised_value, thumbs_value
from aiestack.feedback import export as export_module
from aiestack.stores.base import ExchangeRecord
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.feedback import FeedbackRecord
from aiestack.stores.prompts import PROMPT_NAME_ATTR, PROMPT_VERSION_ATTR

pytestmark = pytest.mark.unit

EX = ExchangeRecord(
    id="ex_1", created_at=1.0, model="m", outcome="ok", tenant="acme", route="help",
    attributes={PROMPT_NAME_ATTR: "support", PROMPT_VERSION_ATTR: 4},
)


def test_values_are_normalised_to_zero_one() -> None:
    assert [thumbs_value(t) for t in ("up", "down", 1, -1, None)] == [1, -1, 1, -1, None]
    assert normalised_value(1, None, None) == 1.0 and normalised_value(-1, None, None) == 0.0
    assert [normalised_value(None, r, None) for r in (1, 3, 5)] == [0.0, 0.5, 1.0]
    assert normalised_value(1, 1, 0.3) == 0.3  # the most precise judgement wins
    assert normalised_value(None, None, None) is None


def test_a_record_copies_the_exchanges_route_tenant_and_prompt_version() -> None:
    record = explicit_feedback(EX, rating=4, comment=" ok ", tags=[" a", "a", "", "b"], user="u1", key_id="key_9", now=5.0)
    assert (record.kind, record.value, record.rating, record.comment, record.tags) == ("rating", 0.75, 4, "ok", ("a", "b"))
    assert (record.tenant, record.route, record.prompt, record.prompt_version) == ("acme", "help", "support", 4)
    assert (record.user, record.key_id, record.created_at, record.source) == ("u1", "key_9", 5.0, "explicit")
    assert explicit_feedback(EX, correction="Better.").kind == "correction"
    assert explicit_feedback(EX, comment="Just a note").value is None


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({}, "says nothing"),
        ({"comment": "   "}, "says nothing"),
        ({"rating": 0}, "rating"),
        ({"score": -0.1}, "score"),
        ({"thumbs": 2}, "thumbs"),
    ],
)
def test_invalid_feedback_is_refused(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(InvalidRequest, match=needle):
        explicit_feedback(EX, **kwargs)  # type: ignore[arg-type]


def test_reading_all_feedback_pages_through_equal_timestamps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_module, "_PAGE", 7)
    store = MemoryExchangeStore()
    store.write_feedback(
        [FeedbackRecord(id=f"fb_{i:03}", exchange_id="ex_1", created_at=float(i // 5), kind="comment") for i in range(40)]
    )
    ids = [f.id for f in export_module.all_feedback(store)]
    assert sorted(ids) == [f"fb_{i:03}" for i in range(40)] and len(ids) == 40
