"""Core value types. Every type here is a frozen dataclass: a pure value.

A stage never mutates what it receives; it returns a new value with ``dataclasses.replace``.
Identity (ids in storage) belongs to the stores. Pydantic models live only at the edges
(HTTP bodies, config files); the core speaks these dataclasses.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

if TYPE_CHECKING:
    from aiestack.errors import AiestackError

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]
Action = Literal["allow", "redact", "block", "flag"]
Outcome = Literal["pending", "ok", "error", "blocked", "cached"]


class _Entropy:
    """Random bytes for ids, read from the OS 4 KiB at a time (what ``uuid.uuid4`` reads 16 bytes at a time).

    ``os.urandom`` releases the GIL around its system call. On the request path a background thread
    (the store writer, implicit feedback) then takes the GIL, and the event loop waits up to the
    switch interval to get it back: one such wait per request for the exchange id alone. Reading the
    bytes of 256 ids at once leaves one in 256. The bytes are the OS's, as uuid4's are; a forked child
    starts with an empty pool, so it never hands out its parent's ids again.
    """

    _SIZE = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> bytes:
        with self._lock:
            if self._at + n > len(self._pool):
                self._pool, self._at = os.urandom(max(self._SIZE, n)), 0
            at = self._at
            self._at = at + n
            return self._pool[at : at + n]

    def forget(self) -> None:
        """In a forked child: a new lock (another thread may have held the old one at the fork), no bytes."""
        self._lock = threading.Lock()
        self._pool, self._at = b"", 0


_ENTROPY = _Entropy()
os.register_at_fork(after_in_child=_ENTROPY.forget)


def new_id(prefix: str = "ex") -> str:
    """A unique id: ``prefix_`` + the 32 hex characters of a random (version 4) UUID."""
    return f"{prefix}_{uuid.UUID(bytes=_ENTROPY.take(16), version=4).hex}"


# --------------------------------------------------------------------------- messages


@dataclass(frozen=True, slots=True)
class ContentPart:
    """One part of a multi-part message: text, or an image given by URL / data URL."""

    type: Literal["text", "image_url"]
    text: str | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # a JSON document, as the OpenAI API carries it


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    content: str | tuple[ContentPart, ...] = ""
    name: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    @property
    def text(self) -> str:
        """The message's text, with the text of every text part joined."""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call (the OpenAI ``tools`` entry)."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: Mapping[str, Any] | None = None
    name: str | None = None
    strict: bool = False


@dataclass(frozen=True, slots=True)
class Params:
    """Sampling and decoding parameters. ``None`` means: the provider's default."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    response_format: ResponseFormat | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: str | Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: tuple[Message, ...]
    params: Params = field(default_factory=Params)
    stream: bool = False
    user: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    #: Mark the stable prefix (tools, system prompt, earlier turns) for the provider's prompt cache
    #: (Anthropic ``cache_control``); set by the gateway for routes with ``prompt_cache = true``.
    prompt_cache: bool = False


def last_user_index(messages: Sequence[Message], *, before: int | None = None) -> int | None:
    """Where the last user message is (among the first ``before`` messages): the turn a request asks.

    ``None`` when there is none. The one definition of "the last user turn" for every stage.
    """
    end = len(messages) if before is None else before
    return next((i for i in range(end - 1, -1, -1) if messages[i].role == "user"), None)


def last_user_text(messages: Sequence[Message]) -> str:
    """The text of the last user message, or ``""`` when there is none."""
    index = last_user_index(messages)
    return messages[index].text if index is not None else ""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one call. ``input_tokens`` counts every prompt token; of those, ``cached_tokens`` were
    read from the provider's prompt cache and ``cache_write_tokens`` written to it (Anthropic bills
    writes above the input rate)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cached_tokens + other.cached_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )


@dataclass(frozen=True, slots=True)
class Timing:
    """Latency figures in milliseconds (AI Engineering, ch. 9).

    ``ttft_ms``: time to first token; ``tpot_ms``: mean time per output token after the first;
    ``queue_ms``: time spent waiting for the model (e.g. the embedded model's single worker).
    """

    queue_ms: float = 0.0
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    total_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A fragment of a tool call in a stream; fragments with the same index concatenate."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True, slots=True)
class Delta:
    """One streamed event. The last delta of a stream carries ``finish_reason``, ``usage``, ``timing`` (and ``cost_usd`` once priced)."""

    text: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    timing: Timing | None = None
    cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class Completion:
    """A model's answer.

    A streaming completion carries ``stream``: iterate it to receive the deltas. Its ``message``,
    ``usage`` and ``timing`` are then those known before the stream started; use
    :func:`aiestack.streams.collect` (or a tap) to obtain the final completion.
    """

    message: Message
    model: str
    provider: str
    finish_reason: FinishReason | None = None
    usage: Usage = field(default_factory=Usage)
    timing: Timing = field(default_factory=Timing)
    cost_usd: float | None = None
    cached: bool = False
    logprobs: tuple[TokenLogprob, ...] = ()
    stream: AsyncIterator[Delta] | None = field(default=None, compare=False, repr=False)

    @property
    def text(self) -> str:
        return self.message.text


# --------------------------------------------------------------------------- cross-cutting records


@dataclass(frozen=True, slots=True)
class Finding:
    """Something a guard found: its kind, where, and (never the secret itself) a label."""

    kind: str
    start: int | None = None
    end: int | None = None
    score: float | None = None
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    guard: str
    action: Action
    findings: tuple[Finding, ...] = ()
    latency_ms: float = 0.0
    score: float | None = None


@dataclass(frozen=True, slots=True)
class Document:
    id: str
    text: str
    source: str = ""
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Chunk:
    id: str  # content hash
    document_id: str
    text: str
    position: int = 0
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Hit:
    chunk: Chunk
    score: float
    retriever: str


@dataclass(frozen=True, slots=True)
class SpanRecord:
    """A finished span as stored (converted from an OpenTelemetry span)."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start_ns: int
    end_ns: int
    status: Literal["ok", "error", "unset"] = "unset"
    attributes: Mapping[str, Any] = field(default_factory=dict)
    exchange_id: str | None = None

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


_Part = TypeVar("_Part")


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """What a request's ``model`` names, compiled once when the stack is built (see :mod:`aiestack.plans`).

    ``route`` is the ``[routes.NAME]`` it names, ``None`` for a bare model (or a name nothing
    declares: the Generate stage says so). The plain fields echo the route's table; ``parts``
    holds what each wing compiled from it, keyed by the part's type (the guards, the cache
    policy, the prompt spec, the RAG plan), read with :meth:`part`. A stage reads the plan the
    exchange carries and never looks a route up by a rule of its own.
    """

    route: str | None = None
    deployments: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = ()
    collection: str | None = None
    prompt: str | None = None
    examples: tuple[str, ...] = ()
    fingerprint: str = ""  # a hash of the route's table: editing the route changes it
    parts: Mapping[type, object] = field(default_factory=dict)

    def part(self, kind: type[_Part]) -> _Part | None:
        """The part of type ``kind`` a wing compiled for this route, or ``None`` if it compiled none."""
        return cast("_Part | None", self.parts.get(kind))


@dataclass(frozen=True, slots=True)
class Exchange:
    """One request's journey through the pipeline, from the way in to the way out.

    ``plan`` is set once, when the exchange enters the pipeline (the semantic router may replace
    it with the plan of the route it picks).
    """

    request: ChatRequest
    id: str = field(default_factory=new_id)
    tenant: str = "default"
    key_id: str | None = None
    route: str | None = None
    started_at: float = field(default_factory=time.time)
    hits: tuple[Hit, ...] = ()
    verdicts: tuple[Verdict, ...] = ()
    completion: Completion | None = None
    outcome: Outcome = "pending"
    error: AiestackError | None = field(default=None, compare=False)
    attributes: Mapping[str, Any] = field(default_factory=dict)
    plan: RoutePlan | None = field(default=None, compare=False, repr=False)


# --------------------------------------------------------------------------- feedback and evaluation


@dataclass(frozen=True, slots=True)
class Feedback:
    exchange_id: str
    kind: Literal["thumbs", "rating", "score", "comment", "correction", "implicit"]
    value: float | None = None
    comment: str | None = None
    correction: str | None = None
    tags: tuple[str, ...] = ()
    source: Literal["explicit", "implicit"] = "explicit"
    created_at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    input: Mapping[str, Any]
    reference: Any = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EvalResult:
    run_id: str
    example_id: str
    system: str
    output: str
    scores: Mapping[str, float]
    exchange_id: str | None = None
    latency_ms: float | None = None
    cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class EvalRun:
    id: str
    suite: str
    systems: tuple[str, ...]
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    summary: Mapping[str, Any] = field(default_factory=dict)
