"""A scripted model for tests: ``FakeModel().enqueue(["Hello", " world"])``."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field

from aiestack.errors import AiestackError, StreamBroken
from aiestack.models.base import Health, TimingMeter
from aiestack.types import (
    ChatRequest,
    Delta,
    FinishReason,
    TokenLogprob,
    ToolCallDelta,
    Usage,
    last_user_text,
)


@dataclass
class Script:
    """One scripted reply: text pieces to stream, or an error to raise (before or mid-stream)."""

    pieces: Sequence[str] = ()
    finish_reason: FinishReason = "stop"
    error: AiestackError | None = None
    error_after: int | None = None  # raise ``error`` after this many pieces (mid-stream)
    break_after: int | None = None  # end the stream after this many pieces with no finish
    tool_calls: Sequence[tuple[str, str, str]] = ()  # (id, name, arguments)
    delay_s: float = 0.0  # before each piece
    logprobs: Sequence[float] = ()  # one token logprob per piece (sent only when the request asks)


#: Requests a fake model remembers (the newest).
KEEP_REQUESTS = 1000


@dataclass
class FakeModel:
    """Replies with scripted answers in order; when the queue is empty, echoes the last user message."""

    provider: str = "fake"
    default_delay_s: float = 0.0
    requests: list[ChatRequest] = field(default_factory=list)
    _queue: deque[Script] = field(default_factory=deque)

    def enqueue(self, replies: Iterable[str | Sequence[str] | Script]) -> FakeModel:
        for reply in replies:
            if isinstance(reply, Script):
                self._queue.append(reply)
            elif isinstance(reply, str):
                self._queue.append(Script(pieces=_split(reply)))
            else:
                self._queue.append(Script(pieces=list(reply)))
        return self

    def _next(self, request: ChatRequest) -> Script:
        if self._queue:
            return self._queue.popleft()
        return Script(pieces=_split(last_user_text(request.messages)), delay_s=self.default_delay_s)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        self.requests.append(request)
        if len(self.requests) > KEEP_REQUESTS:  # a server on the fake model must not grow without bound
            del self.requests[0]
        script = self._next(request)
        meter = TimingMeter()
        meter.began()
        if script.error is not None and script.error_after is None:
            raise script.error
        pieces = list(script.pieces)
        finish: FinishReason = script.finish_reason
        if request.params.max_tokens is not None and len(pieces) > request.params.max_tokens:
            pieces, finish = pieces[: request.params.max_tokens], "length"
        for i, piece in enumerate(pieces):
            if script.error is not None and script.error_after == i:
                raise script.error
            if script.break_after == i:
                raise StreamBroken("scripted break", provider=self.provider)
            delay = script.delay_s or self.default_delay_s
            if delay:
                await asyncio.sleep(delay)
            meter.token()
            logprob = (
                (TokenLogprob(token=piece, logprob=script.logprobs[i]),)
                if request.params.logprobs and i < len(script.logprobs)
                else ()
            )
            yield Delta(text=piece, logprobs=logprob)
        if script.tool_calls:
            yield Delta(
                tool_calls=tuple(
                    ToolCallDelta(index=i, id=cid, name=name, arguments=args)
                    for i, (cid, name, args) in enumerate(script.tool_calls)
                )
            )
            finish = "tool_calls"
        if script.break_after is not None and script.break_after >= len(pieces):
            return  # a stream that just stops: the caller must see it as broken
        prompt_tokens = sum(len(m.text.split()) for m in request.messages)
        yield Delta(
            finish_reason=finish,
            usage=Usage(input_tokens=prompt_tokens, output_tokens=len(pieces)),
            timing=meter.timing(len(pieces)),
        )

    async def check(self, model: str) -> Health:
        return Health(ok=True, detail="scripted")

    async def aclose(self) -> None:
        return None


def _split(text: str) -> list[str]:
    """Split into word-ish pieces that concatenate back to ``text``."""
    pieces: list[str] = []
    for i, word in enumerate(text.split(" ")):
        pieces.append(word if i == 0 else " " + word)
    return [p for p in pieces if p]
