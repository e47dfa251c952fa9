"""The Trace stage: root span with GenAI attributes, nested stage spans, one record per exchange,
content only when switched on (redacted), streams recorded when they end however they end."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from aiestack.errors import GuardrailBlocked, ModelNotFound, ProviderUnavailable, StreamBroken
from aiestack.gateway.generate import Generate
from aiestack.models.fake import FakeModel, Script
from aiestack.models.pricing import PriceTable
from aiestack.models.registry import ModelEntry, ModelRegistry
from aiestack.monitoring import Metrics
from aiestack.pipeline import Next, Pipeline
from aiestack.settings import TracingSettings
from aiestack.stores.base import ExchangeRecord
from aiestack.streams import collect
from aiestack.tracing import Redact, Tracing
from aiestack.tracing.stage import Trace
from aiestack.types import (
    ChatRequest,
    Completion,
    Exchange,
    Message,
    Params,
    ResponseFormat,
    SpanRecord,
    Tool,
    Usage,
)

pytestmark = pytest.mark.unit

SECRET = "alice@example.com"


class ListSink:
    def __init__(self) -> None:
        self.exchanges: list[ExchangeRecord] = []
        self.spans: list[SpanRecord] = []

    def submit_exchange(self, record: ExchangeRecord) -> None:
        self.exchanges.append(record)

    def submit_span(self, span: SpanRecord) -> None:
        self.spans.append(span)

    def named(self, name: str) -> SpanRecord:
        (span,) = [s for s in self.spans if s.name == name]
        return span

    @property
    def record(self) -> ExchangeRecord:
        (record,) = self.exchanges
        return record


class Tag:
    """A dummy stage that adds an attribute on the way out."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        result = await call_next(ex)
        return dataclasses.replace(
            result, attributes={**result.attributes, self.name: "seen"}, route="support"
        )


class CacheHit:
    name = "cache"

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        done = Completion(
            Message("assistant", "from cache"),
            model="gpt-4o",
            provider="fake",
            finish_reason="stop",
            cached=True,
        )
        return dataclasses.replace(
            ex, completion=done, outcome="cached", attributes={"aiestack.cache.kind": "exact"}
        )


class Block:
    name = "guard"

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        return dataclasses.replace(
            ex, outcome="blocked", error=GuardrailBlocked("injection", "prompt injection")
        )


def _redact(text: str) -> str:
    return text.replace(SECRET, "[EMAIL]")


class Rig:
    def __init__(self, *, content: bool = False, enabled: bool = True, redact: Redact | None = None) -> None:
        self.sink = ListSink()
        self.tracing = Tracing(TracingSettings(content=content, enabled=enabled), self.sink)
        self.exporter = InMemorySpanExporter()
        self.tracing.add_processor(SimpleSpanProcessor(self.exporter))
        self.metrics = Metrics()
        self.model = FakeModel()
        self.trace = Trace(self.tracing, metrics=self.metrics, redact=redact)
        registry = ModelRegistry([ModelEntry("gpt-4o", self.model, "gpt-4o")])
        self.generate = Generate(registry, PriceTable())

    def pipeline(self, *middle: object) -> Pipeline:
        return Pipeline([self.trace, *middle, self.generate], observer=self.tracing)  # type: ignore[list-item]

    def root(self) -> SpanRecord:
        (root,) = [s for s in self.sink.spans if s.parent_id is None]
        return root


def _ex(text: str = f"write to {SECRET} please", *, stream: bool = False, model: str = "gpt-4o") -> Exchange:
    params = Params(temperature=0.3, top_p=0.9, top_k=40, max_tokens=64, seed=7, stop=("END",))
    return Exchange(
        ChatRequest(model=model, messages=(Message("user", text),), params=params, stream=stream),
        tenant="acme",
    )


@pytest.fixture
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.tracing.shutdown()


async def test_stages_nest_under_the_root_span(rig: Rig) -> None:
    rig.model.enqueue(["all good"])
    await rig.pipeline(Tag("limits"), Tag("guard"))(_ex())
    root = rig.root()
    limits, guard, generate = (rig.sink.named(f"aiestack.stage.{n}") for n in ("limits", "guard", "generate"))
    assert root.name == "chat gpt-4o"
    assert limits.parent_id == root.span_id
    assert guard.parent_id == limits.span_id
    assert generate.parent_id == guard.span_id
    assert len(rig.sink.spans) == 4 and {s.trace_id for s in rig.sink.spans} == {root.trace_id}
    assert root.start_ns <= limits.start_ns and limits.end_ns <= root.end_ns
    assert rig.sink.record.trace_id == root.trace_id
    (exported,) = [s for s in rig.exporter.get_finished_spans() if s.name == "chat gpt-4o"]
    assert exported.kind is SpanKind.CLIENT


async def test_root_span_has_the_genai_attributes(rig: Rig) -> None:
    rig.model.enqueue(["one two three"])
    ex = _ex()
    result = await rig.pipeline(Tag("route"))(ex)
    a = rig.root().attributes
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.request.model"] == "gpt-4o"
    assert a["gen_ai.request.temperature"] == 0.3
    assert a["gen_ai.request.top_p"] == 0.9
    assert a["gen_ai.request.top_k"] == 40
    assert a["gen_ai.request.max_tokens"] == 64
    assert a["gen_ai.request.seed"] == 7
    assert "gen_ai.request.stop_sequences" not in a  # text a client wrote: only with content tracing
    assert a["gen_ai.request.stream"] is False
    assert a["gen_ai.provider.name"] == "fake"
    assert a["gen_ai.response.model"] == "gpt-4o"
    assert a["gen_ai.response.finish_reasons"] == ["stop"]
    assert a["gen_ai.usage.input_tokens"] == 4  # "write to alice@example.com please"
    assert a["gen_ai.usage.output_tokens"] == 3
    assert a["aiestack.exchange.id"] == ex.id
    assert a["aiestack.tenant"] == "acme"
    assert a["aiestack.route"] == "support"
    assert a["aiestack.outcome"] == "ok"
    assert a["aiestack.cached"] is False
    assert a["aiestack.cost_usd"] == pytest.approx(PriceTable().cost("gpt-4o", Usage(4, 3)))
    record = rig.sink.record  # the span carries the stored record's timings, from the answer's own
    assert (a["aiestack.ttft_ms"], a["aiestack.tpot_ms"]) == (record.ttft_ms, record.tpot_ms)
    assert record.ttft_ms is not None and record.total_ms is not None and record.ttft_ms <= record.total_ms
    assert "error.type" not in a
    assert rig.root().status == "unset"
    assert result.completion is not None and result.completion.text == "one two three"


async def test_the_record_describes_the_exchange(rig: Rig) -> None:
    rig.model.enqueue(["one two three"])
    ex = _ex()
    await rig.pipeline(Tag("route"))(ex)
    r = rig.sink.record
    assert (r.id, r.created_at, r.tenant, r.route) == (ex.id, ex.started_at, "acme", "support")
    assert (r.model, r.provider, r.outcome, r.finish_reason, r.stream) == (
        "gpt-4o",
        "fake",
        "ok",
        "stop",
        False,
    )
    assert (r.input_tokens, r.output_tokens) == (4, 3)
    assert r.cost_usd == pytest.approx(PriceTable().cost("gpt-4o", Usage(4, 3)))
    assert r.total_ms is not None and r.total_ms > 0 and r.ttft_ms is not None
    assert r.request["model"] == "gpt-4o"
    assert r.request["params"] == {
        "temperature": 0.3,
        "top_p": 0.9,
        "top_k": 40,
        "max_tokens": 64,
        "seed": 7,
    }  # stop sequences are text a client wrote: recorded only with content tracing
    assert r.attributes == {"route": "seen"}
    assert (r.error_type, r.error_message) == (None, None)


async def test_content_is_left_out_by_default(rig: Rig) -> None:
    rig.model.enqueue([f"sure, {SECRET}"])
    await rig.pipeline()(_ex())
    assert "messages" not in rig.sink.record.request
    assert rig.sink.record.response is None
    for span in rig.sink.spans:
        assert "gen_ai.input.messages" not in span.attributes
        assert "gen_ai.output.messages" not in span.attributes
        assert SECRET not in json.dumps(span.attributes)
    assert SECRET not in repr(rig.sink.record)


async def test_content_is_recorded_and_redacted_when_switched_on() -> None:
    rig = Rig(content=True, redact=_redact)
    rig.model.enqueue([f"sure, {SECRET}"])
    await rig.pipeline()(_ex())
    record, root = rig.sink.record, rig.root()
    assert record.request["messages"] == [
        {"role": "user", "parts": [{"type": "text", "content": "write to [EMAIL] please"}]}
    ]
    assert record.response == "sure, [EMAIL]"
    assert json.loads(root.attributes["gen_ai.input.messages"]) == record.request["messages"]
    assert json.loads(root.attributes["gen_ai.output.messages"]) == [
        {
            "role": "assistant",
            "parts": [{"type": "text", "content": "sure, [EMAIL]"}],
            "finish_reason": "stop",
        }
    ]
    assert SECRET not in repr(record) and SECRET not in repr(rig.sink.spans)


async def test_no_text_field_is_recorded_raw(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every text-bearing field of the request: stop, tools, model name, error text, with content on and off."""
    tools = (Tool("lookup", f"find {SECRET}", {"type": "object", "description": SECRET}),)
    for content in (False, True):
        rig = Rig(content=content, redact=_redact)
        rig.tracing.redact = _redact  # as build_stack does
        params = Params(stop=(SECRET,), tools=tools, tool_choice="auto")
        ex = Exchange(ChatRequest(model=f"model-{SECRET}", messages=(Message("system", SECRET), Message("user", "hi")), params=params))
        with pytest.raises(ModelNotFound):
            await rig.pipeline()(ex)  # an unknown model: the error quotes the name
        record = rig.sink.record
        assert SECRET not in repr(record), content
        assert SECRET not in repr(rig.sink.spans), content
        assert record.request["model"] == "model-[EMAIL]"
        if content:
            assert record.request["params"]["stop"] == ["[EMAIL]"]
            assert record.request["params"]["tools"][0]["description"] == "find [EMAIL]"
        else:
            assert "stop" not in record.request["params"]
            assert record.request["params"]["tools"] == [{"name": "lookup"}]


async def test_content_without_a_redactor_is_recorded_as_is() -> None:
    rig = Rig(content=True)
    rig.model.enqueue(["plain answer"])
    await rig.pipeline()(_ex("plain question"))
    assert rig.sink.record.response == "plain answer"
    assert rig.sink.record.request["messages"][0]["parts"][0]["content"] == "plain question"


async def test_a_stream_is_recorded_only_once_drained(rig: Rig) -> None:
    rig.model.enqueue(["a b c d"])
    result = await rig.pipeline(Tag("guard"))(_ex(stream=True))
    assert rig.sink.exchanges == []
    assert not any(s.name.startswith("chat ") for s in rig.sink.spans)  # the root span is still open
    assert result.completion is not None
    final = await collect(result.completion)
    assert final.text == "a b c d"
    r = rig.sink.record
    assert (r.outcome, r.stream, r.finish_reason) == ("ok", True, "stop")
    assert (r.input_tokens, r.output_tokens) == (4, 4)
    root = rig.root()
    assert root.attributes["gen_ai.usage.output_tokens"] == 4
    assert root.end_ns >= rig.sink.named("aiestack.stage.guard").end_ns


async def test_a_stream_that_stops_without_finishing_is_recorded_as_broken() -> None:
    rig = Rig(content=True)
    rig.model.enqueue([Script(pieces=["half", " an", " answer"], break_after=3)])
    result = await rig.pipeline()(_ex(stream=True))
    assert result.completion is not None
    with pytest.raises(StreamBroken):
        await collect(result.completion)
    r = rig.sink.record
    assert (r.outcome, r.error_type) == ("error", "StreamBroken")
    assert r.response == "half an answer"  # what arrived before it broke
    assert rig.root().status == "error"
    assert rig.root().attributes["error.type"] == "StreamBroken"


async def test_a_provider_error_mid_stream_is_recorded_with_its_type(rig: Rig) -> None:
    error = ProviderUnavailable("upstream reset", provider="fake")
    rig.model.enqueue([Script(pieces=["a", " b", " c"], error=error, error_after=2)])
    result = await rig.pipeline()(_ex(stream=True))
    assert result.completion is not None and result.completion.stream is not None
    with pytest.raises(ProviderUnavailable) as caught:
        async for _ in result.completion.stream:
            pass
    assert caught.value is error
    r = rig.sink.record
    assert (r.outcome, r.error_type, r.provider) == ("error", "ProviderUnavailable", "fake")
    assert r.error_message is not None and "upstream reset" in r.error_message


async def test_a_client_that_stops_reading_is_recorded() -> None:
    rig = Rig(content=True)
    rig.model.enqueue(["one two three four"])
    result = await rig.pipeline()(_ex(stream=True))
    assert result.completion is not None and result.completion.stream is not None
    stream = result.completion.stream
    first = await anext(stream)
    assert first.text == "one"
    assert rig.sink.exchanges == []
    await stream.aclose()  # type: ignore[attr-defined]
    r = rig.sink.record
    assert (r.outcome, r.error_type) == ("error", "StreamBroken")
    assert r.error_message is not None and "stopped reading" in r.error_message
    assert r.response == "one"
    assert rig.root().end_ns > 0


async def test_a_provider_error_reaches_the_caller_typed_and_is_recorded(rig: Rig) -> None:
    error = ProviderUnavailable("503 from upstream", provider="fake", hint="Try again later.")
    rig.model.enqueue([Script(error=error)])
    with pytest.raises(ProviderUnavailable) as caught:
        await rig.pipeline(Tag("guard"))(_ex())
    assert caught.value is error
    r = rig.sink.record
    assert (r.outcome, r.error_type, r.provider, r.model) == (
        "error",
        "ProviderUnavailable",
        "fake",
        "gpt-4o",
    )
    assert r.error_message == str(error)
    root, generate = rig.root(), rig.sink.named("aiestack.stage.generate")
    assert root.status == "error" and generate.status == "error"
    assert root.attributes["error.type"] == "ProviderUnavailable"
    assert root.attributes["aiestack.outcome"] == "error"
    assert "gen_ai.usage.output_tokens" not in root.attributes
    assert generate.parent_id == rig.sink.named("aiestack.stage.guard").span_id


async def test_an_unknown_model_is_recorded_as_an_error(rig: Rig) -> None:
    with pytest.raises(ModelNotFound):
        await rig.pipeline()(_ex(model="gpt-5-turbo-max"))
    r = rig.sink.record
    assert (r.outcome, r.error_type, r.model, r.provider) == (
        "error",
        "ModelNotFound",
        "gpt-5-turbo-max",
        None,
    )


async def test_an_early_exit_is_still_traced_and_recorded(rig: Rig) -> None:
    await rig.pipeline(CacheHit())(_ex())
    r = rig.sink.record
    assert (r.outcome, r.cached, r.provider) == ("cached", True, "fake")
    assert rig.model.requests == []
    assert rig.root().attributes["aiestack.cached"] is True
    assert "aiestack.stage.generate" not in {s.name for s in rig.sink.spans}
    samples = rig.metrics.registry.get_sample_value(
        "aiestack_cache_hits_total", {"route": "none", "kind": "exact"}
    )
    assert samples == 1.0


async def test_a_blocked_request_is_recorded_with_the_guard_error(rig: Rig) -> None:
    await rig.pipeline(Block())(_ex())
    r = rig.sink.record
    assert (r.outcome, r.error_type) == ("blocked", "GuardrailBlocked")
    assert r.error_message is not None and "injection" in r.error_message


async def test_metrics_are_fed_each_final_record(rig: Rig) -> None:
    rig.model.enqueue(["x y"])
    await rig.pipeline()(_ex())
    labels = {"model": "gpt-4o", "provider": "fake", "route": "none"}
    get = rig.metrics.registry.get_sample_value
    assert get("gen_ai_server_request_duration_seconds_count", {**labels, "outcome": "ok"}) == 1.0
    assert get("gen_ai_client_token_usage_sum", {**labels, "token_type": "output"}) == 2.0
    assert get("aiestack_gateway_overhead_seconds_count", {"route": "none"}) == 1.0


async def test_disabled_tracing_still_records_the_exchange() -> None:
    rig = Rig(enabled=False)
    rig.model.enqueue(["ok then"])
    await rig.pipeline(Tag("guard"))(_ex())
    assert rig.sink.spans == []
    r = rig.sink.record
    assert (r.outcome, r.output_tokens, r.trace_id) == ("ok", 2, None)


async def test_a_failing_sink_never_breaks_the_request() -> None:
    class Broken(ListSink):
        def submit_exchange(self, record: ExchangeRecord) -> None:
            raise RuntimeError("writer closed")

    rig = Rig()
    rig.tracing = Tracing(TracingSettings(), Broken())
    rig.trace = Trace(rig.tracing)
    rig.model.enqueue(["still fine"])
    result = await rig.pipeline()(_ex())
    assert result.completion is not None and result.completion.text == "still fine"
    assert rig.tracing.dropped == 1


async def test_structured_params_are_recorded_as_plain_json() -> None:
    rig = Rig(content=True)  # schemas and tool descriptions are content
    params = Params(
        response_format=ResponseFormat(type="json_schema", schema={"type": "object"}, name="answer"),
        tools=(
            Tool("lookup", "find a person", {"type": "object", "properties": {"who": {"type": "string"}}}),
        ),
        logprobs=True,
    )
    ex = Exchange(ChatRequest(model="gpt-4o", messages=(Message("user", "hi"),), params=params))
    await rig.pipeline()(ex)
    recorded = rig.sink.record.request["params"]
    assert recorded == {
        "logprobs": True,
        "response_format": {
            "type": "json_schema",
            "schema": {"type": "object"},
            "name": "answer",
            "strict": False,
        },
        "tools": [
            {
                "name": "lookup",
                "description": "find a person",
                "parameters": {"type": "object", "properties": {"who": {"type": "string"}}},
            }
        ],
    }
    assert json.loads(json.dumps(recorded)) == recorded  # survives a JSON column unchanged


class Idle(Tag):
    """A stage whose wing is off: it says it passes every exchange through."""

    def __init__(self, name: str, calls: list[str]) -> None:
        super().__init__(name)
        self.calls = calls

    def passes(self, ex: Exchange) -> bool:
        return True

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        self.calls.append(self.name)
        return await super().__call__(ex, call_next)


async def test_a_stage_that_passes_the_exchange_is_skipped_without_a_span(rig: Rig) -> None:
    rig.model.enqueue(["all good"])
    calls: list[str] = []
    out = await rig.pipeline(Tag("limits"), Idle("guard", calls))(_ex())
    assert calls == [] and "guard" not in out.attributes and out.attributes["limits"] == "seen"
    names = {s.name for s in rig.sink.spans}
    assert "aiestack.stage.guard" not in names
    assert rig.sink.named("aiestack.stage.generate").parent_id == rig.sink.named("aiestack.stage.limits").span_id


async def test_a_whole_answers_record_waits_while_deferring_and_keeps_its_times(rig: Rig) -> None:
    import asyncio

    from aiestack.tracing import Deferred, deferring, run_deferred

    rig.model.enqueue(["all good"])
    later: Deferred = []
    with deferring(later):
        out = await rig.pipeline(Tag("limits"))(_ex())
    assert out.completion is not None and out.completion.text == "all good"
    assert rig.sink.exchanges == [] and len(later) == 1  # nothing recorded yet: the response goes first
    assert all(s.name != "chat gpt-4o" for s in rig.sink.spans)  # the root span is still open
    await asyncio.sleep(0.05)  # the response being sent
    await run_deferred(later)
    record, root = rig.sink.record, rig.root()
    assert record.outcome == "ok" and record.trace_id == root.trace_id
    assert record.total_ms is not None and record.total_ms < 50  # measured when the answer was complete
    assert root.end_ns - root.start_ns < 50_000_000
    # Outside deferring, and for a stream, the record is made as before.
    rig.model.enqueue(["again"])
    await rig.pipeline()(_ex())
    assert len(rig.sink.exchanges) == 2
