"""Query rewriting: turn the last user turn (and the conversation before it) into a search query.

Follow-up questions ("and what about its licence?") retrieve badly on their own; a rewriter makes
them self-contained before retrieval. A :class:`QueryRewriter` is any object with an async
``rewrite(query, history)``; :class:`LLMRewriter` asks a chat model. Its answer is cleaned (first
line, quotes and a ``Query:`` label dropped); an empty or overlong answer falls back to the
original query, so a confused model cannot make retrieval worse than not rewriting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from aiestack.models.base import ChatModel
from aiestack.types import ChatRequest, Message, Params

REWRITE_PROMPT = (
    "Rewrite the last question of the conversation as one self-contained search query. "
    "Resolve pronouns from the conversation. Reply with the query only.\n\n"
    "{conversation}\n\n"
    "Search query:"
)


@runtime_checkable
class QueryRewriter(Protocol):
    async def rewrite(self, query: str, history: Sequence[Message]) -> str: ...


def clean_rewrite(reply: str, original: str, *, max_chars: int = 500) -> str:
    """The query in a model's reply, or ``original`` when the reply holds none."""
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    if not lines:
        return original
    text = lines[0]
    for label in ("search query:", "query:", "rewritten query:"):
        if text.lower().startswith(label):
            text = text[len(label) :].strip()
    text = text.strip().strip("\"'`“”").strip()
    if not text or len(text) > max_chars:
        return original
    return text


class LLMRewriter:
    """Rewrites with a chat model (``upstream`` is the name its provider is asked for)."""

    def __init__(
        self, model: ChatModel, upstream: str, *, prompt: str = REWRITE_PROMPT, max_turns: int = 6
    ) -> None:
        if "{conversation}" not in prompt:
            raise ValueError("the rewrite prompt must contain {conversation}")
        self._model = model
        self._upstream = upstream
        self._prompt = prompt
        self._max_turns = max_turns

    async def rewrite(self, query: str, history: Sequence[Message]) -> str:
        turns = [m for m in history if m.role in ("user", "assistant") and m.text][-self._max_turns :]
        lines = [f"{'User' if m.role == 'user' else 'Assistant'}: {m.text}" for m in turns]
        lines.append(f"User: {query}")
        request = ChatRequest(
            model=self._upstream,
            messages=(Message(role="user", content=self._prompt.replace("{conversation}", "\n".join(lines))),),
            params=Params(temperature=0.0, max_tokens=64),
        )
        parts = [d.text async for d in self._model.stream(request)]
        return clean_rewrite("".join(parts), query)
