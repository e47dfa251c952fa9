"""A mock OpenAI-compatible model server with a known time to first token and inter-token delay.

It is the ground truth that ``aiestack bench load`` is checked against: a streamed chat completion
asking for N tokens (``max_tokens``, or ``--tokens`` when set) gets its first output chunk exactly
``ttft`` seconds after the request arrived and chunk *i* at ``ttft + i·itl``, each chunk one token,
then a usage chunk and ``[DONE]``. Chunks are scheduled at absolute times on the event loop (a late
timer does not delay the chunks after it), the server is a bare asyncio protocol (uvloop when
installed), so its own cost is far below the delays it simulates. A request that does not stream
gets its whole answer at ``ttft + (N−1)·itl``.

``GET /mock/ledger`` returns what the server actually did for each completion request so far (when it
arrived, when its first and its last byte were written, and for a stream when each of its chunks was
written, as ``time.perf_counter`` seconds, the system's monotonic clock) and ``?reset=1`` clears it: on a loaded machine the achieved times and
rates differ from the configured ideal, and the ledger is the truth a client's figures are checked
against.

    python -m aiestack.testing.mock_llm --port 9200 --ttft-ms 200 --itl-ms 20
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import signal
import time
from dataclasses import dataclass, field

import orjson

HOST = "127.0.0.1"


@dataclass(slots=True)
class Ledger:
    """Per completion request, ``perf_counter`` seconds: (arrived, last byte written) and (arrived, first byte written);
    per streamed request, [arrived, each chunk written...] (the token chunks, the last one with the end of the stream)."""

    spans: list[tuple[float, float]] = field(default_factory=list)
    firsts: list[tuple[float, float]] = field(default_factory=list)  # (arrived, first byte written)
    streams: list[list[float]] = field(default_factory=list)

    def clear(self) -> None:
        self.spans.clear()
        self.firsts.clear()
        self.streams.clear()


@dataclass(frozen=True, slots=True)
class Timing:
    ttft_s: float
    itl_s: float
    tokens: int | None = None  # fixed output length; None: max_tokens of each request

    def e2e_s(self, tokens: int) -> float:
        return self.ttft_s + (tokens - 1) * self.itl_s


def _chunk(payload: dict[str, object]) -> bytes:
    data = b"data: " + orjson.dumps(payload) + b"\n\n"
    return b"%x\r\n" % len(data) + data + b"\r\n"


def _token_chunk(i: int) -> bytes:
    return _chunk({
        "id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": "mock",
        "choices": [{"index": 0, "delta": {"content": f" t{i}"}, "finish_reason": None}],
    })


class _Protocol(asyncio.Protocol):
    def __init__(self, timing: Timing, ledger: Ledger) -> None:
        self._timing = timing
        self._ledger = ledger
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = bytes(self._buffer[:end]).lower()
            length = 0
            if (at := head.find(b"content-length:")) >= 0:
                stop = head.find(b"\r\n", at)
                length = int(head[at + 15 : stop if stop > 0 else None])
            total = end + 4 + length
            if len(self._buffer) < total:
                return
            body = bytes(self._buffer[end + 4 : total])
            del self._buffer[:total]
            self._answer(head, body)

    def _write(self, data: bytes, writes: list[float] | None = None) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
        if writes is not None:
            writes.append(time.perf_counter())

    def _write_first(self, data: bytes, arrived: float, writes: list[float] | None = None) -> None:
        self._write(data, writes)
        self._ledger.firsts.append((arrived, time.perf_counter()))

    def _write_last(self, data: bytes, arrived: float, writes: list[float] | None = None, *, first: bool = False) -> None:
        self._write(data, writes)
        now = time.perf_counter()
        self._ledger.spans.append((arrived, now))
        if first:
            self._ledger.firsts.append((arrived, now))

    def _json(self, payload: bytes) -> None:
        self._write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                    % (len(payload), payload))

    def _answer(self, head: bytes, body: bytes) -> None:
        arrived, stamp = self._loop.time(), time.perf_counter()
        if head.startswith(b"get /mock/ledger"):
            ledger = self._ledger
            self._json(orjson.dumps({"spans": ledger.spans, "firsts": ledger.firsts, "streams": ledger.streams}))
            if head.startswith(b"get /mock/ledger?reset=1"):
                ledger.clear()
            return
        if not head.startswith(b"post"):
            self._json(orjson.dumps({"object": "list", "data": [{"id": "mock", "object": "model"}]}))
            return
        request = orjson.loads(body or b"{}")
        n = self._timing.tokens or int(request.get("max_tokens") or 16)
        usage = {"prompt_tokens": max(1, len(body) // 4), "completion_tokens": n,
                 "total_tokens": max(1, len(body) // 4) + n}
        first = arrived + self._timing.ttft_s
        if not request.get("stream"):
            answer = orjson.dumps({
                "id": "chatcmpl-mock", "object": "chat.completion", "model": "mock",
                "choices": [{"index": 0, "message": {"role": "assistant",
                                                     "content": "".join(f" t{i}" for i in range(n))},
                             "finish_reason": "length"}],
                "usage": usage,
            })
            whole = (b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(answer), answer))
            self._loop.call_at(first + (n - 1) * self._timing.itl_s,
                               functools.partial(self._write_last, whole, stamp, first=True))
            return
        head_out = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        writes = [stamp]
        self._ledger.streams.append(writes)
        for i in range(n):
            piece = _token_chunk(i)
            if i == 0:
                piece = head_out + piece
            if i == n - 1:
                piece += _chunk({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": "mock",
                                 "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
                if (request.get("stream_options") or {}).get("include_usage"):
                    piece += _chunk({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": "mock",
                                     "choices": [], "usage": usage})
                piece += _chunk_raw(b"data: [DONE]\n\n") + b"0\r\n\r\n"
            if i == n - 1:
                self._loop.call_at(first + i * self._timing.itl_s,
                                   functools.partial(self._write_last, piece, stamp, writes, first=i == 0))
            elif i == 0:
                self._loop.call_at(first, self._write_first, piece, stamp, writes)
            else:
                self._loop.call_at(first + i * self._timing.itl_s, self._write, piece, writes)


def _chunk_raw(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def serve(port: int, timing: Timing) -> None:
    """Serve until SIGTERM or SIGINT."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    ledger = Ledger()

    async def start() -> asyncio.Server:
        return await loop.create_server(lambda: _Protocol(timing, ledger), HOST, port, backlog=2048)

    server = loop.run_until_complete(start())
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, loop.stop)
    try:
        loop.run_forever()
    finally:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ttft-ms", type=float, default=200.0)
    parser.add_argument("--itl-ms", type=float, default=20.0)
    parser.add_argument("--tokens", type=int, default=None, help="output length (default: each request's max_tokens)")
    args = parser.parse_args()
    serve(args.port, Timing(args.ttft_ms / 1000, args.itl_ms / 1000, args.tokens))


if __name__ == "__main__":
    main()
