"""The lexical verifier: near misses are turned down with the reason, paraphrases pass."""

from __future__ import annotations

import pytest

from aiestack.cache.verify import LexicalVerifier, parse

pytestmark = pytest.mark.unit

VERIFY = LexicalVerifier(substitution_margin=0.06)


def check(a: str, b: str, similarity: float = 0.95, threshold: float = 0.85) -> str | None:
    return VERIFY(a, b, similarity=similarity, threshold=threshold)


@pytest.mark.parametrize(
    ("a", "b", "reason"),
    [
        ("Is aspirin safe during pregnancy?", "Is aspirin not safe during pregnancy?", "negation"),
        ("Why does my laptop turn on?", "Why doesn't my laptop turn on?", "negation"),
        ("How do I log in with my email?", "How do I log in without my email?", "negation"),
        ("What is 15% of 200?", "What is 20% of 200?", "number"),
        ("Give me a recipe for four people", "Give me a recipe for 8 people", "number"),
        ("What is the first law of thermodynamics?", "What is the second law of thermodynamics?", "number"),
        ("How many miles is a marathon?", "How many kilometers is a marathon?", "unit"),
        ("Is the store open today?", "Is the store open tomorrow?", "unit"),
        ("What is the capital of Australia?", "What is the capital of Austria?", "entity"),
        ("How do I reset my iPhone?", "How do I reset my iPad?", "entity"),
        ("Flights from Boston to Denver", "Flights from Denver to Boston", "direction"),
        ("Is Python faster than Java?", "Is Java faster than Python?", "direction"),
        ("How do I enable cookies in Chrome?", "How do I disable cookies in Chrome?", "antonym"),
        ("What is the cheapest plan?", "What is the most expensive plan?", "antonym"),
    ],
)
def test_near_misses_are_rejected_with_their_reason(a: str, b: str, reason: str) -> None:
    assert check(a, b) == reason
    assert check(b, a) == reason  # symmetric


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("How do I reset my password?", "How can I reset my password?"),
        ("What is the capital of France?", "what's the capital city of france"),
        ("How long does shipping take?", "How long will shipping take?"),
        ("Flights from Paris to London", "flights to London from Paris"),
        ("What is the distance between Paris and London?", "How far is London from Paris?"),
        ("Can I return an item after 30 days?", "Is it possible to return an item after thirty days?"),
        ("Why can't I log in?", "Why am I unable to log in?"),
    ],
)
def test_paraphrases_pass(a: str, b: str) -> None:
    assert check(a, b) is None


def test_a_swapped_content_word_needs_the_margin_above_the_threshold() -> None:
    a, b = "How do I restart my router?", "How do I restart my modem?"
    assert check(a, b, similarity=0.88, threshold=0.85) == "substitution"
    assert check(a, b, similarity=0.92, threshold=0.85) is None


def test_may_the_verb_is_not_may_the_month() -> None:
    assert parse("May I pay by card?").units == frozenset()
    assert parse("What events are in May?").units == {"may"}


def test_custom_antonyms_extend_the_list() -> None:
    verifier = LexicalVerifier(antonyms=["advantages disadvantages"])
    a, b = "What are the advantages of remote work?", "What are the disadvantages of remote work?"
    assert verifier(a, b, similarity=0.99, threshold=0.85) == "antonym"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("what is the capital of austria", "what is the capital of australia"),  # lower case
        ("Austria: what is its population?", "Australia: what is its population?"),  # sentence start
        ("Iran oil exports in 2023", "Iraq oil exports in 2023"),
        ("is niger a member of opec", "is nigeria a member of opec"),  # one name inside the other
        ("what is the context window of gemma", "what is the context window of gemini"),
        ("who founded samsung", "who founded samsonite"),
        ("what is jon stewart's net worth", "what is john stewart's net worth"),
        ("Slovenia visa rules for students", "Slovakia visa rules for students"),
    ],
)
def test_a_name_swapped_for_one_spelled_alike_is_rejected_even_at_high_similarity(a: str, b: str) -> None:
    assert check(a, b, similarity=0.98) == "lookalike"
    assert check(b, a, similarity=0.98) == "lookalike"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("Sweden tax rules for freelancers", "Swaziland tax rules for freelancers"),  # first in the sentence
        ("flights from spain to peru in june", "flights from spain to chile in june"),  # lower case
        ("What is France's national dish?", "What is Italy's national dish?"),
    ],
)
def test_one_country_swapped_for_another_is_an_entity_change_in_any_case_and_position(a: str, b: str) -> None:
    assert check(a, b, similarity=0.99) == "entity"
    assert check("What is the capital of France?", "What's France's capital city?", similarity=0.99) is None


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What colour is the sky on Mars?", "What color is the sky on Mars?"),  # spelling variants
        ("How do I organise my files?", "How do I organize my files?"),
        ("How do I cancel my order?", "How do I cancel my orders?"),  # inflection
        ("Where is the theatre?", "Where is the theater?"),
    ],
)
def test_spelling_variants_and_inflections_are_not_lookalikes(a: str, b: str) -> None:
    assert check(a, b, similarity=0.98) is None


def test_a_verifier_remembers_each_texts_parse_and_decides_as_a_fresh_one() -> None:
    """Parses are remembered per verifier (a question meets several candidates; a cached question is a
    candidate again and again): the same verdicts as a verifier that has seen nothing, fewer parses."""
    from aiestack.cache.verify import PARSED_REMEMBERED

    pairs = [
        ("Is aspirin safe during pregnancy?", "Is aspirin not safe during pregnancy?"),
        ("Is aspirin safe during pregnancy?", "Is aspirin safe when pregnant?"),
        ("What is the capital of Australia?", "What is the capital of Austria?"),
        ("How do I reset my router?", "How do I reset my modem?"),
        ("How do I reset my router?", "How can I reset my router?"),
    ]
    verifier = LexicalVerifier()
    first = [verifier(a, b, similarity=0.9, threshold=0.85) for a, b in pairs]
    again = [verifier(a, b, similarity=0.9, threshold=0.85) for a, b in pairs]
    fresh = [LexicalVerifier()(a, b, similarity=0.9, threshold=0.85) for a, b in pairs]
    assert first == again == fresh and "negation" in first and None in first
    info = verifier._parse.cache_info()
    assert info.misses == len({t for pair in pairs for t in pair}) and info.hits == 2 * 2 * len(pairs) - info.misses
    assert info.maxsize == PARSED_REMEMBERED
    assert verifier._parse("Is aspirin safe?") == parse("Is aspirin safe?")
