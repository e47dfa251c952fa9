"""When to retry a failed provider call, when to move on, and how long to wait in between.

Two decisions live here, both pure functions of the error so that they can be tested alone:

- :func:`disposition` sorts a provider failure into what the gateway does next. Errors that are
  the *deployment's* fault (5xx, refused connections, timeouts, rate limits, a stream that broke
  before the answer) are retried on the same deployment and then handed to the next one. A prompt
  that does not fit the context window is not retried (it would fail the same way) and skips the
  other deployments of the same route too (they serve the same model), going straight to the
  fallbacks, which are usually larger models. An authentication failure is one deployment's
  misconfiguration, so the request moves on without retrying. Anything else (a bad request, an
  unknown model) is the request's own fault and fails at once: no other model would accept it.
- :class:`RetryPolicy` computes the backoff: exponential with *full jitter*
  (``uniform(0, min(max, base · 2^n))``), which spreads the retries of many clients that failed
  together instead of sending them back in lock-step. An upstream's ``Retry-After`` is honoured
  (the wait is at least what it asked); when it asks for longer than the policy's cap, retrying
  here is pointless, and the policy says so (``None``) so the request moves on to another
  deployment rather than sleeping.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from aiestack.errors import AiestackError, ContextLengthExceeded, ProviderAuthError

Disposition = Literal["retry", "next", "skip_group", "fail"]
"""``retry``: retry this deployment (then move on); ``next``: move on to the next attempt;
``skip_group``: move on past the other deployments of the same route; ``fail``: give up now."""

_MAX_EXPONENT = 30  # 2**30 · base is far beyond any cap; keeps the float finite for absurd counts


def disposition(error: AiestackError) -> Disposition:
    """What to do after ``error`` ended an attempt (see the module docstring for why)."""
    if isinstance(error, ContextLengthExceeded):
        return "skip_group"
    if error.retryable:
        return "retry"
    if isinstance(error, ProviderAuthError):
        return "next"
    return "fail"


def is_upstream_failure(error: AiestackError) -> bool:
    """Whether ``error`` says the deployment is unhealthy (counts towards opening its breaker).

    A request that was too long or malformed says nothing about the upstream's health.
    """
    return error.retryable or isinstance(error, ProviderAuthError)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often to retry one deployment and how long to wait before each retry.

    ``retries`` counts the calls after the first (``0``: one call, no retry).
    """

    retries: int = 0
    base_s: float = 0.25
    max_s: float = 8.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.base_s < 0 or self.max_s < 0:
            raise ValueError(f"backoff times must be >= 0, got base {self.base_s}, max {self.max_s}")
        if self.max_s < self.base_s:
            raise ValueError(f"backoff max ({self.max_s}) must be >= backoff base ({self.base_s})")

    def ceiling(self, retry: int) -> float:
        """The longest jittered wait before retry number ``retry`` (0 is the first retry)."""
        return min(self.max_s, self.base_s * 2.0 ** min(retry, _MAX_EXPONENT))

    def delay(self, retry: int, error: BaseException | None, rng: random.Random) -> float | None:
        """Seconds to wait before retry number ``retry``, or ``None`` when this retry should not happen.

        ``None`` when the retries are used up, or when the upstream's ``retry_after`` exceeds
        ``max_s`` (waiting that long is worse than trying another deployment).
        """
        if retry >= self.retries:
            return None
        wait = rng.uniform(0.0, self.ceiling(retry))
        asked = getattr(error, "retry_after", None)
        if isinstance(asked, int | float) and asked > 0:
            if asked > self.max_s:
                return None
            wait = max(wait, float(asked))
        return wait


NO_RETRY = RetryPolicy(retries=0)
"""The policy of a bare model (a request naming a model, not a route): one call, as before routes existed."""
