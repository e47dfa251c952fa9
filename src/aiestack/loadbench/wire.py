"""HTTP/1.1 for the load bench's client, every received byte stamped with the time it arrived.

The benchmark times chunks, so the moment that matters is when their bytes reach the process, not
when a task gets round to reading them. At high concurrency the chunks of many streams arrive in one
turn of the event loop; a client that stamps a line when its task reads it (aiohttp's response
stream, which the bench used before) stamps them one after another, each behind the other streams'
parsing. Here a connection is an :class:`asyncio.Protocol` whose ``data_received`` does nothing but
keep the bytes with ``perf_counter()``; the HTTP parsing (h11) happens later in the request's own
task, one received batch at a time, so every event h11 returns carries the arrival time of the batch
that completed it.

A request is written whole (head and body), and its start is the moment the transport has handed
all of it to the kernel: the write buffer's high-water mark is 0, so the protocol hears when it has
drained (for a small body, at once). A :class:`Pool` keeps the idle connections to one origin alive
and a request takes one or opens a new one, so there is one connection per request in flight, each
reused when both sides ended their message cleanly and neither said ``Connection: close``.
``https`` URLs use the default SSL context. Only ``perf_counter`` stamps and bytes are kept per
batch; nothing here parses in a transport callback.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from typing import cast
from urllib.parse import urlsplit

import h11

from aiestack.errors import InvalidRequest

_Event = h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]
_DEFAULT_PORTS = {"http": 80, "https": 443}


class _Stamped(asyncio.Protocol):
    """One connection's transport callbacks: received bytes queued with their arrival time, write drain."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.batches: collections.deque[tuple[float, bytes]] = collections.deque()
        self.eof = False
        self.error: BaseException | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._arrived: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, without subclassing it
        self.transport.set_write_buffer_limits(high=0)  # pause_writing for any byte the kernel did not take

    def data_received(self, data: bytes) -> None:
        self.batches.append((time.perf_counter(), data))
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)

    def eof_received(self) -> bool:
        self.eof = True
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        for waiter in (self._arrived, self._drained):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drained(self) -> None:
        if self._drained is not None:
            await self._drained
        if self.error is not None:
            raise self.error

    async def batch(self) -> tuple[float, bytes]:
        """The next received bytes and when they arrived; ``b""`` once the peer has closed and all is read."""
        while not self.batches:
            if self.error is not None:
                raise self.error
            if self.eof:
                return time.perf_counter(), b""
            self._arrived = asyncio.get_running_loop().create_future()
            await self._arrived
        return self.batches.popleft()


class Connection:
    """One HTTP/1.1 connection: write a request, then read the response's events with their arrival times."""

    def __init__(self, protocol: _Stamped) -> None:
        self._protocol = protocol
        self._h11 = h11.Connection(h11.CLIENT)
        self._stamp = 0.0

    async def post(self, target: str, headers: list[tuple[str, str]], body: bytes) -> float:
        """Write a POST with ``body``; returns the ``perf_counter`` at which all of it was in the kernel's hands."""
        transport = self._protocol.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the connection closed before the request was written")
        head = h11.Request(method="POST", target=target,
                           headers=[*headers, ("content-length", str(len(body)))])
        data = (self._h11.send(head) or b"") + (self._h11.send(h11.Data(data=body)) or b"")
        transport.write(data + (self._h11.send(h11.EndOfMessage()) or b""))
        await self._protocol.drained()
        return time.perf_counter()

    async def next_event(self) -> tuple[float, h11.Event]:
        """The response's next event, with the arrival time of the bytes that completed it."""
        while True:
            state = self._h11.their_state
            try:
                event: _Event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                if not self._protocol.eof:
                    raise
                started = state is not h11.SEND_RESPONSE
                raise ConnectionResetError("the server closed the connection "
                                           + ("mid-response" if started else "before its response")) from exc
            if event is h11.NEED_DATA:
                self._stamp, data = await self._protocol.batch()
                self._h11.receive_data(data)
                continue
            if event is h11.PAUSED:
                raise h11.LocalProtocolError("read past the end of the response")
            assert isinstance(event, h11.Event)
            if isinstance(event, h11.ConnectionClosed):
                raise ConnectionResetError("the server closed the connection before its response")
            return self._stamp, event

    async def response(self) -> tuple[float, h11.Response]:
        """The response's head (informational 1xx responses skipped)."""
        while True:
            stamp, event = await self.next_event()
            if isinstance(event, h11.Response):
                return stamp, event

    async def body_start(self, limit: int) -> bytes:
        """Read the rest of the body; returns its first ``limit`` bytes."""
        kept = bytearray()
        while True:
            _, event = await self.next_event()
            if isinstance(event, h11.EndOfMessage):
                return bytes(kept)
            if isinstance(event, h11.Data) and len(kept) < limit:
                kept += event.data[: limit - len(kept)]

    @property
    def alive(self) -> bool:
        """Open, and nothing arrived that no request asked for."""
        return not self._protocol.eof and not self._protocol.batches and not self._h11.trailing_data[0]

    def recycle(self) -> bool:
        """Ready for the next request if both messages ended cleanly and neither side asked to close."""
        if self._h11.our_state is not h11.DONE or self._h11.their_state is not h11.DONE or not self.alive:
            return False
        self._h11.start_next_cycle()
        return True

    def close(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()

    @property
    def lost(self) -> asyncio.Future[None]:
        return self._protocol.lost


class Pool:
    """Keep-alive HTTP/1.1 connections to the origin of ``url``: one per request in flight, reused."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
            raise InvalidRequest(f"Cannot send to {url!r}: not an http:// or https:// URL.",
                                 hint="Give --url as the API's base, e.g. http://127.0.0.1:8000/v1.")
        self.host = parts.hostname
        self.port = parts.port or _DEFAULT_PORTS[parts.scheme]
        self.host_header = parts.netloc.rpartition("@")[2]
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._ssl = ssl.create_default_context() if parts.scheme == "https" else None
        self._idle: list[Connection] = []
        self._open: set[Connection] = set()

    async def connect(self) -> Connection:
        """An idle connection that is still open, else a new one."""
        while self._idle:
            connection = self._idle.pop()
            if connection.alive:
                return connection
            self._drop(connection)
        _, protocol = await asyncio.get_running_loop().create_connection(
            _Stamped, self.host, self.port, ssl=self._ssl, server_hostname=self.host if self._ssl else None,
        )
        connection = Connection(protocol)
        self._open.add(connection)
        return connection

    def release(self, connection: Connection) -> None:
        """Back to the idle set if it can carry another request, else closed."""
        if connection.recycle():
            self._idle.append(connection)
        else:
            self._drop(connection)

    def _drop(self, connection: Connection) -> None:
        connection.close()
        self._open.discard(connection)

    async def aclose(self) -> None:
        """Close every connection and wait (at most a second) until their transports are gone."""
        for connection in self._open:
            connection.close()
        if self._open:
            await asyncio.wait([c.lost for c in self._open], timeout=1.0)
        self._open.clear()
        self._idle.clear()

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()
