"""What a guarded stream holds back: only text that may still change what a check finds."""

from __future__ import annotations

import pytest

from aiestack.guardrails.stream import unsettled

pytestmark = pytest.mark.unit


def _split(text: str, watch: tuple[str, ...] = ()) -> tuple[str, str]:
    n = unsettled(text, limit=64, watch=watch)
    return text[: len(text) - n], text[len(text) - n :]


@pytest.mark.parametrize(
    ("pending", "sent", "held"),
    [
        ("one two thr", "one two ", "thr"),  # prose streams a word behind the model
        ("one two three ", "one two three ", ""),
        ("call me at +1 (415) 555-01", "call me at ", "+1 (415) 555-01"),  # a phone number being written
        ("card 4111 1111 ", "card ", "4111 1111 "),  # a card number split by spaces
        ("pay to DE89 3704 00", "pay to ", "DE89 3704 00"),
        ("my name is John Sm", "my name is ", "John Sm"),  # capitalised words may form a name
        ("mail john.doe@exa", "mail ", "john.doe@exa"),
    ],
)
def test_only_what_may_still_change_is_held(pending: str, sent: str, held: str) -> None:
    assert _split(pending) == (sent, held)


def test_the_start_of_a_watched_string_is_held_even_across_words() -> None:
    assert _split("the secret is CANA", ("CANARY-abc123",)) == ("the secret is ", "CANA")
    assert _split("do not say top sec", ("top secret",)) == ("do not say ", "top sec")
    assert _split("nothing watched here ", ("top secret",)) == ("nothing watched here ", "")


def test_the_hold_is_bounded() -> None:
    word = "x" * 200
    assert unsettled(word, limit=64) == 64
