"""The agent loop: model call → tool calls (concurrently) → tool results → … → final answer or a stop.

``Agent(model=..., stack=stack, tools=[...])`` runs on a stack (anything with :class:`AgentBackend`'s
shape: :class:`aiestack.Stack` is one). Each model call is an ordinary exchange through the stack's
pipeline — keys, limits and budgets, guardrails, caches, routes with retries and fallbacks, tracing —
carrying the run id in its attributes (:data:`~aiestack.tracing.AGENT_RUN_ID`, stored on the exchange
record and on its root span), and its spans nest under the run's ``invoke_agent`` span, beside one
``execute_tool`` span per tool call. ``await agent.run(task)`` returns a
:class:`~aiestack.agents.events.RunResult`; ``agent.stream(task)`` yields the same events as they
happen. A run never hangs and never raises for what a model or tool did: every way it can end is a
:class:`~aiestack.agents.events.RunStopped` with a reason.

Tool calls come natively (the OpenAI ``tools`` parameter; several calls of one reply run
concurrently) or, for models without native tool calls, through the grammar-constrained text
protocol of :mod:`aiestack.agents.protocol` (``protocol="auto"`` asks the stack which the model
supports).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from aiestack.agents import protocol as text_protocol
from aiestack.agents import streaming
from aiestack.agents.events import (
    STATUS_OF,
    AgentEvent,
    AnswerDelta,
    ApprovalDecided,
    ApprovalRequested,
    FinalAnswer,
    ModelCall,
    ModelDelta,
    RunResult,
    RunStarted,
    RunStopped,
    StopReason,
    StreamEvent,
    ToolCalled,
    ToolResult,
    event_from_dict,
    message_from_dict,
)
from aiestack.agents.patterns import AGENT_PURPOSE, Patterns, PatternState
from aiestack.agents.tools import DEFAULT_MAX_THREADS, AgentTool, ToolContext, Toolset, ToolThreads
from aiestack.errors import AiestackError, BudgetExceeded, GuardrailBlocked, spent
from aiestack.tracing import (
    AGENT_RUN_ID,
    AGENT_STEP,
    GEN_AI_AGENT_NAME,
    GEN_AI_OPERATION_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_TOOL_CALL_ARGUMENTS,
    GEN_AI_TOOL_CALL_ID,
    GEN_AI_TOOL_CALL_RESULT,
    GEN_AI_TOOL_NAME,
    OPERATION_EXECUTE_TOOL,
    OPERATION_INVOKE_AGENT,
    Tracing,
)
from aiestack.types import ChatRequest, Exchange, Message, Params, ToolCall, Usage, new_id

if TYPE_CHECKING:
    from aiestack.agents.longterm import LongTermMemory
    from aiestack.agents.memory import ShortTermMemory
    from aiestack.agents.planning import Planning
    from aiestack.agents.reflection import Reflection

Protocol_ = Literal["auto", "native", "text"]
#: Span attributes of the run span and tool spans (aiestack's own).
AGENT_STOP_REASON = "aiestack.agent.stop_reason"
TOOL_ERROR = "aiestack.tool.error"
TOOL_TRUNCATED = "aiestack.tool.truncated"


@runtime_checkable
class AgentBackend(Protocol):
    """What the loop needs of a stack: its pipeline, its tracing, and which models call tools natively."""

    tracing: Tracing

    async def chat(self, request: ChatRequest, **exchange_fields: Any) -> Exchange: ...

    def native_tools(self, model: str) -> bool: ...


@dataclass
class _Run:
    """One run's mutable state (the loop's own; never shared between runs)."""

    id: str
    task: str
    tenant: str
    key_id: str | None
    messages: list[Message]
    started: float
    deadline: float | None
    step: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    invalid_replies: int = 0
    calls_seen: Counter[tuple[str, str]] = field(default_factory=Counter)
    context: ToolContext = field(default_factory=ToolContext)
    answer: str | None = None
    citations: tuple[Mapping[str, Any], ...] = ()
    stopped: RunStopped | None = None
    patterns: PatternState = field(default_factory=PatternState)  # planning, reflection, memory
    deltas: bool = False  # stream each model call, yielding its deltas
    answer_text: streaming.AnswerText | None = None  # with deltas: the answer sent so far

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def count_spent(self, error: BaseException | None) -> tuple[Usage | None, float | None]:
        """Add to the run what a call without an answer used (an answer an output guard blocked: the
        model ran), and return it."""
        usage, cost = spent(None, error)
        if usage is not None:
            self.input_tokens += usage.input_tokens
            self.output_tokens += usage.output_tokens
            self.cost_usd += cost or 0.0
        return usage, cost


class Agent:
    """A model, tools and instructions, with limits; see the module doc.

    ``max_steps`` bounds the model calls, ``max_tokens`` the tokens (input and output) of all of
    them, ``budget_usd`` their cost and ``timeout_s`` the run's wall time. ``max_identical_calls``:
    in how many steps one exact tool call (name and arguments) may be made before the run stops as a loop.
    ``max_parallel_tools``: how many tool calls run at once, and how many threads sync tools may
    hold (a hung sync tool keeps its thread until it returns). ``params`` are the sampling
    parameters of every model call; ``metadata`` goes on every request (``{"cache": "off"}``).

    The patterns of :mod:`aiestack.agents.patterns`, each off unless given: ``planning``
    (plan-then-execute), ``reflection`` (a critique of candidate answers), ``memory`` (short-term:
    a window plus a summary of older turns) and ``long_term_memory`` (facts in a collection, with
    ``remember``/``recall`` tools and recall before a run). Their model calls count as steps.
    """

    def __init__(
        self,
        *,
        model: str,
        stack: AgentBackend,
        tools: Iterable[AgentTool | Toolset] = (),
        instructions: str = "",
        name: str = "agent",
        max_steps: int = 10,
        max_tokens: int | None = None,
        budget_usd: float | None = None,
        timeout_s: float | None = None,
        protocol: Protocol_ = "auto",
        params: Params | None = None,
        metadata: Mapping[str, str] | None = None,
        max_identical_calls: int = 2,
        max_invalid_replies: int = 3,
        max_parallel_tools: int = DEFAULT_MAX_THREADS,
        planning: Planning | None = None,
        reflection: Reflection | None = None,
        memory: ShortTermMemory | None = None,
        long_term_memory: LongTermMemory | None = None,
    ) -> None:
        for label, value in (
            ("max_steps", max_steps),
            ("max_identical_calls", max_identical_calls),
            ("max_invalid_replies", max_invalid_replies),
            ("max_parallel_tools", max_parallel_tools),
        ):
            if value < 1:
                raise ValueError(f"{label} must be at least 1, got {value}")
        for label, limit in (
            ("max_tokens", max_tokens),
            ("budget_usd", budget_usd),
            ("timeout_s", timeout_s),
        ):
            if limit is not None and limit <= 0:
                raise ValueError(f"{label} must be positive, got {limit}")
        if protocol not in ("auto", "native", "text"):
            raise ValueError(f"protocol must be auto, native or text, got {protocol!r}")
        self.model = model
        self.name = name
        self.instructions = instructions
        self.patterns = Patterns(planning, reflection, memory, long_term_memory)
        memory_tools = long_term_memory.tools() if long_term_memory is not None else ()
        self.toolset = Toolset([*tools, *memory_tools])
        self.max_steps = max_steps
        self.max_tokens = max_tokens
        self.budget_usd = budget_usd
        self.timeout_s = timeout_s
        self.max_identical_calls = max_identical_calls
        self.max_invalid_replies = max_invalid_replies
        self.metadata = dict(metadata or {})
        self._stack = stack
        self._requested = protocol
        self._protocol: Literal["native", "text"] | None = None if protocol == "auto" else protocol
        self._base_params = params or Params()
        self._threads = ToolThreads(max_parallel_tools)
        self._parallel = max_parallel_tools

    @property
    def protocol(self) -> Literal["native", "text"]:
        """How tool calls travel: ``native`` (the ``tools`` parameter) or ``text`` (the JSON protocol)."""
        if self._protocol is None:
            self._protocol = "native" if self._stack.native_tools(self.model) else "text"
        return self._protocol

    # ------------------------------------------------------------------ public

    async def run(
        self,
        task: str,
        *,
        run_id: str | None = None,
        tenant: str = "default",
        key_id: str | None = None,
        on_event: Callable[[StreamEvent], None] | None = None,
        history: Sequence[Message] = (),
        deltas: bool = False,
    ) -> RunResult:
        """Run the agent on ``task`` to its end and return every event, the answer and the stop reason
        (``on_event`` is called with each event as it happens, and with the model calls' deltas
        when ``deltas`` is true). ``history``: earlier turns of a conversation, before the task."""
        run = self._new_run(task, run_id, tenant, key_id, history)
        run.deltas = deltas
        return await self._collect(run, self._events(run), on_event)

    async def resume(
        self,
        pending: Mapping[str, Any],
        *,
        run_id: str,
        approve: bool,
        reason: str = "",
        tenant: str = "default",
        key_id: str | None = None,
        on_event: Callable[[StreamEvent], None] | None = None,
        deltas: bool = False,
    ) -> RunResult:
        """Go on with a run that waits for approval, from the ``pending`` state its store kept
        (:func:`aiestack.agents.runs.run_record`): approved, the step's calls run; denied, the calls
        that needed approval are not run and the model sees ``reason`` as their result (the other
        calls of the step run). ``timeout_s`` counts again from here."""
        run, decided, calls = self._resumed_run(pending, run_id, tenant, key_id, approve, reason)
        run.deltas = deltas
        return await self._collect(run, self._events(run, resumed=(decided, calls)), on_event)

    def resume_stream(
        self,
        pending: Mapping[str, Any],
        *,
        run_id: str,
        approve: bool,
        reason: str = "",
        tenant: str = "default",
        key_id: str | None = None,
        deltas: bool = True,
    ) -> AsyncIterator[StreamEvent]:
        """:meth:`resume`, yielding the events as they happen (the first is the :class:`ApprovalDecided`)."""
        run, decided, calls = self._resumed_run(pending, run_id, tenant, key_id, approve, reason)
        run.deltas = deltas
        return self._events(run, resumed=(decided, calls))

    async def _collect(
        self, run: _Run, stream: AsyncIterator[StreamEvent], on_event: Callable[[StreamEvent], None] | None
    ) -> RunResult:
        events: list[AgentEvent] = []
        async for event in stream:
            if not isinstance(event, ModelDelta | AnswerDelta):
                events.append(event)
            if on_event is not None:
                on_event(event)
        stopped = run.stopped
        assert stopped is not None
        return RunResult(
            run_id=run.id,
            status=stopped.status,
            stop_reason=stopped.reason,
            answer=run.answer,
            events=tuple(events),
            messages=tuple(run.messages),
            citations=run.citations,
            detail=stopped.detail,
        )

    def stream(
        self,
        task: str,
        *,
        run_id: str | None = None,
        tenant: str = "default",
        key_id: str | None = None,
        history: Sequence[Message] = (),
        deltas: bool = True,
    ) -> AsyncIterator[StreamEvent]:
        """Yield the run's events as they happen; the last is always a :class:`RunStopped`.

        With ``deltas`` (the default) each model call streams, and its :class:`ModelDelta` s (and
        :class:`AnswerDelta` s, the final answer's text) come as they arrive, before the step's
        :class:`ModelCall`. Closing the iterator early (``aclose``) ends the run as ``cancelled``.
        """
        run = self._new_run(task, run_id, tenant, key_id, history)
        run.deltas = deltas
        return self._events(run)

    # ------------------------------------------------------------------ the loop

    def _new_run(
        self, task: str, run_id: str | None, tenant: str, key_id: str | None, history: Sequence[Message] = ()
    ) -> _Run:
        if not task.strip():
            raise ValueError("the task is empty: say what the agent should do")
        system = self.instructions
        if self.protocol == "text":
            guide = text_protocol.instructions(list(self.toolset))
            system = f"{system}\n\n{guide}" if system else guide
        messages = [Message("system", system)] if system else []
        messages += _earlier_turns(history)
        messages.append(Message("user", task))
        now = time.monotonic()
        run = _Run(
            id=run_id or new_id("run"),
            task=task,
            tenant=tenant,
            key_id=key_id,
            messages=messages,
            started=now,
            deadline=None if self.timeout_s is None else now + self.timeout_s,
        )
        run.context = ToolContext(run_id=run.id, tenant=tenant)
        return run

    def _resumed_run(
        self, pending: Mapping[str, Any], run_id: str, tenant: str, key_id: str | None, approve: bool, reason: str
    ) -> tuple[_Run, ApprovalDecided, tuple[ToolCall, ...]]:
        try:
            messages = [message_from_dict(m) for m in pending["messages"]]
            asked = event_from_dict(pending["approval"])
            steps = int(pending["steps"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"this is not the state of a waiting run ({exc}); resume from what run_record stored") from exc
        if not isinstance(asked, ApprovalRequested) or not messages or messages[-1].tool_calls != asked.calls:
            raise ValueError("this is not the state of a waiting run: its last message is not the calls that wait")
        now = time.monotonic()
        task = next((m.text for m in messages if m.role == "user"), "")
        run = _Run(
            id=run_id,
            task=task,
            tenant=tenant,
            key_id=key_id,
            messages=messages,
            started=now,
            deadline=None if self.timeout_s is None else now + self.timeout_s,
            step=steps,
            input_tokens=int(pending.get("input_tokens", 0)),
            output_tokens=int(pending.get("output_tokens", 0)),
            cost_usd=float(pending.get("cost_usd", 0.0)),
        )
        run.context = ToolContext(run_id=run.id, tenant=tenant)
        for message in messages:  # the identical-call count goes on where it was
            if message.role == "assistant" and message.tool_calls:
                for key in dict.fromkeys((c.name, _canonical(c.arguments)) for c in message.tool_calls):
                    run.calls_seen[key] += 1
        decided = ApprovalDecided(run.id, steps, approve, asked.needs_approval, reason)
        return run, decided, asked.calls

    def _params(self) -> Params:
        if not self.toolset:
            return self._base_params
        if self.protocol == "native":
            return replace(self._base_params, tools=self.toolset.specs, tool_choice="auto")
        return replace(self._base_params, response_format=text_protocol.response_format(list(self.toolset)))

    async def _events(
        self, run: _Run, resumed: tuple[ApprovalDecided, tuple[ToolCall, ...]] | None = None
    ) -> AsyncGenerator[StreamEvent, None]:
        tracing = self._stack.tracing
        span = tracing.start_span(
            f"{OPERATION_INVOKE_AGENT} {self.name}",
            kind=SpanKind.INTERNAL,
            attributes={
                GEN_AI_OPERATION_NAME: OPERATION_INVOKE_AGENT,
                GEN_AI_AGENT_NAME: self.name,
                GEN_AI_REQUEST_MODEL: self.model,
                AGENT_RUN_ID: run.id,
            },
        )
        ctx = trace.set_span_in_context(span)
        params = self._params()
        if resumed is None:
            yield RunStarted(
                run.id, self.name, self.model, run.task, tuple(t.name for t in self.toolset), self.protocol
            )
        else:
            yield resumed[0]
        try:
            async with contextlib.aclosing(self._steps(run, ctx, params, resumed)) as steps:
                async for event in steps:
                    yield event
        finally:
            if run.stopped is None:  # the caller stopped reading, or the task was cancelled
                run.stopped = self._stop(run, "cancelled", "the caller stopped the run")
            span.set_attribute(AGENT_STOP_REASON, run.stopped.reason)
            span.set_attribute(AGENT_STEP, run.step)
            if run.stopped.status == "failed":
                span.set_status(Status(StatusCode.ERROR, run.stopped.detail))
            span.end()

    def _limit(self, run: _Run) -> tuple[StopReason, str] | None:
        remaining = run.remaining()
        if remaining is not None and remaining <= 0:
            return "timeout", f"the run took longer than {self.timeout_s:g} s"
        if run.step >= self.max_steps:
            return "max_steps", f"{self.max_steps} model calls were made and the model still called tools"
        if self.max_tokens is not None and run.input_tokens + run.output_tokens >= self.max_tokens:
            return (
                "max_tokens",
                f"the run used {run.input_tokens + run.output_tokens} tokens (limit {self.max_tokens})",
            )
        if self.budget_usd is not None and run.cost_usd >= self.budget_usd:
            return "budget", f"the run cost ${run.cost_usd:.6f} (budget ${self.budget_usd:g})"
        return None

    def _stop(self, run: _Run, reason: StopReason, detail: str) -> RunStopped:
        stopped = RunStopped(
            run.id,
            reason,
            STATUS_OF.get(reason, "stopped"),
            detail,
            steps=run.step,
            input_tokens=run.input_tokens,
            output_tokens=run.output_tokens,
            cost_usd=run.cost_usd,
            duration_ms=(time.monotonic() - run.started) * 1000,
        )
        run.stopped = stopped
        return stopped

    async def _call_model(
        self,
        run: _Run,
        ctx: otel_context.Context,
        params: Params,
        *,
        messages: Iterable[Message] | None = None,
        purpose: str | None = None,
        model: str | None = None,
    ) -> Exchange | RunStopped:
        """One model call as an exchange of the run (``messages``/``purpose``/``model``: a pattern's call).

        The loop's own step calls stream when the run does (a pattern's calls never do)."""
        sent = tuple(run.messages if messages is None else messages)
        stream = run.deltas and purpose is None and messages is None
        request = ChatRequest(model or self.model, sent, params, stream=stream, metadata=self.metadata)
        attributes: dict[str, Any] = {AGENT_RUN_ID: run.id, AGENT_STEP: run.step}
        if purpose is not None:
            attributes[AGENT_PURPOSE] = purpose
        token = otel_context.attach(ctx)
        try:
            async with asyncio.timeout(run.remaining()) as limit:
                return await self._stack.chat(request, tenant=run.tenant, key_id=run.key_id, attributes=attributes)
        except Exception as exc:
            return self._failed(run, exc, limit.expired())
        finally:
            otel_context.detach(token)

    def _failed(self, run: _Run, exc: Exception, expired: bool) -> RunStopped:
        """The stop for a model call that raised (``expired``: the run's deadline passed)."""
        if isinstance(exc, TimeoutError):
            if expired:
                return self._stop(run, "timeout", f"the run took longer than {self.timeout_s:g} s")
            return self._stop(run, "model_error", "the model call timed out")
        if isinstance(exc, BudgetExceeded):
            return self._stop(run, "budget", str(exc))
        if isinstance(exc, GuardrailBlocked):  # an output guard stopped a streamed answer
            run.count_spent(exc)
            return self._stop(run, "blocked", str(exc))
        if isinstance(exc, AiestackError):
            return self._stop(run, "model_error", str(exc))
        return self._stop(run, "model_error", f"{type(exc).__name__}: {exc}")  # never a lost run

    async def _model_step(
        self, run: _Run, ctx: otel_context.Context, params: Params
    ) -> AsyncGenerator[ModelDelta | AnswerDelta | Exchange | RunStopped, None]:
        """The step's model call: its exchange (or stop), after its deltas when the run streams."""
        got = await self._call_model(run, ctx, params)
        if not run.deltas or isinstance(got, RunStopped) or got.completion is None or got.completion.stream is None:
            yield got
            return
        mode: streaming.Mode = "text" if not self.toolset else "json" if self.protocol == "text" else "end"
        if self.patterns.reflection is not None:  # a critique may send an answer back: send it once accepted
            mode = "end"
        if run.answer_text is None or run.answer_text.mode != mode:
            run.answer_text = streaming.AnswerText(mode)
        run.answer_text.begin()
        try:
            async for item in streaming.drain(got, run.answer_text, run_id=run.id, step=run.step, remaining=run.remaining):
                yield item
        except Exception as exc:
            remaining = run.remaining()
            yield self._failed(run, exc, remaining is not None and remaining <= 0)

    async def _steps(
        self,
        run: _Run,
        ctx: otel_context.Context,
        params: Params,
        resumed: tuple[ApprovalDecided, tuple[ToolCall, ...]] | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        if resumed is not None:
            decided, waiting = resumed
            denied = frozenset(() if decided.approved else decided.call_ids)
            async for event in self._execute(run, waiting, ctx, denied, decided.reason):
                yield event
        elif self.patterns.active:  # planning and long-term recall, before the first step
            async for event in self.patterns.start(self, run, ctx):
                yield event
            if run.stopped is not None:
                return
        while True:
            limit = self._limit(run)
            if limit is not None:
                yield self._stop(run, *limit)
                return
            if self.patterns.memory is not None:  # short-term memory: summarise when over budget
                async for event in self.patterns.before_call(self, run, ctx):
                    yield event
                if run.stopped is not None:
                    return
            run.step += 1
            started = time.perf_counter()
            ex: Exchange | RunStopped | None = None
            async for item in self._model_step(run, ctx, params):
                if isinstance(item, ModelDelta | AnswerDelta):
                    yield item
                else:
                    ex = item
            assert ex is not None
            if isinstance(ex, RunStopped):
                yield ex
                return
            completion = ex.completion
            duration_ms = (time.perf_counter() - started) * 1000
            guards = tuple(f"{v.guard}:{v.action}" for v in ex.verdicts if v.action != "allow")
            if completion is None:
                why = (
                    str(ex.error)
                    if ex.error is not None
                    else f"the exchange ended {ex.outcome} without an answer"
                )
                usage, cost = run.count_spent(ex.error)
                yield ModelCall(
                    run.id,
                    run.step,
                    ex.id,
                    self.model,
                    input_tokens=usage.input_tokens if usage is not None else 0,
                    output_tokens=usage.output_tokens if usage is not None else 0,
                    cost_usd=cost or 0.0,
                    outcome=ex.outcome,
                    duration_ms=duration_ms,
                    guards=guards,
                    error=why,
                )
                yield self._stop(run, "blocked" if ex.outcome == "blocked" else "model_error", why)
                return
            run.input_tokens += completion.usage.input_tokens
            run.output_tokens += completion.usage.output_tokens
            run.cost_usd += completion.cost_usd or 0.0
            text = completion.text
            calls = completion.message.tool_calls
            answer: str | None = None
            error: str | None = None
            if self.protocol == "text" and self.toolset:
                reply = text_protocol.read_reply(text, f"call_{run.step}")
                calls, answer, error = ((reply.call,) if reply.call else ()), reply.answer, reply.error
            elif not calls:
                answer = text
            yield ModelCall(
                run.id, run.step, ex.id, completion.model, text, calls, completion.finish_reason,
                completion.usage.input_tokens, completion.usage.output_tokens, completion.cost_usd,
                completion.cached, ex.outcome, duration_ms, guards, error,
            )  # fmt: skip
            if error is not None:
                run.invalid_replies += 1
                if run.invalid_replies >= self.max_invalid_replies:
                    yield self._stop(
                        run,
                        "invalid_reply",
                        f"{run.invalid_replies} replies in a row could not be read: {error}",
                    )
                    return
                run.messages += [
                    Message("assistant", text),
                    Message("user", text_protocol.CORRECTION.format(error=error)),
                ]
                continue
            run.invalid_replies = 0
            if answer is not None:
                run.messages.append(Message("assistant", text))
                if self.patterns.reflection is not None:  # a critique may send the agent back
                    async for event in self.patterns.review(self, run, ctx, answer):
                        yield event
                    if run.stopped is not None:
                        return
                    if run.patterns.sent_back:
                        run.patterns.sent_back = False
                        continue
                rest = run.answer_text.rest(answer) if run.answer_text is not None else ""
                if rest:
                    yield AnswerDelta(run.id, run.step, rest)
                yield self._final(run, answer)
                yield self._stop(run, "final_answer", "")
                return
            problem = self._check_calls(run, calls)
            if problem is not None:
                yield self._stop(run, *problem)
                return
            run.messages.append(Message("assistant", text, tool_calls=calls))
            pending = tuple(c.id for c in calls if self._needs_approval(c))
            if pending:
                yield ApprovalRequested(run.id, run.step, calls, pending)
                names = ", ".join(sorted({c.name for c in calls if c.id in pending}))
                yield self._stop(run, "waiting", f"{len(pending)} call(s) of {names} wait for approval")
                return
            results: list[ToolResult] = []
            async for event in self._execute(run, calls, ctx):
                if isinstance(event, ToolResult):
                    results.append(event)
                yield event
            if self.patterns.planning is not None:  # a failed step asks for a re-plan
                async for event in self.patterns.after_tools(self, run, ctx, results):
                    yield event
                if run.stopped is not None:
                    return

    async def _execute(
        self,
        run: _Run,
        calls: tuple[ToolCall, ...],
        ctx: otel_context.Context,
        denied: frozenset[str] = frozenset(),
        reason: str = "",
    ) -> AsyncGenerator[AgentEvent, None]:
        """Run a step's calls (concurrently), except the ``denied`` ones, whose result is the denial."""
        allowed = tuple(c for c in calls if c.id not in denied)
        for call in allowed:
            yield ToolCalled(run.id, run.step, call.id, call.name, call.arguments)
        if len(allowed) == 1:
            done: list[ToolResult] = [await self._call_tool(run, allowed[0], ctx)]
        else:
            gate = asyncio.Semaphore(self._parallel)
            done = list(await asyncio.gather(*(self._call_tool(run, c, ctx, gate) for c in allowed)))
        by_id = {r.call_id: r for r in done}
        refusal = f"A person denied this call: {reason}" if reason.strip() else "A person denied this call."
        for call in calls:  # in the order the model asked
            result = by_id.get(call.id) or ToolResult(run.id, run.step, call.id, call.name, refusal, error="denied")
            run.messages.append(Message("tool", result.content, name=result.name, tool_call_id=result.call_id))
            yield result

    def _check_calls(self, run: _Run, calls: tuple[ToolCall, ...]) -> tuple[StopReason, str] | None:
        for call in calls:
            if self.toolset.get(call.name) is None:
                known = ", ".join(t.name for t in self.toolset) or "none"
                return (
                    "unknown_tool",
                    f"the model called {call.name!r}, which this agent does not have (tools: {known})",
                )
        for key in dict.fromkeys((c.name, _canonical(c.arguments)) for c in calls):  # once per step
            run.calls_seen[key] += 1
            if run.calls_seen[key] > self.max_identical_calls:
                return "loop", (
                    f"the model called {key[0]} with the same arguments in {run.calls_seen[key]} steps "
                    f"(at most {self.max_identical_calls})"
                )
        return None

    def _needs_approval(self, call: ToolCall) -> bool:
        tool = self.toolset.get(call.name)
        return tool is not None and tool.approval

    def _final(self, run: _Run, answer: str) -> FinalAnswer:
        run.answer = answer
        if run.context.sources:
            from aiestack.context.citations import citations_json

            run.citations = tuple(citations_json(run.context.sources, answer))
        return FinalAnswer(run.id, run.step, answer, run.citations)

    async def _call_tool(
        self, run: _Run, call: ToolCall, ctx: otel_context.Context, gate: asyncio.Semaphore | None = None
    ) -> ToolResult:
        if gate is not None:
            async with gate:
                return await self._call_tool(run, call, ctx)
        tool = self.toolset.get(call.name)
        assert tool is not None  # _check_calls refused unknown tools
        tracing = self._stack.tracing
        token = otel_context.attach(ctx)
        try:
            span = tracing.start_span(
                f"{OPERATION_EXECUTE_TOOL} {call.name}",
                kind=SpanKind.INTERNAL,
                attributes={
                    GEN_AI_OPERATION_NAME: OPERATION_EXECUTE_TOOL,
                    GEN_AI_TOOL_NAME: call.name,
                    GEN_AI_TOOL_CALL_ID: call.id,
                    AGENT_RUN_ID: run.id,
                    AGENT_STEP: run.step,
                },
            )
        finally:
            otel_context.detach(token)
        started = time.perf_counter()
        inner = otel_context.attach(trace.set_span_in_context(span, ctx))
        try:
            context = replace(run.context, step=run.step)  # the same sources list: one numbering per run
            remaining = run.remaining()
            outcome = await tool.call(
                call.arguments, context=context, threads=self._threads,
                timeout_s=None if remaining is None else max(remaining, 0.001),
            )  # fmt: skip
        except asyncio.CancelledError:  # the run was cancelled: the span still ends, marked
            span.set_attribute(TOOL_ERROR, "cancelled")
            span.end()
            raise
        finally:
            otel_context.detach(inner)
            duration_ms = (time.perf_counter() - started) * 1000
        if span.is_recording():
            if outcome.error is not None:
                span.set_attribute(TOOL_ERROR, outcome.error)
                span.set_status(Status(StatusCode.ERROR, outcome.error))
            if outcome.truncated:
                span.set_attribute(TOOL_TRUNCATED, True)
            if tracing.content:
                redact = tracing.redact or (lambda s: s)
                span.set_attribute(GEN_AI_TOOL_CALL_ARGUMENTS, redact(call.arguments))
                span.set_attribute(GEN_AI_TOOL_CALL_RESULT, redact(outcome.content))
        span.end()
        return ToolResult(
            run.id,
            run.step,
            call.id,
            call.name,
            outcome.content,
            outcome.error,
            outcome.truncated,
            duration_ms,
        )


def _canonical(arguments: str) -> str:
    """The arguments as one canonical JSON text (key order and spacing do not make calls differ)."""
    try:
        return json.dumps(json.loads(arguments), sort_keys=True, separators=(",", ":"))
    except (json.JSONDecodeError, TypeError):
        return arguments.strip()


def _earlier_turns(history: Sequence[Message]) -> list[Message]:
    """A conversation's earlier turns as an agent sees them: system, user and assistant texts (the
    caller's own tool calls and tool results are left out: the agent has other tools)."""
    turns: list[Message] = []
    for message in history:
        if message.role in ("system", "user"):
            turns.append(message)
        elif message.role == "assistant" and message.text:
            turns.append(Message("assistant", message.text))
    return turns
