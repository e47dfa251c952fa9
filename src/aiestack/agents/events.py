"""What an agent run is made of: typed step events, the stop reasons, and the run's result.

The loop (:mod:`aiestack.agents.loop`) yields these events as they happen (``Agent.stream``) and
returns them all in a :class:`RunResult` (``Agent.run``): the same objects are streamed, stored and
shown. Each is a frozen dataclass of plain values that :func:`event_to_dict` turns into JSON and
:func:`event_from_dict` back (``{"type": "model_call", ...}``), so a run can be persisted, resumed,
sent over HTTP or drawn as a timeline.

Every run ends with exactly one :class:`RunStopped`, whose ``reason`` says why:

==================  ==========================================================================
``final_answer``    the model answered (the :class:`FinalAnswer` event came just before)
``max_steps``       ``max_steps`` model calls were made and the model still wanted tools
``max_tokens``      the run's model calls used more than ``max_tokens`` tokens in all
``budget``          the run cost more than ``budget_usd``, or the key's budget refused a call
``timeout``         the run took longer than ``timeout_s``
``loop``            the model repeated an identical tool call (same name and arguments) too often
``unknown_tool``    the model called a tool the agent does not have
``invalid_reply``   the model's replies could not be read as a tool call or answer, repeatedly
``blocked``         a guardrail blocked a model call
``model_error``     a model call failed (after the route's retries and fallbacks)
``waiting``         the run waits for a person to approve a tool call (status ``waiting``)
``cancelled``       the caller stopped the run
``invalid_plan``    planning is on and the model's plans failed validation, repeatedly
==================  ==========================================================================

The optional patterns of :mod:`aiestack.agents.patterns` add their own events: :class:`PlanMade`
(a plan or a re-plan), :class:`Reflected` (a critique of a candidate answer), :class:`Summarised`
(older turns folded into a summary) and :class:`MemoryRecalled` (facts recalled from long-term memory).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from aiestack.types import Message, ToolCall, ToolCallDelta

StopReason = Literal[
    "final_answer",
    "max_steps",
    "max_tokens",
    "budget",
    "timeout",
    "loop",
    "unknown_tool",
    "invalid_reply",
    "blocked",
    "model_error",
    "waiting",
    "cancelled",
    "invalid_plan",
]
RunStatus = Literal["running", "waiting", "finished", "stopped", "failed"]

#: The status a run ends in, by stop reason: ``finished`` with an answer, ``failed`` on an error,
#: ``waiting`` for approval, ``stopped`` by a limit.
STATUS_OF: Mapping[str, RunStatus] = {
    "final_answer": "finished",
    "model_error": "failed",
    "blocked": "failed",
    "waiting": "waiting",
}


@dataclass(frozen=True, slots=True)
class RunStarted:
    """The run began: its id, the agent, the task and the tools on offer."""

    type: ClassVar[str] = "run_started"
    run_id: str
    agent: str
    model: str
    task: str
    tools: tuple[str, ...] = ()
    protocol: Literal["native", "text"] = "native"
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class ModelCall:
    """One model call of the loop: an ordinary exchange through the pipeline (``exchange_id``).

    ``text`` and ``tool_calls`` are what the model answered; ``error`` says why its reply could not
    be used (an unreadable text-protocol reply is sent back to the model to correct); ``guards``
    lists the guardrails that acted on the exchange (``"context_injection:redact"``).
    """

    type: ClassVar[str] = "model_call"
    run_id: str
    step: int
    exchange_id: str
    model: str
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    cached: bool = False
    outcome: str = "ok"
    duration_ms: float = 0.0
    guards: tuple[str, ...] = ()
    error: str | None = None
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class ToolCalled:
    """The loop starts a tool call the model asked for (calls of one step run concurrently)."""

    type: ClassVar[str] = "tool_call"
    run_id: str
    step: int
    call_id: str
    name: str
    arguments: str
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class ToolResult:
    """A tool call's result as the model will see it (``error`` set when it failed)."""

    type: ClassVar[str] = "tool_result"
    run_id: str
    step: int
    call_id: str
    name: str
    content: str
    error: str | None = None
    truncated: bool = False
    duration_ms: float = 0.0
    at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class ApprovalRequested:
    """The model asked for calls of tools marked ``approval=True``: the run stops as ``waiting``.

    ``calls`` are every call of that step (none of them has run: a step's calls run together, after
    approval); ``needs_approval`` names the ones whose tools require it. The run's ``messages`` end
    with the assistant message that made the calls, so a resumed run can run the approved calls,
    answer the denied ones with the reason, and go on.
    """

    type: ClassVar[str] = "approval_requested"
    run_id: str
    step: int
    calls: tuple[ToolCall, ...]
    needs_approval: tuple[str, ...]  # call ids
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class ApprovalDecided:
    """A person approved or denied the calls a waiting run asked for; the run resumes from here.

    ``call_ids`` are the calls that needed approval; ``reason`` (a denial's) is what the model sees
    as those calls' results.
    """

    type: ClassVar[str] = "approval_decided"
    run_id: str
    step: int
    approved: bool
    call_ids: tuple[str, ...]
    reason: str = ""
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class FinalAnswer:
    """The model's answer; ``citations`` are the sources the run's tools cited (``[n]`` in the text).

    Each citation is the JSON the gateway gives in a response's ``citations`` list, with ``cited``
    saying whether the answer refers to it.
    """

    type: ClassVar[str] = "final_answer"
    run_id: str
    step: int
    text: str
    citations: tuple[Mapping[str, Any], ...] = ()
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class RunStopped:
    """The last event of every run: why it ended, and what it used."""

    type: ClassVar[str] = "run_stopped"
    run_id: str
    reason: StopReason
    status: RunStatus
    detail: str = ""
    steps: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    duration_ms: float = 0.0
    at: float = field(default_factory=time.time)


# ---------------------------------------------------------------- the optional patterns' events
# Each of their model calls is an exchange through the pipeline like a loop step (``exchange_id``,
# tokens, cost and duration are those of that call; ``error`` says why its reply could not be used).


@dataclass(frozen=True, slots=True)
class PlanMade:
    """Planning (:class:`~aiestack.agents.planning.Planning`): the model's plan, or a re-plan.

    ``steps`` are ``{"description": ..., "tool": NAME or None}``; ``revision`` is 0 for the first
    plan and counts the re-plans; ``reason`` is the failure that asked for a re-plan. ``error`` set:
    the reply failed validation (``steps`` is empty) and the model is asked again.
    """

    type: ClassVar[str] = "plan"
    run_id: str
    step: int
    exchange_id: str | None
    steps: tuple[Mapping[str, Any], ...] = ()
    revision: int = 0
    reason: str = ""
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    duration_ms: float = 0.0
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Reflected:
    """Reflection (:class:`~aiestack.agents.reflection.Reflection`): a critique of a candidate answer.

    ``accepted`` False sends the agent back with ``feedback``; ``round`` counts the critiques of the run.
    """

    type: ClassVar[str] = "reflection"
    run_id: str
    step: int
    exchange_id: str | None
    round: int
    accepted: bool
    feedback: str = ""
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    duration_ms: float = 0.0
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Summarised:
    """Short-term memory (:class:`~aiestack.agents.memory.ShortTermMemory`): the conversation grew past
    its token budget and ``messages`` older messages were replaced by ``summary``."""

    type: ClassVar[str] = "memory_summary"
    run_id: str
    step: int
    exchange_id: str | None
    messages: int
    tokens_before: int
    tokens_after: int
    summary: str = ""
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    duration_ms: float = 0.0
    at: float = field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class MemoryRecalled:
    """Long-term memory (:class:`~aiestack.agents.longterm.LongTermMemory`): the facts recalled for
    ``query`` before the run and shown to the model (no model call)."""

    type: ClassVar[str] = "memory_recall"
    run_id: str
    step: int
    query: str
    facts: tuple[str, ...] = ()
    duration_ms: float = 0.0
    error: str | None = None
    at: float = field(default_factory=time.time)
@dataclass(frozen=True, slots=True)
class ModelDelta:
    """A piece of a model call's reply as it streams in (``text``, or fragments of tool calls).

    Only a run asked for with deltas (``Agent.stream``, or ``deltas=True``) has them; they are
    never part of :attr:`RunResult.events` and never stored: the step's :class:`ModelCall` that
    follows holds the whole reply. On the text protocol ``text`` is the JSON reply being written.
    """

    type: ClassVar[str] = "model_delta"
    run_id: str
    step: int
    text: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()


@dataclass(frozen=True, slots=True)
class AnswerDelta:
    """A piece of the final answer's text: all of a run's answer deltas, joined, are its answer.

    Sent as soon as the text is known to be the answer: on the text protocol while the model
    writes ``{"answer": "...`` (decoded), with native tool calls when the reply ended without
    calling a tool (or at once when the agent has no tools). Not stored, like :class:`ModelDelta`.
    """

    type: ClassVar[str] = "answer_delta"
    run_id: str
    step: int
    text: str


AgentEvent = (
    RunStarted | ModelCall | ToolCalled | ToolResult | ApprovalRequested | ApprovalDecided | FinalAnswer | RunStopped
    | PlanMade | Reflected | Summarised | MemoryRecalled
)
#: What ``Agent.stream`` yields: the steps, and the deltas of the model calls as they stream in.
StreamEvent = AgentEvent | ModelDelta | AnswerDelta
_TYPES: dict[str, type[Any]] = {
    cls.type: cls
    for cls in (
        RunStarted, ModelCall, ToolCalled, ToolResult, ApprovalRequested, ApprovalDecided, FinalAnswer, RunStopped,
        PlanMade, Reflected, Summarised, MemoryRecalled,
        ModelDelta, AnswerDelta,
    )
}


def event_to_dict(event: StreamEvent) -> dict[str, Any]:
    """The event as JSON-ready values, with its ``type`` first."""
    out: dict[str, Any] = {"type": event.type}
    for f in dataclasses.fields(event):
        value = getattr(event, f.name)
        if isinstance(event, ModelDelta) and f.name == "tool_calls":
            value = [{"index": c.index, "id": c.id, "name": c.name, "arguments": c.arguments} for c in value]
        elif f.name in ("tool_calls", "calls"):
            value = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in value]
        elif f.name == "citations":
            value = [dict(c) for c in value]
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def event_from_dict(data: Mapping[str, Any]) -> Any:
    """The event (a :data:`StreamEvent`) :func:`event_to_dict` gave ``data`` for (unknown keys are an error)."""
    kind = data.get("type")
    cls = _TYPES.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown agent event type {kind!r}: expected one of {', '.join(_TYPES)}")
    values = {k: v for k, v in data.items() if k != "type"}
    names = {f.name for f in dataclasses.fields(cls)}
    extra = set(values) - names
    if extra:
        raise ValueError(f"{kind} event has unknown fields {sorted(extra)}")
    for name, value in list(values.items()):
        if cls is ModelDelta and name == "tool_calls":
            values[name] = tuple(ToolCallDelta(**c) for c in value)
        elif name in ("tool_calls", "calls"):
            values[name] = tuple(ToolCall(str(c["id"]), str(c["name"]), str(c["arguments"])) for c in value)
        elif isinstance(value, list):
            values[name] = tuple(value)
    return cls(**values)


@dataclass(frozen=True, slots=True)
class RunResult:
    """A finished (or stopped, or waiting) run: its answer, why it ended, every event, the conversation.

    ``messages`` is the conversation the model saw (instructions, task, answers, tool results):
    with the events, what a stored run needs to resume.
    """

    run_id: str
    status: RunStatus
    stop_reason: StopReason
    answer: str | None
    events: tuple[AgentEvent, ...]
    messages: tuple[Message, ...] = ()
    citations: tuple[Mapping[str, Any], ...] = ()
    detail: str = ""

    @property
    def stopped(self) -> RunStopped:
        last = self.events[-1]
        assert isinstance(last, RunStopped)
        return last

    @property
    def steps(self) -> int:
        return self.stopped.steps

    @property
    def cost_usd(self) -> float:
        return self.stopped.cost_usd

    @property
    def tool_results(self) -> tuple[ToolResult, ...]:
        return tuple(e for e in self.events if isinstance(e, ToolResult))

    @property
    def model_calls(self) -> tuple[ModelCall, ...]:
        return tuple(e for e in self.events if isinstance(e, ModelCall))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        """The run :meth:`to_dict` wrote (what a store keeps of a run)."""
        return cls(
            run_id=str(data["run_id"]),
            status=data["status"],
            stop_reason=data["stop_reason"],
            answer=data.get("answer"),
            events=tuple(event_from_dict(e) for e in data.get("events") or ()),
            messages=tuple(message_from_dict(m) for m in data.get("messages") or ()),
            citations=tuple(dict(c) for c in data.get("citations") or ()),
            detail=str(data.get("detail") or ""),
        )

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON-ready values (events in order; messages as role/content/tool calls)."""
        return {
            "run_id": self.run_id,
            "status": self.status,
            "stop_reason": self.stop_reason,
            "answer": self.answer,
            "detail": self.detail,
            "citations": [dict(c) for c in self.citations],
            "events": [event_to_dict(e) for e in self.events],
            "messages": [message_to_dict(m) for m in self.messages],
        }


def message_to_dict(message: Message) -> dict[str, Any]:
    """A conversation message as the OpenAI chat format writes it (text content only)."""
    out: dict[str, Any] = {"role": message.role, "content": message.text}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ]
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name is not None:
        out["name"] = message.name
    return out


def message_from_dict(data: Mapping[str, Any]) -> Message:
    """The message :func:`message_to_dict` wrote."""
    calls = tuple(
        ToolCall(str(c["id"]), str(c["function"]["name"]), str(c["function"]["arguments"]))
        for c in data.get("tool_calls") or ()
    )
    return Message(
        role=data["role"],
        content=str(data.get("content") or ""),
        name=data.get("name"),
        tool_calls=calls,
        tool_call_id=data.get("tool_call_id"),
    )
