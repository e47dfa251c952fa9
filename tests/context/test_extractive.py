"""The extractive fallback: an unusable RAG answer gets quoted source sentences with citations, labelled."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aiestack.context.extractive import LABEL, extractive_answer, usable, with_fallback
from aiestack.streams import collect
from aiestack.types import Chunk, Completion, Delta, Hit, Message

pytestmark = pytest.mark.unit

QUESTION = "How do I revoke an API key?"


def hits() -> list[Hit]:
    return [
        Hit(Chunk("c1", "d1", "## Search\n\nEach hit shows its rank, score and source. Three retrieval modes exist.", 0, {}), 2.0, "hybrid"),
        Hit(Chunk("c2", "d2", "## Virtual keys\n\n```bash\naiestack keys create --tenant acme\naiestack keys revoke KEY_ID\n```\nA revoked key stops working within five seconds [1].", 0, {}), 1.0, "hybrid"),
    ]


def test_empty_copied_or_number_only_answers_are_not_usable() -> None:
    assert not usable("", QUESTION, hits())
    assert not usable("   \n", QUESTION, hits())
    assert not usable("[6]\n[7]\n[8]", QUESTION, hits())
    assert not usable("On Sundays the museum closes at 1 pm [1].", QUESTION, hits())  # the prompt's example
    looping = "You can revoke an API key with the `KEY_ID` field in the" + " `KEY_ID` field in the" * 5
    assert not usable(looping, QUESTION, hits())  # a model caught in a loop
    assert usable("Run aiestack keys revoke KEY_ID [2].", QUESTION, hits())


def test_the_extractive_answer_quotes_the_best_sentences_with_their_numbers() -> None:
    answer = extractive_answer(QUESTION, hits())
    first = answer.splitlines()[0]
    assert first == "aiestack keys revoke KEY_ID [2]"  # most question words, shortest first
    assert "[1]" not in answer.replace("[2]", "")  # a citation inside a source's text is not copied
    assert extractive_answer("Unrelated words only", hits()) == ""


async def test_a_usable_answer_is_left_alone() -> None:
    done = Completion(message=Message("assistant", "Run aiestack keys revoke KEY_ID [2]."), model="m", provider="p", finish_reason="stop")
    out, used = with_fallback(done, QUESTION, hits())
    assert out is done and used is False


async def test_an_empty_answer_becomes_a_labelled_extractive_one() -> None:
    done = Completion(message=Message("assistant", ""), model="m", provider="p", finish_reason="stop")
    out, used = with_fallback(done, QUESTION, hits())
    assert used is True
    assert out.text.startswith(LABEL) and "aiestack keys revoke KEY_ID [2]" in out.text


async def test_a_stream_keeps_its_deltas_and_gets_the_extractive_part_before_the_final_delta() -> None:
    async def stream() -> AsyncIterator[Delta]:
        yield Delta(text="The museum")
        yield Delta(text=" closes at 1 pm.")
        yield Delta(finish_reason="stop")

    head = Completion(message=Message("assistant", ""), model="m", provider="p", stream=stream())
    out, used = with_fallback(head, QUESTION, hits())
    assert used is None  # known only at the end
    final = await collect(out)
    assert final.finish_reason == "stop"
    assert final.text.startswith("The museum closes at 1 pm.\n\n" + LABEL + "\n")
    assert "aiestack keys revoke KEY_ID [2]" in final.text
