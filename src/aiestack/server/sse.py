"""Server-sent events for streamed answers, and the rule that a broken stream is an error.

A stream ends in exactly one of two ways on the wire: ``data: [DONE]`` after the last chunk, or an
error event ``data: {"error": {...}}`` with no ``[DONE]`` after it. The OpenAI SDKs raise
``APIError`` on the latter while the caller iterates, so a client never mistakes half an answer
for a whole one. Errors before the first delta never get here: the pipeline raises them before
the response starts, and they go out with their proper HTTP status.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiestack.errors import AiestackError
from aiestack.server.responses import dumps, error_body
from aiestack.types import Delta

_log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}

Render = Callable[[Delta], dict[str, Any] | None]


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + dumps(payload) + b"\n\n"


def error_event(exc: BaseException, exchange_id: str) -> bytes:
    """The error event for a stream that failed after it started."""
    if isinstance(exc, AiestackError):
        return event(exc.to_openai())
    _log.error("stream of exchange %s failed inside aiestack", exchange_id, exc_info=exc)
    return event(
        error_body(
            f"The stream failed inside aiestack ({type(exc).__name__}); exchange {exchange_id} has the details.",
            type_="server_error",
            code="internal_error",
        )
    )


async def events(
    stream: AsyncIterator[Delta],
    render: Render,
    *,
    exchange_id: str,
    first: dict[str, Any] | None = None,
    last: Callable[[], dict[str, Any] | None] | None = None,
) -> AsyncIterator[bytes]:
    """The SSE body: ``first``, one event per rendered delta, ``last()``, then ``[DONE]``.

    ``render`` returns ``None`` for a delta that has nothing to send (e.g. usage only). Any failure
    of the stream becomes an error event and the body ends without ``[DONE]``. A client that goes
    away cancels this generator; the cancellation propagates so the pipeline records it.
    """
    try:
        if first is not None:
            yield event(first)
        async for delta in stream:
            chunk = render(delta)
            if chunk is not None:
                yield event(chunk)
        if last is not None and (tail := last()) is not None:
            yield event(tail)
    except Exception as exc:
        yield error_event(exc, exchange_id)
        return
    yield DONE
