"""The terminal stage: call the model or route the request names and attach its completion.

A request naming a *model* gets one call, as it always did. A request naming a *route* carries
that route's plan (``ex.plan``, with the attempts :mod:`aiestack.gateway.routes` compiled at build
time): deployments chosen by weight, then fallbacks, each tried with retries and backoff for
errors worth retrying, a limit on the time to the first token, and a circuit breaker per
deployment that skips upstreams known to be down.

Where failure handling ends: the first delta is awaited before this stage returns, so everything
that goes wrong before the answer starts (connection refused, 4xx/5xx, a timeout) is retried or
falls back here, and, when every attempt failed, raises from the pipeline call as a typed error.
A *non-streaming* request is collected inside the attempt too: nobody has seen any of its answer,
so a stream that breaks half way is retried like any other failure. A *streaming* answer that
breaks after its first delta cannot be retried (the client already has part of it): the break
reaches the stream's reader as :class:`~aiestack.errors.StreamBroken`, never as a clean end, and
the deployment's breaker counts it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from aiestack.errors import AiestackError, ProviderTimeout, ProviderUnavailable, StreamBroken
from aiestack.gateway.breaker import BreakerBoard, CircuitBreaker, Permit
from aiestack.gateway.retry import Disposition, disposition, is_upstream_failure
from aiestack.gateway.routes import Attempt, Plan, RouteAttempts, RouteTable
from aiestack.models.pricing import PriceTable
from aiestack.models.registry import ModelEntry, ModelRegistry
from aiestack.monitoring import Metrics
from aiestack.pipeline import Next
from aiestack.streams import collect
from aiestack.types import Completion, Delta, Exchange, Message, Timing

# Exchange attributes set for a request that named a route (recorded with the exchange).
ATTEMPTS = "aiestack.attempts"  # provider calls made, retries included
ATTEMPT_LOG = "aiestack.attempt_log"  # "model: outcome" per call or skip, in order
DEPLOYMENT = "aiestack.deployment"  # the configured model that answered
FALLBACK = "aiestack.fallback"  # whether that was not the plan's first choice
BREAKERS_OPEN = "aiestack.breakers_open"  # models skipped because their breaker was open

Sleep = Callable[[float], Awaitable[Any]]
OnEnd = Callable[[BaseException | None], None]
_E = TypeVar("_E", bound=AiestackError)


class _Trail:
    """What one request tried, for the error message, the exchange attributes and the metrics."""

    __slots__ = ("calls", "last_error", "left", "log", "open")

    def __init__(self) -> None:
        self.log: list[tuple[str, str]] = []  # (model, outcome)
        self.calls = 0
        self.last_error: AiestackError | None = None
        self.open: dict[str, float] = {}  # model -> seconds until its breaker lets a probe through
        self.left: tuple[str, str] | None = None  # (model, reason) last left behind, for the fallback metric

    def describe(self) -> str:
        """``a: ProviderUnavailable ×3, b: breaker open, c: ok`` (repeats folded)."""
        parts = []
        for (model, outcome), run in itertools.groupby(self.log):
            n = len(list(run))
            parts.append(f"{model}: {outcome}" + (f" ×{n}" if n > 1 else ""))
        return ", ".join(parts)


class Generate:
    """Tries the attempts of the exchange's route plan (or the bare model it names), streams from
    the provider(s) and prices the result.

    A route's attempts come with the exchange's :class:`~aiestack.types.RoutePlan` (its
    :class:`~aiestack.gateway.routes.RouteAttempts` part, compiled once at build time), so the
    semantic router's choice is what is tried; ``routes`` resolves bare model names (and names
    the routes in a "not found" error);
    ``breakers`` holds the deployments' circuit breakers (the stack owns one board, shared by all
    requests); ``metrics`` receives retries, fallbacks and breaker states; ``sleep`` and ``rng``
    are the backoff's clock and the randomness of weights and jitter, injectable for tests.

    A bare model gets one call: no retries, no time limit beyond the provider's own, and its
    breaker is neither consulted nor fed. Naming a model explicitly asks for that model; a route
    is how a request asks for resilience.
    """

    name = "generate"

    def __init__(
        self,
        models: ModelRegistry,
        prices: PriceTable,
        *,
        routes: RouteTable | None = None,
        breakers: BreakerBoard | None = None,
        metrics: Metrics | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._models = models
        self._prices = prices
        self._routes = routes if routes is not None else RouteTable(models)
        self._breakers = breakers if breakers is not None else BreakerBoard(self._routes.breaker_settings)
        self._metrics = metrics
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        plan = self._plan(ex)
        trail = _Trail()
        skip_group: int | None = None
        for attempt in plan.attempts:
            if attempt.group == skip_group:
                trail.log.append((attempt.model, "skipped (prompt too long for the route's models)"))
                continue
            entry = self._models.resolve(attempt.model)
            result = await self._attempt(entry, attempt, ex, trail)
            if isinstance(result, Completion):
                return self._answered(ex, plan, attempt, result, trail)
            if result == "skip_group":
                skip_group = attempt.group
        raise self._exhausted(plan, trail)

    def _plan(self, ex: Exchange) -> Plan:
        """The attempts of the route the exchange's plan names, in this request's order; else one bare call."""
        route = ex.plan.route if ex.plan is not None else None
        compiled = ex.plan.part(RouteAttempts) if ex.plan is not None else None
        if route is None or compiled is None:
            return self._routes.bare(ex.request.model)
        return Plan(route, compiled.order(self._rng))

    # ------------------------------------------------------------------ one attempt (one model)

    async def _attempt(
        self, entry: ModelEntry, attempt: Attempt, ex: Exchange, trail: _Trail
    ) -> Completion | Disposition:
        """Call one model, retrying as its policy allows; the completion, or what to do next."""
        breaker = self._breakers.get(attempt.model) if attempt.breaker else None
        retry = 0
        while True:
            permit: Permit | None = None
            if breaker is not None:
                permit = breaker.allow()
                self._gauge(breaker)
                if permit is None:
                    trail.log.append((attempt.model, "breaker open"))
                    trail.open[attempt.model] = breaker.retry_in()
                    trail.left = trail.left or (attempt.model, "breaker_open")
                    return "next"
            self._count_fallback(trail, attempt.model)
            trail.calls += 1
            on_end = self._settler(permit, breaker)
            try:
                completion = await self._call(entry, attempt, ex, on_end)
            except AiestackError as exc:
                on_end(exc)
                trail.log.append((attempt.model, type(exc).__name__))
                trail.last_error = exc
                what = disposition(exc)
                if what == "fail":
                    raise
                if what == "retry":
                    delay = attempt.policy.delay(retry, exc, self._rng)
                    if delay is not None:
                        if self._metrics is not None:
                            self._metrics.retry(entry.provider.provider, attempt.model, type(exc).__name__)
                        await self._sleep(delay)
                        retry += 1
                        continue
                    what = "next"
                trail.left = trail.left or (attempt.model, type(exc).__name__)
                return what
            except BaseException as exc:  # cancelled, or a bug in a provider: says nothing about health
                on_end(exc)
                raise
            if not ex.request.stream:
                on_end(None)
            trail.log.append((attempt.model, "ok"))
            return completion

    async def _call(self, entry: ModelEntry, attempt: Attempt, ex: Exchange, on_end: OnEnd) -> Completion:
        """One provider call: the first delta within the attempt's time limit; collected if not streaming."""
        if ex.request.stream:
            return await self.start(
                entry, ex, timeout_s=attempt.timeout_s, on_end=on_end, prompt_cache=attempt.prompt_cache
            )
        return await collect(
            await self.start(entry, ex, timeout_s=attempt.timeout_s, prompt_cache=attempt.prompt_cache)
        )

    def _settler(self, permit: Permit | None, breaker: CircuitBreaker | None) -> OnEnd:
        """Reports how a call ended to its breaker permit (once; later reports are ignored)."""

        def settle(error: BaseException | None) -> None:
            if permit is None or breaker is None:
                return
            if error is None:
                permit.success()
            elif isinstance(error, AiestackError) and is_upstream_failure(error):
                permit.failure()
            else:
                permit.release()
            self._gauge(breaker)

        return settle

    def _gauge(self, breaker: CircuitBreaker) -> None:
        if self._metrics is not None:
            self._metrics.breaker_state(breaker.target, breaker.state)

    def _count_fallback(self, trail: _Trail, model: str) -> None:
        if trail.left is not None and trail.left[0] != model:
            if self._metrics is not None:
                self._metrics.fallback(trail.left[0], model, trail.left[1])
            trail.left = None

    # ------------------------------------------------------------------ outcomes

    def _answered(
        self, ex: Exchange, plan: Plan, attempt: Attempt, completion: Completion, trail: _Trail
    ) -> Exchange:
        if plan.route is None:
            return dataclasses.replace(ex, completion=completion, outcome="ok")
        attributes = {
            **ex.attributes,
            ATTEMPTS: trail.calls,
            ATTEMPT_LOG: tuple(f"{model}: {outcome}" for model, outcome in trail.log),
            DEPLOYMENT: attempt.model,
            FALLBACK: attempt is not plan.attempts[0],
        }
        if trail.open:
            attributes[BREAKERS_OPEN] = tuple(trail.open)
        return dataclasses.replace(
            ex, route=plan.route, completion=completion, outcome="ok", attributes=attributes
        )

    def _exhausted(self, plan: Plan, trail: _Trail) -> AiestackError:
        """The error for a request whose every attempt failed or was skipped."""
        last = trail.last_error
        if plan.route is None and last is not None:
            return last
        tried = trail.describe()
        if last is None:
            wait = min(trail.open.values(), default=0.0)
            return ProviderUnavailable(
                f"Every model of route '{plan.route}' is unavailable ({tried}).",
                provider="gateway",
                retry_after=wait,
                hint=f"Their circuit breakers opened after repeated failures; retry in {wait:.1f}s, "
                f"or give routes.{plan.route} fallbacks on other upstreams.",
            )
        return _restated(last, f"{last.message} (route '{plan.route}' tried {tried})")

    # ------------------------------------------------------------------ streaming and pricing

    async def start(
        self,
        entry: ModelEntry,
        ex: Exchange,
        *,
        timeout_s: float | None = None,
        on_end: OnEnd | None = None,
        prompt_cache: bool = False,
    ) -> Completion:
        """Start ``entry``'s stream and wait for its first delta (at most ``timeout_s``).

        ``on_end`` is told how the returned stream ended: ``None`` after a clean end, else the
        error (or ``GeneratorExit`` when the reader stopped early). ``prompt_cache`` asks the
        provider to mark the prompt's stable prefix for its prompt cache (the route's setting).

        The provider is asked to stream (``request.stream``) when the client streams and also when
        a first-token limit applies, since only a stream has a first token to time; otherwise it
        may ask its upstream for the whole answer at once (the ``openai`` provider does).
        """
        upstream = dataclasses.replace(
            ex.request,
            model=entry.upstream,
            prompt_cache=ex.request.prompt_cache or prompt_cache,
            stream=ex.request.stream or timeout_s is not None,
        )
        started = time.perf_counter()
        source = entry.provider.stream(upstream)
        limit: asyncio.Timeout | None = None
        try:
            if timeout_s is None:
                first = await anext(source)
            else:
                async with asyncio.timeout(timeout_s) as limit:
                    first = await anext(source)
        except StopAsyncIteration:
            raise StreamBroken(
                "the provider returned an empty stream", provider=entry.provider.provider
            ) from None
        except TimeoutError:
            await _aclose(source)
            if limit is None or not limit.expired():
                raise
            raise ProviderTimeout(
                f"{entry.name} sent no token within {timeout_s:g}s",
                provider=entry.provider.provider,
                hint="The upstream is slow or overloaded; raise the route's timeout_s if answers "
                "legitimately take this long to start.",
            ) from None
        # Until the stream ends, the header's timing says how long the first delta took to arrive.
        waited = Timing(ttft_ms=(time.perf_counter() - started) * 1000)
        return Completion(
            message=Message(role="assistant"),
            model=entry.name,
            provider=entry.provider.provider,
            timing=waited,
            stream=self._priced(entry, first, source, on_end),
        )

    async def _priced(
        self, entry: ModelEntry, first: Delta, rest: AsyncIterator[Delta], on_end: OnEnd | None
    ) -> AsyncIterator[Delta]:
        """The deltas, the final one priced; a stream that stops without a finish reason is broken."""
        finished = first.finish_reason is not None
        error: BaseException | None = None
        try:
            yield self._price(entry, first)
            async for delta in rest:
                finished = finished or delta.finish_reason is not None
                yield self._price(entry, delta)
            if not finished:
                raise StreamBroken(
                    f"the stream from {entry.name} ended before the answer finished",
                    provider=entry.provider.provider,
                    hint="Retry the request; if it keeps happening, check the upstream's logs.",
                )
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                await _aclose(rest)
            finally:
                if on_end is not None:
                    on_end(error)

    def _price(self, entry: ModelEntry, delta: Delta) -> Delta:
        if delta.usage is None:
            return delta
        cost = self._prices.cost(entry.upstream, delta.usage, local=entry.local)
        return dataclasses.replace(delta, cost_usd=cost)


async def _aclose(stream: AsyncIterator[Delta]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


def _restated(error: _E, message: str) -> _E:
    """A copy of ``error`` (same type, fields and hint) whose message is ``message``.

    Built field by field because error constructors take keyword-only fields (``provider``...)
    that ``copy.copy`` cannot pass back; the original stays untouched for whoever else holds it.
    """
    clone = type(error).__new__(type(error))
    clone.__dict__.update(error.__dict__)
    clone.message = message
    clone.args = (str(clone),)
    return clone
