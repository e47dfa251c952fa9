"""HTTP/1.1 for the load bench's client, every received byte stamped with the time it arrived.

The benchmark times chunks, so the moment that matters is when their bytes reach the machine, not
when a task gets round to reading them. At high concurrency the chunks of many streams arrive in one
turn of the event loop; a client that stamps a line when its task reads it (aiohttp's response
stream, which the bench used before, as vLLM's ``benchmark_serving`` does) stamps them one after
another, each behind the other streams' parsing, and on a busy machine behind the time the process
was off the CPU.

So the time comes from the kernel: a plain ``http`` connection (on Linux) is a non-blocking socket
read with ``recvmsg`` with ``SO_TIMESTAMPNS`` set, and each batch carries the time the kernel
received its last segment, turned from the wall clock into ``perf_counter`` at the read. Over
``https`` (or elsewhere) a connection is an :class:`asyncio.Protocol` whose ``data_received`` only
keeps the bytes with ``perf_counter()``, so there the loop's lag stays in the stamp, but no task's
parsing does. Either way the HTTP parsing (h11) happens later in the request's own task, one
received batch at a time, so every event h11 returns carries the arrival time of the batch that
completed it. (Two chunks of one stream that sit unread together come back in one batch, with the
later one's time: the kernel keeps one time per read.)

A request is written whole (head and body), and its start is stamped just before the write that
hands the kernel all of it (for a small body, the first), so a response's stamp can never precede
it. A :class:`Pool` keeps the idle connections to one origin alive and a request takes one or opens
a new one, so there is one connection per request in flight, each reused when both sides ended
their message cleanly and neither said ``Connection: close``. ``https`` URLs use the default SSL
context.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import ssl
import struct
import sys
import time
from typing import cast
from urllib.parse import urlsplit

import h11

from aiestack.errors import InvalidRequest

_Event = h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SO_TIMESTAMPNS = 35  # Linux's SO_TIMESTAMPNS(_OLD): a struct timespec of the receive time with each recvmsg
_ANCILLARY_SIZE = socket.CMSG_SPACE(16)
_READ_SIZE = 256 * 1024


class _Received:
    """Received bytes queued with their arrival time (``perf_counter`` seconds), and the write side's drain."""

    def __init__(self) -> None:
        self.batches: collections.deque[tuple[float, bytes]] = collections.deque()
        self.eof = False
        self.error: BaseException | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._arrived: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)

    def _ended(self, exc: BaseException | None) -> None:
        """The peer closed (``exc`` None) or the connection failed."""
        self.eof = True
        self.error = self.error or exc
        for waiter in (self._arrived, self._drained):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _gone(self) -> None:
        self._ended(None)
        if not self.lost.done():
            self.lost.set_result(None)

    def _pause(self) -> None:
        if self._drained is None or self._drained.done():
            self._drained = asyncio.get_running_loop().create_future()

    def _resume(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    async def drained(self) -> bool:
        """Wait until every byte written is in the kernel's hands; True if that meant waiting."""
        waited = self._drained is not None and not self._drained.done()
        if self._drained is not None:
            await self._drained
        if self.error is not None:
            raise self.error
        return waited

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


class _KernelStamped(_Received):
    """A plain TCP socket read with ``recvmsg``: each batch carries the kernel's receive time of its last
    segment (``SO_TIMESTAMPNS``), so neither this loop's backlog nor the process being off the CPU
    when the bytes came delays the stamp. Linux only."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._out = bytearray()
        self._closed = False
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        self._loop.add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data, ancillary, _, _ = self._sock.recvmsg(_READ_SIZE, _ANCILLARY_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._stop_reading(exc)
            return
        wall, now = time.time_ns(), time.perf_counter()
        if not data:
            self._stop_reading(None)
            return
        stamp = now
        for level, kind, raw in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(raw) >= 16:
                sec, nsec = struct.unpack_from("qq", raw)
                ago_ns = wall - (sec * 1_000_000_000 + nsec)
                if 0 <= ago_ns < 60_000_000_000:  # else the wall clock was stepped: the read's own time
                    stamp = now - ago_ns / 1e9
        self.batches.append((stamp, data))
        self._wake()

    def _stop_reading(self, exc: BaseException | None) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._ended(exc)

    def write(self, data: bytes) -> None:
        if self._closed:
            return
        if not self._out:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._ended(exc)
                return
            if sent == len(data):
                return
            data = data[sent:]
            self._pause()
            self._loop.add_writer(self._sock.fileno(), self._writable)
        self._out += data

    def _writable(self) -> None:
        try:
            sent = self._sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._loop.remove_writer(self._sock.fileno())
            self._ended(exc)
            return
        del self._out[:sent]
        if not self._out:
            self._loop.remove_writer(self._sock.fileno())
            self._resume()

    @property
    def closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self._sock.fileno())
        if self._out:
            self._loop.remove_writer(self._sock.fileno())
        self._sock.close()
        self._gone()


class _Stamped(asyncio.Protocol, _Received):
    """An asyncio transport's callbacks (TLS, or a system without ``SO_TIMESTAMPNS``): each batch stamped
    in ``data_received``, when the loop hands it over, before any parsing."""

    def __init__(self) -> None:
        _Received.__init__(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, without subclassing it
        self.transport.set_write_buffer_limits(high=0)  # pause_writing for any byte the kernel did not take

    def data_received(self, data: bytes) -> None:
        self.batches.append((time.perf_counter(), data))
        self._wake()

    def eof_received(self) -> bool:
        self._ended(None)
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended(exc)
        self._gone()

    def pause_writing(self) -> None:
        self._pause()

    def resume_writing(self) -> None:
        self._resume()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    @property
    def closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


_Source = _KernelStamped | _Stamped


async def _open_kernel_stamped(host: str, port: int) -> _KernelStamped:
    loop = asyncio.get_running_loop()
    error: OSError | None = None
    for family, kind, proto, _, address in await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
            return _KernelStamped(sock)
        except OSError as exc:
            sock.close()
            error = exc
        except BaseException:
            sock.close()
            raise
    raise error or OSError(f"no address for {host}:{port}")


class Connection:
    """One HTTP/1.1 connection: write a request, then read the response's events with their arrival times."""

    def __init__(self, source: _Source) -> None:
        self._source = source
        self._h11 = h11.Connection(h11.CLIENT)
        self._stamp = 0.0

    async def post(self, target: str, headers: list[tuple[str, str]], body: bytes) -> float:
        """Write a POST with ``body``; returns the ``perf_counter`` just before the write that put all of it
        in the kernel's hands (before the first write if that took it all, as it does for a small body)."""
        if self._source.closing or self._source.eof:
            raise ConnectionResetError("the connection closed before the request was written")
        head = h11.Request(method="POST", target=target,
                           headers=[*headers, ("content-length", str(len(body)))])
        data = (self._h11.send(head) or b"") + (self._h11.send(h11.Data(data=body)) or b"")
        data += self._h11.send(h11.EndOfMessage()) or b""
        before = time.perf_counter()
        self._source.write(data)
        return time.perf_counter() if await self._source.drained() else before

    async def next_event(self) -> tuple[float, h11.Event]:
        """The response's next event, with the arrival time of the bytes that completed it."""
        while True:
            state = self._h11.their_state
            try:
                event: _Event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                if not self._source.eof:
                    raise
                started = state is not h11.SEND_RESPONSE
                raise ConnectionResetError("the server closed the connection "
                                           + ("mid-response" if started else "before its response")) from exc
            if event is h11.NEED_DATA:
                self._stamp, data = await self._source.batch()
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
        return not self._source.eof and not self._source.batches and not self._h11.trailing_data[0]

    def recycle(self) -> bool:
        """Ready for the next request if both messages ended cleanly and neither side asked to close."""
        if self._h11.our_state is not h11.DONE or self._h11.their_state is not h11.DONE or not self.alive:
            return False
        self._h11.start_next_cycle()
        return True

    def close(self) -> None:
        self._source.close()

    @property
    def lost(self) -> asyncio.Future[None]:
        return self._source.lost


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
        source: _Source
        if self._ssl is None and sys.platform == "linux":
            source = await _open_kernel_stamped(self.host, self.port)
        else:
            _, source = await asyncio.get_running_loop().create_connection(
                _Stamped, self.host, self.port, ssl=self._ssl, server_hostname=self.host if self._ssl else None,
            )
        connection = Connection(source)
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
