"""The promotion gate on hand-made results: evidence of improvement, the suite's gates, failed calls."""

from __future__ import annotations

import pytest

from aiestack.evals.suite import GateSpec
from aiestack.flywheel.gate import decide
from aiestack.stores.base import EvalResultRecord

pytestmark = pytest.mark.unit


def _results(values: list[float | None], *, system: str = "s", latency: float = 10.0) -> list[EvalResultRecord]:
    return [
        EvalResultRecord("run", f"e{i}", system, "out", scores={} if v is None else {"acc": v, "latency": latency},
                         error="ProviderTimeout: no token" if v is None else None)
        for i, v in enumerate(values)
    ]


def _decide(candidate: list[EvalResultRecord], baseline: list[EvalResultRecord], **kw: object) -> object:
    return decide(candidate, baseline, metric="acc", higher_is_better=True, orientation={"acc": True, "latency": False}, **kw)  # type: ignore[arg-type]


def test_a_clear_gain_passes_and_a_noisy_one_does_not() -> None:
    base = _results([0.0] * 20)
    clear = _decide(_results([1.0] * 15 + [0.0] * 5, system="other"), base)
    assert clear.passed and clear.n == 20 and clear.low > 0 and clear.reason.startswith("improved: acc 0 → 0.75")  # type: ignore[attr-defined]
    noisy = _decide(_results([1.0] + [0.0] * 19), base)
    assert not noisy.passed and "no evidence of improvement" in noisy.reason  # type: ignore[attr-defined]
    assert _decide(_results([1.0] + [0.0] * 19), base, min_gain=None).passed  # type: ignore[attr-defined]  # no regression is enough


def test_a_candidate_cannot_win_by_failing_on_examples() -> None:
    base = _results([1.0] * 10 + [0.0] * 10)
    cand = _results([1.0] * 10 + [None] * 10)  # its calls failed exactly where the baseline was wrong
    verdict = _decide(cand, base, min_gain=None)
    assert not verdict.passed and "no acc score on 10 examples the baseline was scored on" in verdict.reason  # type: ignore[attr-defined]
    assert "ProviderTimeout" in verdict.reason  # type: ignore[attr-defined]


def test_examples_the_baseline_failed_on_are_left_out_and_counted() -> None:
    base = _results([0.0] * 16 + [None] * 4)
    verdict = _decide(_results([1.0] * 20), base)
    assert verdict.passed and verdict.n == 16 and verdict.unpaired == 4 and "4 left out" in verdict.reason  # type: ignore[attr-defined]


def test_a_suite_gate_on_another_metric_refuses_a_regression() -> None:
    base = _results([0.0] * 20, latency=10.0)
    slower = _results([1.0] * 20, latency=500.0)
    verdict = _decide(slower, base, gates=[GateSpec(metric="latency", max_drop=50.0)])
    assert not verdict.passed and "gate latency drop <= 50 failed" in verdict.reason  # type: ignore[attr-defined]
