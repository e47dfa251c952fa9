"""The PII and secrets checks are linear-time on adversarial input (no catastrophic backtracking).

Each input repeats a short unit that keeps a pattern's prefix matching without completing it (the
shape that makes a backtracking regex quadratic). A megabyte of it must be checked within a budget
several times what the slowest linear scan takes on a loaded machine (digits and spaces: ~10 s); one quadratic pattern
takes minutes on it (the URL-credentials pattern before its fix: ~8 minutes). A timing ratio would be
the finer test but flakes on a shared CI machine; this bound cannot fail by noise alone.
"""

from __future__ import annotations

import time

import pytest

from aiestack.guardrails.pii import ENTITIES, PIIDetector
from aiestack.guardrails.secrets import SecretsDetector

pytestmark = [pytest.mark.unit, pytest.mark.slow]

UNITS = [
    "a.", "sk-", "a.a-", "a@", "1 ", "(1) ", "1:", "a:", "Mr Aaaa ", "token=abcdefgh1 ", "eyJaaaaaaaaa.",
    "a://b:", "-----BEGIN PRIVATE KEY-----", "1 Aa ", "DE00 ", "x-_", "_.", "a1-_. :@/", "Aa", "0",
]


SIZE = 1_000_000
BUDGET_S = 40.0  # digits and spaces cost ~10 s per MB under load (phone-number parsing of each run): linear, but not cheap


@pytest.mark.parametrize("unit", UNITS)
def test_a_megabyte_of_adversarial_input_is_checked_in_linear_time(unit: str) -> None:
    text = (unit * (SIZE // len(unit) + 1))[:SIZE]
    for detector in (PIIDetector(ENTITIES), SecretsDetector()):
        started = time.perf_counter()
        detector.detect(text)
        elapsed = time.perf_counter() - started
        assert elapsed < BUDGET_S, (type(detector).__name__, unit, elapsed)
