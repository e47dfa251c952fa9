"""Tracing: stage spans nest like the onion, exchange ids propagate, instances stay isolated, OTLP export."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from aiestack.gateway.generate import Generate
from aiestack.models.fake import FakeModel
from aiestack.models.pricing import PriceTable
from aiestack.models.registry import ModelEntry, ModelRegistry
from aiestack.pipeline import Next, Pipeline
from aiestack.settings import TracingSettings
from aiestack.stores.base import ExchangeRecord
from aiestack.tracing import (
    ERROR_TYPE,
    EXCHANGE_ID,
    TraceSink,
    Tracing,
    messages_content,
    output_content,
)
from aiestack.types import ChatRequest, Completion, ContentPart, Exchange, Message, SpanRecord, ToolCall

pytestmark = pytest.mark.unit


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


class BrokenSink:
    def submit_exchange(self, record: ExchangeRecord) -> None:
        raise RuntimeError("writer closed")

    def submit_span(self, span: SpanRecord) -> None:
        raise RuntimeError("writer closed")


class Pass:
    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        return await call_next(ex)


class Boom:
    name = "boom"

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        raise self.error


class ChildSpan:
    """A stage that opens its own span (as a retriever would) without naming the exchange."""

    name = "retrieve"

    def __init__(self, tracing: Tracing) -> None:
        self.tracing = tracing

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        with self.tracing.tracer.start_as_current_span("retrieve.vector"):
            pass
        return await call_next(ex)


def _generate(model: FakeModel | None = None) -> Generate:
    return Generate(ModelRegistry([ModelEntry("m", model or FakeModel(), "m-up")]), PriceTable())


def _ex(text: str = "hello there") -> Exchange:
    return Exchange(ChatRequest(model="m", messages=(Message("user", text),)))


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def tracing(sink: ListSink) -> Iterator[Tracing]:
    t = Tracing(TracingSettings(), sink)
    yield t
    t.shutdown()


def test_list_sink_satisfies_the_protocol(sink: ListSink) -> None:
    assert isinstance(sink, TraceSink)


async def test_stage_spans_nest_in_stage_order(tracing: Tracing, sink: ListSink) -> None:
    pipeline = Pipeline([Pass("outer"), Pass("inner"), _generate()], observer=tracing)
    ex = _ex()
    await pipeline(ex)
    outer, inner, generate = (sink.named(f"aiestack.stage.{n}") for n in ("outer", "inner", "generate"))
    assert outer.parent_id is None
    assert inner.parent_id == outer.span_id
    assert generate.parent_id == inner.span_id
    assert {s.trace_id for s in sink.spans} == {outer.trace_id}
    assert len(outer.trace_id) == 32 and len(outer.span_id) == 16
    assert all(s.exchange_id == ex.id for s in sink.spans)
    # The waterfall: each inner span lies within its parent.
    assert outer.start_ns <= inner.start_ns <= generate.start_ns
    assert generate.end_ns <= inner.end_ns <= outer.end_ns
    assert outer.attributes["aiestack.stage"] == "outer"


async def test_a_failing_stage_marks_its_span_and_its_parents_and_reraises_unchanged(
    tracing: Tracing, sink: ListSink
) -> None:
    error = ValueError("bad input")
    pipeline = Pipeline([Pass("outer"), Boom(error), _generate()], observer=tracing)
    with pytest.raises(ValueError) as caught:
        await pipeline(_ex())
    assert caught.value is error
    boom, outer = sink.named("aiestack.stage.boom"), sink.named("aiestack.stage.outer")
    for span in (boom, outer):
        assert span.status == "error"
        assert span.attributes[ERROR_TYPE] == "ValueError"
        assert span.attributes["exception.message"] == "bad input"
    assert boom.parent_id == outer.span_id
    assert not any(s.name == "aiestack.stage.generate" for s in sink.spans)


async def test_spans_opened_inside_a_stage_inherit_the_exchange_id(tracing: Tracing, sink: ListSink) -> None:
    pipeline = Pipeline([ChildSpan(tracing), _generate()], observer=tracing)
    ex = _ex()
    await pipeline(ex)
    child = sink.named("retrieve.vector")
    assert child.exchange_id == ex.id
    assert child.attributes[EXCHANGE_ID] == ex.id
    assert child.parent_id == sink.named("aiestack.stage.retrieve").span_id


async def test_the_trace_stage_gets_no_stage_span_of_its_own(tracing: Tracing, sink: ListSink) -> None:
    with tracing.stage("trace", _ex()):
        pass
    with tracing.stage("cache", _ex()):
        pass
    assert [s.name for s in sink.spans] == ["aiestack.stage.cache"]


async def test_two_instances_do_not_see_each_others_spans() -> None:
    sink_a, sink_b = ListSink(), ListSink()
    a, b = Tracing(TracingSettings(), sink_a), Tracing(TracingSettings(), sink_b)
    try:
        ex_a, ex_b = _ex("from a"), _ex("from b")
        await Pipeline([Pass("p"), _generate()], observer=a)(ex_a)
        await Pipeline([Pass("p"), _generate()], observer=b)(ex_b)
    finally:
        a.shutdown()
        b.shutdown()
    assert sink_a.spans and sink_b.spans
    assert {s.exchange_id for s in sink_a.spans} == {ex_a.id}
    assert {s.exchange_id for s in sink_b.spans} == {ex_b.id}


async def test_disabled_tracing_records_no_spans(sink: ListSink) -> None:
    tracing = Tracing(TracingSettings(enabled=False), sink)
    result = await Pipeline([Pass("p"), _generate()], observer=tracing)(_ex("still answers"))
    assert result.completion is not None and result.completion.text == "still answers"
    assert sink.spans == []


async def test_a_failing_sink_never_breaks_the_request(caplog: pytest.LogCaptureFixture) -> None:
    tracing = Tracing(TracingSettings(), BrokenSink())
    pipeline = Pipeline([Pass("a"), Pass("b"), _generate()], observer=tracing)
    result = await pipeline(_ex("fine"))
    assert result.completion is not None and result.completion.text == "fine"
    assert tracing.dropped == 3
    assert sum("trace store" in r.getMessage() for r in caplog.records) == 1  # logged once, counted always


class CountingProcessor(SpanProcessor):
    """A span processor that counts what the SDK hands it (as an OTLP exporter's processor would see)."""

    def __init__(self) -> None:
        self.ended: list[str] = []
        self.shutdowns = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.ended.append(span.name)

    def shutdown(self) -> None:
        self.shutdowns += 1

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


async def test_shutdown_stops_every_processor_once(sink: ListSink) -> None:
    tracing = Tracing(TracingSettings(), sink)
    processor = CountingProcessor()
    tracing.add_processor(processor)
    await Pipeline([Pass("a"), _generate()], observer=tracing)(_ex("before"))
    assert "aiestack.stage.a" in processor.ended and sink.spans
    tracing.shutdown()
    tracing.shutdown()  # a second call is a no-op
    assert processor.shutdowns == 1


def test_messages_content_uses_the_semconv_shape_and_redacts_every_text() -> None:
    messages = (
        Message("system", "be brief"),
        Message(
            "user",
            (
                ContentPart("text", text="mail bob@example.com"),
                ContentPart("image_url", url="data:image/png;base64,AAAA"),
            ),
        ),
        Message("assistant", "", tool_calls=(ToolCall("c1", "lookup", '{"who": "bob@example.com"}'),)),
        Message("tool", "bob@example.com is away", tool_call_id="c1"),
    )
    got = messages_content(messages, lambda s: s.replace("bob@example.com", "[EMAIL]"))
    assert got == [
        {"role": "system", "parts": [{"type": "text", "content": "be brief"}]},
        {
            "role": "user",
            "parts": [{"type": "text", "content": "mail [EMAIL]"}, {"type": "uri", "modality": "image"}],
        },
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "c1", "name": "lookup", "arguments": '{"who": "[EMAIL]"}'}],
        },
        {
            "role": "tool",
            "parts": [{"type": "tool_call_response", "id": "c1", "response": "[EMAIL] is away"}],
        },
    ]
    assert "data:image" not in str(got)


def test_output_content_carries_the_finish_reason() -> None:
    completion = Completion(Message("assistant", "hi"), model="m", provider="fake", finish_reason="length")
    assert output_content(completion) == [
        {"role": "assistant", "parts": [{"type": "text", "content": "hi"}], "finish_reason": "length"}
    ]
    unfinished = dataclasses.replace(completion, finish_reason=None)
    assert "finish_reason" not in output_content(unfinished)[0]


# --------------------------------------------------------------------------- OTLP export


class _Collector(BaseHTTPRequestHandler):
    received: list[tuple[str, str, int]]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        self.received.append((self.path, self.headers.get("Content-Type", ""), len(body)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.mark.integration
async def test_spans_are_exported_over_otlp_http_when_an_endpoint_is_set(sink: ListSink) -> None:
    received: list[tuple[str, str, int]] = []
    handler = type("Handler", (_Collector,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
        tracing = Tracing(TracingSettings(otlp_endpoint=endpoint), sink)
        await Pipeline([Pass("p"), _generate()], observer=tracing)(_ex())
        tracing.shutdown()  # flushes the batch processor
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert received, "the collector received nothing"
    path, content_type, size = received[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    assert size > 0
    assert len(sink.spans) == 2  # the store still gets every span
