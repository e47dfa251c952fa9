"""Helpers for streamed completions: accumulate deltas, collect a stream, tap a stream.

A stage that must see the whole answer (tracing, cache write, output checks) wraps the stream
with :func:`tap`; the deltas pass through unchanged and the callback receives the final
:class:`Completion` once the stream has ended. A stream that ends without a ``finish_reason``
broke in the middle of an answer: that is a :class:`StreamBroken` error, never a clean end.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable

from aiestack.errors import AiestackError, StreamBroken
from aiestack.types import Completion, Delta, Message, TokenLogprob, ToolCall, ToolCallDelta, Usage


class Accumulator:
    """Folds deltas into a final completion, starting from the completion's header."""

    def __init__(self, header: Completion) -> None:
        self._header = header
        self._text: list[str] = []
        self._logprobs: list[TokenLogprob] = []
        self._tools: dict[int, list[str]] = {}  # index -> [id, name, arguments]
        self.finish_reason = header.finish_reason
        self.usage = header.usage
        self.timing = header.timing
        self.cost_usd = header.cost_usd
        self.deltas = 0

    def add(self, delta: Delta) -> None:
        self.deltas += 1
        if delta.text:
            self._text.append(delta.text)
        if delta.logprobs:
            self._logprobs.extend(delta.logprobs)
        for tc in delta.tool_calls:
            slot = self._tools.setdefault(tc.index, ["", "", ""])
            slot[0] = tc.id or slot[0]
            slot[1] = tc.name or slot[1]
            slot[2] += tc.arguments
        if delta.finish_reason is not None:
            self.finish_reason = delta.finish_reason
        if delta.usage is not None:
            self.usage = delta.usage
        if delta.timing is not None:
            self.timing = delta.timing
        if delta.cost_usd is not None:
            self.cost_usd = delta.cost_usd

    @property
    def text(self) -> str:
        return "".join(self._text)

    def completion(self) -> Completion:
        tool_calls = tuple(ToolCall(id=i, name=n, arguments=a) for i, n, a in (self._tools[k] for k in sorted(self._tools)))
        message = Message(role="assistant", content=self.text, tool_calls=tool_calls)
        return dataclasses.replace(
            self._header,
            message=message,
            finish_reason=self.finish_reason,
            usage=self.usage or Usage(),
            timing=self.timing,
            cost_usd=self.cost_usd,
            logprobs=tuple(self._logprobs),
            stream=None,
        )


async def collect(completion: Completion) -> Completion:
    """Drain a streaming completion into a complete one (a non-streaming completion is returned as is)."""
    if completion.stream is None:
        return completion
    acc = Accumulator(completion)
    async for delta in completion.stream:
        acc.add(delta)
    if acc.finish_reason is None:
        raise StreamBroken("the stream ended before the answer finished", provider=completion.provider)
    return acc.completion()


OnDone = Callable[[Completion | None, BaseException | None], Awaitable[None]]


def tap(completion: Completion, on_done: OnDone) -> Completion:
    """Return ``completion`` with its stream wrapped so that ``on_done`` sees how it ended.

    ``on_done(final, None)`` runs after a clean end; ``on_done(partial, error)`` runs when the
    stream raised or broke (``partial`` holds what arrived). If the consumer stops iterating
    early (a client disconnects), ``on_done`` runs with a ``GeneratorExit``-free ``StreamBroken``
    describing the early stop. Deltas pass through unchanged.
    """
    if completion.stream is None:
        raise ValueError("tap() needs a streaming completion")
    source = completion.stream

    async def wrapped() -> AsyncIterator[Delta]:
        acc = Accumulator(completion)
        reported = False
        try:
            async for delta in source:
                acc.add(delta)
                yield delta
            if acc.finish_reason is None:
                raise StreamBroken("the stream ended before the answer finished", provider=completion.provider)
            reported = True
            await on_done(acc.completion(), None)
        except (AiestackError, Exception) as exc:
            if not reported:
                reported = True
                await on_done(acc.completion(), exc)
            raise
        finally:
            if not reported:
                # The consumer closed the stream early (aclose / GeneratorExit).
                await on_done(
                    acc.completion(),
                    StreamBroken("the client stopped reading the stream", provider=completion.provider),
                )
                aclose = getattr(source, "aclose", None)
                if aclose is not None:
                    await aclose()

    return dataclasses.replace(completion, stream=wrapped())


def single(completion: Completion) -> Completion:
    """Turn a complete completion into a one-delta stream (cached or sampled answers served to streaming clients)."""

    async def one() -> AsyncIterator[Delta]:
        yield Delta(
            text=completion.text,
            tool_calls=tuple(
                ToolCallDelta(index=i, id=c.id, name=c.name, arguments=c.arguments)
                for i, c in enumerate(completion.message.tool_calls)
            ),
            logprobs=completion.logprobs,
            finish_reason=completion.finish_reason or "stop",
            usage=completion.usage,
            timing=completion.timing,
            cost_usd=completion.cost_usd,
        )

    return dataclasses.replace(completion, stream=one())
