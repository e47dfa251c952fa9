from __future__ import annotations

import numpy as np
import pytest

from aiestack.evals.stats import bootstrap_mean, paired_bootstrap

pytestmark = pytest.mark.unit


def test_identical_runs_have_zero_delta() -> None:
    assert paired_bootstrap([0.2, 0.5, 1.0], [0.2, 0.5, 1.0]) == (0.0, 0.0, 0.0)


def test_interval_covers_the_true_difference_and_excludes_zero_for_a_real_gain() -> None:
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 400)
    better = base + 0.1 + rng.normal(0, 0.05, 400)
    delta, low, high = paired_bootstrap(better.tolist(), base.tolist())
    assert low < delta < high
    assert low > 0.09 and high < 0.11  # pairing removes the per-example spread
    assert low <= 0.1 <= high


def test_no_difference_interval_contains_zero() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.integers(0, 2, 300).astype(float), rng.integers(0, 2, 300).astype(float)
    _, low, high = paired_bootstrap(a.tolist(), b.tolist())
    assert low < 0 < high


def test_deterministic_for_a_seed_and_wider_at_higher_confidence() -> None:
    a, b = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert paired_bootstrap(a, b, seed=7) == paired_bootstrap(a, b, seed=7)
    _, low95, high95 = paired_bootstrap(a, b, confidence=0.95)
    _, low80, high80 = paired_bootstrap(a, b, confidence=0.80)
    assert low95 <= low80 and high80 <= high95


@pytest.mark.parametrize(
    ("a", "b", "kwargs", "message"),
    [
        ([1.0], [1.0, 2.0], {}, "equal lengths"),
        ([], [], {}, "at least one pair"),
        ([1.0], [1.0], {"confidence": 1.0}, "confidence"),
        ([float("nan")], [1.0], {}, "NaN"),
    ],
)
def test_invalid_input(a, b, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(a, b, **kwargs)


def test_bootstrap_mean() -> None:
    mean, low, high = bootstrap_mean([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and 1.0 <= low < 2.5 < high <= 4.0
