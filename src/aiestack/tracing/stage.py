"""The outermost stage: one root span and one stored exchange record per request.

The root span is ``chat {model}`` with the GenAI semantic-convention attributes. Its kind is
CLIENT: the GenAI conventions define an inference span as the *client* side of a call to a model
(INTERNAL only for a model in the same process, which the gateway cannot know in advance), and
the ``gen_ai.*`` views of tracing back ends (Jaeger, Langfuse, Phoenix, Datadog) key on that
span. When aiestack runs behind an HTTP server, the server's own SERVER span is this span's parent,
so the request/response and the model call stay distinct.

The span is current while the inner stages run, so their spans nest under it. A streamed answer
keeps the span open until the stream ends (cleanly, broken, or abandoned by the client); the
exchange record is submitted then, with the final usage. On the request path this stage only
sets attributes and makes one O(1) submit; it never swallows or changes an error.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.span import format_trace_id

from aiestack.errors import ProviderError, spent
from aiestack.monitoring import Metrics
from aiestack.offload import run_cpu
from aiestack.pipeline import Next, failed_exchange
from aiestack.stores.base import ExchangeRecord
from aiestack.streams import tap
from aiestack.tracing import (
    AGENT_RUN_ID,
    AGENT_STEP,
    CACHED,
    COST_USD,
    ERROR_MESSAGE,
    ERROR_TYPE,
    EXCHANGE_ID,
    GATEWAY_OVERHEAD_MS,
    GEN_AI_INPUT_MESSAGES,
    GEN_AI_OPERATION_NAME,
    GEN_AI_OUTPUT_MESSAGES,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_FREQUENCY_PENALTY,
    GEN_AI_REQUEST_MAX_TOKENS,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_REQUEST_PRESENCE_PENALTY,
    GEN_AI_REQUEST_SEED,
    GEN_AI_REQUEST_STOP_SEQUENCES,
    GEN_AI_REQUEST_STREAM,
    GEN_AI_REQUEST_TEMPERATURE,
    GEN_AI_REQUEST_TOP_K,
    GEN_AI_REQUEST_TOP_P,
    GEN_AI_RESPONSE_FINISH_REASONS,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
    GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
    OPERATION_CHAT,
    OUTCOME,
    ROUTE,
    TENANT,
    TPOT_MS,
    TRACE_STAGE,
    TTFT_MS,
    Redact,
    Tracing,
    defer,
    jsonable,
    messages_content,
    output_content,
    serving,
    span_attributes,
    to_json,
)
from aiestack.types import Completion, Exchange, Params, Usage

_log = logging.getLogger(__name__)


class Trace:
    """Opens the exchange's root span, and records the exchange when its answer is final.

    ``redact`` (e.g. the PII guardrail's redactor) is applied to every piece of content recorded;
    content is recorded only when the tracing settings say so. ``metrics``, when given, is fed
    each final record.
    """

    name = TRACE_STAGE

    def __init__(
        self, tracing: Tracing, *, metrics: Metrics | None = None, redact: Redact | None = None
    ) -> None:
        self._tracing = tracing
        self._metrics = metrics
        self._redact = redact
        self._names: dict[str, str] = {}  # model name -> its redacted form (bounded, see _name)
        # The recorded form of recent requests' text parameters (tool definitions), by the Params
        # object: each step of an agent run sends the same one (bounded like _names).
        self._params: dict[int, tuple[Params, dict[str, Any]]] = {}

    def _name(self, model: str) -> str:
        """``model`` as recorded: redacted like content (a client may send anything as a model name).

        Names repeat, so each is redacted once; at most :data:`_NAMES_KEPT` are remembered.
        """
        known = self._names.get(model)
        if known is not None:
            return known
        shown = self._redact(model[:_MAX_NAME_CHARS]) if self._redact is not None else model[:_MAX_NAME_CHARS]
        if len(self._names) >= _NAMES_KEPT:
            self._names.clear()
        self._names[model] = shown
        return shown

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        start = time.perf_counter()
        span = self._tracing.start_span(
            f"{OPERATION_CHAT} {self._name(ex.request.model)}",
            kind=SpanKind.CLIENT,
            attributes=self._request_attributes(ex) if self._tracing.settings.enabled else None,
        )
        token = otel_context.attach(serving(ex, span))
        try:
            result = await call_next(ex)
        except BaseException as exc:
            failed = failed_exchange(exc, ex)
            self._finish(span, start, failed, None, exc, self._content(failed, None))
            raise
        finally:
            otel_context.detach(token)
        completion = result.completion
        if completion is not None and completion.stream is not None:

            async def on_done(final: Completion | None, error: BaseException | None) -> None:
                content = await run_cpu(self._chars(result, final), self._content, result, final)
                self._finish(span, start, result, final, error, content)

            return dataclasses.replace(result, completion=tap(completion, on_done))
        ended = (time.perf_counter(), time.time_ns())  # the answer is complete: its duration ends here

        async def record() -> None:
            content = await run_cpu(self._chars(result, completion), self._content, result, completion)
            self._finish(span, start, result, completion, None, content, ended)

        if not defer(record):  # a server defers it until the response has been sent
            await record()
        return result

    def _content(self, ex: Exchange, completion: Completion | None) -> _Content | None:
        """The recorded content, redacted (CPU work on large text: the caller runs it off the loop)."""
        if not self._tracing.content:
            return None
        redact = self._redact
        return _Content(
            messages=messages_content(ex.request.messages, redact),
            output=output_content(completion, redact) if completion is not None else None,
            response=_redacted_text(completion, redact) if completion is not None else None,
            params=self._content_params(ex.request.params),
            hits=[redact(h.chunk.text) if redact is not None else h.chunk.text for h in ex.hits],
        )

    def _chars(self, ex: Exchange, completion: Completion | None) -> int:
        """About how many characters recording ``ex``'s content reads (to decide where it runs).

        Only content tracing reads them; a redactor that remembers texts (``unseen(text)``: 0 for a
        text it masked recently) counts only the new ones.
        """
        if not self._tracing.content:
            return 0
        unseen = getattr(self._redact, "unseen", len)
        total = sum(unseen(m.text) for m in ex.request.messages) + sum(len(h.chunk.text) for h in ex.hits)
        return total + (len(completion.text) if completion is not None else 0)

    def _content_params(self, params: Params) -> dict[str, Any]:
        known = self._params.get(id(params))
        if known is not None and known[0] is params:
            return known[1]
        recorded = _content_params(params, self._redact)
        if len(self._params) >= _NAMES_KEPT:
            self._params.clear()
        self._params[id(params)] = (params, recorded)
        return recorded

    # ------------------------------------------------------------------ building

    def _request_attributes(self, ex: Exchange) -> dict[str, Any]:
        request, params = ex.request, ex.request.params
        attributes = span_attributes(
            {
                GEN_AI_OPERATION_NAME: OPERATION_CHAT,
                GEN_AI_REQUEST_MODEL: self._name(request.model),
                GEN_AI_REQUEST_STREAM: request.stream,
                GEN_AI_REQUEST_TEMPERATURE: params.temperature,
                GEN_AI_REQUEST_TOP_P: params.top_p,
                GEN_AI_REQUEST_TOP_K: params.top_k,
                GEN_AI_REQUEST_MAX_TOKENS: params.max_tokens,
                GEN_AI_REQUEST_SEED: params.seed,
                GEN_AI_REQUEST_PRESENCE_PENALTY: params.presence_penalty,
                GEN_AI_REQUEST_FREQUENCY_PENALTY: params.frequency_penalty,
                EXCHANGE_ID: ex.id,
                TENANT: ex.tenant,
                ROUTE: ex.route,
            }
        )
        run_id = ex.attributes.get(AGENT_RUN_ID)
        if run_id is not None:  # a step of an agent run: the run's id on the step's root span
            attributes[AGENT_RUN_ID] = run_id
            attributes[AGENT_STEP] = ex.attributes.get(AGENT_STEP, 0)
        return attributes

    def _finish(
        self,
        span: Span,
        start: float,
        ex: Exchange,
        completion: Completion | None,
        error: BaseException | None,
        content: _Content | None,
        ended: tuple[float, int] | None = None,
    ) -> None:
        """End the span and hand the record over. Never raises: tracing must not break a request.

        ``ended`` (``perf_counter()``, ``time_ns()``) is when the answer was complete, for a record
        made later; by default, now.
        """
        try:
            duration_ms = ((ended[0] if ended is not None else time.perf_counter()) - start) * 1000
            record = self._record(span, ex, completion, error, duration_ms, content)
            overhead_ms = _overhead_ms(completion, record, duration_ms)
            if span.is_recording():
                self._response_attributes(span, record, completion, overhead_ms, content)
            self._tracing.submit_exchange(record)
            if self._metrics is not None:
                self._metrics.observe_exchange(record)
                if overhead_ms is not None:
                    self._metrics.observe_overhead(overhead_ms / 1000, route=record.route)
        except Exception:
            _log.exception("aiestack could not record exchange %s; the request itself is unaffected", ex.id)
        finally:
            span.end(ended[1] if ended is not None else None)

    def _record(
        self,
        span: Span,
        ex: Exchange,
        completion: Completion | None,
        error: BaseException | None,
        duration_ms: float,
        content: _Content | None,
    ) -> ExchangeRecord:
        failure: BaseException | None = error if error is not None else ex.error
        if error is not None:
            outcome: str = "error"
        elif ex.outcome == "pending":  # a stage returned without saying; an answer means it worked
            outcome = "ok" if completion is not None else "error"
        else:
            outcome = ex.outcome
        provider = completion.provider if completion is not None else None
        if provider is None and isinstance(failure, ProviderError):
            provider = failure.provider
        request: dict[str, Any] = {
            "model": self._name(ex.request.model),
            "params": {**_params(ex.request.params), **(content.params if content is not None else {})},
            "stream": ex.request.stream,
        }
        if content is not None:
            request["messages"] = content.messages
        ctx = span.get_span_context()
        usage, cost_usd = spent(completion, failure)
        timing = completion.timing if completion is not None else None
        return ExchangeRecord(
            id=ex.id,
            created_at=ex.started_at,
            model=completion.model if completion is not None else self._name(ex.request.model),
            outcome=outcome,
            tenant=ex.tenant,
            key_id=ex.key_id,
            route=ex.route,
            provider=provider,
            stream=ex.request.stream,
            finish_reason=completion.finish_reason if completion is not None else None,
            error_type=type(failure).__name__ if failure is not None else None,
            error_message=self._error_text(failure),
            input_tokens=usage.input_tokens if usage is not None else 0,
            output_tokens=usage.output_tokens if usage is not None else 0,
            cached_tokens=usage.cached_tokens if usage is not None else 0,
            queue_ms=timing.queue_ms if timing is not None else None,
            ttft_ms=timing.ttft_ms if timing is not None else None,
            tpot_ms=timing.tpot_ms if timing is not None else None,
            total_ms=duration_ms,
            cost_usd=cost_usd,
            cached=bool(completion is not None and completion.cached) or outcome == "cached",
            trace_id=format_trace_id(ctx.trace_id) if span.is_recording() else None,
            request=request,
            response=content.response if content is not None else None,
            attributes=_attributes(ex, content, usage),
            guard_action=_strongest_action(ex),
        )

    def _error_text(self, failure: BaseException | None) -> str | None:
        """The error's message, redacted: errors may quote what the client sent (a model name, a field)."""
        if failure is None:
            return None
        text = str(failure)
        return self._redact(text) if self._redact is not None else text

    def _response_attributes(
        self,
        span: Span,
        record: ExchangeRecord,
        completion: Completion | None,
        overhead_ms: float | None,
        content: _Content | None,
    ) -> None:
        attributes: dict[str, Any] = {
            GEN_AI_PROVIDER_NAME: record.provider,
            ROUTE: record.route,
            OUTCOME: record.outcome,
            CACHED: record.cached,
            COST_USD: record.cost_usd,
            TTFT_MS: record.ttft_ms,
            TPOT_MS: record.tpot_ms,
            GATEWAY_OVERHEAD_MS: overhead_ms,
            ERROR_TYPE: record.error_type,
        }
        if completion is not None:
            attributes[GEN_AI_RESPONSE_MODEL] = completion.model
            attributes[GEN_AI_USAGE_INPUT_TOKENS] = record.input_tokens
            attributes[GEN_AI_USAGE_OUTPUT_TOKENS] = record.output_tokens
            if record.cached_tokens:
                attributes[GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = record.cached_tokens
            if written := record.attributes.get(GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS):
                attributes[GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = written
            if record.finish_reason is not None:
                attributes[GEN_AI_RESPONSE_FINISH_REASONS] = [record.finish_reason]
        if content is not None:
            attributes[GEN_AI_INPUT_MESSAGES] = to_json(content.messages)
            attributes[GEN_AI_REQUEST_STOP_SEQUENCES] = content.params.get("stop")
            if content.output is not None:
                attributes[GEN_AI_OUTPUT_MESSAGES] = to_json(content.output)
        span.set_attributes(span_attributes(attributes))
        if record.outcome == "error":
            span.set_attribute(ERROR_MESSAGE, record.error_message or "")
            span.set_status(Status(StatusCode.ERROR, record.error_message))


def _redacted_text(completion: Completion, redact: Redact | None) -> str:
    text = completion.text
    return redact(text) if redact is not None and text else text


#: Parameters that carry text a client wrote: recorded only with content tracing, and redacted.
_CONTENT_PARAMS = ("stop", "tools", "response_format", "tool_choice")
_PARAM_FIELDS = tuple(f.name for f in dataclasses.fields(Params) if f.name not in _CONTENT_PARAMS)
#: Longest model name recorded, and how many redacted names the Trace stage remembers.
_MAX_NAME_CHARS = 200
_NAMES_KEPT = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class _Content:
    """What content tracing records of one exchange, already redacted."""

    messages: list[dict[str, Any]]
    output: list[dict[str, Any]] | None
    response: str | None
    params: dict[str, Any]
    hits: list[str]




def _content_params(params: Params, redact: Redact | None) -> dict[str, Any]:
    """The text-bearing parameters that were set, with ``redact`` applied to every string in them."""
    out: dict[str, Any] = {}
    for name in _CONTENT_PARAMS:
        value = getattr(params, name)
        if value is None or value == ():
            continue
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            value = [dataclasses.asdict(v) for v in value]
        out[name] = _redact_json(jsonable(value), redact)
    return out


def _redact_json(value: Any, redact: Redact | None) -> Any:
    if redact is None:
        return value
    if isinstance(value, str):
        return redact(value) if value else value
    if isinstance(value, dict):
        return {k: _redact_json(v, redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_json(v, redact) for v in value]
    return value


def _params(params: Params) -> dict[str, Any]:
    """The parameters that were set (not ``None`` / empty / off), as plain JSON-able values; the
    text-bearing ones (:data:`_CONTENT_PARAMS`) only with content tracing, in :class:`_Content`.

    A shallow walk: ``dataclasses.asdict`` deep-copies every field and costs more than the rest
    of this stage together.
    """
    out: dict[str, Any] = {}
    if params.response_format is not None:  # its kind, not its schema (text a client wrote)
        out["response_format"] = {"type": params.response_format.type}
    if params.tools:  # tool names are identifiers; descriptions and schemas are content
        out["tools"] = [{"name": t.name} for t in params.tools]
    for name in _PARAM_FIELDS:
        value = getattr(params, name)
        if value is None or value is False or value == ():
            continue
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            value = [dataclasses.asdict(v) for v in value]
        out[name] = jsonable(value)
    return out


#: Guardrail actions from strongest to weakest; "allow" is no action.
_ACTION_RANK = {"block": 3, "redact": 2, "flag": 1}


def _strongest_action(ex: Exchange) -> str | None:
    """The strongest action any guardrail took (block > redact > flag), for the indexed column."""
    best: str | None = None
    for verdict in ex.verdicts:
        if _ACTION_RANK.get(verdict.action, 0) > _ACTION_RANK.get(best or "", 0):
            best = verdict.action
    return best


def _attributes(ex: Exchange, content: _Content | None, usage: Usage | None = None) -> dict[str, Any]:
    """The exchange's attributes, plus its guard verdicts and retrieved chunks (for the console), and
    the prompt-cache writes (cache reads have a column of their own).

    Verdicts carry no content (a finding has a kind and a label, never the matched text). A hit
    is stored by chunk id, document, score and retriever; its text only with content tracing.
    """
    attributes = dict(ex.attributes)
    if usage is not None and usage.cache_write_tokens:
        attributes[GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = usage.cache_write_tokens
    if ex.verdicts:
        attributes["verdicts"] = [
            {
                "guard": v.guard,
                "action": v.action,
                "score": v.score,
                "latency_ms": v.latency_ms,
                "findings": [
                    {"kind": f.kind, "label": f.label, "start": f.start, "end": f.end, "score": f.score}
                    for f in v.findings
                ],
            }
            for v in ex.verdicts
        ]
    if ex.hits:
        hits: list[dict[str, Any]] = []
        for i, h in enumerate(ex.hits):
            hit: dict[str, Any] = {
                "chunk_id": h.chunk.id,
                "document_id": h.chunk.document_id,
                "position": h.chunk.position,
                "score": h.score,
                "retriever": h.retriever,
            }
            if content is not None:
                hit["text"] = content.hits[i]
            hits.append(hit)
        attributes["hits"] = hits
    return attributes


def _overhead_ms(completion: Completion | None, record: ExchangeRecord, duration_ms: float) -> float | None:
    """The gateway's own time: the exchange's duration minus the provider's measured total.

    Only meaningful for a successful, uncached answer with a provider timing; for a stream both
    figures include the time the client took to read, which cancels out.
    """
    if record.outcome != "ok" or record.cached or completion is None or completion.timing.total_ms <= 0:
        return None
    return max(duration_ms - completion.timing.total_ms, 0.0)
