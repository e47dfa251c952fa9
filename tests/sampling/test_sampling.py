"""Test-time compute on routes: best-of-N and self-consistency, compiled into the route plan."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aiestack.build import Stack, build_stack
from aiestack.errors import ConfigError, ProviderUnavailable
from aiestack.gateway.limits import RequestTooLarge
from aiestack.models.base import Health
from aiestack.models.fake import FakeModel, Script
from aiestack.models.registry import ModelEntry
from aiestack.sampling.config import SamplingPlan
from aiestack.sampling.stage import (
    AGREEMENT,
    CHOSEN,
    FAILED,
    JUDGE_ERROR,
    SAMPLES,
    VOTES,
    SamplingFailed,
)
from aiestack.settings import Settings
from aiestack.sidecalls import SIDE_CALL_PARENT, SIDE_CALL_PURPOSE
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.streams import collect
from aiestack.types import ChatRequest, Delta, Message, Params, Usage

pytestmark = pytest.mark.unit

PRICE = {"input_per_mtok": 1_000_000.0, "output_per_mtok": 1_000_000.0}  # 1 USD a token: costs are token counts


def _stack(
    tmp_path: Path, sampling: dict[str, Any], *, model: Any = None, judge: FakeModel | None = None, timeout_s: float | None = None
) -> Stack:
    settings = Settings(
        data_dir=tmp_path,
        embedded_model=False,
        default_model="m",
        routes={
            # No first-token limit by default: the provider sees the sampler's own requests (a route's
            # timeout_s makes Generate stream from the upstream to time the first token; tested below).
            "math": {"deployments": ["m"], "retries": 0, "timeout_s": timeout_s, "sampling": sampling},
            "plain": {"deployments": ["m"], "retries": 0},
        },
        pricing={"m": PRICE, "judge": PRICE},
    )
    models = [ModelEntry("m", model if model is not None else FakeModel(), "m"), ModelEntry("judge", judge or FakeModel(), "judge")]
    return build_stack(settings, store=MemoryExchangeStore(), models=models)


def _ask(text: str = "What is 5 + 3?", **params: Any) -> ChatRequest:
    return ChatRequest(model="math", messages=(Message("user", text),), params=Params(**params))


async def test_the_sampling_table_is_compiled_into_the_routes_plan_and_only_there(tmp_path: Path) -> None:
    stack = _stack(tmp_path, {"strategy": "self_consistency", "n": 3})
    try:
        plan = stack.pipeline.plans.for_name("math").part(SamplingPlan)  # type: ignore[union-attr]
        assert plan is not None and plan.n == 3 and plan.strategy == "self_consistency" and plan.temperature == 0.7
        assert stack.pipeline.plans.for_name("plain").part(SamplingPlan) is None  # type: ignore[union-attr]
        assert "sampling" in stack.pipeline.names
    finally:
        await stack.aclose()


async def test_no_route_samples_no_stage(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, embedded_model=False, default_model="m", routes={"plain": {"deployments": ["m"]}})
    stack = build_stack(settings, store=MemoryExchangeStore(), models=[ModelEntry("m", FakeModel(), "m")])
    try:
        assert "sampling" not in stack.pipeline.names
    finally:
        await stack.aclose()


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ({"strategy": "best_of_n"}, "routes.math.sampling", "needs a selector"),
        ({"strategy": "best_of_n", "selector": "judge"}, "routes.math.sampling", "needs judge"),
        ({"strategy": "best_of_n", "selector": "judge", "judge": "nobody"}, "routes.math.sampling.judge", "unknown model or route"),
        ({"strategy": "self_consistency", "selector": "logprob"}, "routes.math.sampling", "belongs to best_of_n"),
        ({"strategy": "self_consistency", "n": 1}, "routes.math.sampling.n", "greater than or equal to 2"),
        ({"strategy": "self_consistency", "extract": "regex", "pattern": "("}, "routes.math.sampling.pattern", "does not compile"),
        ({"strategy": "self_consistency", "votes": 3}, "routes.math.sampling.votes", "unknown key"),
        ({"strategy": "best_of_n", "selector": "verifier", "verifier": "no_such_mod_xyz:f"}, "routes.math.sampling.verifier", "cannot import"),
        ({"strategy": "best_of_n", "selector": "verifier", "verifier": "json"}, "routes.math.sampling.verifier", "not 'module:function'"),
    ],
)
def test_a_bad_sampling_table_names_the_key_and_the_fix(tmp_path: Path, table: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        _stack(tmp_path, table)
    assert err.value.key == key
    assert words in str(err.value)
    assert "Fix:" in str(err.value)


async def test_self_consistency_returns_the_majority_answer_and_bills_every_sample(tmp_path: Path) -> None:
    fake = FakeModel().enqueue(["It is 7", "5 + 3 = 8", "#### 8", "no idea", "I get 8.0"])
    stack = _stack(tmp_path, {"strategy": "self_consistency", "n": 5}, model=fake)
    try:
        key, _ = stack.keys.create(tenant="acme")
        ex = await stack.chat(_ask(), key_id=key.id, tenant="acme")
        assert ex.outcome == "ok" and ex.completion is not None
        assert ex.completion.text == "5 + 3 = 8"  # the first sample that voted for the winner
        assert ex.attributes[CHOSEN] == 1
        assert ex.attributes[VOTES] == (("8", 3), ("7", 1))
        assert ex.attributes[AGREEMENT] == 0.75
        assert [s["answer"] for s in ex.attributes[SAMPLES]] == ["7", "8", "8", None, "8"]
        # Five calls, each at the route's temperature (the request set none), none streamed.
        assert len(fake.requests) == 5
        assert {r.params.temperature for r in fake.requests} == {0.7} and not any(r.stream for r in fake.requests)
        # Usage and cost are the sums over the five samples, and that is what the key spent.
        outputs = [3, 5, 2, 2, 3]
        assert ex.completion.usage.output_tokens == sum(outputs)
        assert ex.completion.usage.input_tokens == 5 * 5  # five words, five times
        assert ex.completion.cost_usd == pytest.approx(sum(outputs) + 5 * 5)
        stack.writer.flush(timeout=10)
        record = stack.store.get_exchange(ex.id)
        assert record is not None and record.cost_usd == pytest.approx(sum(outputs) + 5 * 5)
    finally:
        await stack.aclose()


async def test_a_request_temperature_and_seed_are_kept_the_seed_varied_per_sample(tmp_path: Path) -> None:
    fake = FakeModel()
    stack = _stack(tmp_path, {"strategy": "self_consistency", "n": 3}, model=fake)
    try:
        await stack.chat(_ask(temperature=1.1, seed=40))
        assert sorted(r.params.seed or 0 for r in fake.requests) == [40, 41, 42]
        assert {r.params.temperature for r in fake.requests} == {1.1}
    finally:
        await stack.aclose()


class _Barrier:
    """A model whose answers wait until ``n`` calls are in flight together: sequential calls never finish."""

    provider = "barrier"

    def __init__(self, n: int) -> None:
        self.n = n
        self.started = 0
        self.all_in = asyncio.Event()

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        self.started += 1
        if self.started >= self.n:
            self.all_in.set()
        await asyncio.wait_for(self.all_in.wait(), timeout=30)
        yield Delta(text=f"answer {self.started}", finish_reason="stop", usage=Usage(1, 2))

    async def check(self, model: str) -> Health:
        return Health(ok=True, detail="")

    async def aclose(self) -> None:
        return None


async def test_the_samples_run_concurrently(tmp_path: Path) -> None:
    barrier = _Barrier(4)
    stack = _stack(tmp_path, {"strategy": "self_consistency", "n": 4, "extract": "text"}, model=barrier)
    try:
        ex = await stack.chat(_ask())
        assert ex.outcome == "ok" and barrier.started == 4
    finally:
        await stack.aclose()


async def test_best_of_n_by_mean_logprob(tmp_path: Path) -> None:
    fake = FakeModel().enqueue(
        [
            Script(pieces=["a", "b"], logprobs=[-1.0, -1.0]),
            Script(pieces=["c", "d"], logprobs=[-0.1, -0.3]),
            Script(pieces=["e"], logprobs=[-0.5]),
        ]
    )
    stack = _stack(tmp_path, {"strategy": "best_of_n", "n": 3, "selector": "logprob"}, model=fake)
    try:
        ex = await stack.chat(_ask())
        assert ex.completion is not None and ex.completion.text == "cd" and ex.attributes[CHOSEN] == 1
        assert all(r.params.logprobs for r in fake.requests)  # asked for, to choose
        assert ex.completion.logprobs == ()  # and not handed to a client that did not ask
        assert [round(s["score"], 3) for s in ex.attributes[SAMPLES]] == [-1.0, -0.2, -0.5]
    finally:
        await stack.aclose()


async def test_best_of_n_by_logprob_without_logprobs_is_a_clear_error(tmp_path: Path) -> None:
    stack = _stack(tmp_path, {"strategy": "best_of_n", "n": 2, "selector": "logprob"})
    try:
        with pytest.raises(SamplingFailed, match="carried token logprobs"):
            await stack.chat(_ask())
    finally:
        await stack.aclose()


async def test_best_of_n_by_verifier_function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "ttc_checks.py"
    module.write_text(
        "def score(question, answer):\n"
        "    assert question == 'What is 5 + 3?'\n"
        "    if 'boom' in answer:\n"
        "        raise ValueError('a verifier that fails')\n"
        "    return answer.count('8')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "ttc_checks", raising=False)
    fake = FakeModel().enqueue(["boom 8 8 8", "7", "8 and 8", "8"])
    stack = _stack(tmp_path, {"strategy": "best_of_n", "n": 4, "selector": "verifier", "verifier": "ttc_checks:score"}, model=fake)
    try:
        ex = await stack.chat(_ask())
        assert ex.completion is not None and ex.completion.text == "8 and 8"
        assert [s["score"] for s in ex.attributes[SAMPLES]] == [None, 0.0, 2.0, 1.0]
    finally:
        await stack.aclose()


async def test_best_of_n_by_judge_goes_through_the_side_call_seam_and_is_billed(tmp_path: Path) -> None:
    fake = FakeModel().enqueue(["first", "second", "third"])
    judge = FakeModel().enqueue(['{"best": 2, "reason": "it is right"}'])
    stack = _stack(tmp_path, {"strategy": "best_of_n", "n": 3, "selector": "judge", "judge": "judge"}, model=fake, judge=judge)
    try:
        key, _ = stack.keys.create(tenant="acme")
        ex = await stack.chat(_ask(), key_id=key.id, tenant="acme")
        assert ex.completion is not None and ex.completion.text == "second"
        (asked,) = judge.requests
        prompt = asked.messages[-1].text
        assert all(f'<candidate number="{i}">' in prompt for i in (1, 2, 3)) and "second" in prompt
        assert asked.params.response_format is not None and asked.params.response_format.type == "json_schema"
        stack.writer.flush(timeout=10)
        sides = [r for r in stack.store.list_exchanges(limit=50) if r.attributes.get(SIDE_CALL_PARENT) == ex.id]
        assert len(sides) == 1 and sides[0].attributes[SIDE_CALL_PURPOSE] == "sampling_judge"
        assert sides[0].key_id == key.id and sides[0].cost_usd is not None and sides[0].cost_usd > 0
    finally:
        await stack.aclose()


async def test_a_judge_that_fails_leaves_sample_one_chosen_and_says_so(tmp_path: Path) -> None:
    fake = FakeModel().enqueue(["first", "second"])
    judge = FakeModel().enqueue([Script(error=ProviderUnavailable("judge down", provider="fake"))])
    stack = _stack(tmp_path, {"strategy": "best_of_n", "n": 2, "selector": "judge", "judge": "judge"}, model=fake, judge=judge)
    try:
        ex = await stack.chat(_ask())
        assert ex.completion is not None and ex.completion.text == "first"
        assert "judge down" in ex.attributes[JUDGE_ERROR]
    finally:
        await stack.aclose()


async def test_failed_samples_are_left_out_and_counted_all_failing_fails(tmp_path: Path) -> None:
    down = Script(error=ProviderUnavailable("down", provider="fake"))
    fake = FakeModel().enqueue([down, "8", "it is 8"])
    stack = _stack(tmp_path, {"strategy": "self_consistency", "n": 3}, model=fake)
    try:
        ex = await stack.chat(_ask())
        assert ex.completion is not None and ex.completion.text == "8" and ex.attributes[FAILED] == 1
        assert ex.attributes[SAMPLES][0]["error"].startswith("ProviderUnavailable")
        fake.enqueue([down, down, down])
        with pytest.raises(ProviderUnavailable):
            await stack.chat(_ask())
    finally:
        await stack.aclose()


async def test_a_streaming_request_gets_the_chosen_answer_streamed(tmp_path: Path) -> None:
    fake = FakeModel().enqueue(["9", "8", "8"])
    stack = _stack(tmp_path, {"strategy": "self_consistency", "n": 3}, model=fake)
    try:
        ex = await stack.chat(ChatRequest(model="math", messages=(Message("user", "5+3?"),), stream=True))
        assert ex.completion is not None and ex.completion.stream is not None
        final = await collect(ex.completion)
        assert final.text == "8" and final.usage.output_tokens == 3
        assert not any(r.stream for r in fake.requests)
    finally:
        await stack.aclose()


async def test_under_a_first_token_limit_each_sample_is_streamed_from_the_upstream_and_answered_whole(tmp_path: Path) -> None:
    fake = FakeModel().enqueue(["9", "8", "8"])
    stack = _stack(tmp_path, {"strategy": "self_consistency", "n": 3}, model=fake, timeout_s=30.0)
    try:
        ex = await stack.chat(_ask())
        assert ex.completion is not None and ex.completion.stream is None and ex.completion.text == "8"
        assert [r.stream for r in fake.requests] == [True, True, True]  # only a stream has a first token to time
    finally:
        await stack.aclose()


async def test_limits_reserve_n_calls_for_a_sampling_route(tmp_path: Path) -> None:
    stack = _stack(tmp_path, {"strategy": "self_consistency", "n": 4})
    try:
        # One call needs about 4 + 4 + 100 tokens: it fits in 300, four of them do not.
        key, _ = stack.keys.create(tenant="acme", tpm=300)
        plain = ChatRequest(model="plain", messages=(Message("user", "What is 5 + 3?"),), params=Params(max_tokens=100))
        assert (await stack.chat(plain, key_id=key.id, tenant="acme")).outcome == "ok"
        with pytest.raises(RequestTooLarge):
            await stack.chat(_ask(max_tokens=100), key_id=key.id, tenant="acme")
    finally:
        await stack.aclose()
