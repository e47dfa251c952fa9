"""A fake :class:`~aiestack.sidecalls.ModelCaller` for tests of wings that make side-calls."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from aiestack.types import ChatRequest, Completion, Message, Usage


class ScriptedCaller:
    """Answers each call with the next scripted text and records the requests; raises when the script runs out."""

    def __init__(self, replies: Iterable[str] = ()) -> None:
        self._replies = deque(replies)
        self.requests: list[ChatRequest] = []

    async def __call__(self, request: ChatRequest) -> Completion:
        self.requests.append(request)
        if not self._replies:
            raise LookupError("the ScriptedCaller has no reply left; give it more")
        text = self._replies.popleft()
        return Completion(
            message=Message(role="assistant", content=text),
            finish_reason="stop",
            usage=Usage(input_tokens=0, output_tokens=len(text.split())),
            model=request.model,
            provider="scripted",
        )
