"""Generate with routes: weighted deployments, ordered fallbacks, retries with backoff, breakers,
timeouts, and streams that break after the answer started (reach the reader, never retried)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from aiestack.errors import (
    AiestackError,
    ContextLengthExceeded,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    StreamBroken,
)
from aiestack.gateway.breaker import BreakerBoard
from aiestack.gateway.generate import ATTEMPT_LOG, ATTEMPTS, BREAKERS_OPEN, DEPLOYMENT, FALLBACK, Generate
from aiestack.gateway.routes import build_route_table, route_plans
from aiestack.models.fake import FakeModel, Script
from aiestack.models.pricing import Price, PriceTable
from aiestack.models.registry import ModelEntry, ModelRegistry
from aiestack.monitoring import Metrics
from aiestack.pipeline import Pipeline, PipelineError
from aiestack.streams import collect
from aiestack.types import ChatRequest, Completion, Exchange, Message

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    """A sleep that records the delays it was asked for and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@dataclass
class Env:
    fakes: dict[str, FakeModel]
    pipeline: Pipeline
    board: BreakerBoard
    clock: Clock
    metrics: Metrics
    sleeps: Sleeps

    async def ask(self, model: str = "r", *, stream: bool = False, text: str = "hello world") -> Exchange:
        request = ChatRequest(model=model, messages=(Message("user", text),), stream=stream)
        return await self.pipeline(Exchange(request=request))

    def calls(self, name: str) -> int:
        return len(self.fakes[name].requests)

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


def _env(routes: dict[str, Any], *, names: tuple[str, ...] = ("a", "b", "c"), seed: int = 0) -> Env:
    fakes = {n: FakeModel(provider=f"p{n}") for n in names}
    registry = ModelRegistry(ModelEntry(n, fakes[n], f"{n}-up") for n in names)
    table = build_route_table(routes, registry)
    clock = Clock()
    board = BreakerBoard(table.breaker_settings, clock=clock)
    metrics = Metrics()
    sleeps = Sleeps()
    prices = PriceTable({f"{n}-up": Price(1.0, 1.0) for n in names})
    generate = Generate(
        registry, prices, routes=table, breakers=board, metrics=metrics, sleep=sleeps, rng=random.Random(seed)
    )
    return Env(fakes, Pipeline([generate], plans=route_plans(table)), board, clock, metrics, sleeps)


def _down(n: int = 1, status: int = 503) -> list[Script]:
    return [
        Script(error=ProviderUnavailable(f"upstream {status}", provider="p", status=status)) for _ in range(n)
    ]


def _text(ex: Exchange) -> str:
    assert ex.completion is not None
    return ex.completion.text


async def _read(completion: Completion | None) -> list[str]:
    assert completion is not None and completion.stream is not None
    return [d.text async for d in completion.stream]


@pytest.mark.parametrize("stream", [False, True])
async def test_fallbacks_are_tried_in_order(stream: bool) -> None:
    env = _env({"r": {"deployments": ["a"], "fallbacks": ["b", "c"], "retries": 0}})
    env.fakes["a"].enqueue(_down())
    env.fakes["b"].enqueue([Script(error=ProviderTimeout("slow", provider="pb"))])
    env.fakes["c"].enqueue(["from c"])
    ex = await env.ask(stream=stream)
    final = await collect(ex.completion) if stream else ex.completion  # type: ignore[arg-type]
    assert final is not None and final.text == "from c" and final.model == "c" and final.provider == "pc"
    assert final.cost_usd == pytest.approx((2 + 2) / 1e6)  # priced as the model that answered
    assert ex.route == "r"
    assert (
        ex.attributes[DEPLOYMENT] == "c" and ex.attributes[ATTEMPTS] == 3 and ex.attributes[FALLBACK] is True
    )
    assert ex.attributes[ATTEMPT_LOG] == ("a: ProviderUnavailable", "b: ProviderTimeout", "c: ok")
    assert [env.calls(n) for n in "abc"] == [1, 1, 1]
    assert (
        env.metric("aiestack_fallbacks_total", from_model="a", to_model="b", reason="ProviderUnavailable")
        == 1
    )
    assert env.metric("aiestack_fallbacks_total", from_model="b", to_model="c", reason="ProviderTimeout") == 1
    assert env.sleeps.delays == []


async def test_retries_back_off_with_jitter_within_bounds() -> None:
    env = _env(
        {
            "r": {
                "deployments": ["a"],
                "fallbacks": ["b"],
                "retries": 3,
                "backoff_base_s": 0.5,
                "backoff_max_s": 4,
            }
        }
    )
    env.fakes["a"].enqueue([*_down(3), "third time lucky"])
    ex = await env.ask()
    assert _text(ex) == "third time lucky"
    assert env.calls("a") == 4 and env.calls("b") == 0
    assert len(env.sleeps.delays) == 3
    for n, delay in enumerate(env.sleeps.delays):
        assert 0.0 <= delay <= min(4.0, 0.5 * 2**n)
    assert len(set(env.sleeps.delays)) == 3  # jittered, not a fixed schedule
    assert env.metric("aiestack_retries_total", provider="pa", model="a", reason="ProviderUnavailable") == 3
    assert ex.attributes[ATTEMPTS] == 4 and ex.attributes[FALLBACK] is False


async def test_after_its_retries_a_deployment_hands_over_to_the_next() -> None:
    env = _env({"r": {"deployments": ["a"], "fallbacks": ["b"], "retries": 2, "backoff_base_s": 0.1}})
    env.fakes["a"].enqueue(_down(3))
    ex = await env.ask()
    assert ex.attributes[DEPLOYMENT] == "b"
    assert env.calls("a") == 3 and len(env.sleeps.delays) == 2
    assert ex.attributes[ATTEMPT_LOG] == ("a: ProviderUnavailable",) * 3 + ("b: ok",)


async def test_retry_after_is_honoured() -> None:
    env = _env({"r": {"deployments": ["a"], "retries": 1, "backoff_base_s": 0.1, "backoff_max_s": 5}})
    env.fakes["a"].enqueue(
        [Script(error=ProviderRateLimited("429", provider="pa", status=429, retry_after=1.5)), "ok"]
    )
    assert _text(await env.ask()) == "ok"
    assert env.sleeps.delays == [1.5]


async def test_a_retry_after_beyond_the_cap_moves_on_without_sleeping() -> None:
    env = _env({"r": {"deployments": ["a"], "fallbacks": ["b"], "retries": 3, "backoff_max_s": 5}})
    env.fakes["a"].enqueue(
        [Script(error=ProviderRateLimited("429", provider="pa", status=429, retry_after=60))]
    )
    ex = await env.ask()
    assert ex.attributes[DEPLOYMENT] == "b" and env.calls("a") == 1 and env.sleeps.delays == []


async def test_context_length_skips_the_routes_deployments_and_is_not_retried() -> None:
    env = _env({"r": {"deployments": ["a", "b"], "fallbacks": ["c"], "retries": 3}})
    too_long = ContextLengthExceeded("prompt is too long", provider="p", status=400)
    env.fakes["a"].enqueue([Script(error=too_long)])
    env.fakes["b"].enqueue([Script(error=too_long)])
    ex = await env.ask()
    assert ex.attributes[DEPLOYMENT] == "c"
    assert sorted([env.calls("a"), env.calls("b")]) == [0, 1]  # the other deployment is skipped
    assert env.sleeps.delays == []
    first = "a" if env.calls("a") else "b"
    assert env.board.get(first).failures == 0  # a long prompt says nothing about the upstream's health
    log = ex.attributes[ATTEMPT_LOG]
    assert log[0] == f"{first}: ContextLengthExceeded" and "skipped" in log[1] and log[2] == "c: ok"


async def test_an_auth_failure_moves_on_without_retrying() -> None:
    env = _env({"r": {"deployments": ["a"], "fallbacks": ["b"], "retries": 3}})
    env.fakes["a"].enqueue([Script(error=ProviderAuthError("401", provider="pa", status=401))])
    ex = await env.ask()
    assert ex.attributes[DEPLOYMENT] == "b" and env.calls("a") == 1 and env.sleeps.delays == []


async def test_a_bad_request_fails_at_once_unchanged() -> None:
    env = _env({"r": {"deployments": ["a"], "fallbacks": ["b"], "retries": 3}})
    bad = ProviderBadRequest("temperature must be <= 2", provider="pa", status=400)
    env.fakes["a"].enqueue([Script(error=bad)])
    with pytest.raises(ProviderBadRequest) as info:
        await env.ask()
    assert info.value is bad
    assert env.calls("b") == 0 and env.sleeps.delays == []


async def test_when_everything_fails_the_last_error_lists_what_was_tried() -> None:
    env = _env({"r": {"deployments": ["a"], "fallbacks": ["b"], "retries": 1}})
    env.fakes["a"].enqueue(_down(2))
    last = ProviderTimeout("no answer in 60s", provider="pb", hint="Raise timeout_s.")
    env.fakes["b"].enqueue([Script(error=last), Script(error=last)])
    with pytest.raises(ProviderTimeout) as info:
        await env.ask()
    error = info.value
    assert "[pb] no answer in 60s" in error.message
    assert "route 'r' tried a: ProviderUnavailable ×2, b: ProviderTimeout ×2" in error.message
    assert error.hint == "Raise timeout_s." and error.provider == "pb" and error.http_status == 504
    assert error.to_openai()["error"]["code"] == "provider_timeout"
    assert last.message == "[pb] no answer in 60s"  # the provider's own error is left as it was


async def test_breaker_opens_skips_the_deployment_probes_and_recovers() -> None:
    env = _env(
        {
            "r": {
                "deployments": ["a"],
                "fallbacks": ["b"],
                "retries": 0,
                "breaker": {"failures": 2, "cooldown_s": 10},
            }
        }
    )
    env.fakes["a"].enqueue(_down(2))
    gauge = {"target": "a"}
    for _ in range(2):
        assert (await env.ask()).attributes[DEPLOYMENT] == "b"
    assert env.board.get("a").state == "open"
    assert env.metric("aiestack_breaker_state", **gauge) == 2.0
    skipped = await env.ask()
    assert env.calls("a") == 2  # not called while open
    assert (
        skipped.attributes[BREAKERS_OPEN] == ("a",)
        and skipped.attributes[ATTEMPT_LOG][0] == "a: breaker open"
    )
    assert env.metric("aiestack_fallbacks_total", from_model="a", to_model="b", reason="breaker_open") == 1
    env.clock.now += 10
    recovered = await env.ask()  # the half-open probe: a is healthy again
    assert recovered.attributes[DEPLOYMENT] == "a" and env.calls("a") == 3
    assert env.board.get("a").state == "closed"
    assert env.metric("aiestack_breaker_state", **gauge) == 0.0


async def test_a_failed_probe_reopens_the_breaker() -> None:
    env = _env(
        {
            "r": {
                "deployments": ["a"],
                "fallbacks": ["b"],
                "retries": 0,
                "breaker": {"failures": 1, "cooldown_s": 5},
            }
        }
    )
    env.fakes["a"].enqueue(_down(2))
    await env.ask()
    env.clock.now += 5
    assert (await env.ask()).attributes[DEPLOYMENT] == "b" and env.calls("a") == 2
    assert env.board.get("a").state == "open"


async def test_half_open_admits_one_probe_at_a_time_and_a_stream_settles_it_when_it_ends() -> None:
    env = _env(
        {
            "r": {
                "deployments": ["a"],
                "fallbacks": ["b"],
                "retries": 0,
                "breaker": {"failures": 1, "cooldown_s": 5},
            }
        }
    )
    env.fakes["a"].enqueue(_down(1))
    await env.ask()
    env.clock.now += 5
    probe = await env.ask(stream=True)  # a answers; the stream is still open
    assert probe.attributes[DEPLOYMENT] == "a"
    other = await env.ask(stream=True)
    assert other.attributes[DEPLOYMENT] == "b"  # the probe is out, so a is skipped
    assert env.board.get("a").state == "half_open"
    assert "".join(await _read(probe.completion)) == "hello world"
    assert env.board.get("a").state == "closed"
    await _read(other.completion)


async def test_all_breakers_open_fails_fast_with_retry_after() -> None:
    env = _env({"r": {"deployments": ["a", "b"], "retries": 0, "breaker": {"failures": 1, "cooldown_s": 30}}})
    env.fakes["a"].enqueue(_down(1))
    env.fakes["b"].enqueue(_down(1))
    with pytest.raises(ProviderUnavailable):
        await env.ask()
    env.clock.now += 12
    with pytest.raises(ProviderUnavailable) as info:
        await env.ask()
    assert env.calls("a") == 1 and env.calls("b") == 1
    assert info.value.retry_after == pytest.approx(18.0)
    assert "Every model of route 'r' is unavailable" in str(info.value) and "breaker open" in str(info.value)


async def test_a_stream_that_breaks_after_its_first_delta_reaches_the_reader_and_is_not_retried() -> None:
    env = _env({"r": {"deployments": ["a"], "fallbacks": ["b"], "retries": 2}})
    env.fakes["a"].enqueue([Script(pieces=["x", " y", " z"], break_after=2)])
    ex = await env.ask(stream=True)
    got: list[str] = []
    assert ex.completion is not None and ex.completion.stream is not None
    with pytest.raises(StreamBroken):
        async for delta in ex.completion.stream:
            got.append(delta.text)
    assert got == ["x", " y"]
    assert env.calls("a") == 1 and env.calls("b") == 0 and env.sleeps.delays == []
    assert env.board.get("a").failures == 1  # the breaker counts the break


async def test_a_stream_that_just_stops_is_broken_not_finished() -> None:
    env = _env({"r": {"deployments": ["a"], "retries": 0}})
    env.fakes["a"].enqueue([Script(pieces=["x", " y"], break_after=5)])
    ex = await env.ask(stream=True)
    with pytest.raises(StreamBroken, match="ended before the answer finished"):
        await _read(ex.completion)


async def test_a_non_streaming_answer_that_breaks_is_retried_because_nobody_saw_it() -> None:
    env = _env({"r": {"deployments": ["a"], "retries": 1, "backoff_base_s": 0.1}})
    env.fakes["a"].enqueue([Script(pieces=["half", " an"], break_after=1), "whole answer"])
    ex = await env.ask()
    assert _text(ex) == "whole answer" and env.calls("a") == 2


async def test_a_reader_that_stops_early_does_not_count_against_the_breaker() -> None:
    env = _env({"r": {"deployments": ["a"], "retries": 0, "breaker": {"failures": 1}}})
    ex = await env.ask(stream=True, text="one two three")
    assert ex.completion is not None and ex.completion.stream is not None
    stream = ex.completion.stream
    assert (await anext(stream)).text == "one"
    await stream.aclose()  # type: ignore[attr-defined]
    assert env.board.get("a").state == "closed" and env.board.get("a").failures == 0


@pytest.mark.parametrize("stream", [False, True])
async def test_the_time_to_first_token_is_limited_per_attempt(stream: bool) -> None:
    env = _env({"r": {"deployments": ["a"], "fallbacks": ["b"], "retries": 0, "timeout_s": 0.05}})
    env.fakes["a"].enqueue([Script(pieces=["late"], delay_s=30.0)])
    ex = await env.ask(stream=stream)
    # Cut, not waited out: a waited-out attempt would have answered from a after 30 s.
    assert ex.attributes[ATTEMPT_LOG][0] == "a: ProviderTimeout" and ex.attributes[DEPLOYMENT] == "b"
    if stream:
        await _read(ex.completion)


async def test_the_time_limit_does_not_cut_an_answer_that_started_in_time() -> None:
    env = _env({"r": {"deployments": ["a"], "retries": 0, "timeout_s": 0.3}})
    env.fakes["a"].enqueue([Script(pieces=["a", " b", " c", " d"], delay_s=0.1)])  # 0.4 s in all
    assert _text(await env.ask()) == "a b c d"


async def test_a_timeout_error_names_the_model_and_the_limit() -> None:
    env = _env({"r": {"deployments": ["a"], "retries": 0, "timeout_s": 0.02}})
    env.fakes["a"].enqueue([Script(pieces=["late"], delay_s=1.0)])
    with pytest.raises(ProviderTimeout, match=r"a sent no token within 0.02s") as info:
        await env.ask()
    assert "timeout_s" in (info.value.hint or "")


async def test_a_cancelled_probe_frees_the_half_open_slot() -> None:
    env = _env(
        {
            "r": {
                "deployments": ["a"],
                "fallbacks": ["b"],
                "retries": 0,
                "breaker": {"failures": 1, "cooldown_s": 5},
            }
        }
    )
    env.fakes["a"].enqueue([*_down(1), Script(pieces=["slow"], delay_s=5.0)])
    await env.ask()
    env.clock.now += 5
    task = asyncio.create_task(env.ask())
    while env.calls("a") < 2:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    ex = await env.ask()
    assert ex.attributes[DEPLOYMENT] == "a" and env.board.get("a").state == "closed"


async def test_weights_share_the_traffic() -> None:
    env = _env({"r": {"deployments": [{"model": "a", "weight": 3}, {"model": "b", "weight": 1}]}}, seed=11)
    answered: Counter[str] = Counter()
    for _ in range(800):
        answered[(await env.ask()).attributes[DEPLOYMENT]] += 1
    assert answered["a"] / 800 == pytest.approx(0.75, abs=0.05)


async def test_a_bare_model_is_called_once_exactly_as_before() -> None:
    env = _env({"r": {"deployments": ["a"], "fallbacks": ["b"], "retries": 3}})
    env.fakes["a"].enqueue(_down(1))
    with pytest.raises(ProviderUnavailable) as info:
        await env.ask("a")
    assert info.value.message == "[p] upstream 503"  # not restated: a bare model has no route to report
    assert env.calls("a") == 1 and env.calls("b") == 0 and env.sleeps.delays == []
    ok = await env.ask("a")
    assert ok.route is None and ok.attributes == {} and _text(ok) == "hello world"
    assert env.board.states() == {}  # bare calls neither consult nor feed the breakers


async def test_the_attempts_come_from_the_exchanges_route_plan_not_the_requests_name() -> None:
    routes = {"r": {"deployments": ["a"], "retries": 0}, "s": {"deployments": ["b"], "retries": 0}}
    env = _env(routes)
    plans = route_plans(build_route_table(routes, ModelRegistry(ModelEntry(n, FakeModel(), n) for n in "abc")))
    request = ChatRequest(model="r", messages=(Message("user", "hi"),))
    ex = await env.pipeline(Exchange(request=request, plan=plans.for_name("s")))  # as the semantic router sets it
    assert ex.route == "s" and ex.attributes[DEPLOYMENT] == "b"
    assert env.calls("a") == 0 and env.calls("b") == 1


async def test_a_route_named_without_a_route_plan_is_a_clear_error() -> None:
    env = _env({"r": {"deployments": ["a"]}})
    generate = env.pipeline.stages[0]
    with pytest.raises(PipelineError, match="carries no route plan") as info:
        await Pipeline([generate])(Exchange(request=ChatRequest(model="r", messages=(Message("user", "hi"),))))
    assert "plans=" in (info.value.hint or "")
    assert env.calls("a") == 0


def test_generate_without_routes_keeps_its_two_argument_form() -> None:
    registry = ModelRegistry([ModelEntry("m", FakeModel(), "m")])
    assert Generate(registry, PriceTable()).name == "generate"


async def test_errors_keep_their_type_for_the_http_layer() -> None:
    env = _env({"r": {"deployments": ["a"], "retries": 0}})
    env.fakes["a"].enqueue(
        [Script(error=ProviderRateLimited("429", provider="pa", status=429, retry_after=3))]
    )
    with pytest.raises(AiestackError) as info:
        await env.ask()
    assert type(info.value) is ProviderRateLimited
    assert info.value.retry_after == 3 and info.value.http_status == 429
