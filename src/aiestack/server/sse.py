"""Server-sent events for streamed answers, and the rule that a broken stream is an error.

A stream ends in exactly one of two ways on the wire: ``data: [DONE]`` after the last chunk, or an
error event ``data: {"error": {...}}`` with no ``[DONE]`` after it. The OpenAI SDKs raise
``APIError`` on the latter while the caller iterates, so a client never mistakes half an answer
for a whole one. Errors before the first delta never get here: the pipeline raises them before
the response starts, and they go out with their proper HTTP status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from aiestack.errors import AiestackError
from aiestack.server.responses import dumps, error_body
from aiestack.types import Delta

_log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}

#: A delta as the JSON of its event: a dict to serialise, bytes already serialised, or None for nothing.
Render = Callable[[Delta], dict[str, Any] | bytes | None]


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

    ``render`` returns ``None`` for a delta that has nothing to send (e.g. usage only), or the
    event's JSON as a dict or as bytes already serialised. Any failure
    of the stream becomes an error event and the body ends without ``[DONE]``. A client that goes
    away cancels this generator; the cancellation propagates so the pipeline records it.
    """
    try:
        if first is not None:
            yield event(first)
        async for delta in stream:
            chunk = render(delta)
            if chunk is not None:
                yield b"data: " + chunk + b"\n\n" if isinstance(chunk, bytes) else event(chunk)
        if last is not None and (tail := last()) is not None:
            yield event(tail)
    except Exception as exc:
        yield error_event(exc, exchange_id)
        return
    yield DONE


#: Bytes of events the body may run ahead of a client that reads slowly before it waits.
MAX_BUFFERED_BYTES = 64 * 1024


class _Outbox:
    """Events produced and not yet sent, and the two waits around them (consumer: data; producer: room)."""

    __slots__ = ("done", "parts", "room", "size", "waiter")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.done = False
        self.waiter: asyncio.Future[None] | None = None  # the sender, waiting for events
        self.room: asyncio.Future[None] | None = None  # the producer, waiting for the sender

    def put(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)
        self.wake()

    def take(self) -> bytes:
        data = self.parts[0] if len(self.parts) == 1 else b"".join(self.parts)
        self.parts.clear()
        self.size = 0
        if self.room is not None and not self.room.done():
            self.room.set_result(None)
        return data

    def wake(self, *_: object) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class EventStreamResponse(StreamingResponse):
    """A streamed response that sends, as one write, every event that is ready at the same moment.

    Starlette's :class:`StreamingResponse` sends each event as its own ASGI message, so each one
    becomes a write to the socket, and a burst of deltas that arrived from the upstream in one
    read (common: a fast model, a cached answer, a proxy that buffers) costs one system call and
    one wake-up of the client per event. Here the body is read by a task of its own that puts its
    events in an outbox, and the response sends whatever the outbox holds whenever the producer
    pauses (it awaits the upstream): no event waits for a later one, and a burst leaves in one
    piece, the last one together with the end of the body. A client that reads slowly holds the
    producer once :data:`MAX_BUFFERED_BYTES` are waiting.

    A client that disconnects stops the stream, as with Starlette's response: the body is
    cancelled and closed, so the stages that watch it (tracing, implicit feedback) see the stop.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        loop = asyncio.get_running_loop()
        outbox = _Outbox()
        producer = loop.create_task(self._produce(outbox))
        producer.add_done_callback(outbox.wake)
        listener = loop.create_task(_disconnected(receive))
        listener.add_done_callback(outbox.wake)
        try:
            while True:
                if not outbox.parts and not producer.done() and not listener.done():
                    outbox.waiter = loop.create_future()
                    await outbox.waiter
                if listener.done():  # the client went away: stop reading the body
                    break
                if producer.done():
                    producer.result()  # a failure of the body itself (not of the stream: see events())
                    await send({"type": "http.response.body", "body": outbox.take(), "more_body": False})
                    break
                if outbox.parts:
                    await send({"type": "http.response.body", "body": outbox.take(), "more_body": True})
        except OSError:
            raise ClientDisconnect() from None
        finally:
            listener.cancel()
            if not producer.done():
                producer.cancel()
                await asyncio.wait((producer,))
                if not producer.cancelled() and producer.exception() is not None:
                    _log.error("closing an abandoned stream failed", exc_info=producer.exception())
        if self.background is not None:
            await self.background()

    async def _produce(self, outbox: _Outbox) -> None:
        body = self.body_iterator
        finished = False
        try:
            async for chunk in body:
                if not isinstance(chunk, bytes):
                    chunk = chunk.encode(self.charset) if isinstance(chunk, str) else bytes(chunk)
                outbox.put(chunk)
                if outbox.size > MAX_BUFFERED_BYTES:
                    outbox.room = asyncio.get_running_loop().create_future()
                    await outbox.room
            finished = True
        finally:
            outbox.done = True
            if not finished:  # stopped early: close the body now, so its watchers see the stop
                aclose = getattr(body, "aclose", None)
                if aclose is not None:
                    await aclose()


async def _disconnected(receive: Receive) -> None:
    """Return when the client has gone away (``http.disconnect``)."""
    while (await receive())["type"] != "http.disconnect":
        pass
