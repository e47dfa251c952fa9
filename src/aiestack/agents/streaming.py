"""Streaming a step's model call: its deltas as they arrive, and which of them are the answer.

With deltas on (``Agent.stream``, ``Agent.run(..., deltas=True)``) each model call of the loop is a
streaming request through the pipeline. :func:`drain` reads its stream, yielding a
:class:`~aiestack.agents.events.ModelDelta` per delta and an
:class:`~aiestack.agents.events.AnswerDelta` for each piece known to be the final answer, and ends
with the exchange holding the whole completion (or with the error that broke the stream), so the
loop goes on exactly as with a whole reply.

Which text is the answer (:class:`AnswerText`):

- the text protocol (``{"tool": ...}`` or ``{"answer": "..."}`` replies): the answer string is
  decoded as it is written, escapes included, once the reply has begun as ``{"answer": "``;
- an agent without tools: every piece of text is the answer;
- native tool calls: a reply's text is the answer only if the reply ends without calling a tool,
  which is known at its end; the loop sends it then (:meth:`AnswerText.rest`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Literal

from aiestack.agents.events import AnswerDelta, ModelDelta
from aiestack.errors import StreamBroken
from aiestack.streams import Accumulator
from aiestack.types import Exchange

Mode = Literal["json", "text", "end"]
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
#: What a text-protocol answer reply begins with, whitespace aside.
_OPENING = ('{', '"answer"', ":", '"')


class AnswerText:
    """The answer's text in a reply streaming in (see the module doc for the three ``mode`` s).

    :meth:`feed` takes each piece of the reply's text and returns the answer text it completes
    (``""`` when none); ``sent`` is all it returned, over the run's replies (:meth:`begin` starts
    each). A reply that turns out not to be an answer returns nothing more.
    """

    def __init__(self, mode: Mode) -> None:
        self.mode = mode
        self.sent = ""
        self.begin()

    def begin(self) -> None:
        """A new reply streams in (``sent`` keeps what earlier replies sent)."""
        self._buf = ""
        self._at = 0  # json: where decoding goes on in _buf
        self._opened = False  # json: the reply began with {"answer": "
        self._over = False  # json: the string ended, or the reply is not an answer

    def feed(self, text: str) -> str:
        if self.mode == "text":
            self.sent += text
            return text
        if self.mode == "end" or self._over or not text:
            return ""
        self._buf += text
        if not self._opened and not self._open():
            return ""
        out = self._decode()
        self.sent += out
        return out

    def rest(self, answer: str) -> str:
        """What is still to send of ``answer`` once the reply is read (``""`` when the text sent is
        not its beginning: never more than the answer)."""
        if not answer.startswith(self.sent):
            return ""
        rest = answer[len(self.sent) :]
        self.sent = answer
        return rest

    def _open(self) -> bool:
        """Whether the buffer has begun with the answer's opening (then ``_at`` is past it)."""
        at = 0
        for token in _OPENING:
            while at < len(self._buf) and self._buf[at] in " \t\r\n":
                at += 1
            piece = self._buf[at : at + len(token)]
            if piece != token[: len(piece)]:
                self._over = True  # a tool call, or not the protocol: no answer text to stream
                return False
            if len(piece) < len(token):
                return False  # not all here yet
            at += len(token)
        self._opened, self._at = True, at
        return True

    def _decode(self) -> str:
        """Decode the JSON string from ``_at`` as far as the buffer allows (an escape cut in two waits)."""
        buf, at, out = self._buf, self._at, []
        while at < len(buf):
            char = buf[at]
            if char == '"':
                self._over = True
                break
            if char != "\\":
                out.append(char)
                at += 1
                continue
            if at + 1 >= len(buf):
                break
            code = buf[at + 1]
            if code != "u":
                out.append(_ESCAPES.get(code, code))
                at += 2
                continue
            if at + 6 > len(buf):
                break
            unit = int(buf[at + 2 : at + 6], 16)
            if 0xD800 <= unit < 0xDC00:  # a surrogate pair: wait for its second half
                if at + 12 > len(buf):
                    break
                if buf[at + 6 : at + 8] == "\\u":
                    low = int(buf[at + 8 : at + 12], 16)
                    out.append(chr(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)))
                    at += 12
                    continue
            out.append(chr(unit))
            at += 6
        self._at = at
        return "".join(out)


async def drain(
    ex: Exchange,
    answer: AnswerText,
    *,
    run_id: str,
    step: int,
    remaining: Callable[[], float | None],
) -> AsyncIterator[ModelDelta | AnswerDelta | Exchange]:
    """Yield the deltas of ``ex``'s streaming completion, then ``ex`` with the whole completion.

    Waits for each delta at most ``remaining()`` seconds (``TimeoutError``); a stream that fails
    raises its error, one that ends without a finish reason :class:`StreamBroken`. The stream is
    closed however this ends (so the pipeline's stages record a stop).
    """
    completion = ex.completion
    assert completion is not None and completion.stream is not None
    stream = completion.stream
    acc = Accumulator(completion)
    try:
        while True:
            try:
                async with asyncio.timeout(remaining()):
                    delta = await anext(stream)
            except StopAsyncIteration:
                break
            acc.add(delta)
            if delta.text or delta.tool_calls:
                yield ModelDelta(run_id, step, delta.text, delta.tool_calls)
                said = answer.feed(delta.text)
                if said:
                    yield AnswerDelta(run_id, step, said)
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    if acc.finish_reason is None:
        raise StreamBroken("the stream ended before the answer finished", provider=completion.provider)
    yield dataclasses.replace(ex, completion=acc.completion())
