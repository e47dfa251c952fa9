"""Retry decisions and backoff: which errors are retried or fall back, full jitter, Retry-After, caps."""

from __future__ import annotations

import random
import statistics

import pytest

from aiestack.errors import (
    AiestackError,
    ContextLengthExceeded,
    ModelNotFound,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    StreamBroken,
)
from aiestack.gateway.retry import NO_RETRY, RetryPolicy, disposition, is_upstream_failure

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("error", "expected", "unhealthy"),
    [
        (ProviderUnavailable("503", provider="p", status=503), "retry", True),
        (ProviderConnectionError("refused", provider="p"), "retry", True),
        (ProviderTimeout("slow", provider="p"), "retry", True),
        (ProviderRateLimited("429", provider="p", status=429, retry_after=1.0), "retry", True),
        (StreamBroken("cut", provider="p"), "retry", True),
        (ContextLengthExceeded("too long", provider="p", status=400), "skip_group", False),
        (ProviderAuthError("401", provider="p", status=401), "next", True),
        (ProviderBadRequest("bad", provider="p", status=400), "fail", False),
        (ModelNotFound("no such model"), "fail", False),
    ],
)
def test_disposition_and_health_per_error(error: AiestackError, expected: str, unhealthy: bool) -> None:
    assert disposition(error) == expected
    assert is_upstream_failure(error) is unhealthy


def test_full_jitter_stays_within_the_exponential_ceiling_and_spreads() -> None:
    policy = RetryPolicy(retries=5, base_s=0.5, max_s=3.0)
    rng = random.Random(7)
    assert [policy.ceiling(n) for n in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    for n in range(5):
        delays = [policy.delay(n, None, rng) for _ in range(2000)]
        values = [d for d in delays if d is not None]
        assert len(values) == 2000
        assert min(values) >= 0.0 and max(values) <= policy.ceiling(n)
        # Full jitter is uniform on [0, ceiling]: the mean sits near half the ceiling, and the draws
        # reach close to both ends (a constant or "equal jitter" backoff would fail this).
        assert statistics.fmean(values) == pytest.approx(policy.ceiling(n) / 2, rel=0.06)
        assert min(values) < 0.05 * policy.ceiling(n) and max(values) > 0.95 * policy.ceiling(n)


def test_seeded_rng_gives_reproducible_delays() -> None:
    policy = RetryPolicy(retries=3, base_s=1.0, max_s=8.0)
    first = [policy.delay(n, None, random.Random(42)) for n in range(3)]
    again = [policy.delay(n, None, random.Random(42)) for n in range(3)]
    assert first == again


def test_retry_after_is_a_floor_on_the_wait() -> None:
    policy = RetryPolicy(retries=2, base_s=0.1, max_s=5.0)
    error = ProviderRateLimited("429", provider="p", status=429, retry_after=2.5)
    rng = random.Random(1)
    delays = [policy.delay(0, error, rng) for _ in range(200)]
    assert all(d == 2.5 for d in delays)  # jitter (at most 0.1 s) never exceeds what the upstream asked


def test_retry_after_beyond_the_cap_means_move_on_instead_of_sleeping() -> None:
    policy = RetryPolicy(retries=2, base_s=0.1, max_s=5.0)
    error = ProviderRateLimited("429", provider="p", status=429, retry_after=60.0)
    assert policy.delay(0, error, random.Random(1)) is None


def test_no_delay_once_retries_are_used_up() -> None:
    policy = RetryPolicy(retries=2, base_s=0.1, max_s=1.0)
    rng = random.Random(3)
    assert policy.delay(0, None, rng) is not None
    assert policy.delay(1, None, rng) is not None
    assert policy.delay(2, None, rng) is None
    assert NO_RETRY.delay(0, None, rng) is None


def test_huge_retry_numbers_stay_capped() -> None:
    policy = RetryPolicy(retries=10_000, base_s=0.25, max_s=8.0)
    assert policy.ceiling(5000) == 8.0
    delay = policy.delay(5000, None, random.Random(0))
    assert delay is not None and 0.0 <= delay <= 8.0


@pytest.mark.parametrize(
    "kwargs",
    [{"retries": -1}, {"base_s": -0.1}, {"base_s": 2.0, "max_s": 1.0}],
)
def test_invalid_policies_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
