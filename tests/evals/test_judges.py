from __future__ import annotations

import json

import pytest

from aiestack.errors import ConfigError
from aiestack.evals.base import Sample
from aiestack.evals.judge_prompts import builtin_prompts, load_prompt
from aiestack.evals.judges import (
    PairwiseJudge,
    RubricJudge,
    consistency_rate,
    parse_json_reply,
    self_consistency,
)
from aiestack.evals.metrics import build_metric
from aiestack.models.fake import FakeModel
from aiestack.streams import Accumulator
from aiestack.types import ChatRequest, Completion, Example, Message

pytestmark = pytest.mark.unit


@pytest.fixture
def model() -> FakeModel:
    return FakeModel()


@pytest.fixture
def call(model: FakeModel):
    async def judge_call(request: ChatRequest) -> Completion:
        acc = Accumulator(Completion(message=Message(role="assistant"), model="judge", provider="fake"))
        async for delta in model.stream(request):
            acc.add(delta)
        return acc.completion()

    return judge_call


def sample(output: str, system: str = "s1", reference: object = None) -> Sample:
    example = Example(id="q1", input={"question": "What is the capital of France?"}, reference=reference)
    return Sample(example=example, system=system, output=output)


def verdict(score: int, reasoning: str = "because") -> str:
    return json.dumps({"reasoning": reasoning, "score": score})


def test_parse_json_reply_tolerates_fences_and_chatter() -> None:
    assert parse_json_reply('Sure!\n```json\n{"score": 4, "reasoning": "ok"}\n```', ["score"])["score"] == 4
    assert parse_json_reply('My verdict: {"score": 2, "reasoning": "x"} thanks', ["score"])["score"] == 2
    with pytest.raises(ValueError, match="expected a JSON object with score"):
        parse_json_reply('{"grade": 3}', ["score"])


async def test_pointwise_judge_normalises_and_stores_reasoning(model, call) -> None:
    model.enqueue([verdict(4, "mostly right")])
    judge = RubricJudge(call, model="judge-m", rubric="Is it correct?", scale=(1, 5))
    score = await judge.score(sample("Paris"))
    assert score.value == pytest.approx(0.75)
    assert score.detail["raw_score"] == 4 and score.detail["reasoning"] == "mostly right"
    assert score.detail["prompt"] == "pointwise@1" and score.detail["judge_model"] == "judge-m"
    request = model.requests[0]
    assert request.model == "judge-m" and request.params.temperature == 0.0
    fmt = request.params.response_format
    assert fmt is not None and fmt.type == "json_schema"
    assert fmt.schema is not None and fmt.schema["properties"]["score"]["maximum"] == 5
    assert "Is it correct?" in request.messages[1].text and "Paris" in request.messages[1].text


async def test_out_of_scale_or_garbled_verdicts_are_errors_not_scores(model, call) -> None:
    model.enqueue([verdict(9), "I think it is good"])
    judge = RubricJudge(call)
    high = await judge.score(sample("Paris"))
    assert high.value is None and "outside 1–5" in (high.error or "")
    garbled = await judge.score(sample("Paris"))
    assert garbled.value is None and "judge failed" in (garbled.error or "")


async def test_reference_based_judge_shows_the_reference(model, call) -> None:
    model.enqueue([verdict(5)])
    judge = build_metric("judge_reference", {"scale": [0, 10]}, judge_call=call)
    score = await judge.score(sample("Paris", reference=["Paris", "Paris, France"]))
    assert score.value == 0.5 and score.detail["prompt"] == "reference@1"
    assert "Paris, France" in model.requests[0].messages[1].text
    assert (await judge.score(sample("Paris"))).value is None  # no reference, no call
    assert len(model.requests) == 1


async def test_pairwise_consistent_verdict_names_the_winner(model, call) -> None:
    # Order 1 shows (a, b): judge says A. Order 2 shows (b, a): judge says B — both mean "a wins".
    model.enqueue(
        [json.dumps({"reasoning": "r1", "winner": "A"}), json.dumps({"reasoning": "r2", "winner": "B"})]
    )
    result = await PairwiseJudge(call).compare(sample("Paris", "good"), sample("Lyon", "bad"))
    assert result.winner == "a" and result.consistent
    assert result.battle() == ("good", "bad", "a")
    assert result.reasoning == ("r1", "r2") and result.prompt == "pairwise@1"
    shown_first = {
        m.messages[1].text.index("Paris") < m.messages[1].text.index("Lyon") for m in model.requests
    }
    assert shown_first == {True, False}  # each answer was shown first once


async def test_pairwise_position_bias_becomes_a_tie(model, call) -> None:
    model.enqueue([json.dumps({"reasoning": "", "winner": "A"})] * 2)  # always picks whatever is shown first
    result = await PairwiseJudge(call).compare(sample("Paris", "good"), sample("Lyon", "bad"))
    assert result.winner == "tie" and not result.consistent
    assert (result.first, result.second) == ("a", "b")
    model.enqueue([json.dumps({"reasoning": "", "winner": "tie"})] * 2)
    tie = await PairwiseJudge(call).compare(sample("Paris", "good"), sample("Paris", "bad"))
    assert tie.winner == "tie" and tie.consistent
    assert consistency_rate([result, tie]) == 0.5
    assert consistency_rate([]) is None


async def test_pairwise_needs_one_example(call) -> None:
    other = Sample(example=Example(id="q2", input={}), system="s2", output="x")
    with pytest.raises(ValueError, match="two answers to one example"):
        await PairwiseJudge(call).compare(sample("Paris"), other)


async def test_self_consistency_reruns_with_distinct_seeds(model, call) -> None:
    model.enqueue([verdict(4), verdict(4), verdict(4), verdict(2), "garbage"])
    result = await self_consistency(RubricJudge(call), sample("Paris"), k=5, temperature=0.7)
    assert sorted(result.values) == [2.0, 4.0, 4.0, 4.0]
    assert result.agreement == 0.75 and result.failures == 1 and result.mean == 3.5
    assert sorted(r.params.seed for r in model.requests) == [0, 1, 2, 3, 4]
    assert {r.params.temperature for r in model.requests} == {0.7}


def test_prompts_are_versioned() -> None:
    assert {"pointwise", "reference", "pairwise", "faithfulness"} <= set(builtin_prompts())
    assert load_prompt("pairwise@1").ref == "pairwise@1"
    with pytest.raises(ConfigError, match="no built-in prompt"):
        load_prompt("pairwise@99")


def test_custom_prompt_file_and_missing_variables(tmp_path) -> None:
    path = tmp_path / "strict@3.txt"
    path.write_text("Be strict.\n---\nQ: $question A: $answer Cost: $$5 $unknown", encoding="utf-8")
    prompt = load_prompt(str(path))
    assert prompt.ref == "strict@3"
    with pytest.raises(ConfigError, match=r"\$unknown"):
        prompt.render({"question": "q", "answer": "a"})
    assert prompt.render({"question": "q", "answer": "a", "unknown": "u"})[1] == "Q: q A: a Cost: $5 u"


async def test_judge_through_the_pipeline(tmp_path) -> None:
    """The runner hands judges ``stack.chat``; the request must survive the real pipeline."""
    from aiestack.build import open_stack
    from aiestack.models.registry import ModelEntry
    from aiestack.settings import Settings

    fake = FakeModel().enqueue([verdict(5, "exact")])
    settings = Settings(data_dir=tmp_path, embedded_model=False, default_model="judge", models={})
    entry = ModelEntry(name="judge", provider=fake, upstream="judge", local=True)
    async with open_stack(settings, models=[entry]) as stack:

        async def judge_call(request: ChatRequest) -> Completion:
            exchange = await stack.chat(request)
            assert exchange.completion is not None
            return exchange.completion

        score = await RubricJudge(judge_call).score(sample("Paris"))
    assert score.value == 1.0 and score.detail["reasoning"] == "exact"
    assert fake.requests[0].params.response_format is not None
