"""OpenTelemetry tracing with the GenAI semantic conventions, exported to aiestack's own store.

Every exchange is one trace: a root span ``chat {model}`` (opened by the Trace stage) and one child
span ``aiestack.stage.<name>`` per pipeline stage, nested the way the stages nest, so the onion is
visible as a waterfall. Ended spans are converted to :class:`SpanRecord` values and handed to a
:class:`TraceSink` (the background writer), and, when ``otlp_endpoint`` is configured, also exported
over OTLP/HTTP to any collector.

Design choices:

- :class:`Tracing` owns its *own* ``TracerProvider`` and never installs it globally: two instances
  in one process (two apps, or tests) never see each other's spans, and aiestack never fights the
  host application for the global provider.
- The request path only sets attributes and makes an O(1), non-blocking ``submit``; storage and OTLP
  export happen on background threads.
- Message content is recorded only when content tracing is on (``[tracing] content = true``), and
  then through a redaction hook, because prompts routinely carry personal data.
- Attribute names live here, in one place, so the span, the stored records and the metrics agree.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import Token
from types import TracebackType
from typing import Any, Literal, Protocol, runtime_checkable

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from opentelemetry.trace import Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import format_span_id, format_trace_id

from aiestack.settings import TracingSettings
from aiestack.stores.base import ExchangeRecord
from aiestack.types import Completion, Exchange, Message, SpanRecord

_log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- attribute names
# GenAI semantic conventions (https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/).
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_REQUEST_TOP_K = "gen_ai.request.top_k"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_SEED = "gen_ai.request.seed"
GEN_AI_REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
GEN_AI_REQUEST_PRESENCE_PENALTY = "gen_ai.request.presence_penalty"
GEN_AI_REQUEST_FREQUENCY_PENALTY = "gen_ai.request.frequency_penalty"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS = "gen_ai.usage.cache_read.input_tokens"
GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS = "gen_ai.usage.cache_creation.input_tokens"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
ERROR_TYPE = "error.type"
OPERATION_CHAT = "chat"
# Agents (https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-agent-spans/).
OPERATION_INVOKE_AGENT = "invoke_agent"
OPERATION_EXECUTE_TOOL = "execute_tool"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"  # content: recorded only with content tracing
GEN_AI_TOOL_CALL_RESULT = "gen_ai.tool.call.result"  # content: recorded only with content tracing

# aiestack's own.
EXCHANGE_ID = "aiestack.exchange.id"
TENANT = "aiestack.tenant"
ROUTE = "aiestack.route"
STAGE = "aiestack.stage"
COST_USD = "aiestack.cost_usd"
CACHED = "aiestack.cached"
CACHE_KIND = "aiestack.cache.kind"  # set by the cache stage in ``Exchange.attributes``: exact | semantic
TTFT_MS = "aiestack.ttft_ms"
TPOT_MS = "aiestack.tpot_ms"
OUTCOME = "aiestack.outcome"
GATEWAY_OVERHEAD_MS = "aiestack.gateway_overhead_ms"
ERROR_MESSAGE = "aiestack.error.message"
#: The agent run an exchange (a model step) or a span belongs to, and the step's number (from 1).
AGENT_RUN_ID = "aiestack.agent.run_id"
AGENT_STEP = "aiestack.agent.step"

STAGE_SPAN_PREFIX = "aiestack.stage."
#: Where the Trace stage puts the exchange it serves in the OpenTelemetry context (see :func:`current_exchange`).
_EXCHANGE_KEY = otel_context.create_key("aiestack.exchange")
_AFTER_RESPONSE_KEY = otel_context.create_key("aiestack.after-response")
TRACE_STAGE = "trace"  # the Trace stage's name: its span is the exchange's root span, not a stage span

Redact = Callable[[str], str]


@runtime_checkable
class TraceSink(Protocol):
    """Where finished spans and exchanges go: the background batch writer, or a fake in tests.

    Both methods must return at once (enqueue, never write): they run on the request path.
    """

    def submit_exchange(self, record: ExchangeRecord) -> None: ...

    def submit_span(self, span: SpanRecord) -> None: ...


# --------------------------------------------------------------------------- content


def _redacted(text: str, redact: Redact | None) -> str:
    return redact(text) if redact is not None and text else text


def _message_parts(message: Message, redact: Redact | None) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {
                "type": "tool_call_response",
                "id": message.tool_call_id,
                "response": _redacted(message.text, redact),
            }
        ]
    parts: list[dict[str, Any]] = []
    if isinstance(message.content, str):
        if message.content:
            parts.append({"type": "text", "content": _redacted(message.content, redact)})
    else:
        for part in message.content:
            if part.type == "text":
                parts.append({"type": "text", "content": _redacted(part.text or "", redact)})
            else:  # an image: its URL may embed data or identify the user; keep only that there was one
                parts.append({"type": "uri", "modality": "image"})
    for call in message.tool_calls:
        parts.append(
            {
                "type": "tool_call",
                "id": call.id,
                "name": call.name,
                "arguments": _redacted(call.arguments, redact),
            }
        )
    return parts


def messages_content(messages: Iterable[Message], redact: Redact | None = None) -> list[dict[str, Any]]:
    """Messages in the GenAI semconv shape (``[{"role", "parts": [...]}]``), with ``redact`` applied."""
    return [{"role": m.role, "parts": _message_parts(m, redact)} for m in messages]


def output_content(completion: Completion, redact: Redact | None = None) -> list[dict[str, Any]]:
    """The answer in the GenAI semconv ``gen_ai.output.messages`` shape, with ``redact`` applied."""
    entry: dict[str, Any] = {"role": "assistant", "parts": _message_parts(completion.message, redact)}
    if completion.finish_reason is not None:
        entry["finish_reason"] = completion.finish_reason
    return [entry]


def to_json(value: Any) -> str:
    """Span attributes cannot nest: structured content travels as a JSON string, as semconv says."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


# --------------------------------------------------------------------------- span → SpanRecord

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_STATUS: dict[StatusCode, Literal["ok", "error", "unset"]] = {
    StatusCode.OK: "ok",
    StatusCode.ERROR: "error",
    StatusCode.UNSET: "unset",
}


def span_record(span: ReadableSpan) -> SpanRecord:
    """Convert an ended OpenTelemetry span into the stored :class:`SpanRecord`.

    The first exception event, if any, is folded into ``exception.type`` / ``exception.message``
    attributes so the console can show why a span failed without storing events.
    """
    ctx = span.get_span_context()
    assert ctx is not None  # an SDK span always has one
    # OpenTelemetry attribute values are primitives or tuples of primitives: one level to convert.
    attributes: dict[str, Any] = {
        k: list(v) if isinstance(v, tuple) else v for k, v in (span.attributes or {}).items()
    }
    for event in span.events:
        if event.name == "exception" and event.attributes:
            attributes.setdefault("exception.type", event.attributes.get("exception.type"))
            attributes.setdefault("exception.message", event.attributes.get("exception.message"))
            break
    exchange_id = attributes.get(EXCHANGE_ID)
    return SpanRecord(
        trace_id=format_trace_id(ctx.trace_id),
        span_id=format_span_id(ctx.span_id),
        parent_id=format_span_id(span.parent.span_id) if span.parent is not None else None,
        name=span.name,
        start_ns=span.start_time or 0,
        end_ns=span.end_time or span.start_time or 0,
        status=_STATUS[span.status.status_code],
        attributes=attributes,
        exchange_id=exchange_id if isinstance(exchange_id, str) else None,
    )


class _SinkProcessor(SpanProcessor):
    """Hands each ended span to the sink, and gives child spans their exchange's id.

    Both hooks run synchronously on the request path, so they do O(1) work and never raise: a
    failing sink costs a log line, never a request.
    """

    def __init__(self, sink: TraceSink) -> None:
        self._sink = sink
        self._lock = threading.Lock()
        self.dropped = 0

    def on_start(self, span: SdkSpan, parent_context: otel_context.Context | None = None) -> None:
        attributes = span.attributes or {}
        if EXCHANGE_ID in attributes:
            return
        parent = trace.get_current_span(parent_context)
        parent_attributes = getattr(parent, "attributes", None)
        if parent_attributes and EXCHANGE_ID in parent_attributes:
            span.set_attribute(EXCHANGE_ID, parent_attributes[EXCHANGE_ID])

    def on_end(self, span: ReadableSpan) -> None:
        try:
            self._sink.submit_span(span_record(span))
        except Exception:
            self.report_drop("span")

    def submit(self, record: SpanRecord) -> None:
        """Hand over a span recorded without the SDK (see :class:`_LightSpan`)."""
        try:
            self._sink.submit_span(record)
        except Exception:
            self.report_drop("span")

    def report_drop(self, what: str) -> None:
        with self._lock:
            self.dropped += 1
            first = self.dropped == 1
        if first:  # the first failure with its traceback; the count tells the rest
            _log.exception(
                "aiestack could not hand a %s to the trace store; tracing data is being dropped", what
            )


# --------------------------------------------------------------------------- the Tracing object


def exception_type(exc: BaseException) -> str:
    """``exception.type`` as the OpenTelemetry SDK writes it: the qualified name, module first unless builtin."""
    module, qualname = type(exc).__module__, type(exc).__qualname__
    return f"{module}.{qualname}" if module and module != "builtins" else qualname


class _LightSpan(Span):
    """A span recorded straight into a :class:`SpanRecord`, without the SDK's span machinery.

    The SDK span costs tens of microseconds to start and end (attribute validation under a lock,
    sampling, a readable copy for the processors), paid for the root and every stage of every
    request. When aiestack's own sink is the only reader of spans (no OTLP endpoint, no added
    processor), :meth:`Tracing.start_span` makes this instead: a real :class:`~opentelemetry.trace.Span` with a real
    :class:`SpanContext` in the trace of its parent, so spans opened inside the stage (by the SDK
    tracer or by another stage) nest under it exactly as before, and the stored record is the one
    :func:`span_record` would have made (the first exception folded into ``exception.type`` /
    ``exception.message``, the status code, the attributes).
    """

    __slots__ = (
        "_attributes",
        "_context",
        "_end_ns",
        "_exception",
        "_name",
        "_parent",
        "_sink",
        "_start_ns",
        "_status",
    )

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        attributes: dict[str, Any],
        sink: _SinkProcessor,
    ) -> None:
        self._name = name
        self._context = context
        self._parent = parent
        self._attributes = attributes
        self._sink = sink
        self._status: Literal["ok", "error", "unset"] = "unset"
        self._exception: tuple[Any, Any] | None = None
        self._end_ns: int | None = None
        self._start_ns = time.time_ns()

    @property
    def attributes(self) -> Mapping[str, Any]:
        return self._attributes

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_ns is None

    def set_attribute(self, key: str, value: Any) -> None:
        if self._end_ns is None:
            self._attributes[key] = list(value) if isinstance(value, tuple | list) else value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        if self._end_ns is None:  # set_attribute's work, without a call per attribute
            mine = self._attributes
            for key, value in attributes.items():
                mine[key] = list(value) if isinstance(value, tuple | list) else value

    def add_event(self, name: str, attributes: Any = None, timestamp: int | None = None) -> None:
        if name == "exception" and attributes and self._exception is None and self._end_ns is None:
            self._exception = (attributes.get("exception.type"), attributes.get("exception.message"))

    def record_exception(
        self,
        exception: BaseException,
        attributes: Any = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        if self._exception is None and self._end_ns is None:
            message = attributes.get("exception.message") if attributes else None
            self._exception = (exception_type(exception), message if isinstance(message, str) else str(exception))

    def update_name(self, name: str) -> None:
        if self._end_ns is None:
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # As the SDK: once OK, a status is final; UNSET never overrides.
        code = status.status_code if isinstance(status, Status) else status
        if self._end_ns is None and self._status != "ok" and code is not StatusCode.UNSET:
            self._status = _STATUS[code]

    def end(self, end_time: int | None = None) -> None:
        if self._end_ns is not None:
            return
        self._end_ns = end_time if end_time is not None else time.time_ns()
        attributes = self._attributes
        if self._exception is not None:
            attributes.setdefault("exception.type", self._exception[0])
            attributes.setdefault("exception.message", self._exception[1])
        exchange_id = attributes.get(EXCHANGE_ID)
        self._sink.submit(
            SpanRecord(
                trace_id=format_trace_id(self._context.trace_id),
                span_id=format_span_id(self._context.span_id),
                parent_id=format_span_id(self._parent.span_id) if self._parent is not None else None,
                name=self._name,
                start_ns=self._start_ns,
                end_ns=self._end_ns,
                status=self._status,
                attributes=attributes,
                exchange_id=exchange_id if isinstance(exchange_id, str) else None,
            )
        )


class _StageSpan:
    """The context manager around one stage call: a current child span that records errors.

    The exception is recorded (event, ``error.type``, ERROR status) and re-raised unchanged.
    """

    __slots__ = ("_redact", "_span", "_token")

    def __init__(self, span: Span, redact: Redact | None = None) -> None:
        self._span = span
        self._redact = redact
        self._token: Token[otel_context.Context] | None = None

    def __enter__(self) -> Span:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc is not None:
                mark_error(self._span, exc, self._redact)
        finally:
            if self._token is not None:
                otel_context.detach(self._token)
            self._span.end()


def mark_error(span: Span, exc: BaseException, redact: Redact | None = None) -> None:
    """Record ``exc`` on ``span``: an exception event, ``error.type`` and an ERROR status.

    The message passes through ``redact``: an error may quote what a client sent (a model name).
    """
    if not span.is_recording():
        return
    message = str(exc)
    if redact is not None:
        message = redact(message)
    span.record_exception(exc, attributes={"exception.message": message})
    span.set_attribute(ERROR_TYPE, type(exc).__name__)
    span.set_status(Status(StatusCode.ERROR, message))


class Tracing:
    """Tracing for one aiestack app: its own tracer provider, the store sink, an optional OTLP exporter.

    It is also the pipeline's :class:`~aiestack.pipeline.StageObserver`: pass it as
    ``Pipeline(stages, observer=tracing)`` and each stage call becomes a span.

    With ``enabled = false`` no span is recorded or exported (spans are non-recording no-ops), but
    the Trace stage still stores exchange records: the exchange log feeds the console, feedback
    and evaluation, and costs one submit per request.
    """

    def __init__(self, settings: TracingSettings, sink: TraceSink) -> None:
        self.settings = settings
        self.sink = sink
        self._provider = TracerProvider(
            resource=Resource.create({"service.name": settings.service_name}),
            sampler=ALWAYS_ON if settings.enabled else ALWAYS_OFF,
            # No atexit hook: it would keep every instance alive for the life of the process. The
            # app's lifespan (server, CLI, ``build``) calls ``shutdown()``, which flushes.
            shutdown_on_exit=False,
        )
        self._processor = _SinkProcessor(sink)
        self._provider.add_span_processor(self._processor)
        # Spans skip the SDK while the store is their only reader (see _LightSpan).
        self._light_spans = settings.enabled
        if settings.enabled and settings.otlp_endpoint:
            self._provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(settings.otlp_endpoint)))
            self._light_spans = False
        self.tracer: trace.Tracer = self._provider.get_tracer("aiestack")
        self._closed = False
        #: Applied to error messages recorded on stage spans (the build sets the guardrails' redactor).
        self.redact: Redact | None = None

    @property
    def content(self) -> bool:
        """Whether message content may be recorded (``[tracing] content``)."""
        return self.settings.content

    @property
    def dropped(self) -> int:
        """How many spans and exchanges could not be handed to the sink (0 unless the sink failed)."""
        return self._processor.dropped

    def stage(self, name: str, ex: Exchange) -> _StageSpan | _NullStage:
        """A span ``aiestack.stage.<name>`` around one stage call, current while the stage runs.

        The Trace stage is skipped: its span is the exchange's root span ``chat {model}``.
        """
        if name == TRACE_STAGE:
            return _NULL_STAGE
        attributes = {STAGE: name, EXCHANGE_ID: ex.id}
        if self._light_spans:  # the attributes are plain strings already: no copy to clean them
            return _StageSpan(self._light_span(STAGE_SPAN_PREFIX + name, attributes), self.redact)
        return _StageSpan(
            self.start_span(STAGE_SPAN_PREFIX + name, kind=SpanKind.INTERNAL, attributes=attributes), self.redact
        )

    def start_span(self, name: str, *, kind: SpanKind, attributes: dict[str, Any] | None) -> Span:
        """Start a span, a child of the current one (not made current; not ended on exceptions).

        While this app's store is the only reader of its spans, the span is a :class:`_LightSpan`;
        otherwise it is the SDK's, which every added processor and the OTLP exporter see.
        """
        if not self._light_spans:
            return self.tracer.start_span(
                name, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
            )
        return self._light_span(name, span_attributes(attributes) if attributes else {})

    def _light_span(self, name: str, attributes: dict[str, Any]) -> _LightSpan:
        parent: SpanContext | None = trace.get_current_span().get_span_context()
        ids = self._provider.id_generator
        if parent is not None and not parent.is_valid:
            parent = None
        context = SpanContext(
            parent.trace_id if parent is not None else ids.generate_trace_id(),
            ids.generate_span_id(),
            is_remote=False,
            trace_flags=_SAMPLED,
        )
        return _LightSpan(name, context, parent, attributes, self._processor)

    def add_processor(self, processor: SpanProcessor) -> None:
        """Send this app's spans to one more processor too (a console exporter, a plugin's back end)."""
        self._light_spans = False  # that processor must see every span, as the SDK makes them
        self._provider.add_span_processor(processor)

    def submit_exchange(self, record: ExchangeRecord) -> None:
        """Hand a finished exchange to the sink; a failing sink is logged, never raised to the request."""
        try:
            self.sink.submit_exchange(record)
        except Exception:
            self._processor.report_drop("exchange record")

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Push spans still buffered (OTLP batch) out now; False if it did not finish in time."""
        return self._provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        """Flush and stop every processor (the OTLP batch included). Safe to call twice.

        The sink itself (the background writer) is owned and closed by whoever created it.
        """
        if self._closed:
            return
        self._closed = True
        self._provider.shutdown()


class _NullStage:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None


_NULL_STAGE = _NullStage()  # stateless: one serves every call


def _otlp_exporter(endpoint: str) -> SpanExporter:
    """The OTLP/HTTP protobuf exporter. Headers (auth) come from ``OTEL_EXPORTER_OTLP_HEADERS``."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint)


def span_attributes(values: Mapping[str, Any]) -> dict[str, Any]:
    """Drop ``None`` values and turn tuples into lists: what an OpenTelemetry attribute accepts."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if v is not None}


def jsonable(value: Any) -> Any:
    """``value`` with tuples as lists and mappings as dicts, recursively.

    Records hold what a JSON column gives back, so a record read from the store equals the one
    written (OpenTelemetry keeps sequence attributes as tuples; dataclasses hold tuples).
    """
    if value is None or isinstance(value, str | int | float):  # the common case, without ABC checks
        return value
    if isinstance(value, tuple | list):
        return [jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def serving(ex: Exchange, span: Span) -> otel_context.Context:
    """The context in which ``span`` is current and ``ex`` is the exchange being served (the Trace stage attaches it)."""
    return trace.set_span_in_context(span, otel_context.set_value(_EXCHANGE_KEY, ex))


def current_exchange() -> Exchange | None:
    """The exchange the current task serves, as it entered the Trace stage; ``None`` outside a request.

    Side-calls (:mod:`aiestack.sidecalls`) use it to bill the request's key and to be traced as its children.
    """
    value = otel_context.get_value(_EXCHANGE_KEY)
    return value if isinstance(value, Exchange) else None


#: Work that may wait until the response has been sent: a whole answer's span end, exchange record and metrics.
Deferred = list[Callable[[], Awaitable[None]]]


@contextmanager
def deferring(later: Deferred) -> Iterator[None]:
    """Inside, a whole answer's trace record is appended to ``later`` instead of being made at once.

    The server wraps its hot handlers in this and runs ``later`` (:func:`run_deferred`) once the
    response has been sent, so the client does not wait for the record; its times (duration, span
    end) are taken where the answer was complete, as before. Outside, records are made inline.
    """
    token = otel_context.attach(otel_context.set_value(_AFTER_RESPONSE_KEY, later))
    try:
        yield
    finally:
        otel_context.detach(token)


def defer(work: Callable[[], Awaitable[None]]) -> bool:
    """Append ``work`` to the current :func:`deferring` list; False (nothing appended) outside one."""
    later = otel_context.get_value(_AFTER_RESPONSE_KEY)
    if not isinstance(later, list):
        return False
    later.append(work)
    return True


async def run_deferred(later: Deferred) -> None:
    """Run what :func:`deferring` collected, in order; a failure is logged and the rest still run."""
    for work in later:
        try:
            await work()
        except Exception:
            _log.exception("aiestack could not finish work deferred until after a response")
