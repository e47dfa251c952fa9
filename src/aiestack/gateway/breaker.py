"""Circuit breakers: stop sending traffic to a deployment that keeps failing, and notice when it heals.

One breaker per deployment model name, shared by every route that uses the model (the upstream's
health does not depend on which route asked). States::

    closed ──(N consecutive failures)──▶ open ──(cooldown)──▶ half-open ──(probe succeeds)──▶ closed
                                          ▲                       │
                                          └───(probe fails)───────┘

While open, requests skip the deployment at once instead of waiting for it to fail. After the
cooldown one request at a time is let through as a probe; its outcome decides. A probe whose
outcome never arrives (its task was cancelled and nobody reported back) stops blocking after
another cooldown, so a lost probe cannot keep a breaker half-open forever.

Each call through the breaker holds a :class:`Permit` and reports its outcome on it: ``success``,
``failure`` (the deployment is unhealthy) or ``release`` (the outcome says nothing about its
health, e.g. the prompt was too long or the client went away). A permit remembers whether it was
the probe and which opening it was admitted under, so late reports from requests admitted before
the breaker opened do not decide the probe's question.

The clock is injectable (``time.monotonic`` by default) so tests move time instead of sleeping.
Breakers are safe to share between threads; each holds its own lock, and the board creates them
on first use.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

BreakerState = Literal["closed", "half_open", "open"]
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """``failures`` consecutive failures open the breaker; ``cooldown_s`` later it lets a probe through."""

    failures: int = 5
    cooldown_s: float = 30.0

    def __post_init__(self) -> None:
        if self.failures < 1:
            raise ValueError(f"failures must be >= 1, got {self.failures}")
        if self.cooldown_s <= 0:
            raise ValueError(f"cooldown_s must be > 0, got {self.cooldown_s}")


class Permit:
    """One call's admission through a breaker; report how the call went exactly once."""

    __slots__ = ("_breaker", "_done", "_epoch", "probe")

    def __init__(self, breaker: CircuitBreaker, *, probe: bool, epoch: int) -> None:
        self._breaker = breaker
        self._epoch = epoch
        self._done = False
        self.probe = probe

    def success(self) -> None:
        if not self._done:
            self._done = True
            self._breaker._settle(self, "success")

    def failure(self) -> None:
        if not self._done:
            self._done = True
            self._breaker._settle(self, "failure")

    def release(self) -> None:
        """The call ended without saying anything about the deployment's health."""
        if not self._done:
            self._done = True
            self._breaker._settle(self, "release")


class CircuitBreaker:
    """The breaker of one deployment. Use :meth:`allow` before a call and report on the permit."""

    def __init__(
        self, target: str, settings: BreakerSettings | None = None, *, clock: Clock = time.monotonic
    ) -> None:
        self.target = target
        self.settings = settings or BreakerSettings()
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0  # consecutive, while closed
        self._opened_at: float | None = None
        self._probe_at: float | None = None  # when the current half-open probe was let through
        self._epoch = 0  # bumped each time the breaker opens or closes

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state(self._clock())

    @property
    def failures(self) -> int:
        """Consecutive failures counted while closed."""
        with self._lock:
            return self._failures

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it is not open)."""
        with self._lock:
            now = self._clock()
            if self._state(now) != "open" or self._opened_at is None:
                return 0.0
            return max(self._opened_at + self.settings.cooldown_s - now, 0.0)

    def allow(self) -> Permit | None:
        """A permit for one call, or ``None`` when the call must skip this deployment."""
        with self._lock:
            now = self._clock()
            state = self._state(now)
            if state == "closed":
                return Permit(self, probe=False, epoch=self._epoch)
            if state == "open":
                return None
            if self._probe_at is not None and now - self._probe_at < self.settings.cooldown_s:
                return None  # a probe is out; wait for its answer
            self._probe_at = now
            return Permit(self, probe=True, epoch=self._epoch)

    def _state(self, now: float) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if now - self._opened_at >= self.settings.cooldown_s:
            return "half_open"
        return "open"

    def _settle(self, permit: Permit, outcome: Literal["success", "failure", "release"]) -> None:
        with self._lock:
            now = self._clock()
            state = self._state(now)
            current = permit._epoch == self._epoch
            if permit.probe and current:
                self._probe_at = None
            if outcome == "release":
                return
            if state == "closed":
                if outcome == "success":
                    self._failures = 0
                elif current:
                    self._failures += 1
                    if self._failures >= self.settings.failures:
                        self._open(now)
            elif state == "half_open" and permit.probe and current:
                if outcome == "success":
                    self._close()
                else:
                    self._open(now)
            # Otherwise the report is stale: the call was admitted before the breaker last opened
            # (or closed), so it says nothing about the question the breaker is asking now.

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._probe_at = None
        self._failures = 0
        self._epoch += 1

    def _close(self) -> None:
        self._opened_at = None
        self._probe_at = None
        self._failures = 0
        self._epoch += 1


class BreakerBoard:
    """Every deployment's breaker, created on first use; owned by the stack, shared by all requests.

    ``settings`` gives per-model settings (from the routes that use each model); other models
    get ``default``.
    """

    def __init__(
        self,
        settings: Mapping[str, BreakerSettings] | None = None,
        *,
        default: BreakerSettings | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self._settings = dict(settings or {})
        self._default = default or BreakerSettings()
        self._clock = clock
        self._lock = threading.Lock()
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, target: str) -> CircuitBreaker:
        breaker = self._breakers.get(target)
        if breaker is not None:
            return breaker
        with self._lock:
            breaker = self._breakers.get(target)
            if breaker is None:
                settings = self._settings.get(target, self._default)
                breaker = self._breakers[target] = CircuitBreaker(target, settings, clock=self._clock)
            return breaker

    def states(self) -> dict[str, BreakerState]:
        """The state of every breaker used so far (for health pages and tests)."""
        with self._lock:
            breakers = list(self._breakers.values())
        return {b.target: b.state for b in breakers}
