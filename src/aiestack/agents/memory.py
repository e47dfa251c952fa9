"""Short-term memory (book ch. 6): a window of recent turns, and a summary of the older ones once the
conversation outgrows its token budget.

``Agent(..., memory=ShortTermMemory(max_context_tokens=4000))``: before each model call of the loop
the conversation is counted with the gateway's own token estimate (the one the rate limits use,
:func:`aiestack.gateway.limits.estimate_tokens`: characters / 4 plus a few tokens per message, the
tools' schemas included). Over ``max_context_tokens``, the messages between the head (what comes
before the model's first reply: instructions, task, recalled facts, the plan) and the last ``keep_last`` messages are replaced by one message holding their
summary, written by the model (or ``model``) in a call of its own — an exchange through the pipeline
like every step, reported as a :class:`~aiestack.agents.events.Summarised` event. An earlier summary
is among the messages summarised again, so nothing is dropped without being folded in.

Earlier turns of a conversation (``history``, an ``agent:NAME`` chat) are folded too, into the
same summary, which then follows the task. The window never splits a tool call from its results (the cut moves back to the assistant message
that made the calls), so the conversation stays valid for every provider. When there is nothing
between the head and the window to fold, nothing is done and the call goes as it is.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context

from aiestack.agents.events import AgentEvent, RunStopped, Summarised
from aiestack.agents.patterns import side_call, transcript
from aiestack.types import ChatRequest, Message

if TYPE_CHECKING:
    from aiestack.agents.loop import Agent, _Run

SUMMARISER = (
    "You keep the memory of an assistant working on a task. Summarise the conversation you are given "
    "in a few sentences: the facts found, the tool results that matter (with their numbers and names), "
    "what was decided and what is still open. Write only the summary."
)
#: How the summary appears in the conversation (a user message, so every provider accepts its place).
SUMMARY = "Summary of the earlier conversation:\n{summary}"


@dataclass(frozen=True)
class ShortTermMemory:
    """Window + summarisation options (see the module doc): the token budget of the conversation,
    how many recent messages stay word for word, and the summariser's ``model`` and ``instructions``."""

    max_context_tokens: int
    keep_last: int = 6
    model: str | None = None
    instructions: str = SUMMARISER

    def __post_init__(self) -> None:
        if self.max_context_tokens < 1 or self.keep_last < 1:
            raise ValueError("max_context_tokens and keep_last must be at least 1")

    def count(self, agent: Agent, messages: Sequence[Message]) -> int:
        """The conversation's tokens as the gateway estimates a request's input (no output counted)."""
        from aiestack.gateway.limits import estimate_tokens

        params = replace(agent._params(), max_tokens=None)
        return estimate_tokens(ChatRequest(agent.model, tuple(messages), params), default_output_tokens=0)

    def split(self, messages: Sequence[Message], task: str) -> tuple[range, range]:
        """The messages to fold: the earlier turns of a conversation before the task, and those after
        the head (the task and what follows it before the model's first reply: recalled facts, the
        plan) and before the window. The instructions, the task and its head are never folded."""
        prefix = SUMMARY.split("{", 1)[0]
        first = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
        task_at = max((i for i, m in enumerate(messages) if m.role == "user" and m.text == task), default=first)
        start = next(
            (i for i in range(task_at + 1, len(messages)) if messages[i].role == "assistant" or messages[i].text.startswith(prefix)),
            len(messages),
        )  # an earlier summary is folded again
        end = max(start, len(messages) - self.keep_last)
        while end > start and messages[end].role == "tool":  # keep a call with its results
            end -= 1
        return range(first, task_at), range(start, end)

    async def fit(self, agent: Agent, run: _Run, ctx: otel_context.Context) -> AsyncGenerator[AgentEvent, None]:
        """Summarise the older turns of ``run`` when its conversation is over the budget."""
        before = self.count(agent, run.messages)
        if before <= self.max_context_tokens:
            return
        earlier, later = self.split(run.messages, run.task)
        folded = [run.messages[i] for i in (*earlier, *later)]
        if not folded:
            return  # only the head and the window: nothing to fold
        asked = [
            Message("system", self.instructions),
            Message("user", f"Task: {run.task}\n\nConversation to summarise:\n{transcript(folded)}"),
        ]
        reply = await side_call(agent, run, ctx, asked, "summary", model=self.model)
        if isinstance(reply, RunStopped):
            yield reply
            return
        summary = (reply.text or "").strip()
        if not summary:
            yield Summarised(run.id, run.step, messages=0, tokens_before=before, tokens_after=before,
                             error="the summary was empty", **reply.figures)  # fmt: skip
            return
        kept = run.messages
        run.messages = [
            *kept[: earlier.start], *kept[earlier.stop : later.start],
            Message("user", SUMMARY.format(summary=summary)), *kept[later.stop :],
        ]  # fmt: skip
        after = self.count(agent, run.messages)
        yield Summarised(run.id, run.step, messages=len(folded), tokens_before=before, tokens_after=after,
                         summary=summary, **reply.figures)  # fmt: skip
