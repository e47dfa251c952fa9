"""Regression gates: a run against absolute thresholds and against a baseline run, for CI.

Absolute gates (``min``/``max``) bound a metric's mean over the run. Regression gates
(``max_drop``) compare with a baseline on the examples both runs scored, by the paired bootstrap
(:func:`aiestack.evals.stats.paired_bootstrap`), with the delta oriented so that negative is worse
(for latency or cost, a rise is a drop). **Rule:** a regression gate fails when the upper end of
the 95 % interval of the oriented delta is below ``-max_drop``: the data must show, beyond
sampling noise, a drop larger than allowed. A small suite therefore fails only on a clear
regression; the report still shows every delta and its interval, and the flipped examples.

An example *passes* a metric whose scores lie in [0, 1] when its score is at least 0.5; the
examples that passed in the baseline and fail now (and the reverse) are listed as flips.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiestack.errors import ConfigError
from aiestack.evals.stats import paired_bootstrap
from aiestack.evals.suite import GateSpec
from aiestack.stores.base import EvalResultRecord

GateStatus = Literal["pass", "fail", "skip"]
PASS_AT = 0.5
_GATE = re.compile(
    r"^\s*(?P<metric>[\w@.-]+?)\s*(?::\s*(?P<system>[\w.-]+?))?\s*(?P<op>>=|<=|\s+drop\s*<=)\s*(?P<value>-?[\d.]+)\s*$"
)


@dataclass(frozen=True, slots=True)
class Delta:
    """One metric of one system: baseline mean, current mean, and the paired delta with its CI."""

    system: str
    metric: str
    baseline: float
    current: float
    delta: float  # current - baseline (not oriented)
    low: float
    high: float
    n: int
    higher_is_better: bool


@dataclass(frozen=True, slots=True)
class Flip:
    system: str
    metric: str
    example_id: str
    before: float
    after: float

    @property
    def regressed(self) -> bool:
        return self.before >= PASS_AT > self.after


@dataclass(frozen=True, slots=True)
class GateResult:
    gate: GateSpec
    system: str
    status: GateStatus
    detail: str


@dataclass(frozen=True, slots=True)
class Comparison:
    deltas: list[Delta] = field(default_factory=list)
    flips: list[Flip] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(g.status == "fail" for g in self.gates)


def parse_gate(text: str) -> GateSpec:
    """A gate from the command line: ``acc>=0.8``, ``latency<=200``, ``acc drop<=0.05``, ``acc:gemma>=0.5``."""
    match = _GATE.match(text)
    if match is None:
        raise ConfigError(
            "--gate",
            f"cannot read the gate {text!r}",
            "write METRIC>=MIN, METRIC<=MAX or METRIC drop<=MAX_DROP (METRIC:SYSTEM for one system)",
        )
    value = float(match["value"])
    op = "".join(match["op"].split())
    key = {">=": "min", "<=": "max", "drop<=": "max_drop"}[op]
    return GateSpec.model_validate({"metric": match["metric"], "system": match["system"], key: value})


def _scores(results: Sequence[EvalResultRecord], system: str, metric: str) -> dict[str, float]:
    return {
        r.example_id: float(v)
        for r in results
        if r.system == system and r.error is None and (v := r.scores.get(metric)) is not None
    }


def compare(
    current: Sequence[EvalResultRecord],
    baseline: Sequence[EvalResultRecord] | None,
    orientation: Mapping[str, bool],
    gates: Sequence[GateSpec],
    *,
    iterations: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Deltas and flips against ``baseline`` (if any) and the verdict of each gate.

    ``orientation`` maps each per-example metric to ``higher_is_better``; systems are matched by name.
    """
    systems = list(dict.fromkeys(r.system for r in current))
    deltas: dict[tuple[str, str], Delta] = {}
    flips: list[Flip] = []
    if baseline is not None:
        for system in systems:
            for metric, higher in orientation.items():
                now, before = _scores(current, system, metric), _scores(baseline, system, metric)
                shared = sorted(now.keys() & before.keys())
                if not shared:
                    continue
                a, b = [now[i] for i in shared], [before[i] for i in shared]
                mean, low, high = paired_bootstrap(a, b, iterations=iterations, seed=seed)
                deltas[(system, metric)] = Delta(
                    system, metric, sum(b) / len(b), sum(a) / len(a), mean, low, high, len(shared), higher
                )
                if all(0.0 <= v <= 1.0 for v in (*a, *b)):
                    flips.extend(
                        Flip(system, metric, i, before[i], now[i])
                        for i in shared
                        if (before[i] >= PASS_AT) != (now[i] >= PASS_AT)
                    )
    results = [
        _judge_gate(gate, system, current, deltas, orientation, baseline is not None)
        for gate in gates
        for system in systems
        if gate.system in (None, system)
    ]
    return Comparison(list(deltas.values()), flips, results)


def _judge_gate(
    gate: GateSpec,
    system: str,
    current: Sequence[EvalResultRecord],
    deltas: Mapping[tuple[str, str], Delta],
    orientation: Mapping[str, bool],
    has_baseline: bool,
) -> GateResult:
    problems: list[str] = []
    notes: list[str] = []
    values = list(_scores(current, system, gate.metric).values())
    if gate.min is not None or gate.max is not None:
        if not values:
            return GateResult(gate, system, "fail", f"no example was scored on {gate.metric}")
        mean = sum(values) / len(values)
        if gate.min is not None and mean < gate.min:
            problems.append(f"mean {mean:.4g} < min {gate.min:g}")
        if gate.max is not None and mean > gate.max:
            problems.append(f"mean {mean:.4g} > max {gate.max:g}")
        notes.append(f"mean {mean:.4g}")
    if gate.max_drop is not None:
        delta = deltas.get((system, gate.metric))
        if delta is None:
            notes.append(
                "no baseline to compare with" if not has_baseline else "no examples shared with the baseline"
            )
        else:
            sign = 1.0 if orientation.get(gate.metric, True) else -1.0
            worst_plausible = max(sign * delta.low, sign * delta.high)
            if worst_plausible < -gate.max_drop:
                problems.append(
                    f"dropped by {-sign * delta.delta:.4g} (95% CI upper end of change {worst_plausible:.4g} < -{gate.max_drop:g})"
                )
            notes.append(f"delta {delta.delta:+.4g} [{delta.low:+.4g}, {delta.high:+.4g}]")
    if problems:
        return GateResult(gate, system, "fail", "; ".join(problems))
    if gate.min is None and gate.max is None and not any(n.startswith("delta") for n in notes):
        return GateResult(gate, system, "skip", "; ".join(notes))
    return GateResult(gate, system, "pass", "; ".join(notes))


def describe(gate: GateSpec) -> str:
    """A gate as people write it: ``exact_match >= 0.8``."""
    parts = []
    if gate.min is not None:
        parts.append(f">= {gate.min:g}")
    if gate.max is not None:
        parts.append(f"<= {gate.max:g}")
    if gate.max_drop is not None:
        parts.append(f"drop <= {gate.max_drop:g}")
    target = f"{gate.metric}:{gate.system}" if gate.system else gate.metric
    return f"{target} {' and '.join(parts)}"


def gates_from_summary(summary: Mapping[str, Any]) -> list[GateSpec]:
    """The suite's gates as stored in a run's summary."""
    return [GateSpec.model_validate(g) for g in summary.get("gates", [])]
