"""The Limits stage over the in-process KV: allowlists, RPM, TPM with reconciliation, USD budgets."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
from collections.abc import AsyncIterator

import pytest

from aiestack.errors import AuthError, BudgetExceeded, InvalidRequest, ProviderUnavailable, RateLimited
from aiestack.gateway.generate import Generate
from aiestack.gateway.keys import KeyService, ModelNotAllowed
from aiestack.gateway.limits import (
    KeyBudgetExceeded,
    Limits,
    RequestTooLarge,
    estimate_tokens,
    period_bounds,
)
from aiestack.models.fake import FakeModel, Script
from aiestack.models.pricing import Price, PriceTable
from aiestack.models.registry import ModelEntry, ModelRegistry
from aiestack.monitoring import Metrics
from aiestack.pipeline import Pipeline
from aiestack.stores.base import KeyRecord
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.kv import WindowResult
from aiestack.stores.kv_memory import MemoryKV
from aiestack.streams import collect
from aiestack.testing.conformance import minimal_exchange
from aiestack.types import ChatRequest, Completion, Delta, Exchange, Message, Params, Tool, Usage

pytestmark = pytest.mark.unit

#: 2025-06-15 12:00:48 UTC: 12 s before the next minute, 11 h 59 min 12 s before midnight.
NOW = dt.datetime(2025, 6, 15, 12, 0, 48, tzinfo=dt.UTC).timestamp()
MIDNIGHT = dt.datetime(2025, 6, 16, tzinfo=dt.UTC).timestamp()
#: $1 per input token and $2 per output token: costs are easy to count.
PRICES = PriceTable({"m": Price(input_per_mtok=1_000_000.0, output_per_mtok=2_000_000.0)})


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Setup:
    """A store with keys, a KV, a fake model and the pipeline [Limits, Generate]."""

    def __init__(self) -> None:
        self.store = MemoryExchangeStore()
        self.keys = KeyService(self.store, self.store, clock=lambda: NOW - 86_400 * 40)
        self.kv = MemoryKV()
        self.clock = Clock()
        self.metrics = Metrics()
        self.model = FakeModel()
        registry = ModelRegistry([ModelEntry(name="m", provider=self.model, upstream="m")])
        self.limits = Limits(self.store, self.kv, self.store, metrics=self.metrics, clock=self.clock)
        self.pipeline = Pipeline([self.limits, Generate(registry, PRICES)])

    def key(self, **limits: object) -> KeyRecord:
        record, _ = self.keys.create(tenant="acme", **limits)  # type: ignore[arg-type]
        return record

    async def send(
        self,
        key: KeyRecord | None,
        text: str = "hi",
        *,
        model: str = "m",
        stream: bool = False,
        **params: object,
    ) -> Exchange:
        request = ChatRequest(
            model=model,
            messages=(Message(role="user", content=text),),
            params=Params(**params),  # type: ignore[arg-type]
            stream=stream,
        )
        return await self.pipeline(Exchange(request=request, key_id=key.id if key else None, tenant="acme"))

    def rejections(self, limit: str) -> float:
        value = self.metrics.registry.get_sample_value("aiestack_limit_rejections_total", {"limit": limit})
        return value or 0.0

    def tpm_window(self, key: KeyRecord) -> str:
        return f"tpm:{key.id}:{int(self.clock.now // 60)}"


@pytest.fixture
def s() -> Setup:
    return Setup()


# --------------------------------------------------------------------------- pass-through and keys


class ExplodingKV:
    """Any use fails the test: exchanges without a key must not touch the KV at all."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the KV was used ({name}) for an exchange without a key")


async def test_exchanges_without_a_key_pass_through_untouched() -> None:
    store = MemoryExchangeStore()
    limits = Limits(store, ExplodingKV(), store)  # type: ignore[arg-type]
    ex = Exchange(request=ChatRequest(model="m", messages=(Message(role="user", content="x"),)))

    async def terminal(got: Exchange) -> Exchange:
        assert got is ex
        return dataclasses.replace(got, outcome="ok")

    result = await limits(ex, terminal)
    assert result.outcome == "ok"


async def test_unknown_and_revoked_keys_are_refused(s: Setup) -> None:
    with pytest.raises(AuthError, match="no longer exists"):
        await s.pipeline(Exchange(request=ChatRequest(model="m", messages=()), key_id="key_gone"))
    key = s.key()
    s.keys.revoke(key.id)
    with pytest.raises(AuthError, match="revoked"):
        await s.send(key)


async def test_the_model_allowlist(s: Setup) -> None:
    key = s.key(models=["m", "support-bot"])
    assert (await s.send(key)).outcome == "ok"
    with pytest.raises(ModelNotAllowed) as raised:
        await s.send(key, model="gpt-4o")
    error = raised.value
    assert (error.http_status, error.error_type, error.code) == (403, "permission_error", "model_not_allowed")
    assert "gpt-4o" in error.message and "m, support-bot" in error.message
    assert s.rejections("model") == 1
    assert s.model.requests and len(s.model.requests) == 1  # the refused request never reached the model


# --------------------------------------------------------------------------- RPM


async def test_rpm_admits_the_limit_then_says_when_to_retry(s: Setup) -> None:
    key = s.key(rpm=3)
    for _ in range(3):
        assert (await s.send(key)).outcome == "ok"
    with pytest.raises(RateLimited) as raised:
        await s.send(key)
    error = raised.value
    assert error.http_status == 429 and error.retry_after == 12
    assert error.message == f"RPM limit of 3 reached for key {key.prefix}…; retry after 12 s."
    assert s.rejections("rpm") == 1
    s.clock.now += 12  # the next minute's window
    assert (await s.send(key)).outcome == "ok"


async def test_rpm_is_exact_under_concurrency(s: Setup) -> None:
    key = s.key(rpm=50)
    s.model.default_delay_s = 0.001
    results = await asyncio.gather(*(s.send(key) for _ in range(200)), return_exceptions=True)
    assert sum(isinstance(r, Exchange) for r in results) == 50
    assert sum(isinstance(r, RateLimited) for r in results) == 150
    assert s.rejections("rpm") == 150


async def test_keys_have_separate_windows(s: Setup) -> None:
    a, b = s.key(rpm=1), s.key(rpm=1)
    await s.send(a)
    await s.send(b)
    with pytest.raises(RateLimited):
        await s.send(a)


def test_the_memory_kv_is_exact_across_threads() -> None:
    kv = MemoryKV()
    results: list[WindowResult] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        async def hammer() -> list[WindowResult]:
            return await asyncio.gather(*(kv.window_add("rpm:k:1", 1, 50, 60) for _ in range(25)))

        start.wait()
        got = asyncio.run(hammer())
        with lock:
            results.extend(got)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 200 and sum(r.allowed for r in results) == 50


# --------------------------------------------------------------------------- TPM


def test_the_token_estimate() -> None:
    request = ChatRequest(
        model="m",
        messages=(Message(role="system", content="a" * 40), Message(role="user", content="b" * 41)),
        params=Params(max_tokens=100),
    )
    assert estimate_tokens(request) == 10 + 11 + 2 * 4 + 100
    assert estimate_tokens(dataclasses.replace(request, params=Params()), default_output_tokens=7) == 29 + 7
    with_tool = dataclasses.replace(request, params=Params(max_tokens=100, tools=(Tool(name="t" * 400),)))
    assert estimate_tokens(with_tool) == (40 + 41 + 400 + len("{}") + 3) // 4 + 2 * 4 + 100  # tools are input


async def test_tpm_takes_the_estimate_and_keeps_the_real_count(s: Setup) -> None:
    key = s.key(tpm=100)
    # "hi" is ~1 token + 4 per message + max_tokens 45 = 50 estimated; the fake model uses 2.
    first = await s.send(key, max_tokens=45)
    assert first.completion is not None and first.completion.usage == Usage(1, 1)
    assert await s.kv.get(s.tpm_window(key)) == 2
    # Each request needs its 50 to fit: 26 fit (at 0, 2, ..., 50 used). Without the reconcile,
    # the third would already be refused.
    for _ in range(25):
        await s.send(key, max_tokens=45)
    assert await s.kv.get(s.tpm_window(key)) == 52
    with pytest.raises(RateLimited) as raised:
        await s.send(key, max_tokens=45)
    assert "TPM limit of 100" in raised.value.message and raised.value.retry_after == 12
    assert s.rejections("tpm") == 1


async def test_a_request_larger_than_the_tpm_limit_is_a_400_and_uses_no_request(s: Setup) -> None:
    key = s.key(tpm=100, rpm=5)
    with pytest.raises(RequestTooLarge) as raised:
        await s.send(key, max_tokens=200)
    assert isinstance(raised.value, InvalidRequest) and raised.value.http_status == 400
    assert "max_tokens" in (raised.value.hint or "")
    assert await s.kv.get(f"rpm:{key.id}:{int(NOW // 60)}") == 0  # the RPM slot was given back
    # Without max_tokens the default output is only a guess: it never refuses a request alone.
    assert (await s.send(key)).outcome == "ok"


async def test_a_stream_is_reconciled_when_it_ends(s: Setup) -> None:
    key = s.key(tpm=1000, budget_day_usd=100.0)
    s.model.enqueue([["one", " two", " three"]])
    ex = await s.send(key, "a b c d", stream=True, max_tokens=50)
    assert ex.completion is not None and ex.completion.stream is not None
    assert await s.kv.get(s.tpm_window(key)) == estimate_tokens(ex.request)  # the estimate, while running
    final = await collect(ex.completion)
    assert final.usage == Usage(4, 3)
    assert await s.kv.get(s.tpm_window(key)) == 7
    assert await s.kv.get("spend:day:" + key.id + ":2025-06-15") == (4 * 1 + 3 * 2) * 1_000_000


async def test_a_stream_the_client_abandons_is_reconciled_too(s: Setup) -> None:
    key = s.key(tpm=1000)
    s.model.enqueue([["one", " two", " three"]])
    ex = await s.send(key, "a b c d", stream=True, max_tokens=50)
    assert ex.completion is not None and ex.completion.stream is not None
    stream = ex.completion.stream
    await anext(stream)
    await stream.aclose()  # type: ignore[attr-defined]
    assert await s.kv.get(s.tpm_window(key)) == 0  # no usage arrived: the estimate is given back


async def test_a_failed_call_gives_the_tokens_back_but_uses_the_request(s: Setup) -> None:
    key = s.key(tpm=1000, rpm=10)
    s.model.enqueue([Script(error=ProviderUnavailable("down", provider="fake"))])
    with pytest.raises(ProviderUnavailable):
        await s.send(key, max_tokens=50)
    assert await s.kv.get(s.tpm_window(key)) == 0
    assert await s.kv.get(f"rpm:{key.id}:{int(NOW // 60)}") == 1


async def test_a_cached_answer_uses_no_tokens_and_costs_nothing() -> None:
    store = MemoryExchangeStore()
    keys = KeyService(store, store)
    key, _ = keys.create(tenant="t", tpm=1000, budget_day_usd=1.0)
    kv = MemoryKV()
    limits = Limits(store, kv, store, clock=Clock())
    cached = Completion(
        message=Message(role="assistant", content="hit"),
        model="m",
        provider="cache",
        usage=Usage(10, 10),
        cost_usd=0.5,
        cached=True,
    )

    async def cache_hit(ex: Exchange) -> Exchange:
        return dataclasses.replace(ex, completion=cached, outcome="cached")

    request = ChatRequest(
        model="m", messages=(Message(role="user", content="q"),), params=Params(max_tokens=10)
    )
    await limits(Exchange(request=request, key_id=key.id), cache_hit)
    assert await kv.get(f"tpm:{key.id}:{int(NOW // 60)}") == 0
    assert await kv.get(f"spend:day:{key.id}:2025-06-15") == 0


# --------------------------------------------------------------------------- budgets


def test_period_bounds_are_utc_days_and_months() -> None:
    start, end, label = period_bounds("day", NOW)
    assert (start, end, label) == (MIDNIGHT - 86_400, MIDNIGHT, "2025-06-15")
    december = dt.datetime(2025, 12, 31, 23, 59, tzinfo=dt.UTC).timestamp()
    start, end, label = period_bounds("month", december)
    assert label == "2025-12"
    assert end == dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    assert start == dt.datetime(2025, 12, 1, tzinfo=dt.UTC).timestamp()


def spent(
    s: Setup, key: KeyRecord, usd: float, *, at: float = NOW - 3600, exchange_id: str = "ex_old"
) -> None:
    """Record past spend in the exchange store, as the Trace stage would have."""
    s.store.write_exchanges(
        [minimal_exchange(exchange_id, created_at=at, key_id=key.id, cost_usd=usd, outcome="ok")]
    )


async def test_the_daily_budget_is_seeded_from_the_store_and_enforced(s: Setup) -> None:
    key = s.key(budget_day_usd=10.0)
    spent(s, key, 9.5)
    spent(s, key, 50.0, at=MIDNIGHT - 2 * 86_400, exchange_id="ex_yesterday")  # not today: not counted
    ex = await s.send(key)  # 9.5 < 10: allowed; costs 1 input + 1 output token = $3
    assert ex.completion is not None and ex.completion.cost_usd == 3.0
    with pytest.raises(BudgetExceeded) as raised:
        await s.send(key)
    error = raised.value
    assert isinstance(error, KeyBudgetExceeded) and error.period == "day"
    assert error.http_status == 429 and error.code == "budget_exceeded"
    assert error.retry_after == MIDNIGHT - NOW
    assert "daily budget of $10.00" in error.message and "$12.50 so far" in error.message
    assert "11 h 59 min" in error.message
    assert s.rejections("budget_day") == 1


async def test_a_restart_does_not_reset_a_budget(s: Setup) -> None:
    key = s.key(budget_day_usd=10.0)
    spent(s, key, 10.0)
    fresh = Limits(s.store, MemoryKV(), s.store, clock=s.clock)  # a new process: empty counters
    ex = Exchange(request=ChatRequest(model="m", messages=()), key_id=key.id)

    async def never(_: Exchange) -> Exchange:
        raise AssertionError("a spent budget must stop the request before the model")

    with pytest.raises(KeyBudgetExceeded):
        await fresh(ex, never)


async def test_the_monthly_budget_resets_on_the_first(s: Setup) -> None:
    key = s.key(budget_month_usd=5.0)
    spent(s, key, 5.0, at=dt.datetime(2025, 6, 1, tzinfo=dt.UTC).timestamp())
    with pytest.raises(KeyBudgetExceeded) as raised:
        await s.send(key)
    assert raised.value.period == "month" and "monthly budget" in raised.value.message
    assert raised.value.retry_after == dt.datetime(2025, 7, 1, tzinfo=dt.UTC).timestamp() - NOW
    s.clock.now = dt.datetime(2025, 7, 1, 0, 0, 1, tzinfo=dt.UTC).timestamp()
    assert (await s.send(key)).outcome == "ok"


async def test_concurrent_first_checks_seed_a_budget_once(s: Setup) -> None:
    key = s.key(budget_day_usd=100.0)
    spent(s, key, 7.0)
    others = [Limits(s.store, s.kv, s.store, clock=s.clock) for _ in range(5)]
    ex = Exchange(request=ChatRequest(model="m", messages=()), key_id=key.id)

    async def answer(e: Exchange) -> Exchange:
        return dataclasses.replace(e, outcome="ok")

    await asyncio.gather(*(limits(ex, answer) for limits in others))
    assert await s.kv.get(f"spend:day:{key.id}:2025-06-15") == 7_000_000


# --------------------------------------------------------------------------- failure handling


class BrokenAfterAdmitKV(MemoryKV):
    """Admits normally, then fails every increment (a Redis that went away mid-request)."""

    async def incr(self, key: str, amount: int = 1, *, ttl_s: float | None = None) -> int:
        raise ConnectionError("gone")


async def test_a_failed_reconcile_never_breaks_the_answer(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryExchangeStore()
    key, _ = KeyService(store, store).create(tenant="t", tpm=1000)
    limits = Limits(store, BrokenAfterAdmitKV(), store, clock=Clock())
    registry = ModelRegistry([ModelEntry(name="m", provider=FakeModel(), upstream="m")])
    pipeline = Pipeline([limits, Generate(registry, PRICES)])
    request = ChatRequest(
        model="m", messages=(Message(role="user", content="fine"),), params=Params(max_tokens=9)
    )
    result = await pipeline(Exchange(request=request, key_id=key.id))
    assert result.outcome == "ok" and result.completion is not None and result.completion.text == "fine"
    assert "Could not reconcile" in caplog.text


async def test_an_answer_an_output_guard_blocked_is_billed() -> None:
    """The model ran: what the rejected answer used counts against the key's tokens and budget
    (it was settled as nothing, so a key whose answers were blocked used the model for free)."""
    from aiestack.errors import GuardrailBlocked
    from aiestack.guardrails.input import blocked

    store = MemoryExchangeStore()
    key, _ = KeyService(store, store).create(tenant="t", tpm=1000, budget_day_usd=1.0)
    kv = MemoryKV()
    limits = Limits(store, kv, store, clock=Clock())
    request = ChatRequest(model="m", messages=(Message(role="user", content="q"),), params=Params(max_tokens=10))

    async def blocked_answer(ex: Exchange) -> Exchange:
        return blocked(ex, [], "json_schema", "the answer failed the json_schema check", usage=Usage(6, 10), cost_usd=0.25)

    await limits(Exchange(request=request, key_id=key.id), blocked_answer)
    assert await kv.get(f"tpm:{key.id}:{int(NOW // 60)}") == 16
    assert await kv.get(f"spend:day:{key.id}:2025-06-15") == 250_000

    async def blocked_stream(ex: Exchange) -> Exchange:
        async def deltas() -> AsyncIterator[Delta]:
            raise GuardrailBlocked("json_schema", "cut off", usage=Usage(6, 10), cost_usd=0.25)
            yield  # pragma: no cover

        completion = Completion(message=Message(role="assistant", content=""), model="m", provider="fake", stream=deltas())
        return dataclasses.replace(ex, completion=completion)

    ex = await limits(Exchange(request=request, key_id=key.id), blocked_stream)
    assert ex.completion is not None
    with pytest.raises(GuardrailBlocked):
        await collect(ex.completion)
    assert await kv.get(f"tpm:{key.id}:{int(NOW // 60)}") == 32
    assert await kv.get(f"spend:day:{key.id}:2025-06-15") == 500_000
