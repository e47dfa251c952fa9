"""The promotion gate: does a candidate beat the current deployment, on the same examples, beyond noise?

Two runs of one suite are compared — the current deployment (the baseline) and the candidate, the
same system name in both, on the same examples — with the eval harness's own regression gate
(:func:`aiestack.evals.gates.compare`: the paired bootstrap of the per-example differences). A
candidate passes when

0. the candidate was scored on every example the baseline was (a candidate whose calls fail cannot
   look better by failing on the hard examples);
1. every gate of the suite passes (``min``/``max`` on the candidate's run, ``max_drop`` against
   the baseline: the existing regression rule, so a candidate may not regress another metric), and
2. it *improves* the objective metric: the lower end of the 95 % paired-bootstrap interval of the
   oriented difference (candidate − baseline; for a lower-is-better metric, baseline − candidate)
   is above ``min_gain``. With ``min_gain = None`` only rule 1 applies (non-inferiority: used to
   start an A/B split whose live traffic will decide).

The :class:`Decision` says which rule failed and by how much, so a refused promotion explains itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiestack.errors import ConfigError
from aiestack.evals.gates import compare, describe
from aiestack.evals.suite import GateSpec
from aiestack.stores.base import EvalResultRecord


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict on one candidate against its baseline, with the figures behind it."""

    passed: bool
    reason: str
    metric: str
    higher_is_better: bool
    baseline: float | None = None
    candidate: float | None = None
    delta: float | None = None  # candidate - baseline (not oriented)
    low: float | None = None
    high: float | None = None
    n: int = 0
    gates: tuple[Mapping[str, str], ...] = field(default_factory=tuple)
    unpaired: int = 0  # examples the baseline has no score on (its call failed): left out of the comparison

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reason": self.reason,
            "metric": self.metric,
            "higher_is_better": self.higher_is_better,
            "baseline": self.baseline,
            "candidate": self.candidate,
            "delta": self.delta,
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "gates": [dict(g) for g in self.gates],
            "unpaired": self.unpaired,
        }


def objective(metrics: Mapping[str, Mapping[str, Any]], wanted: str | None, *, source: str) -> tuple[str, bool]:
    """The metric a gate judges by and whether higher is better: ``wanted``, else the first per-example
    metric of the run (``metrics`` is a run summary's ``metrics`` section)."""
    per_example = {name: bool(info.get("higher_is_better", True)) for name, info in metrics.items() if not info.get("corpus")}
    if wanted is None:
        scored = [n for n in per_example if n not in ("latency", "cost")]
        if not scored:
            raise ConfigError(source, "the suite has no per-example quality metric to judge by", "add one (e.g. exact_match) or name one")
        return scored[0], per_example[scored[0]]
    if wanted not in per_example:
        known = ", ".join(per_example) or "none"
        raise ConfigError(source, f"the suite has no per-example metric {wanted!r}", f"name one of its metrics: {known}")
    return wanted, per_example[wanted]


def _scored(results: Sequence[EvalResultRecord], metric: str) -> set[str]:
    return {r.example_id for r in results if r.error is None and r.scores.get(metric) is not None}


def decide(
    candidate: Sequence[EvalResultRecord],
    baseline: Sequence[EvalResultRecord],
    *,
    metric: str,
    higher_is_better: bool,
    orientation: Mapping[str, bool],
    gates: Sequence[GateSpec] = (),
    min_gain: float | None = 0.0,
    iterations: int = 2000,
    seed: int = 0,
) -> Decision:
    """Judge ``candidate`` against ``baseline`` (each one system's results; names may differ)."""
    systems = {r.system for r in candidate} | {r.system for r in baseline}
    if len({r.system for r in candidate}) > 1 or len({r.system for r in baseline}) > 1:
        raise ValueError(f"decide() compares one system with one system, got {sorted(systems)}")
    name = next(iter({r.system for r in candidate}), "candidate")
    base = [dataclasses.replace(r, system=name) for r in baseline]
    comparison = compare(candidate, base, {**orientation, metric: higher_is_better}, list(gates), iterations=iterations, seed=seed)
    gate_rows = tuple({"gate": describe(g.gate), "status": g.status, "detail": g.detail} for g in comparison.gates)
    delta = next((d for d in comparison.deltas if d.metric == metric), None)
    scored_base, scored_cand = _scored(base, metric), _scored(candidate, metric)
    figures: dict[str, Any] = {"metric": metric, "higher_is_better": higher_is_better, "gates": gate_rows,
                               "unpaired": len(scored_cand - scored_base)}
    lost = sorted(scored_base - scored_cand)
    if lost:  # a candidate may not look better by failing on the examples it would get wrong
        errors = {r.example_id: r.error for r in candidate if r.example_id in lost and r.error}
        first = next(iter(errors.values()), "no score")
        return Decision(False, f"the candidate has no {metric} score on {len(lost)} examples the baseline was scored on "
                        f"(e.g. {lost[0]}: {first})", **figures)
    if delta is None:
        return Decision(False, f"no example was scored on {metric} by both the candidate and the baseline", **figures)
    figures |= {"baseline": delta.baseline, "candidate": delta.current, "delta": delta.delta, "low": delta.low,
                "high": delta.high, "n": delta.n}
    failed = [g for g in comparison.gates if g.status == "fail"]
    if failed:
        why = "; ".join(f"gate {describe(g.gate)} failed: {g.detail}" for g in failed)
        return Decision(False, why, **figures)
    sign = 1.0 if higher_is_better else -1.0
    worst = min(sign * delta.low, sign * delta.high)  # the pessimistic end of the oriented interval
    left_out = f", {figures['unpaired']} left out: the baseline's call failed" if figures["unpaired"] else ""
    shown = (f"{metric} {delta.baseline:.4g} → {delta.current:.4g} (Δ {delta.delta:+.4g}, "
             f"95% CI [{delta.low:+.4g}, {delta.high:+.4g}], n={delta.n}{left_out})")
    if min_gain is not None and not worst > min_gain:
        return Decision(
            False,
            f"no evidence of improvement: {shown}; the interval's pessimistic end {worst:+.4g} is not above the required gain {min_gain:g}",
            **figures,
        )
    if min_gain is None:
        return Decision(True, f"no regression beyond the gates: {shown}", **figures)
    return Decision(True, f"improved: {shown}", **figures)
