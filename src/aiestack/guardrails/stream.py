"""Rewriting a streamed answer on the fly: hold back what may still change, emit the rest.

A :data:`Scan` looks at the text not yet emitted (``pending``) and returns the text to emit now and
how many characters of ``pending`` that consumes; the rest is held back until more arrives (a
placeholder split across chunks, a phone number half-streamed). ``final`` is true once the model has
finished: everything must be consumed. A scan may raise (a guard blocks): the stream then ends with
that error, never with a clean finish. When the upstream breaks, the held-back text is scanned as
final and passed on before the error (the reader sees what was produced, as without guards). The delta that carries ``finish_reason`` is only passed on
after ``on_end`` (the buffered checks) has run without raising.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

from aiestack.errors import GuardrailBlocked
from aiestack.types import Completion, Delta

Scan = Callable[[str, bool], tuple[str, int]]
OnEnd = Callable[[str], Awaitable[None]]


def rewrite(completion: Completion, scan: Scan, on_end: OnEnd | None = None) -> Completion:
    """``completion`` with its stream passed through ``scan`` (and ``on_end(full_text)`` before the finish)."""
    if completion.stream is None:
        raise ValueError("rewrite() needs a streaming completion")
    source = completion.stream

    async def wrapped() -> AsyncIterator[Delta]:
        pending = ""
        emitted: list[str] = []
        try:
            try:
                async for delta in source:
                    if delta.finish_reason is not None:
                        text, _ = scan(pending + delta.text, True)
                        pending = ""
                        emitted.append(text)
                        if on_end is not None:
                            await on_end("".join(emitted))
                        yield dataclasses.replace(delta, text=text)
                        continue
                    pending += delta.text
                    text, used = scan(pending, False) if pending else ("", 0)
                    pending = pending[used:]
                    if text or delta.tool_calls or delta.usage is not None or delta.logprobs:
                        emitted.append(text)
                        yield dataclasses.replace(delta, text=text)
            except GuardrailBlocked:
                raise  # a check failed: nothing more goes out
            except Exception:
                # The upstream broke: pass on what was held back (scanned as final), then the error.
                if pending and (rest := _flush(scan, pending)):
                    yield Delta(text=rest)
                raise
            if pending and (rest := _flush(scan, pending)):  # ended without a finish: the reader raises
                yield Delta(text=rest)
        finally:
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    return dataclasses.replace(completion, stream=wrapped())


#: The word being written (no whitespace after it yet): it may still become an email, a key, a URL.
_PARTIAL_WORD = re.compile(r"\S*\Z")
#: A finished group that a value split by spaces may continue: "+1 ", "(415) ", "4111 ", "DE89 ", "John ".
_GROUP = re.compile(r"[A-Z0-9+(][\w+()\-./']*[ \t]\Z")


def unsettled(pending: str, *, limit: int, watch: Iterable[str] = ()) -> int:
    """How many trailing characters of ``pending`` may still change what a check finds (at most ``limit``).

    The rest of the text is safe to emit now. Held back: the word being written, the groups before
    it that a spaced value could continue (digits, capitalised words: phone and card numbers, IBANs,
    names), and the longest tail that begins one of the ``watch`` strings (a canary, banned terms).
    Ordinary prose streams a word behind the model instead of a fixed window behind.
    """
    match = _PARTIAL_WORD.search(pending)
    cut = match.start() if match else len(pending)
    while len(pending) - cut < limit and (group := _GROUP.search(pending, 0, cut)) is not None:
        cut = group.start()
    held = len(pending) - cut
    lowered = pending.lower()
    for text in watch:
        text = text.lower()
        for n in range(min(len(text), len(lowered), limit), held, -1):
            if text.startswith(lowered[-n:]):
                held = n
                break
    return min(held, limit)


#: The end of a sentence or line: what follows starts a new one.
_BOUNDARY = re.compile(r"[.!?]+[\"')\]]*\s+|\n")


def sentence_start(pending: str, cut: int, *, limit: int = 300) -> int:
    """Where the sentence that is still being written at ``cut`` starts (``cut`` itself when ``cut``
    ends a sentence), at most ``limit`` characters back: a check that judges whole sentences (toxicity)
    holds that sentence back until it is finished."""
    start = max(0, cut - limit)
    for m in _BOUNDARY.finditer(pending, start, cut):
        start = m.end()
    return start


def _flush(scan: Scan, pending: str) -> str:
    try:
        return scan(pending, True)[0]
    except GuardrailBlocked:
        return ""
