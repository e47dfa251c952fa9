"""Plan-then-execute (book ch. 6, planning): a validated JSON plan first, then the steps, re-planning
when a step fails.

``Agent(..., planning=Planning())``: before the first step the model is asked for a plan, a JSON
object ``{"steps": [{"description": ..., "tool": NAME or null}, ...]}`` whose JSON Schema
(:func:`plan_schema`) names the agent's tools and bounds the number of steps. The request carries
the schema as ``response_format``, so the embedded llama.cpp model can only sample plans that parse
(a grammar, as for the text protocol's tool calls), and every plan is validated here too. A plan
that fails validation is reported (a :class:`~aiestack.agents.events.PlanMade` with ``error``) and
asked for again with the problem spelled out; after ``max_attempts`` failures the run stops with
``invalid_plan``.

The plan then goes into the conversation, and the loop executes it: the model carries out the
steps with its tools and answers. A tool call that fails (an error result) fails the plan's step:
the model is asked for a new plan for the rest of the task, shown the plan, what was done and the
failure (a ``PlanMade`` with ``revision`` ≥ 1 and the ``reason``), and goes on from the new plan, at
most ``max_replans`` times in a run; after that a failed call goes back to the model as usual.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context

from aiestack.agents.events import AgentEvent, PlanMade, RunStopped, ToolResult
from aiestack.agents.patterns import read_json, schema_problems, side_call, transcript
from aiestack.types import Message

if TYPE_CHECKING:
    from aiestack.agents.loop import Agent, _Run

PLANNER = (
    "You plan how to carry out a task with tools. Reply with only a JSON object: "
    '{"steps": [{"description": "<what to do>", "tool": "<the tool that step uses, or null>"}, ...]}. '
    "Use at most {max_steps} steps, in order, each one action; the last step gives the answer.\nTools:\n{tools}"
)
REPLAN = (
    "A step of the plan failed.\nThe plan was:\n{plan}\nWhat was done so far:\n{done}\nThe failure: {reason}\n"
    "Make a new plan for the rest of the task (steps already done successfully are not repeated), "
    "in the same JSON form."
)
FOLLOW = "Plan:\n{plan}\nCarry out the plan step by step with the tools, then give the final answer."
#: The longest step description a plan may hold (it bounds what a grammar-constrained model can sample).
MAX_DESCRIPTION_CHARS = 300
REVISED = "A step failed ({reason}). Revised plan for the rest of the task:\n{plan}\nGo on from this plan."


@dataclass(frozen=True)
class Planning:
    """Plan-then-execute options (see the module doc).

    ``max_plan_steps``: the most steps a plan may have; ``max_attempts``: how many replies are asked
    for before an invalid plan stops the run; ``max_replans``: re-plans per run; ``model``: plan with
    another model or route (default: the agent's); ``instructions``: the planner's system message
    (``{tools}`` and ``{max_steps}`` are filled in).
    """

    max_plan_steps: int = 8
    max_attempts: int = 3
    max_replans: int = 2
    model: str | None = None
    instructions: str = PLANNER

    def __post_init__(self) -> None:
        if self.max_plan_steps < 1 or self.max_attempts < 1 or self.max_replans < 0:
            raise ValueError("max_plan_steps and max_attempts must be at least 1, max_replans at least 0")

    async def make(self, agent: Agent, run: _Run, ctx: otel_context.Context) -> AsyncGenerator[AgentEvent, None]:
        """The first plan, put into the conversation after the task (or the run stopped)."""
        asked = [m for m in run.messages if m.role != "system"]
        async for event in self._ask(agent, run, ctx, asked, revision=0, reason=""):
            yield event
        if run.stopped is None:
            run.messages.append(Message("user", FOLLOW.format(plan=render_plan(run.patterns.plan))))

    async def replan(
        self, agent: Agent, run: _Run, ctx: otel_context.Context, failed: Sequence[ToolResult]
    ) -> AsyncGenerator[AgentEvent, None]:
        """A new plan after failed calls (``max_replans`` per run), added to the conversation."""
        if run.patterns.replans >= self.max_replans:
            return
        run.patterns.replans += 1
        reason = "; ".join(f"{r.name}: {r.error}" for r in failed)
        task = Message("user", run.task)
        done = transcript([m for m in run.messages if m.role in ("assistant", "tool")], max_chars=500)
        asked = [
            task,
            Message("user", REPLAN.format(plan=render_plan(run.patterns.plan), done=done or "(nothing)", reason=reason)),
        ]
        async for event in self._ask(agent, run, ctx, asked, revision=run.patterns.replans, reason=reason):
            yield event
        if run.stopped is None:
            run.messages.append(Message("user", REVISED.format(reason=reason, plan=render_plan(run.patterns.plan))))

    async def _ask(
        self, agent: Agent, run: _Run, ctx: otel_context.Context, asked: list[Message], *, revision: int, reason: str
    ) -> AsyncGenerator[AgentEvent, None]:
        tools = [t.name for t in agent.toolset]
        schema = plan_schema(tools, self.max_plan_steps)
        listed = "\n".join(f"- {t.name}: {t.description or '(no description)'}" for t in agent.toolset) or "(none)"
        system = Message("system", self.instructions.replace("{tools}", listed).replace("{max_steps}", str(self.max_plan_steps)))
        messages = [system, *asked]
        problem = ""
        for _ in range(self.max_attempts):
            reply = await side_call(agent, run, ctx, messages, "plan", schema=schema, model=self.model)
            if isinstance(reply, RunStopped):
                yield reply
                return
            steps: tuple[dict[str, Any], ...] = ()
            problem = reply.error or ""
            if reply.text is not None:
                try:
                    steps, problem = parse_plan(reply.text, schema), ""
                except ValueError as exc:
                    problem = str(exc)
            yield PlanMade(run.id, run.step, steps=steps, revision=revision, reason=reason,
                           error=problem or None, **reply.figures)  # fmt: skip
            if not problem:
                run.patterns.plan = steps
                return
            messages = [
                *messages,
                Message("assistant", reply.text or ""),
                Message("user", f"That plan is not valid ({problem}). Reply with only the JSON plan."),
            ]
        yield agent._stop(run, "invalid_plan", f"{self.max_attempts} plans in a row failed validation: {problem}")


def plan_schema(tools: Sequence[str], max_steps: int) -> dict[str, Any]:
    """The JSON Schema of a plan: 1 to ``max_steps`` steps, each naming one of ``tools`` or null."""
    return {
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_steps,
                "items": {
                    "type": "object",
                    "properties": {
                        "description": {"type": "string", "minLength": 1, "maxLength": MAX_DESCRIPTION_CHARS},
                        "tool": {"enum": [*tools, None]},
                    },
                    "required": ["description", "tool"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["steps"],
        "additionalProperties": False,
    }


def parse_plan(text: str, schema: dict[str, Any]) -> tuple[dict[str, Any], ...]:
    """The plan's steps from a reply; ``ValueError`` saying what is wrong when it does not validate."""
    value = read_json(text)
    problem = schema_problems(value, schema)
    if problem is not None:
        raise ValueError(problem)
    steps = tuple({"description": str(s["description"]).strip(), "tool": s["tool"]} for s in value["steps"])
    if any(not s["description"] for s in steps):
        raise ValueError("a step has an empty description")
    return steps


def render_plan(steps: Sequence[dict[str, Any]]) -> str:
    """The plan as numbered lines (``2. Add the numbers (tool: add)``)."""
    return "\n".join(
        f"{i}. {s['description']}" + (f" (tool: {s['tool']})" if s.get("tool") else "") for i, s in enumerate(steps, 1)
    )
