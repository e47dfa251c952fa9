"""The one definition of "the last user turn"."""

from __future__ import annotations

import pytest

from aiestack.types import Message, last_user_index, last_user_text

pytestmark = pytest.mark.unit


def test_the_last_user_message_is_found_past_assistant_and_tool_turns() -> None:
    messages = [
        Message(role="system", content="Be brief."),
        Message(role="user", content="first"),
        Message(role="assistant", content="an answer"),
        Message(role="user", content="second"),
        Message(role="assistant", content="another"),
    ]
    assert last_user_index(messages) == 3
    assert last_user_text(messages) == "second"
    assert last_user_index(messages, before=3) == 1  # the question before an earlier answer
    assert last_user_index(messages, before=1) is None


def test_no_user_message_gives_none_and_empty_text() -> None:
    assert last_user_index([]) is None
    assert last_user_text([Message(role="system", content="x")]) == ""
