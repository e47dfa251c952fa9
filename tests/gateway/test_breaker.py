"""Circuit breakers: open after N consecutive failures, one half-open probe after the cooldown,
recover on success, re-open on failure; stale and lost reports cannot wedge them."""

from __future__ import annotations

import pytest

from aiestack.gateway.breaker import BreakerBoard, BreakerSettings, CircuitBreaker, Permit

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _breaker(failures: int = 3, cooldown_s: float = 10.0) -> tuple[CircuitBreaker, Clock]:
    clock = Clock()
    return CircuitBreaker("m", BreakerSettings(failures=failures, cooldown_s=cooldown_s), clock=clock), clock


def _permit(breaker: CircuitBreaker) -> Permit:
    permit = breaker.allow()
    assert permit is not None, f"expected the breaker to admit a call, it is {breaker.state}"
    return permit


def _fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        _permit(breaker).failure()


def test_opens_after_n_consecutive_failures_and_rejects_calls() -> None:
    breaker, _ = _breaker(failures=3)
    _fail(breaker, 2)
    assert breaker.state == "closed" and breaker.failures == 2
    _fail(breaker, 1)
    assert breaker.state == "open"
    assert breaker.allow() is None
    assert breaker.retry_in() == pytest.approx(10.0)


def test_a_success_resets_the_consecutive_count() -> None:
    breaker, _ = _breaker(failures=3)
    _fail(breaker, 2)
    _permit(breaker).success()
    _fail(breaker, 2)
    assert breaker.state == "closed" and breaker.failures == 2


def test_neutral_outcomes_do_not_count() -> None:
    breaker, _ = _breaker(failures=2)
    for _ in range(5):
        _permit(breaker).release()
    assert breaker.state == "closed" and breaker.failures == 0


def test_half_open_after_cooldown_lets_one_probe_through_and_closes_on_success() -> None:
    breaker, clock = _breaker(failures=2, cooldown_s=10.0)
    _fail(breaker, 2)
    clock.advance(9.9)
    assert breaker.state == "open" and breaker.allow() is None
    assert breaker.retry_in() == pytest.approx(0.1)
    clock.advance(0.1)
    assert breaker.state == "half_open"
    probe = _permit(breaker)
    assert probe.probe
    assert breaker.allow() is None  # one probe at a time
    probe.success()
    assert breaker.state == "closed"
    again = _permit(breaker)
    assert not again.probe


def test_a_failed_probe_reopens_for_a_full_cooldown() -> None:
    breaker, clock = _breaker(failures=2, cooldown_s=10.0)
    _fail(breaker, 2)
    clock.advance(10.0)
    _permit(breaker).failure()
    assert breaker.state == "open"
    clock.advance(9.0)
    assert breaker.allow() is None
    clock.advance(1.0)
    assert breaker.state == "half_open" and _permit(breaker).probe


def test_a_released_probe_lets_the_next_call_probe() -> None:
    breaker, clock = _breaker(failures=1, cooldown_s=5.0)
    _fail(breaker, 1)
    clock.advance(5.0)
    _permit(breaker).release()  # e.g. the prompt was too long: no verdict on health
    assert breaker.state == "half_open"
    assert _permit(breaker).probe


def test_a_lost_probe_stops_blocking_after_another_cooldown() -> None:
    breaker, clock = _breaker(failures=1, cooldown_s=5.0)
    _fail(breaker, 1)
    clock.advance(5.0)
    lost = _permit(breaker)  # never reports back
    clock.advance(4.0)
    assert breaker.allow() is None
    clock.advance(1.0)
    second = _permit(breaker)
    second.success()
    assert breaker.state == "closed"
    assert lost.probe


def test_stale_reports_from_calls_admitted_before_opening_are_ignored() -> None:
    breaker, clock = _breaker(failures=2, cooldown_s=5.0)
    straggler_bad = _permit(breaker)
    straggler_good = _permit(breaker)
    _fail(breaker, 2)
    assert breaker.state == "open"
    straggler_good.success()  # admitted before the breaker opened: not the probe's answer
    assert breaker.state == "open"
    clock.advance(5.0)
    probe = _permit(breaker)
    straggler_bad.failure()
    assert breaker.state == "half_open"  # the stale failure does not re-open it
    probe.success()
    assert breaker.state == "closed"


def test_a_permit_reports_once() -> None:
    breaker, _ = _breaker(failures=2)
    permit = _permit(breaker)
    permit.failure()
    permit.failure()
    assert breaker.failures == 1
    permit.success()
    assert breaker.failures == 1


def test_board_shares_one_breaker_per_target_with_its_settings() -> None:
    clock = Clock()
    board = BreakerBoard({"fragile": BreakerSettings(failures=1, cooldown_s=1.0)}, clock=clock)
    assert board.get("fragile") is board.get("fragile")
    _permit(board.get("fragile")).failure()
    _permit(board.get("sturdy")).failure()
    assert board.states() == {"fragile": "open", "sturdy": "closed"}
    assert board.get("sturdy").settings == BreakerSettings()
    clock.advance(1.0)
    assert board.states()["fragile"] == "half_open"


@pytest.mark.parametrize("kwargs", [{"failures": 0}, {"cooldown_s": 0.0}])
def test_invalid_settings_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerSettings(**kwargs)  # type: ignore[arg-type]
