"""Per-system summaries of a run: metric means with bootstrap intervals, latency and cost.

Computed from stored results, so that a run read back from the store (``aiestack eval report``)
summarises exactly as it did when it finished. A score of ``None`` (not applicable) is left out
of the mean, never counted as 0; the number of scored examples is kept beside each mean.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiestack.evals.stats import bootstrap_mean
from aiestack.stores.base import EvalResultRecord


@dataclass(frozen=True, slots=True)
class MetricSummary:
    mean: float | None
    low: float | None
    high: float | None
    n: int
    higher_is_better: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "low": self.low,
            "high": self.high,
            "n": self.n,
            "higher_is_better": self.higher_is_better,
        }


@dataclass(frozen=True, slots=True)
class SystemSummary:
    system: str
    examples: int
    errors: int
    cached: int
    metrics: Mapping[str, MetricSummary]
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    cost_per_example_usd: float | None
    corpus: Mapping[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "errors": self.errors,
            "cached": self.cached,
            "metrics": {name: m.as_dict() for name, m in self.metrics.items()},
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "cost_per_example_usd": self.cost_per_example_usd,
            "corpus": dict(self.corpus),
        }

    @classmethod
    def from_dict(cls, system: str, d: Mapping[str, Any]) -> SystemSummary:
        return cls(
            system=system,
            examples=d["examples"],
            errors=d["errors"],
            cached=d.get("cached", 0),
            metrics={name: MetricSummary(**m) for name, m in d["metrics"].items()},
            latency_p50_ms=d.get("latency_p50_ms"),
            latency_p95_ms=d.get("latency_p95_ms"),
            cost_per_example_usd=d.get("cost_per_example_usd"),
            corpus=d.get("corpus", {}),
        )


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0–100) by linear interpolation; ``None`` for no values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(
    results: Sequence[EvalResultRecord],
    orientation: Mapping[str, bool],
    *,
    corpus: Mapping[str, Mapping[str, float]] | None = None,
    iterations: int = 1000,
) -> dict[str, SystemSummary]:
    """One summary per system, in the order systems first appear in ``results``.

    ``orientation`` maps each per-example metric to ``higher_is_better`` (and fixes their order);
    ``corpus`` holds corpus-level scores per system (e.g. corpus BLEU).
    """
    by_system: dict[str, list[EvalResultRecord]] = {}
    for result in results:
        by_system.setdefault(result.system, []).append(result)
    summaries: dict[str, SystemSummary] = {}
    for system, rows in by_system.items():
        metrics: dict[str, MetricSummary] = {}
        for name, higher in orientation.items():
            values = [v for r in rows if (v := r.scores.get(name)) is not None]
            if values:
                mean, low, high = bootstrap_mean(values, iterations=iterations)
                metrics[name] = MetricSummary(mean, low, high, len(values), higher)
            else:
                metrics[name] = MetricSummary(None, None, None, 0, higher)
        ok = [r for r in rows if r.error is None]
        latencies = [r.latency_ms for r in ok if r.latency_ms is not None]
        costs = [r.cost_usd for r in ok if r.cost_usd is not None]
        summaries[system] = SystemSummary(
            system=system,
            examples=len(rows),
            errors=len(rows) - len(ok),
            cached=sum(r.cached for r in rows),
            metrics=metrics,
            latency_p50_ms=percentile(latencies, 50),
            latency_p95_ms=percentile(latencies, 95),
            cost_per_example_usd=statistics.fmean(costs) if costs else None,
            corpus=dict((corpus or {}).get(system, {})),
        )
    return summaries


def summaries_from_run(summary: Mapping[str, Any]) -> dict[str, SystemSummary]:
    """The per-system summaries stored in an :class:`~aiestack.types.EvalRun`'s ``summary``."""
    return {name: SystemSummary.from_dict(name, d) for name, d in summary.get("systems", {}).items()}
