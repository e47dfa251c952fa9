from __future__ import annotations

import pytest

from aiestack.evals.metrics import build_metric
from aiestack.evals.metrics.text import normalize_answer, token_f1

pytestmark = pytest.mark.unit


def test_squad_normalisation_drops_case_punctuation_and_articles() -> None:
    assert normalize_answer("The  Eiffel Tower, in Paris!") == "eiffel tower in paris"
    assert normalize_answer("An apple a day") == "apple day"


def test_token_f1_matches_hand_computation() -> None:
    # pred tokens: [eiffel, tower, paris]; ref: [eiffel, tower]; overlap 2 → P=2/3, R=1 → F1=0.8
    assert token_f1("the Eiffel tower, Paris", "Eiffel Tower") == pytest.approx(0.8)
    assert token_f1("", "") == 1.0
    assert token_f1("something", "") == 0.0
    assert token_f1("cat", "dog") == 0.0


async def test_exact_and_normalised_exact_match(make_sample) -> None:
    em = build_metric("exact_match", {})
    nem = build_metric("normalized_exact_match", {})
    sample = make_sample("The Paris.", "paris")
    assert (await em.score(sample)).value == 0.0
    assert (await nem.score(sample)).value == 1.0
    assert (await em.score(make_sample(" paris\n", "paris"))).value == 1.0


async def test_best_of_several_references(make_sample) -> None:
    f1 = build_metric("token_f1", {})
    score = await f1.score(make_sample("blue whale", ["elephant", "the blue whale"]))
    assert score.value == 1.0
    assert score.detail["best_reference"] == "the blue whale"


async def test_missing_reference_is_not_applicable(make_sample) -> None:
    score = await build_metric("token_f1", {}).score(make_sample("anything"))
    assert score.value is None and score.error


async def test_reference_key_reads_reference_mapping_then_metadata(make_sample) -> None:
    em = build_metric("exact_match", {"reference_key": "answer"})
    assert (await em.score(make_sample("42", {"answer": "42"}))).value == 1.0
    assert (await em.score(make_sample("42", None, metadata={"answer": "41"}))).value == 0.0


async def test_contains_and_regex(make_sample) -> None:
    contains = build_metric("contains", {})
    assert (await contains.score(make_sample("It is PARIS, France", "paris"))).value == 1.0
    fixed = build_metric("contains", {"value": "sorry", "name": "refusal"})
    assert fixed.name == "refusal"
    assert (await fixed.score(make_sample("No."))).value == 0.0
    regex = build_metric("regex", {"pattern": r"\d{4}-\d{2}-\d{2}"})
    hit = await regex.score(make_sample("on 2024-05-01 it rained"))
    assert hit.value == 1.0 and hit.detail["match"] == "2024-05-01"
    full = build_metric("regex", {"pattern": r"yes|no", "fullmatch": True, "ignore_case": True})
    assert (await full.score(make_sample(" Yes "))).value == 1.0
    assert (await full.score(make_sample("yes, indeed"))).value == 0.0


async def test_label_match_takes_the_first_label_mentioned(make_sample) -> None:
    labels = build_metric("label_match", {"labels": ["Yes", "No"]})
    first = await labels.score(make_sample("Yes. It is not a hallucination, no doubt.", "yes"))
    assert first.value == 1.0 and first.detail["predicted"] == "Yes"
    wrong = await labels.score(make_sample("No, it is made up.", "Yes"))
    assert wrong.value == 0.0
    silent = await labels.score(make_sample("I cannot tell.", "No"))
    assert silent.value == 0.0 and silent.detail["predicted"] is None
