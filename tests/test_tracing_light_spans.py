"""Stage spans recorded without the SDK store exactly what the SDK's spans would have stored.

:class:`aiestack.tracing.Tracing` records stage spans itself while its sink is their only reader
and through the OpenTelemetry SDK once another processor listens. The same pipeline run both ways
must give the same records: names, nesting, trace, statuses, attributes, exception details.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from aiestack.errors import ProviderTimeout
from aiestack.gateway.generate import Generate
from aiestack.models.fake import FakeModel
from aiestack.models.pricing import PriceTable
from aiestack.models.registry import ModelEntry, ModelRegistry
from aiestack.pipeline import Next, Pipeline
from aiestack.settings import TracingSettings
from aiestack.stores.base import ExchangeRecord
from aiestack.tracing import EXCHANGE_ID, Tracing, mark_error
from aiestack.tracing.stage import Trace
from aiestack.types import ChatRequest, Exchange, Message, SpanRecord

pytestmark = pytest.mark.unit


class ListSink:
    def __init__(self) -> None:
        self.exchanges: list[ExchangeRecord] = []
        self.spans: list[SpanRecord] = []

    def submit_exchange(self, record: ExchangeRecord) -> None:
        self.exchanges.append(record)

    def submit_span(self, span: SpanRecord) -> None:
        self.spans.append(span)


class Annotate:
    """Sets attributes and a status on its stage span, and opens an SDK span inside it."""

    name = "annotate"

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        span = trace.get_current_span()
        span.set_attribute("hits", 3)
        span.set_attributes({"sources": ("a", "b"), "skipped": None})
        span.set_status(Status(StatusCode.OK))
        span.set_status(Status(StatusCode.ERROR, "ignored: OK is final"))
        span.update_name("aiestack.stage.annotate")
        with self.tracing.tracer.start_as_current_span("retrieve.vector"):
            pass
        return await call_next(ex)


class Fails:
    name = "fails"

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        raise ProviderTimeout("upstream stalled", provider="openai")


class Handled:
    """Records an error on its own span without raising (as a stage that falls back would)."""

    name = "handled"

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        mark_error(trace.get_current_span(), ValueError("first"))
        trace.get_current_span().record_exception(KeyError("second"))  # only the first is kept
        return await call_next(ex)


def _generate() -> Generate:
    return Generate(ModelRegistry([ModelEntry("m", FakeModel(), "m-up")]), PriceTable())


def _shape(spans: list[SpanRecord]) -> list[tuple[Any, ...]]:
    """Everything but ids and times, with each parent named instead of numbered."""
    names = {s.span_id: s.name for s in spans}
    assert len({s.trace_id for s in spans}) == 1
    for s in spans:
        assert s.start_ns <= s.end_ns
    return sorted(
        (s.name, names.get(s.parent_id or ""), s.status, _untimed(s.attributes), s.exchange_id) for s in spans
    )


def _untimed(attributes: dict[str, Any]) -> list[tuple[str, Any]]:
    """The attributes but the measured durations (``..._ms``), which differ from run to run."""
    return sorted((k, v) for k, v in attributes.items() if not k.endswith("_ms"))


@pytest.fixture
def pair() -> Iterator[tuple[Tracing, ListSink, Tracing, ListSink]]:
    light_sink, sdk_sink = ListSink(), ListSink()
    light = Tracing(TracingSettings(), light_sink)
    sdk = Tracing(TracingSettings(), sdk_sink)
    sdk.add_processor(SimpleSpanProcessor(InMemorySpanExporter()))  # another reader: the SDK path
    yield light, light_sink, sdk, sdk_sink
    light.shutdown()
    sdk.shutdown()


async def _run(tracing: Tracing, stages: list[Any], ex: Exchange) -> None:
    pipeline = Pipeline([Trace(tracing), *stages], observer=tracing)
    with contextlib.suppress(ProviderTimeout):
        await pipeline(ex)


@pytest.mark.parametrize("failing", [False, True], ids=["answers", "fails"])
async def test_light_and_sdk_stage_spans_store_the_same_records(
    pair: tuple[Tracing, ListSink, Tracing, ListSink], failing: bool
) -> None:
    light, light_sink, sdk, sdk_sink = pair
    for tracing in (light, sdk):
        ex = Exchange(ChatRequest(model="m", messages=(Message("user", "hi"),)), id="ex_same")
        tail = [Fails()] if failing else [_generate()]
        await _run(tracing, [Annotate(tracing), Handled(), *tail], ex)
    assert light._light_spans and not sdk._light_spans
    assert light_sink.spans and _shape(light_sink.spans) == _shape(sdk_sink.spans)
    handled = next(s for s in light_sink.spans if s.name == "aiestack.stage.handled")
    assert handled.status == "error"
    assert handled.attributes["exception.type"] == "ValueError"
    assert handled.attributes["exception.message"] == "first"
    annotate = next(s for s in light_sink.spans if s.name == "aiestack.stage.annotate")
    assert annotate.status == "ok" and annotate.attributes["sources"] == ["a", "b"]
    if failing:
        fails = next(s for s in light_sink.spans if s.name == "aiestack.stage.fails")
        assert fails.attributes["exception.type"] == "aiestack.errors.ProviderTimeout"
    child = next(s for s in light_sink.spans if s.name == "retrieve.vector")
    assert child.attributes[EXCHANGE_ID] == "ex_same"  # an SDK span inside a light one inherits the id


async def test_light_stage_spans_nest_under_the_root_span(
    pair: tuple[Tracing, ListSink, Tracing, ListSink],
) -> None:
    light, sink, _, _ = pair
    ex = Exchange(ChatRequest(model="m", messages=(Message("user", "hi"),)))
    await _run(light, [Annotate(light), _generate()], ex)
    root = next(s for s in sink.spans if s.name == "chat m")
    annotate = next(s for s in sink.spans if s.name == "aiestack.stage.annotate")
    generate = next(s for s in sink.spans if s.name == "aiestack.stage.generate")
    assert annotate.parent_id == root.span_id and generate.parent_id == annotate.span_id
    assert annotate.trace_id == root.trace_id == sink.exchanges[0].trace_id
    assert root.start_ns <= annotate.start_ns <= generate.start_ns <= generate.end_ns <= annotate.end_ns


async def test_a_stage_span_without_a_parent_starts_its_own_trace() -> None:
    sink = ListSink()
    tracing = Tracing(TracingSettings(), sink)
    ex = Exchange(ChatRequest(model="m", messages=(Message("user", "hi"),)))
    with tracing.stage("alone", ex):
        pass
    with tracing.stage("again", ex):
        pass
    first, second = sink.spans
    assert first.parent_id is None and len(first.trace_id) == 32 and first.trace_id != second.trace_id
    assert first.exchange_id == ex.id and first.status == "unset"


async def test_an_ended_light_span_ignores_later_changes() -> None:
    sink = ListSink()
    tracing = Tracing(TracingSettings(), sink)
    with tracing.stage("s", Exchange(ChatRequest(model="m", messages=()))) as span:
        assert span is not None
    assert span is not None and not span.is_recording()
    span.set_attribute("late", 1)
    span.end()
    assert len(sink.spans) == 1 and "late" not in sink.spans[0].attributes
