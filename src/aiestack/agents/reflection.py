"""Reflection (book ch. 6): a critique of each candidate answer that can send the agent back.

``Agent(..., reflection=Reflection())``: when the model answers, a critic (the agent's model, or
``model``) is shown the task, what the run did and the candidate answer, and replies with a JSON
verdict ``{"accept": true|false, "feedback": "..."}`` (its schema goes as ``response_format``: a
grammar for the embedded model). Rejected, the answer and the feedback go into the conversation
and the loop goes on: the model may call tools again and answer anew. At most ``max_rounds``
critiques are made in a run; the answer after the last one stands. A critic reply that cannot be
read is reported (:class:`~aiestack.agents.events.Reflected` with ``error``) and the answer stands:
a broken critic never keeps a run going.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context

from aiestack.agents.events import AgentEvent, Reflected, RunStopped
from aiestack.agents.patterns import read_json, schema_problems, side_call, transcript
from aiestack.types import Message

if TYPE_CHECKING:
    from aiestack.agents.loop import Agent, _Run

CRITIC = (
    "You review an assistant's answer to a task before it is given. Check that it answers the whole "
    "task, agrees with the tool results it saw, and invents nothing. Reply with only a JSON object: "
    '{"accept": true, "feedback": ""} when the answer is right and complete, else '
    '{"accept": false, "feedback": "<what is wrong and what to do about it>"}.'
)
REVIEW = "Task:\n{task}\n\nWhat the assistant did:\n{work}\n\nIts answer:\n{answer}"
SENT_BACK = "A reviewer sent your answer back: {feedback}\nImprove the answer; use the tools if you need to."

#: The critic's verdict.
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"accept": {"type": "boolean"}, "feedback": {"type": "string", "maxLength": 1000}},
    "required": ["accept", "feedback"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Reflection:
    """Reflection options (see the module doc): ``max_rounds`` critiques per run, the critic's
    ``model`` (default: the agent's) and its ``instructions``."""

    max_rounds: int = 2
    model: str | None = None
    instructions: str = CRITIC

    def __post_init__(self) -> None:
        if self.max_rounds < 1:
            raise ValueError(f"max_rounds must be at least 1, got {self.max_rounds}")

    async def critique(
        self, agent: Agent, run: _Run, ctx: otel_context.Context, answer: str
    ) -> AsyncGenerator[AgentEvent, None]:
        """Critique ``answer``; a rejection appends the feedback and sets ``run.patterns.sent_back``."""
        state = run.patterns
        if state.reflections >= self.max_rounds or agent._limit(run) is not None:
            return  # the answer stands: no rounds (or no steps, tokens, budget or time) left
        state.reflections += 1
        work = transcript([m for m in run.messages[:-1] if m.role in ("assistant", "tool")], max_chars=1000)
        asked = [
            Message("system", self.instructions),
            Message("user", REVIEW.format(task=run.task, work=work or "(no tool calls)", answer=answer)),
        ]
        reply = await side_call(agent, run, ctx, asked, "reflection", schema=VERDICT_SCHEMA, model=self.model)
        if isinstance(reply, RunStopped):
            yield reply
            return
        accepted, feedback, problem = True, "", reply.error
        if reply.text is not None:
            try:
                verdict = read_json(reply.text)
                problem = schema_problems(verdict, VERDICT_SCHEMA)
                if problem is None:
                    accepted, feedback = bool(verdict["accept"]), str(verdict["feedback"]).strip()
            except ValueError as exc:
                problem = str(exc)
        if problem is not None:
            accepted, feedback = True, ""  # an unreadable critique never sends an answer back
        yield Reflected(run.id, run.step, round=state.reflections, accepted=accepted, feedback=feedback,
                        error=problem, **reply.figures)  # fmt: skip
        if not accepted:
            state.sent_back = True
            why = feedback or "the answer is not right yet"
            run.messages.append(Message("user", SENT_BACK.format(feedback=why)))
