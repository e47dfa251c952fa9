"""The agent patterns of book ch. 6, each optional per agent, and how the loop calls them.

- :class:`~aiestack.agents.planning.Planning`: plan-then-execute (a validated JSON plan first,
  a re-plan when a step fails);
- :class:`~aiestack.agents.reflection.Reflection`: a critique of each candidate answer that can
  send the agent back with feedback;
- :class:`~aiestack.agents.memory.ShortTermMemory`: a window of recent turns plus a summary of the
  older ones once the conversation outgrows its token budget;
- :class:`~aiestack.agents.longterm.LongTermMemory`: facts written to and recalled from a
  collection, per tenant.

The loop (:mod:`aiestack.agents.loop`) calls :class:`Patterns` at four points of a run: before the
first step (:meth:`Patterns.start`: recall, plan), before each model call (:meth:`Patterns.before_call`:
summarise), after a step's tool results (:meth:`Patterns.after_tools`: re-plan on a failed step) and on a
candidate answer (:meth:`Patterns.review`: reflect). Every model call a pattern makes is an ordinary
exchange through the stack's pipeline like a loop step (:func:`side_call`): it carries the run id and a
step number, counts against ``max_steps``, ``max_tokens``, ``budget_usd`` and ``timeout_s``, and is
recorded as the pattern's own typed event (with its exchange id, tokens and cost), stored with the run.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context

from aiestack.agents.events import AgentEvent, RunStopped, ToolResult
from aiestack.types import Message, ResponseFormat

if TYPE_CHECKING:
    from aiestack.agents.longterm import LongTermMemory
    from aiestack.agents.loop import Agent, _Run
    from aiestack.agents.memory import ShortTermMemory
    from aiestack.agents.planning import Planning
    from aiestack.agents.reflection import Reflection

#: The exchange attribute that says which pattern made a model call (``plan``, ``reflection``, ``summary``).
AGENT_PURPOSE = "aiestack.agent.purpose"


@dataclass(frozen=True, slots=True)
class SideCall:
    """A pattern's model call: its reply text (None when the pipeline gave none) and what it used."""

    exchange_id: str | None
    text: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    duration_ms: float = 0.0
    error: str | None = None

    @property
    def figures(self) -> dict[str, Any]:
        """The fields every pattern event carries about its model call."""
        return {
            "exchange_id": self.exchange_id,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "duration_ms": self.duration_ms,
        }


async def side_call(
    agent: Agent,
    run: _Run,
    ctx: otel_context.Context,
    messages: Sequence[Message],
    purpose: str,
    *,
    schema: dict[str, Any] | None = None,
    model: str | None = None,
) -> SideCall | RunStopped:
    """One model call of a pattern, through the pipeline, counted as a step of ``run``.

    ``schema``: the JSON Schema the reply must match, sent as ``response_format`` (a grammar for the
    embedded llama.cpp model, so its replies always parse; a check for the others). A reply that the
    json_schema guard blocked comes back with ``error`` set (the pattern reports it and asks again);
    any other way the call can fail stops the run (the returned :class:`RunStopped`).
    """
    limit = agent._limit(run)
    if limit is not None:
        return agent._stop(run, *limit)
    run.step += 1
    params = replace(agent._base_params, tools=(), tool_choice=None, response_format=None)
    if schema is not None:
        params = replace(params, response_format=ResponseFormat("json_schema", schema, f"agent_{purpose}", strict=True))
    started = time.perf_counter()
    ex = await agent._call_model(run, ctx, params, messages=messages, purpose=purpose, model=model)
    if isinstance(ex, RunStopped):
        return ex
    duration_ms = (time.perf_counter() - started) * 1000
    completion = ex.completion
    if completion is None:
        usage, cost = run.count_spent(ex.error)  # a blocked answer: the model ran
        why = str(ex.error) if ex.error is not None else f"the exchange ended {ex.outcome} without an answer"
        if schema is not None and any(v.guard == "json_schema" and v.action == "block" for v in ex.verdicts):
            used = (usage.input_tokens, usage.output_tokens) if usage is not None else (0, 0)
            return SideCall(ex.id, None, *used, cost, duration_ms, error=why)
        return agent._stop(run, "blocked" if ex.outcome == "blocked" else "model_error", f"the {purpose} call: {why}")
    run.input_tokens += completion.usage.input_tokens
    run.output_tokens += completion.usage.output_tokens
    run.cost_usd += completion.cost_usd or 0.0
    return SideCall(
        ex.id, completion.text, completion.usage.input_tokens, completion.usage.output_tokens,
        completion.cost_usd, duration_ms,
    )  # fmt: skip


def transcript(messages: Sequence[Message], *, max_chars: int = 2000) -> str:
    """The conversation as plain lines (``user: ...``, ``called add({"a": 1})``, ``result of add: 3``),
    each text cut to ``max_chars``: what a planner, critic or summariser is shown of a run."""

    def cut(text: str) -> str:
        return text if len(text) <= max_chars else text[:max_chars] + f" [... {len(text) - max_chars} more characters]"

    lines: list[str] = []
    for m in messages:
        if m.role == "tool":
            lines.append(f"result of {m.name or 'a tool'}: {cut(m.text)}")
        elif m.tool_calls:
            if m.text.strip():
                lines.append(f"{m.role}: {cut(m.text)}")
            lines += [f"called {c.name}({cut(c.arguments)})" for c in m.tool_calls]
        elif m.text.strip():
            lines.append(f"{m.role}: {cut(m.text)}")
    return "\n".join(lines)


def read_json(text: str) -> Any:
    """The JSON value of a reply (a Markdown fence around it is dropped); ``ValueError`` when there is none."""
    from aiestack.guardrails.schema import extract_json

    try:
        return json.loads(extract_json(text.strip()))
    except json.JSONDecodeError as exc:
        raise ValueError(f"the reply is not JSON ({exc.msg} at character {exc.pos})") from None


def schema_problems(value: Any, schema: dict[str, Any]) -> str | None:
    """What is wrong with ``value`` against ``schema``, in one line (None: it validates)."""
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(schema).iter_errors(value), key=lambda e: list(e.absolute_path))
    if not errors:
        return None
    first = errors[0]
    where = "$" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.absolute_path)
    return f"at {where}: {first.message[:200]}"


@dataclass
class PatternState:
    """One run's pattern state (the loop's ``_Run`` holds it; never shared between runs)."""

    plan: tuple[dict[str, Any], ...] = ()
    replans: int = 0
    reflections: int = 0
    sent_back: bool = False  # set by a critique that rejected the answer (the loop goes on)


@dataclass(frozen=True)
class Patterns:
    """The patterns an agent uses (each None: off). Built by :class:`~aiestack.agents.loop.Agent`."""

    planning: Planning | None = None
    reflection: Reflection | None = None
    memory: ShortTermMemory | None = None
    long_term: LongTermMemory | None = None

    @property
    def active(self) -> bool:
        return any(p is not None for p in (self.planning, self.reflection, self.memory, self.long_term))

    async def start(self, agent: Agent, run: _Run, ctx: otel_context.Context) -> AsyncGenerator[AgentEvent, None]:
        """Before the first step: recall facts for the task, then make the plan."""
        if self.long_term is not None and self.long_term.auto_recall:
            async for event in self.long_term.recall_into(run):
                yield event
        if self.planning is not None:
            async for event in self.planning.make(agent, run, ctx):
                yield event

    async def before_call(self, agent: Agent, run: _Run, ctx: otel_context.Context) -> AsyncGenerator[AgentEvent, None]:
        """Before each model call of the loop: fold older turns into a summary when over budget."""
        if self.memory is not None:
            async for event in self.memory.fit(agent, run, ctx):
                yield event

    async def after_tools(
        self, agent: Agent, run: _Run, ctx: otel_context.Context, results: Sequence[ToolResult]
    ) -> AsyncGenerator[AgentEvent, None]:
        """After a step's tool results: a failed call fails the plan's step, and the model re-plans."""
        failed = [r for r in results if r.error is not None]
        if self.planning is not None and failed:
            async for event in self.planning.replan(agent, run, ctx, failed):
                yield event

    async def review(
        self, agent: Agent, run: _Run, ctx: otel_context.Context, answer: str
    ) -> AsyncGenerator[AgentEvent, None]:
        """On a candidate answer: the critique; sending back appends the feedback to ``run.messages``."""
        if self.reflection is not None:
            async for event in self.reflection.critique(agent, run, ctx, answer):
                yield event
