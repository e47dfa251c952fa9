"""Statistics for comparing runs: the paired bootstrap of a mean difference.

Two runs scored on the same examples are paired: resampling *examples* (the same indices for
both runs) keeps the per-example correlation, which gives much tighter and more honest intervals
than comparing two independent means. Regression gates use the interval: a drop counts only when
the whole interval is below the allowed delta.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    iterations: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(mean_delta, low, high)`` for ``mean(a[i] - b[i])`` with a percentile bootstrap interval.

    ``a`` is the run under test and ``b`` the baseline, aligned by example. The result is
    deterministic for a given ``seed``. Raises ValueError for unequal lengths, no pairs, NaNs, or
    a confidence outside (0, 1).
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples must have equal lengths, got {len(a)} and {len(b)}")
    if not a:
        raise ValueError("paired bootstrap needs at least one pair")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    if iterations < 1:
        raise ValueError(f"iterations must be positive, got {iterations}")
    diffs = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if np.isnan(diffs).any():
        raise ValueError("paired samples contain NaN; drop the examples a metric could not score first")
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, len(diffs), size=(iterations, len(diffs)))
    means = diffs[indices].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(diffs.mean()), float(low), float(high)


def bootstrap_mean(
    values: Sequence[float], *, iterations: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """``(mean, low, high)``: a percentile bootstrap interval of one run's mean (for reports)."""
    return paired_bootstrap(
        values, [0.0] * len(values), iterations=iterations, confidence=confidence, seed=seed
    )
