"""The Limits stage: a key's model allowlist, RPM and TPM limits and USD budgets.

Checked before the call, reconciled after it:

- **RPM**: one slot in the key's current one-minute window (``rpm:{key}:{minute}``).
- **Sampling routes** (``[routes.NAME.sampling]``, N samples per request) reserve N times a call's
  token and cost estimates; the settlement uses the sum over the N samples the answer carries.
- **TPM**: the request's estimated tokens (message text / 4 + ``max_tokens`` or a default) go into
  the minute's token window before the call; when the answer ends (for a stream: when the stream
  ends, however it ends), the difference to the real input + output tokens is added (usually a
  refund). A cached answer used no tokens.
- **Budgets**: the key's spend this UTC day / month, in micro-USD counters in the KV. A counter that
  does not exist yet is *seeded* from the exchange store's ``spend(key, since=start of period)``
  with an atomic set-if-absent, so neither a restart nor a Redis flush resets a budget, and two
  processes seeding at once cannot both add. Before the call its estimated cost (``cost_estimate``:
  the input estimate and ``max_tokens`` at the dearest deployment's price) is *reserved* atomically
  in the counter, as RPM/TPM are taken, and refused if spend + reservations in flight would pass
  the budget; when the answer ends the reservation is replaced by the real cost. So the overshoot,
  across any number of processes, is bounded by how much the real costs exceed their estimates:
  none when ``max_tokens`` is set and the price is known; with ``max_tokens`` unset the estimate
  assumes ``default_output_tokens``. (A seed misses the exchanges the background writer has not
  flushed yet, a fraction of a second's worth.)

The windows are fixed windows on the wall clock, shared by every process through the
:class:`~aiestack.stores.kv.KV`: with Redis the admitted total is exactly the limit however many
gateway processes there are. A window's counter lives only as long as its minute.

Rejections are :class:`~aiestack.errors.RateLimited` / :class:`KeyBudgetExceeded` (HTTP 429, with
``retry_after`` = seconds until the window or period resets), each counted in
``metrics.limit_rejection``. Exchanges without a key pass straight through. Limits fail closed
by default: if the KV cannot be reached, the request fails with a
:class:`~aiestack.errors.StoreError` (503) rather than going through unmetered. With
``fail_open`` (``gateway.limits_fail_open``) such a request goes through unmetered instead, and a
warning is logged (at most once every :data:`FAIL_OPEN_LOG_INTERVAL_S` seconds per process).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from aiestack.errors import AuthError, BudgetExceeded, InvalidRequest, RateLimited, StoreError, spent
from aiestack.gateway.keys import ModelNotAllowed, TTLCache, display_key
from aiestack.monitoring import Metrics
from aiestack.pipeline import Next
from aiestack.sampling.config import SamplingPlan
from aiestack.stores.base import KeyRecord, KeyStore, SpendSource
from aiestack.stores.kv import KV
from aiestack.streams import tap
from aiestack.types import ChatRequest, Completion, Exchange

_log = logging.getLogger(__name__)

WINDOW_S = 60
#: Output tokens assumed when a request does not set ``max_tokens``.
DEFAULT_OUTPUT_TOKENS = 512
#: Tokens a chat format adds per message (role markers and separators), as OpenAI counts them.
_TOKENS_PER_MESSAGE = 4
#: Budget counters outlive their period by this much, so a late reconcile never recreates one.
_BUDGET_TTL_SLACK_S = 3600
MICRO = 1_000_000
#: With ``fail_open``, the "limits are not enforced" warning is logged at most this often.
FAIL_OPEN_LOG_INTERVAL_S = 10.0

Period = Literal["day", "month"]


class KeyBudgetExceeded(BudgetExceeded):
    """A key's daily or monthly budget is spent; ``retry_after`` is the time until it resets."""

    def __init__(self, message: str, *, retry_after: float, period: Period, hint: str | None = None) -> None:
        self.retry_after = retry_after
        self.period = period
        super().__init__(message, hint=hint)


class RequestTooLarge(InvalidRequest):
    """One request alone needs more tokens than the key's TPM limit: waiting would never help."""

    code = "request_exceeds_tpm_limit"


@dataclass(frozen=True, slots=True)
class Grant:
    """What the check took, so that the reconcile after the call can correct it."""

    key: KeyRecord
    tpm_window: str | None
    estimate: int
    spend_counters: tuple[str, ...]
    reserved: int = 0  # micro-USD reserved in each spend counter


#: ``(the models a call may reach, input tokens, output tokens) -> the most it may cost in USD`` (None:
#: unknown). The models come from the exchange's route plan (:func:`reachable_models`).
CostEstimate = Callable[[Sequence[str], int, int], "float | None"]


def reachable_models(ex: Exchange) -> tuple[str, ...]:
    """The models the exchange's plan may call: a route's deployments and fallbacks, else the model it names."""
    plan = ex.plan
    if plan is not None and plan.route is not None:
        return (*plan.deployments, *plan.fallbacks)
    return (ex.request.model,)


def estimate_tokens(request: ChatRequest, *, default_output_tokens: int = DEFAULT_OUTPUT_TOKENS) -> int:
    """A quick upper-ish estimate of the tokens a request will use: input chars / 4, plus output.

    Tokenizers average about four characters a token on English text; the estimate only has to
    be good enough to admit or refuse, since the real count replaces it afterwards.
    """
    chars = 0
    for message in request.messages:
        chars += len(message.text) + sum(len(c.name) + len(c.arguments) for c in message.tool_calls)
    for tool in request.params.tools:
        chars += len(tool.name) + len(tool.description) + len(json.dumps(dict(tool.parameters)))
    output = request.params.max_tokens if request.params.max_tokens is not None else default_output_tokens
    return math.ceil(chars / 4) + _TOKENS_PER_MESSAGE * len(request.messages) + output


def period_bounds(period: Period, now: float) -> tuple[float, float, str]:
    """The UTC ``(start, end, label)`` of the day or month containing ``now`` (epoch seconds)."""
    moment = dt.datetime.fromtimestamp(now, tz=dt.UTC)
    if period == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + dt.timedelta(days=1)
        label = start.strftime("%Y-%m-%d")
    else:
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
        label = start.strftime("%Y-%m")
    return start.timestamp(), end.timestamp(), label


def _micro(usd: float) -> int:
    return round(usd * MICRO)


def _wait(seconds: float) -> int:
    """A whole number of seconds to wait, at least 1 (what a Retry-After header carries)."""
    return max(1, math.ceil(seconds))


def _duration(seconds: float) -> str:
    minutes = _wait(seconds) // 60
    if minutes < 1:
        return f"{_wait(seconds)} s"
    if minutes < 120:
        return f"{minutes} min"
    hours = minutes // 60
    return f"{hours} h {minutes % 60} min" if hours < 48 else f"{hours // 24} days"


class Limits:
    """The pipeline stage that enforces a key's limits; it goes right after Trace.

    ``keys`` is looked up by ``Exchange.key_id`` (cached ``key_cache_ttl_s`` seconds, so a
    changed or revoked key takes effect within that time); ``kv`` holds the windows and spend
    counters; ``spend`` seeds the spend counters. ``clock`` is wall-clock epoch seconds.
    """

    name = "limits"

    def __init__(
        self,
        keys: KeyStore,
        kv: KV,
        spend: SpendSource,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        key_cache_ttl_s: float = 5.0,
        default_output_tokens: int = DEFAULT_OUTPUT_TOKENS,
        fail_open: bool = False,
        cost_estimate: CostEstimate | None = None,
    ) -> None:
        self._keys = keys
        self._cost_estimate = cost_estimate
        self._fail_open = fail_open
        self._warned_at = -math.inf
        self._kv = kv
        self._spend = spend
        self._metrics = metrics
        self._clock = clock
        self._default_output = default_output_tokens
        self._key_cache: TTLCache[str, KeyRecord | None] = TTLCache(key_cache_ttl_s, clock=clock)

    def passes(self, ex: Exchange) -> bool:
        """A request without a key has no limits to check (the pipeline then skips this stage)."""
        return ex.key_id is None

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        if ex.key_id is None:  # as passes(ex) says: a request without a key
            return await call_next(ex)
        sampling = ex.plan.part(SamplingPlan) if ex.plan is not None else None
        try:
            grant = await self._admit_chat(
                ex.key_id, ex.request, reachable_models(ex), calls=sampling.n if sampling is not None else 1
            )
        except StoreError as exc:
            if not self._fail_open:
                raise
            self._warn_unmetered(exc)
            return await call_next(ex)
        try:
            result = await call_next(ex)
        except BaseException as exc:
            await self._settle_chat(grant, None, exc)
            raise
        completion = result.completion
        if completion is not None and completion.stream is not None:

            async def on_done(final: Completion | None, error: BaseException | None) -> None:
                await self._settle_chat(grant, final, error)

            return dataclasses.replace(result, completion=tap(completion, on_done))
        await self._settle_chat(grant, completion, result.error)
        return result

    async def _admit_chat(self, key_id: str, request: ChatRequest, models: Sequence[str], *, calls: int = 1) -> Grant:
        """Admit a chat request that makes ``calls`` model calls (a sampling route's N samples) of ``models``."""
        tokens = estimate_tokens(request, default_output_tokens=self._default_output)
        output = request.params.max_tokens if request.params.max_tokens is not None else self._default_output
        cost = self._cost_estimate(models, max(tokens - output, 0), output) if self._cost_estimate else None
        tokens, cost = tokens * calls, (cost * calls if cost is not None else None)
        return await self.admit(key_id, request.model, tokens, cost_usd=cost, exact_tokens=request.params.max_tokens is not None)

    async def _settle_chat(self, grant: Grant, completion: Completion | None, error: BaseException | None = None) -> None:
        """Settle on what the call used: an answer's usage, or what the answers an output guard
        blocked used (the model ran: its tokens and cost count); nothing for a cached answer."""
        usage, cost = spent(completion, error)
        if usage is None or (completion is not None and completion.cached):
            await self.settle(grant, tokens=0, cost_usd=None)
        else:
            await self.settle(grant, tokens=usage.input_tokens + usage.output_tokens, cost_usd=cost)

    def side_calls(self) -> SideCallLimits:
        """The stage that bills side-calls (:mod:`aiestack.sidecalls`) to the key whose request made them."""
        return SideCallLimits(self)

    async def admit_side_call(self, key_id: str) -> Grant:
        """A side-call's admission: the key's budgets only (refused once its spend reached a budget).
        Its RPM, TPM and model allowlist bound what the key's clients send, not the models the
        stack's own wings call for them."""
        key = await self._key(key_id)
        counters = await self._reserve_budgets(key, self._clock(), 0)
        return Grant(key, None, 0, counters, 0)

    # ------------------------------------------------------------------ before the call

    async def admit(
        self, key_id: str, model: str, tokens: int, *, cost_usd: float | None = None, exact_tokens: bool = True
    ) -> Grant:
        """Check every limit of the key for a call of ``model`` estimated at ``tokens`` and
        ``cost_usd``, and take its share (reserving the cost in each budget); raise if one refuses.

        ``exact_tokens=False``: the token estimate holds a guessed output, so it never refuses alone.
        Every admitted call must be followed by :meth:`settle`. (The pipeline stage does both for chat;
        ``/v1/embeddings`` calls them directly.)
        """
        key = await self._key(key_id)
        self._check_model(key, model)
        now = self._clock()
        reserve = _micro(cost_usd) if cost_usd else 0
        counters = await self._reserve_budgets(key, now, reserve)
        window = int(now // WINDOW_S)
        retry_after = (window + 1) * WINDOW_S - now
        try:
            rpm_window = await self._take_rpm(key, window, retry_after)
            try:
                tpm_window, estimate = await self._take_tpm(key, tokens, exact_tokens, window, retry_after)
            except BaseException:
                if rpm_window is not None:  # refused requests do not use up the request limit
                    await self._kv.incr(rpm_window, -1, ttl_s=WINDOW_S)
                raise
        except BaseException:
            await self._release(counters, reserve)
            raise
        return Grant(key, tpm_window, estimate, counters, reserve)

    def _warn_unmetered(self, exc: StoreError) -> None:
        now = time.monotonic()
        if now - self._warned_at >= FAIL_OPEN_LOG_INTERVAL_S:
            self._warned_at = now
            _log.warning("Limits are not enforced (gateway.limits_fail_open = true): %s", exc)

    async def _key(self, key_id: str) -> KeyRecord:
        hit, key = self._key_cache.get(key_id)
        if not hit:
            key = await asyncio.to_thread(self._keys.get_key, key_id)
            self._key_cache.put(key_id, key)
        if key is None:
            raise AuthError(
                f"The API key {key_id} no longer exists.", hint="Ask an administrator for a new key."
            )
        if key.revoked:
            raise AuthError(
                f"The API key {display_key(key)} was revoked.", hint="Ask an administrator for a new key."
            )
        return key

    def _check_model(self, key: KeyRecord, model: str) -> None:
        if key.models and model not in key.models:
            self._reject("model")
            raise ModelNotAllowed(
                f"The API key {display_key(key)} may not use the model '{model}'; "
                f"it may use: {', '.join(key.models)}.",
                hint=f"Name one of those models, or ask an administrator for a key that allows '{model}'.",
            )

    async def _reserve_budgets(self, key: KeyRecord, now: float, reserve: int) -> tuple[str, ...]:
        """Reserve ``reserve`` micro-USD in each budget of ``key``; raise if one cannot take it.

        The reservation is atomic (:meth:`KV.window_add`): across any number of processes the spend
        plus the reservations of calls in flight never passes the budget, so the overshoot is bounded
        by how far the real costs exceed their estimates (nothing, when ``max_tokens`` is set and the
        model's price is known). A call with no known price reserves nothing and is refused only once
        the spend has reached the budget.
        """
        counters: list[str] = []
        budgets: tuple[tuple[Period, float | None], ...] = (
            ("day", key.budget_day_usd),
            ("month", key.budget_month_usd),
        )
        try:
            for period, budget in budgets:
                if budget is None:
                    continue
                start, end, label = period_bounds(period, now)
                counter = f"spend:{period}:{key.id}:{label}"
                if await self._kv.get(counter) is None:
                    seed = _micro(await asyncio.to_thread(self._spend.spend, key.id, start))
                    await self._kv.set_if_absent(counter, seed, ttl_s=end - now + _BUDGET_TTL_SLACK_S)
                limit = _micro(budget)
                taken = await self._kv.window_add(counter, reserve, limit, end - now + _BUDGET_TTL_SLACK_S)
                if not taken.allowed or taken.current > limit or (reserve == 0 and taken.current >= limit):
                    if taken.allowed and reserve:
                        await self._kv.incr(counter, -reserve, ttl_s=_BUDGET_TTL_SLACK_S)
                    self._reject(f"budget_{period}")
                    name = "daily" if period == "day" else "monthly"
                    spent = taken.current - (reserve if taken.allowed else 0)
                    left = max(limit - spent, 0) / MICRO
                    what = (
                        f"is spent (${spent / MICRO:.2f} so far, with the calls in flight)"
                        if left <= 0 or reserve == 0
                        else f"has ${left:.4f} left, less than this call may cost (${reserve / MICRO:.4f})"
                    )
                    raise KeyBudgetExceeded(
                        f"The {name} budget of ${budget:.2f} for key {display_key(key)} {what}; it resets at "
                        f"the start of the next UTC {period}, in {_duration(end - now)}.",
                        retry_after=_wait(end - now),
                        period=period,
                        hint="Wait for the reset, lower max_tokens, or ask an administrator for a larger budget.",
                    )
                counters.append(counter)
        except BaseException:
            await self._release(tuple(counters), reserve)
            raise
        return tuple(counters)

    async def _release(self, counters: tuple[str, ...], reserve: int) -> None:
        """Give back a reservation of a call that was refused by a later check."""
        if reserve:
            for counter in counters:
                await self._kv.incr(counter, -reserve, ttl_s=_BUDGET_TTL_SLACK_S)

    async def _take_rpm(self, key: KeyRecord, window: int, retry_after: float) -> str | None:
        if key.rpm is None:
            return None
        counter = f"rpm:{key.id}:{window}"
        taken = await self._kv.window_add(counter, 1, key.rpm, WINDOW_S)
        if not taken.allowed:
            self._reject("rpm")
            raise RateLimited(
                f"RPM limit of {key.rpm} reached for key {display_key(key)}; retry after {_wait(retry_after)} s.",
                retry_after=_wait(retry_after),
                hint="Send fewer requests per minute, or ask an administrator for a higher limit.",
            )
        return counter

    async def _take_tpm(
        self, key: KeyRecord, estimate: int, exact: bool, window: int, retry_after: float
    ) -> tuple[str | None, int]:
        if key.tpm is None:
            return None, estimate
        if not exact:
            estimate = min(estimate, key.tpm)  # the default output is a guess: never refuse on it alone
        if estimate > key.tpm:
            self._reject("tpm")
            raise RequestTooLarge(
                f"This request needs about {estimate} tokens (input and max_tokens), more than the "
                f"TPM limit of {key.tpm} of key {display_key(key)}.",
                hint="Lower max_tokens or shorten the messages, or ask an administrator for a higher TPM limit.",
            )
        counter = f"tpm:{key.id}:{window}"
        taken = await self._kv.window_add(counter, estimate, key.tpm, WINDOW_S)
        if not taken.allowed:
            self._reject("tpm")
            raise RateLimited(
                f"TPM limit of {key.tpm} reached for key {display_key(key)} ({taken.current} tokens used "
                f"this minute, this request needs about {estimate}); retry after {_wait(retry_after)} s.",
                retry_after=_wait(retry_after),
                hint="Lower max_tokens, send fewer tokens per minute, or ask an administrator for a higher limit.",
            )
        return counter, estimate

    def _reject(self, limit: str) -> None:
        if self._metrics is not None:
            self._metrics.limit_rejection(limit)

    # ------------------------------------------------------------------ after the call

    async def settle(self, grant: Grant, *, tokens: int, cost_usd: float | None) -> None:
        """Replace the token estimate with the real count, and the cost reservation with the real cost.

        ``tokens=0, cost_usd=None`` for a call that failed or used nothing (a cached answer).
        Never raises: the answer has been produced, and a counter that cannot be corrected must
        not turn it into an error (the next budget seed from the store corrects the spend).
        """
        try:
            delta = tokens - grant.estimate
            if grant.tpm_window is not None and delta:
                # A refund goes back to the window it was taken from; extra use counts now.
                window = grant.tpm_window
                if delta > 0:
                    window = f"tpm:{grant.key.id}:{int(self._clock() // WINDOW_S)}"
                await self._kv.incr(window, delta, ttl_s=WINDOW_S)
            change = (_micro(cost_usd) if cost_usd else 0) - grant.reserved
            if change and grant.spend_counters:
                for counter in grant.spend_counters:
                    # A counter that is gone (evicted, or its period long over) is left gone: one
                    # recreated with this cost alone would hide the earlier spend from the next
                    # check, which instead seeds it again from the store.
                    if await self._kv.get(counter) is not None:
                        await self._kv.incr(counter, change, ttl_s=_BUDGET_TTL_SLACK_S)
        except Exception:
            _log.exception("Could not reconcile the limits of key %s after a request", grant.key.id)


class SideCallLimits:
    """The Limits stage of the side-call pipeline: a side-call of a keyed request is refused when the
    key is over budget, and its cost is added to the key's spend. Side-calls are never streamed."""

    name = "limits"

    def __init__(self, limits: Limits) -> None:
        self._limits = limits

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        if ex.key_id is None:
            return await call_next(ex)
        grant = await self._limits.admit_side_call(ex.key_id)
        try:
            result = await call_next(ex)
        except BaseException:
            await self._limits.settle(grant, tokens=0, cost_usd=None)
            raise
        completion = result.completion
        used = completion.usage.input_tokens + completion.usage.output_tokens if completion is not None else 0
        await self._limits.settle(grant, tokens=used, cost_usd=completion.cost_usd if completion is not None else None)
        return result
