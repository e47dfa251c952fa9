"""The aiohttp-backed httpx transport against real servers on 127.0.0.1.

Each failure must reach httpx callers as the exception that says what happened (a refused
connection is never reported as a timeout); bodies stream as they arrive; connections are pooled,
reused while kept alive, bounded by the pool's size, and never reused half-read.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import struct
from collections.abc import AsyncIterator

import httpx
import pytest

from aiestack.errors import ProviderConnectionError, ProviderTimeout, StreamBroken
from aiestack.models import http
from aiestack.models.aiohttp_transport import AiohttpTransport
from aiestack.models.openai import OpenAIChatModel
from aiestack.testing.net import Handler, free_port, read_request
from aiestack.testing.net import tcp_server as serve
from aiestack.types import ChatRequest, Message

pytestmark = pytest.mark.unit


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n" % len(body)
    return head + b"".join(h + b"\r\n" for h in extra) + b"\r\n" + body


def client(base_url: str, *, timeout: float = 5.0, max_connections: int = 10) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx.AsyncClient(
        base_url=base_url, timeout=httpx.Timeout(timeout), transport=AiohttpTransport(limits=limits)
    )


# --------------------------------------------------------------------------- error mapping


async def test_refused_connection_is_a_connect_error_not_a_timeout() -> None:
    async with client(f"http://127.0.0.1:{free_port()}") as c:
        with pytest.raises(httpx.ConnectError) as info:
            await c.get("/")
    assert not isinstance(info.value, httpx.TimeoutException)


async def test_connect_timeout_is_a_connect_timeout() -> None:
    # A listener whose backlog is full and that never accepts: the next connect hangs.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(4):
            s = socket.socket()
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.connect(("127.0.0.1", port))
            fillers.append(s)
        try:
            async with client(f"http://127.0.0.1:{port}", timeout=0.3) as c:
                with pytest.raises(httpx.ConnectTimeout):
                    await c.get("/")
        finally:
            for s in fillers:
                s.close()


async def test_server_silent_after_the_request_is_a_read_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    async with serve(silent) as url, client(url, timeout=0.3) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.get("/")


async def test_server_stalling_mid_body_is_a_read_timeout() -> None:
    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nfirst")
        await writer.drain()
        await asyncio.sleep(30)

    async with serve(stalls) as url, client(url, timeout=0.3) as c, c.stream("GET", "/") as response:
        assert response.status_code == 200
        received = b""
        with pytest.raises(httpx.ReadTimeout):
            async for chunk in response.aiter_bytes():
                received += chunk
        assert received == b"first"


async def test_server_closing_before_answering_is_a_protocol_error() -> None:
    async def hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    async with serve(hangs_up) as url, client(url) as c:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await c.get("/")


@pytest.mark.parametrize(
    "partial",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n9\r\nonly part\r\n",
    ],
    ids=["content-length", "chunked"],
)
async def test_server_closing_mid_body_is_a_protocol_error(partial: bytes) -> None:
    async def cuts(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(partial)
        await writer.drain()
        writer.close()

    async with serve(cuts) as url, client(url) as c, c.stream("GET", "/") as response:
        received = b""
        with pytest.raises(httpx.RemoteProtocolError, match="complete body"):
            async for chunk in response.aiter_bytes():
                received += chunk
        assert received == b"only part"


async def test_connection_reset_after_the_request_is_a_read_error() -> None:
    async def resets(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close → RST
        writer.transport.abort()

    async with serve(resets) as url, client(url) as c:
        with pytest.raises(httpx.ReadError):
            await c.get("/")


async def test_a_response_that_is_not_http_is_a_protocol_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()

    async with serve(garbage) as url, client(url) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get("/")


async def test_provider_errors_say_what_happened() -> None:
    """Through http.transport_error: refused → connection error, silence → timeout, cut → broken."""
    refused = OpenAIChatModel(base_url=f"http://127.0.0.1:{free_port()}/v1", api_key_env=None, timeout_s=2)
    request = ChatRequest(model="m", messages=(Message("user", "hi"),), stream=True)
    try:
        with pytest.raises(ProviderConnectionError, match="could not connect"):
            [d async for d in refused.stream(request)]
    finally:
        await refused.aclose()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    async with serve(silent) as url:
        slow = OpenAIChatModel(base_url=url + "/v1", api_key_env=None, timeout_s=0.3)
        try:
            with pytest.raises(ProviderTimeout, match="before answering"):
                [d async for d in slow.stream(request)]
        finally:
            await slow.aclose()

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        event = b'data: {"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}\n\n'
        writer.write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (len(event), event)
        )
        await writer.drain()
        writer.close()

    async with serve(cut) as url:
        broken = OpenAIChatModel(base_url=url + "/v1", api_key_env=None, timeout_s=5)
        texts: list[str] = []
        try:
            with pytest.raises(StreamBroken, match="broke in the middle"):
                async for delta in broken.stream(request):
                    texts.append(delta.text)
        finally:
            await broken.aclose()
        assert texts == ["Hel"]


async def test_provider_errors_of_a_whole_answer_say_what_happened() -> None:
    """A whole answer asked for whole: silence past whole_timeout_s → timeout, a cut body → broken."""
    request = ChatRequest(model="m", messages=(Message("user", "hi"),))

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)

    async with serve(silent) as url:
        slow = OpenAIChatModel(base_url=url + "/v1", api_key_env=None, timeout_s=5, whole_timeout_s=0.3)
        try:
            with pytest.raises(ProviderTimeout, match="before answering"):
                [d async for d in slow.stream(request)]
        finally:
            await slow.aclose()

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n{"choices":[{"index":0,"mess')
        await writer.drain()
        writer.close()

    async with serve(cut) as url:
        broken = OpenAIChatModel(base_url=url + "/v1", api_key_env=None, timeout_s=5)
        try:
            with pytest.raises(StreamBroken, match="broke in the middle"):
                [d async for d in broken.stream(request)]
        finally:
            await broken.aclose()


async def test_a_whole_answer_is_read_plain_or_compressed() -> None:
    """read_body: aiohttp reads a plain body in one call; a gzipped one goes through httpx's decoder."""
    answer = b'{"choices":[{"index":0,"message":{"content":"ok"},"finish_reason":"stop"}]}'

    def handler(encoded: bool) -> Handler:
        async def reply(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                try:
                    await read_request(reader)
                except asyncio.IncompleteReadError:  # the client closed its connection
                    return
                body = gzip.compress(answer) if encoded else answer
                extra = b"content-encoding: gzip\r\n" if encoded else b""
                writer.write(b"HTTP/1.1 200 OK\r\n%scontent-length: %d\r\n\r\n%s" % (extra, len(body), body))
                await writer.drain()

        return reply

    for encoded in (False, True):
        async with serve(handler(encoded)) as url:
            model = OpenAIChatModel(base_url=url + "/v1", api_key_env=None, timeout_s=5)
            try:
                for _ in range(2):  # the second request reuses the connection the first one freed
                    (done,) = [d async for d in model.stream(ChatRequest(model="m", messages=(Message("user", "q"),)))]
                    assert done.text == "ok" and done.finish_reason == "stop"
            finally:
                await model.aclose()


# --------------------------------------------------------------------------- requests and streaming


async def test_request_is_sent_as_httpx_built_it() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            seen.append(await read_request(reader))
            writer.write(ok(b"fine", b"x-twice: 1", b"x-twice: 2"))
            await writer.drain()

    async with serve(echo) as url, client(url) as c:
        response = await c.post("/v1/p?q=a%20b", json={"a": 1}, headers={"x-custom": "yes"})
    head, body = seen[0]
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/p?q=a%20b HTTP/1.1"
    assert b"x-custom: yes" in lines and b"content-type: application/json" in lines
    assert body == b'{"a":1}'
    assert response.status_code == 200 and response.text == "fine"
    assert response.headers.get_list("x-twice") == ["1", "2"]
    assert response.http_version == "HTTP/1.1" and response.reason_phrase == "OK"


async def test_streamed_request_body_is_sent_chunked() -> None:
    seen: list[bytes] = []

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        while (size := int((await reader.readuntil(b"\r\n")).strip(), 16)) > 0:
            seen.append((await reader.readexactly(size + 2))[:-2])
        await reader.readuntil(b"\r\n")
        writer.write(ok(b"got it"))
        await writer.drain()

    async def parts() -> AsyncIterator[bytes]:
        for part in (b"one ", b"two"):
            yield part

    async with serve(chunked) as url, client(url) as c:
        response = await c.post("/", content=parts())
    assert response.text == "got it" and b"".join(seen) == b"one two"


async def test_body_streams_as_it_arrives() -> None:
    release = asyncio.Event()

    async def slow_second_half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await release.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()

    async with serve(slow_second_half) as url, client(url) as c, c.stream("GET", "/") as response:
        chunks = response.aiter_bytes()
        assert await anext(chunks) == b"first"  # before the server has sent the rest
        release.set()
        assert b"".join([c async for c in chunks]) == b"second"


async def test_gzip_body_is_decoded_by_httpx() -> None:
    import gzip

    async def gzipped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(gzip.compress(b"unzipped text"), b"content-encoding: gzip"))
        await writer.drain()

    async with serve(gzipped) as url, client(url) as c:
        assert (await c.get("/")).text == "unzipped text"


# --------------------------------------------------------------------------- pooling


def _counting_server() -> tuple[Handler, list[int], list[int]]:
    """A keep-alive server that answers each request with the number of its connection."""
    connections: list[int] = []
    active: list[int] = [0, 0]  # now, peak

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = len(connections)
        connections.append(number)
        while True:
            await read_request(reader)
            active[0] += 1
            active[1] = max(active)
            await asyncio.sleep(0.02)
            active[0] -= 1
            writer.write(ok(str(number).encode()))
            await writer.drain()

    return handler, connections, active


async def test_keep_alive_connection_is_reused() -> None:
    handler, connections, _ = _counting_server()
    async with serve(handler) as url, client(url) as c:
        answers = [(await c.get("/")).text for _ in range(5)]
    assert answers == ["0"] * 5 and len(connections) == 1


async def test_pool_bounds_concurrent_connections() -> None:
    handler, connections, active = _counting_server()
    async with serve(handler) as url, client(url, max_connections=3) as c:
        answers = await asyncio.gather(*(c.get("/") for _ in range(12)))
    assert all(a.status_code == 200 for a in answers)
    assert len(connections) == 3 and active[1] == 3


async def test_half_read_connection_is_not_reused() -> None:
    handler, connections, _ = _counting_server()

    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not connections:  # the first connection sends more than is read
            connections.append(0)
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n" + b"x" * 1000)
            await writer.drain()
            await asyncio.sleep(30)
        await handler(reader, writer)

    async with serve(big) as url, client(url) as c:
        async with c.stream("GET", "/") as response:
            await anext(response.aiter_bytes())  # then closed without reading the rest
        assert (await c.get("/")).text == "1"  # a new connection, not the half-read one
    assert len(connections) == 2


async def test_aclose_closes_pooled_connections() -> None:
    closed = asyncio.Event()

    async def notes_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"hi"))
        await writer.drain()
        await reader.read()  # returns at EOF: the client closed the connection
        closed.set()

    async with serve(notes_close) as url:
        c = client(url)
        assert (await c.get("/")).text == "hi"
        assert not closed.is_set()
        await c.aclose()
        await asyncio.wait_for(closed.wait(), 5)


async def test_make_client_uses_the_aiohttp_transport_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    handler, connections, _ = _counting_server()
    async with serve(handler) as url:
        c = http.make_client(base_url=url, timeout_s=5, headers={}, max_connections=4)
        try:
            assert isinstance(c.transport, AiohttpTransport)
            answers = []
            for _ in range(3):
                response = await c.send("GET", "/")
                answers.append((await response.aread()).decode())
                await response.aclose()
        finally:
            await c.aclose()
    assert answers == ["0"] * 3 and len(connections) == 1


def test_make_client_goes_through_a_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    proxied = http.make_client(
        base_url="https://api.example.com/v1", timeout_s=5, headers={}, max_connections=4
    )
    direct = http.make_client(base_url="http://127.0.0.1:9/v1", timeout_s=5, headers={}, max_connections=4)
    assert isinstance(proxied.transport, httpx.AsyncHTTPTransport)  # httpx's own speaks to proxies
    assert isinstance(direct.transport, AiohttpTransport)


async def test_http_client_sends_through_aiohttp_what_the_httpx_request_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    # HttpClient hands aiohttp plain values instead of an httpx.Request: the bytes on the wire
    # must carry the headers and body that request holds (which response.request still gives).
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    heads: list[bytes] = []
    bodies: list[bytes] = []

    async def records(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            heads.append(head)
            bodies.append(body)
            writer.write(ok(b"done"))
            await writer.drain()

    async with serve(records) as url:
        c = http.make_client(base_url=url + "/v1", timeout_s=5, headers={"authorization": "Bearer k"}, max_connections=2)
        try:
            assert isinstance(c.transport, AiohttpTransport)
            sent = []
            for extra in ({"x-extra": "1"}, None, {"x-extra": "1"}):
                response = await c.send("POST", "chat/completions", body={"q": "é"}, headers=extra)
                assert (await response.aread()) == b"done"
                await response.aclose()
                sent.append(response.request)
        finally:
            await c.aclose()
    for head, body, request in zip(heads, bodies, sent, strict=True):
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
        wire = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        assert wire == {k.lower(): v for k, v in request.headers.items()}
        assert body == request.content == '{"q":"é"}'.encode()
    assert "x-extra" not in {k.lower() for k in sent[1].headers}


async def test_http_client_errors_carry_the_request_it_would_have_sent() -> None:
    port = free_port()
    c = http.HttpClient(base_url=f"http://127.0.0.1:{port}/v1", timeout_s=5, headers={}, transport=AiohttpTransport())
    try:
        with pytest.raises(httpx.ConnectError) as info:
            await c.send("POST", "chat/completions", body={"q": 1})
    finally:
        await c.aclose()
    assert str(info.value.request.url) == f"http://127.0.0.1:{port}/v1/chat/completions"
    assert info.value.request.content == b'{"q":1}'
