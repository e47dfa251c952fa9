"""Row shapes: what people bring is turned into the two canonical shapes, or refused with a reason."""

from __future__ import annotations

from typing import Any

import pytest

from aiestack.datasets.rows import RowError, answers, kind_of, normalise, prompt_messages

pytestmark = pytest.mark.unit

USER = {"role": "user", "content": "2+2?"}
ANSWER = {"role": "assistant", "content": "4"}


@pytest.mark.parametrize(
    "record",
    [
        {"messages": [USER, ANSWER]},
        {"prompt": "2+2?", "completion": "4"},
        {"question": "2+2?", "answer": "4"},
        {"input": "2+2?", "output": "4"},
        {"instruction": "2+2?", "output": "4"},
        {"messages": '[{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]'},  # CSV text
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "2+2?"}]}, ANSWER]},
    ],
)
def test_every_chat_shape_becomes_messages(record: dict[str, Any]) -> None:
    assert normalise(record, "chat") == {"messages": [USER, ANSWER]}


def test_alpaca_input_and_a_system_field_are_kept() -> None:
    row = normalise({"instruction": "Add.", "input": "2+2", "output": "4", "system": "Be brief."}, "chat")
    assert row["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Add.\n\n2+2"},
        ANSWER,
    ]
    assert prompt_messages(row) == row["messages"][:-1] and answers(row) == ["4"]


def test_preference_pairs_from_strings_and_messages() -> None:
    flat = normalise({"prompt": "2+2?", "chosen": "4", "rejected": "5"}, "preference")
    assert flat == {"prompt": [USER], "chosen": [ANSWER], "rejected": [{"role": "assistant", "content": "5"}]}
    assert normalise(flat, "preference") == flat  # canonical rows are a fixed point
    assert kind_of({"prompt": "x", "chosen": "a", "rejected": "b"}) == "preference"
    assert answers(flat) == ["4", "5"] and prompt_messages(flat) == [USER]


@pytest.mark.parametrize(
    ("record", "kind", "says"),
    [
        ({"text": "hello"}, "chat", "understood"),
        ({"messages": [USER]}, "chat", "end with an assistant"),
        ({"messages": [{"role": "system", "content": "s"}, ANSWER]}, "chat", "user message"),
        ({"messages": [{"role": "boss", "content": "x"}, ANSWER]}, "chat", "role"),
        ({"messages": []}, "chat", "non-empty list"),
        ({"prompt": "2+2?", "completion": "  "}, "chat", "non-empty text"),
        ({"prompt": "p", "chosen": "a", "rejected": "b"}, "chat", "--kind preference"),
        ({"prompt": "p", "chosen": "a"}, "preference", "missing rejected"),
        ({"prompt": "p", "chosen": "a", "rejected": "a"}, "preference", "teaches nothing"),
        ({"messages": "[not json"}, "chat", "not valid JSON"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}, ANSWER]}, "chat", "text content parts"),
    ],
)
def test_bad_records_say_what_is_wrong(record: dict[str, Any], kind: Any, says: str) -> None:
    with pytest.raises(RowError, match=says):
        normalise(record, kind)
