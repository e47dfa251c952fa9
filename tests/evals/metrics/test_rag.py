from __future__ import annotations

import json

import pytest

from aiestack.errors import ProviderUnavailable
from aiestack.evals.metrics import build_metric
from aiestack.models.fake import Script

pytestmark = pytest.mark.unit

REFERENCE_CONTEXT = "Marie Curie won the Nobel Prize in Physics in 1903 and in Chemistry in 1911."
NOISE = "The Eiffel Tower was completed in 1889 for the World's Fair in Paris."


async def test_context_precision_is_rank_aware(make_sample) -> None:
    metric = build_metric("context_precision", {})
    reference = {"contexts": [REFERENCE_CONTEXT]}
    first = await metric.score(make_sample("", reference, contexts=[REFERENCE_CONTEXT, NOISE]))
    second = await metric.score(make_sample("", reference, contexts=[NOISE, REFERENCE_CONTEXT]))
    assert first.value == 1.0
    assert second.value == pytest.approx(0.5)  # precision@2 at the only relevant rank
    assert (await metric.score(make_sample("", reference, contexts=[NOISE]))).value == 0.0
    assert (await metric.score(make_sample("", reference))).value is None


async def test_context_recall_against_contexts_and_against_an_answer(make_sample) -> None:
    metric = build_metric("context_recall", {"reference_key": "answer"})
    both = {"contexts": [REFERENCE_CONTEXT, NOISE]}
    assert (await metric.score(make_sample("", both, contexts=[REFERENCE_CONTEXT]))).value == 0.5
    answer_only = {"answer": "Curie won the Nobel Prize in 1903 and 1911"}
    score = await metric.score(make_sample("", answer_only, contexts=[REFERENCE_CONTEXT]))
    assert score.value == 1.0 and score.detail["against"] == "answer"
    partial = await metric.score(
        make_sample("", {"answer": "Curie was born in Warsaw"}, contexts=[REFERENCE_CONTEXT])
    )
    assert partial.value == pytest.approx(2 / 5)  # of curie/was/born/in/warsaw, only curie and in are there


async def test_lexical_groundedness_counts_supported_sentences(make_sample) -> None:
    metric = build_metric("lexical_groundedness", {})
    answer = "Marie Curie won the Nobel Prize in Physics in 1903. She also invented the telephone."
    score = await metric.score(make_sample(answer, contexts=[REFERENCE_CONTEXT]))
    assert score.value == 0.5 and score.detail == {"sentences": 2, "grounded": 1}
    assert (await metric.score(make_sample(answer))).value is None


async def test_faithfulness_asks_the_judge_for_claims(make_sample, judge_model, judge_call) -> None:
    reply = {
        "claims": [
            {"claim": "Curie won the physics prize in 1903", "supported": True, "reason": "stated"},
            {"claim": "Curie invented the telephone", "supported": False, "reason": "not in context"},
        ]
    }
    judge_model.enqueue(["Here is my analysis:\n```json\n" + json.dumps(reply) + "\n```"])
    metric = build_metric("faithfulness", {"model": "judge-m"}, judge_call=judge_call)
    score = await metric.score(
        make_sample("Curie won in 1903 and invented the telephone.", contexts=[REFERENCE_CONTEXT])
    )
    assert score.value == 0.5
    assert score.detail["prompt"] == "faithfulness@1"
    assert [c["supported"] for c in score.detail["claims"]] == [True, False]
    request = judge_model.requests[0]
    assert request.model == "judge-m"
    assert request.params.response_format is not None and request.params.response_format.type == "json_schema"
    assert REFERENCE_CONTEXT in request.messages[-1].text


async def test_faithfulness_reports_judge_failures_as_errors(make_sample, judge_model, judge_call) -> None:
    metric = build_metric("faithfulness", {}, judge_call=judge_call)
    judge_model.enqueue([Script(error=ProviderUnavailable("down", provider="fake")), "not json at all"])
    for _ in range(2):
        score = await metric.score(make_sample("An answer.", contexts=["ctx"]))
        assert score.value is None and "judge failed" in (score.error or "")
