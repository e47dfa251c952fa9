"""Self-consistency against single sampling on GSM8K questions, with an upstream whose per-sample accuracy is known.

Binomial voting predicts how often a majority of N samples is right; the route's measured accuracy
must match that prediction, and so beat single sampling by the predicted margin.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from aiestack.answers import final_number
from aiestack.build import build_stack
from aiestack.models.registry import ModelEntry
from aiestack.settings import Settings
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.testing.noisy import NoisyOracle, majority_accuracy
from aiestack.types import ChatRequest, Message, Params

pytestmark = pytest.mark.unit

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "evals" / "data" / "gsm8k.jsonl"


def test_majority_accuracy_is_the_binomial_tail() -> None:
    assert majority_accuracy(0.6, 1) == pytest.approx(0.6)
    assert majority_accuracy(0.6, 5) == pytest.approx(0.68256)  # P(Bin(5, .6) >= 3)
    assert majority_accuracy(0.6, 2) == pytest.approx(0.36 + 0.48 / 2)
    assert majority_accuracy(0.5, 7) == pytest.approx(0.5)


@pytest.mark.slow
async def test_self_consistency_beats_single_sampling_by_the_margin_binomial_voting_predicts(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    gold = {r["question"]: final_number(r["answer"]) for r in rows}
    accuracy, n, repeats = 0.6, 5, 30  # 20 questions x 30 seeds = 600 trials
    oracle = NoisyOracle(gold, accuracy)
    settings = Settings(
        data_dir=tmp_path,
        embedded_model=False,
        default_model="oracle",
        guards={"enabled": False},  # the route's sampling is what is measured
        routes={
            "single": {"deployments": ["oracle"], "retries": 0},
            "voted": {"deployments": ["oracle"], "retries": 0, "sampling": {"strategy": "self_consistency", "n": n}},
        },
    )
    stack = build_stack(settings, store=MemoryExchangeStore(), models=[ModelEntry("oracle", oracle, "oracle")])
    right = {"single": 0, "voted": 0}
    try:
        for repeat in range(repeats):
            for question, answer in gold.items():
                for route in right:
                    # Seeds 100*repeat .. +4: the single sample is the voted route's first sample.
                    request = ChatRequest(model=route, messages=(Message("user", question),), params=Params(seed=100 * repeat))
                    ex = await stack.chat(request)
                    assert ex.completion is not None
                    right[route] += final_number(ex.completion.text) == answer
    finally:
        await stack.aclose()
    trials = repeats * len(gold)
    assert oracle.calls == trials * (1 + n)  # every sample was really called
    single, voted = right["single"] / trials, right["voted"] / trials
    predicted = majority_accuracy(accuracy, n)  # 0.6826
    # Each measured rate lies within 3 standard errors of its prediction (a binomial proportion).
    for measured, p in ((single, accuracy), (voted, predicted)):
        assert abs(measured - p) < 3 * math.sqrt(p * (1 - p) / trials), (measured, p)
    # And the gain is the predicted one: voting must beat single sampling, by about +0.083 here.
    assert voted - single > 0.5 * (predicted - accuracy)
