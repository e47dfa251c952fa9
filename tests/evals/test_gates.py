"""Regression gates: absolute thresholds, paired-bootstrap drops, flipped examples, CLI gate syntax."""

from __future__ import annotations

import pytest

from aiestack.errors import ConfigError
from aiestack.evals.gates import compare, parse_gate
from aiestack.evals.suite import GateSpec
from aiestack.stores.base import EvalResultRecord

pytestmark = pytest.mark.unit


def results(values: list[float], *, metric: str = "acc", system: str = "s") -> list[EvalResultRecord]:
    return [EvalResultRecord("r", f"e{i}", system, "", {metric: v}) for i, v in enumerate(values)]


def test_absolute_gates() -> None:
    now = results([1, 1, 0, 1])
    c = compare(now, None, {"acc": True}, [GateSpec(metric="acc", min=0.7), GateSpec(metric="acc", max=0.5)])
    assert [g.status for g in c.gates] == ["pass", "fail"] and c.failed


def test_a_clear_regression_fails_and_noise_does_not() -> None:
    baseline = results([1.0] * 40)
    clear = results([1.0] * 20 + [0.0] * 20)
    noisy = results([1.0] * 39 + [0.0])
    gate = GateSpec(metric="acc", max_drop=0.05)
    failed = compare(clear, baseline, {"acc": True}, [gate])
    assert failed.failed and failed.deltas[0].delta == pytest.approx(-0.5)
    assert len(failed.flips) == 20 and all(f.regressed for f in failed.flips)
    assert not compare(noisy, baseline, {"acc": True}, [gate]).failed


def test_lower_is_better_metrics_regress_upwards() -> None:
    baseline = results([100.0] * 30, metric="latency")
    slower = results([200.0] * 30, metric="latency")
    gate = GateSpec(metric="latency", max_drop=10)
    assert compare(slower, baseline, {"latency": False}, [gate]).failed
    assert not compare(baseline, slower, {"latency": False}, [gate]).failed
    assert compare(slower, baseline, {"latency": False}, [gate]).flips == []  # not a [0, 1] metric


def test_only_examples_in_both_runs_are_paired_and_no_baseline_skips() -> None:
    baseline = results([1.0, 0.0])
    now = results([1.0, 1.0, 0.0, 0.0])
    c = compare(now, baseline, {"acc": True}, [GateSpec(metric="acc", max_drop=0.0)])
    assert c.deltas[0].n == 2
    assert compare(now, None, {"acc": True}, [GateSpec(metric="acc", max_drop=0.0)]).gates[0].status == "skip"


def test_gate_syntax() -> None:
    assert parse_gate("acc>=0.8") == GateSpec(metric="acc", min=0.8)
    assert parse_gate("ndcg@10:sys drop <= 0.05") == GateSpec(metric="ndcg@10", system="sys", max_drop=0.05)
    with pytest.raises(ConfigError, match="METRIC>=MIN"):
        parse_gate("acc > 1")
