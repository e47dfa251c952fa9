"""The toxicity guard: the packaged classifier, the per-sentence detector, the policy and both stages.

Test texts here are mild profanity written for the test, never the data set's tweets; assertions
never print a text (they compare spans, labels and scores).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aiestack.errors import ConfigError, GuardrailBlocked
from aiestack.guardrails import header_value
from aiestack.guardrails.stream import sentence_start
from aiestack.guardrails.toxicity import LABELS, ToxicityClassifier, ToxicityDetector, normalise
from aiestack.models.fake import Script

pytestmark = pytest.mark.unit

Rig = Any
RUDE = "This is bullshit, you dumb ass."
BENIGN = [
    "Thanks for your help with the tax form.",
    "The meeting moved to Thursday at 3pm.",
    "Here is the recipe for banana bread: mix flour, sugar and eggs.",
    "What a lovely day for a walk in the park!",
]
DATA = Path(os.environ.get("AIESTACK_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


@pytest.fixture(scope="module")
def classifier() -> ToxicityClassifier:
    return ToxicityClassifier()


def test_the_packaged_classifier_has_its_heads(classifier: ToxicityClassifier) -> None:
    assert classifier.heads == LABELS == ("toxic", "hate")
    assert classifier.scores(RUDE)["toxic"] >= 0.5
    assert all(classifier.scores(t)["toxic"] < 0.5 for t in BENIGN)


def test_normalise_removes_what_tweets_carry_and_answers_do_not() -> None:
    assert normalise("RT @someone: fish &amp; chips https://t.co/x") == "user : fish & chips  url "
    assert normalise("Dear @team, see www.example.com") == "Dear  user , see  url "


def test_the_detector_finds_the_sentence_and_never_its_text(classifier: ToxicityClassifier) -> None:
    text = f"{BENIGN[0]} {RUDE} {BENIGN[1]}"
    found = ToxicityDetector(classifier).detect(text)
    assert len(found) == 1
    f = found[0]
    assert (f.start, f.end) == (text.index(RUDE), text.index(RUDE) + len(RUDE))
    assert f.kind == "toxicity.toxic" and f.label == "toxic" and f.score is not None and f.score >= 0.5
    assert ToxicityDetector(classifier).detect(" ".join(BENIGN)) == []


def test_short_insults_are_judged(classifier: ToxicityClassifier) -> None:
    assert ToxicityDetector(classifier).detect("dumb ass")  # two words: under the injection segments' minimum


def test_the_hate_label_alone_lets_profanity_through(classifier: ToxicityClassifier) -> None:
    assert classifier.scores(RUDE)["hate"] < 0.5
    assert ToxicityDetector(classifier, labels=["hate"]).detect(RUDE) == []


def test_unknown_labels_are_refused(classifier: ToxicityClassifier) -> None:
    with pytest.raises(ValueError, match="unknown toxicity labels"):
        ToxicityDetector(classifier, labels=["rude"])


def test_the_guard_is_off_by_default_and_its_options_are_checked(rig_with: Callable[..., Rig]) -> None:
    rig = rig_with()
    assert rig.guards.table.default.toxicity is None and not rig.guards.table.default.active("toxicity")
    with pytest.raises(ConfigError, match=r"guards\.toxicity\.labels"):
        rig_with({"toxicity": {"labels": ["rude"]}})
    on = rig_with({"toxicity": {"threshold": 0.7}})  # a table without an action turns it on (block)
    assert on.guards.table.default.toxicity is not None and on.guards.table.default.toxicity.threshold == 0.7


async def test_a_toxic_request_is_blocked_before_the_model(rig_with: Callable[..., Rig]) -> None:
    rig = rig_with({"toxicity": "block"})
    ex = await rig.run(f"{BENIGN[0]} {RUDE}")
    assert isinstance(ex.error, GuardrailBlocked) and ex.error.guard == "toxicity"
    assert "toxic" in str(ex.error) and RUDE not in str(ex.error)
    assert rig.fake.requests == []
    ok = await rig.run(BENIGN[2])
    assert ok.outcome == "ok" and "toxicity:pass" in header_value(ok.verdicts)


async def test_flag_on_input_lets_the_request_through(rig_with: Callable[..., Rig]) -> None:
    rig = rig_with({"toxicity": {"action": "flag", "scope": "input"}})
    ex = await rig.run(RUDE)
    assert ex.outcome == "ok" and "toxicity:flag" in header_value(ex.verdicts)


async def test_a_toxic_sentence_in_the_answer_is_redacted(rig_with: Callable[..., Rig]) -> None:
    rig = rig_with({"toxicity": {"action": "redact", "scope": "output"}})
    rig.fake.enqueue([f"{BENIGN[1]} {RUDE}"])
    ex = await rig.run("When is the meeting?")
    assert ex.completion is not None and ex.completion.text == f"{BENIGN[1]} [removed]"
    assert "toxicity:redact" in header_value(ex.verdicts)


async def test_a_toxic_answer_can_be_re_asked_then_blocked(rig_with: Callable[..., Rig]) -> None:
    rig = rig_with({"toxicity": {"action": "retry", "scope": "output"}})
    rig.fake.enqueue([RUDE, BENIGN[3]])
    ex = await rig.run("How is the weather?")
    assert ex.completion is not None and ex.completion.text == BENIGN[3]
    assert "content check (toxicity)" in rig.fake.requests[-1].messages[-1].text
    rig = rig_with({"toxicity": "block"})
    rig.fake.enqueue([RUDE])
    ex = await rig.run("How is the weather?")
    assert isinstance(ex.error, GuardrailBlocked) and ex.error.guard == "toxicity"


async def test_a_stream_holds_back_the_sentence_being_written(rig_with: Callable[..., Rig]) -> None:
    rig = rig_with({"toxicity": {"action": "redact", "scope": "output"}})
    # The rude sentence arrives in pieces that are harmless on their own ("This is", "bull", ...).
    rig.fake.enqueue([Script(pieces=[BENIGN[1] + " This is ", "bull", "shit, you ", "dumb ass. ", BENIGN[0]])])
    ex = await rig.run("When?", stream=True)
    assert ex.completion is not None
    pieces = [d.text async for d in ex.completion.stream]  # type: ignore[union-attr]
    assert "".join(pieces) == f"{BENIGN[1]} [removed] {BENIGN[0]}"
    assert not any("bull" in p or "dumb" in p for p in pieces)


def test_sentence_start() -> None:
    text = "One. Two is being wri"
    assert sentence_start(text, len(text)) == text.index("Two")
    assert sentence_start("Done. ", 6) == 6
    assert sentence_start("no end yet", 10) == 0
    assert sentence_start("x" * 500, 500, limit=300) == 200  # a run-on is released past the limit
    assert sentence_start("line one\nline two", 17) == 9


@pytest.mark.slow
def test_figures_on_the_davidson_test_part(classifier: ToxicityClassifier) -> None:
    """The shipped classifier on the held-out part of the seeded split (figures in bench/guardrails.md)."""
    if not (DATA / "davidson-hate-offensive" / "labeled_data.csv").is_file():
        pytest.skip("../shared/data/davidson-hate-offensive is not here (set AIESTACK_DATA)")
    from guard_data import davidson_split

    texts, classes = davidson_split(DATA, "test")
    train, _ = davidson_split(DATA, "train")
    assert 0.18 < len(texts) / (len(texts) + len(train)) < 0.22 and not set(texts) & set(train)
    detector = ToxicityDetector(classifier)
    pred = [bool(detector.detect(t)) for t in texts]
    tp = sum(1 for p, c in zip(pred, classes, strict=True) if p and c <= 1)
    precision, recall = tp / sum(pred), tp / sum(1 for c in classes if c <= 1)
    assert precision >= 0.95 and recall >= 0.9, (round(precision, 3), round(recall, 3))


def test_the_guards_settings_section_carries_it(rig_with: Callable[..., Rig]) -> None:
    from aiestack.settings import GuardSettings

    assert rig_with(GuardSettings().model_dump()).guards.table.default.toxicity is None
    on = rig_with(GuardSettings(toxicity="redact").model_dump()).guards.table.default
    assert on.toxicity is not None and on.policy.toxicity.action == "redact"
