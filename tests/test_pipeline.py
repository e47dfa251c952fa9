"""The onion: stage order, early exit, streaming pass-through, typed errors."""

from __future__ import annotations

import dataclasses

import pytest

from aiestack.errors import ProviderUnavailable, StreamBroken
from aiestack.gateway.generate import Generate
from aiestack.models.fake import FakeModel, Script
from aiestack.models.pricing import PriceTable
from aiestack.models.registry import ModelEntry, ModelRegistry
from aiestack.pipeline import Next, Pipeline, PipelineError
from aiestack.streams import collect
from aiestack.types import ChatRequest, Completion, Exchange, Message

pytestmark = pytest.mark.unit


class Recorder:
    def __init__(self, name: str, log: list[str]) -> None:
        self.name = name
        self.log = log

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        self.log.append(f"in:{self.name}")
        try:
            result = await call_next(ex)
        except Exception:
            self.log.append(f"error:{self.name}")
            raise
        self.log.append(f"out:{self.name}")
        return dataclasses.replace(result, attributes={**result.attributes, self.name: True})


class ShortCircuit:
    name = "cache"

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        done = Completion(message=Message("assistant", "from cache"), model="m", provider="cache", finish_reason="stop")
        return dataclasses.replace(ex, completion=done, outcome="cached")


def _pipeline(model: FakeModel, *stages: object) -> Pipeline:
    registry = ModelRegistry([ModelEntry("m", model, "m-upstream")])
    return Pipeline([*stages, Generate(registry, PriceTable())])  # type: ignore[list-item]


def _ex(text: str = "hello there", *, stream: bool = False, model: str = "m") -> Exchange:
    return Exchange(request=ChatRequest(model=model, messages=(Message("user", text),), stream=stream))


async def test_stages_run_in_order_in_and_out() -> None:
    log: list[str] = []
    pipe = _pipeline(FakeModel(), Recorder("a", log), Recorder("b", log))
    out = await pipe(_ex())
    assert log == ["in:a", "in:b", "out:b", "out:a"]
    assert out.completion is not None and out.completion.text == "hello there"
    assert out.attributes == {"a": True, "b": True}
    assert out.outcome == "ok"


async def test_early_exit_is_seen_by_outer_stages_and_skips_inner_ones() -> None:
    log: list[str] = []
    model = FakeModel()
    pipe = _pipeline(model, Recorder("outer", log), ShortCircuit(), Recorder("inner", log))
    out = await pipe(_ex())
    assert log == ["in:outer", "out:outer"]
    assert out.outcome == "cached" and out.completion is not None and out.completion.text == "from cache"
    assert out.attributes == {"outer": True}
    assert model.requests == []  # the model was never called


async def test_stream_passes_through_stages_unchanged() -> None:
    log: list[str] = []
    model = FakeModel().enqueue([["The", " capital", " is", " Paris."]])
    pipe = _pipeline(model, Recorder("a", log), Recorder("b", log))
    out = await pipe(_ex(stream=True))
    assert out.completion is not None and out.completion.stream is not None
    texts = [d.text async for d in out.completion.stream]
    assert "".join(texts) == "The capital is Paris."
    assert texts[:4] == ["The", " capital", " is", " Paris."]


async def test_collected_stream_has_usage_timing_and_upstream_model_name() -> None:
    # 20 ms before each of three pieces: the figures have lower bounds that no scheduler can undercut
    model = FakeModel().enqueue([Script(pieces=["one", " two", " three"], delay_s=0.02)])
    out = await _pipeline(model)(_ex("a b", stream=True))
    assert out.completion is not None
    final = await collect(out.completion)
    assert final.text == "one two three"
    assert final.usage.output_tokens == 3 and final.usage.input_tokens == 2
    assert final.finish_reason == "stop"
    timing = final.timing
    assert timing.ttft_ms is not None and timing.tpot_ms is not None
    assert timing.ttft_ms >= 20 and timing.total_ms >= 60
    assert timing.ttft_ms <= timing.total_ms
    assert timing.tpot_ms >= 20 * 0.9  # two gaps of at least 20 ms, averaged (less the clock's rounding)
    assert final.model == "m" and final.provider == "fake"
    assert model.requests[0].model == "m-upstream"


async def test_provider_error_reaches_caller_as_typed_error_through_stages() -> None:
    log: list[str] = []
    model = FakeModel().enqueue([Script(error=ProviderUnavailable("upstream 503", provider="fake", status=503))])
    pipe = _pipeline(model, Recorder("a", log))
    with pytest.raises(ProviderUnavailable) as info:
        await pipe(_ex())
    assert info.value.status == 503 and info.value.retryable
    assert log == ["in:a", "error:a"]


async def test_mid_stream_break_is_an_error_not_a_clean_end() -> None:
    model = FakeModel().enqueue([Script(pieces=["a", " b", " c"], break_after=2)])
    out = await _pipeline(model)(_ex(stream=True))
    assert out.completion is not None and out.completion.stream is not None
    got: list[str] = []
    with pytest.raises(StreamBroken):
        async for d in out.completion.stream:
            got.append(d.text)
    assert got == ["a", " b"]


async def test_stream_that_just_stops_is_broken() -> None:
    model = FakeModel().enqueue([Script(pieces=["a", " b"], break_after=5)])
    out = await _pipeline(model)(_ex(stream=True))
    assert out.completion is not None
    with pytest.raises(StreamBroken):
        await collect(out.completion)


async def test_unknown_model_is_a_clear_typed_error() -> None:
    from aiestack.errors import ModelNotFound

    with pytest.raises(ModelNotFound, match="Did you mean 'm'"):
        await _pipeline(FakeModel())(_ex(model="mm"))


async def test_terminal_stage_calling_next_is_a_pipeline_error() -> None:
    class Bad:
        name = "bad"

        async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
            return await call_next(ex)

    with pytest.raises(PipelineError):
        await Pipeline([Bad()])(_ex())


def test_pipeline_rejects_duplicate_and_empty_stages() -> None:
    with pytest.raises(PipelineError):
        Pipeline([])
    log: list[str] = []
    with pytest.raises(PipelineError):
        Pipeline([Recorder("a", log), Recorder("a", log)])


async def test_max_tokens_gives_length_finish() -> None:
    from aiestack.types import Params

    model = FakeModel().enqueue(["a b c d e"])
    ex = Exchange(request=ChatRequest(model="m", messages=(Message("user", "x"),), params=Params(max_tokens=2)))
    out = await _pipeline(model)(ex)
    assert out.completion is not None
    assert out.completion.finish_reason == "length" and out.completion.text == "a b"


async def test_cost_is_priced_from_the_table() -> None:
    from aiestack.models.pricing import Price

    model = FakeModel().enqueue(["x y"])
    registry = ModelRegistry([ModelEntry("m", model, "priced")])
    pipe = Pipeline([Generate(registry, PriceTable({"priced": Price(1.0, 2.0)}))])
    out = await pipe(_ex("a b c"))
    assert out.completion is not None
    assert out.completion.cost_usd == pytest.approx((3 * 1.0 + 2 * 2.0) / 1e6)


async def test_unpriced_remote_model_has_unknown_cost_local_is_free() -> None:
    model = FakeModel()
    registry = ModelRegistry([ModelEntry("remote", model, "nope"), ModelEntry("local", model, "x", local=True)])
    pipe = Pipeline([Generate(registry, PriceTable())])
    remote = await pipe(_ex(model="remote"))
    local = await pipe(_ex(model="local"))
    assert remote.completion is not None and remote.completion.cost_usd is None
    assert local.completion is not None and local.completion.cost_usd == 0.0
