"""The load bench's HTTP/1.1 client against tiny servers on 127.0.0.1.

Each line of a stream is stamped when its bytes arrived, not when a task got to it; chunked and
content-length bodies both work; a status other than 200, a connection closed mid-stream, a stream
without ``[DONE]``, a refused connection and a timeout are errors on the result, never raised;
connections are kept alive and reused (one per request in flight) unless the server says close.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import socket
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from aiestack.errors import InvalidRequest
from aiestack.loadbench.client import Endpoint, send
from aiestack.loadbench.wire import Pool
from aiestack.loadbench.workload import RequestSpec
from aiestack.testing.net import free_port, read_request, tcp_server

pytestmark = pytest.mark.unit

STREAM_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
END = b"0\r\n\r\n"
SPEC = RequestSpec(messages=({"role": "user", "content": "hi"},), max_tokens=2, input_tokens=1)


def line(payload: dict[str, object] | str) -> bytes:
    return b"data: " + (payload.encode() if isinstance(payload, str) else orjson.dumps(payload)) + b"\n\n"


def token(i: int) -> bytes:
    return line({"choices": [{"index": 0, "delta": {"content": f" t{i}"}}]})


USAGE = line({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})


def chunk(data: bytes) -> bytes:
    return b"%x\r\n" % len(data) + data + b"\r\n"


def endpoint(url: str, timeout_s: float = 5.0) -> Endpoint:
    return Endpoint(url + "/v1", "m", api_key="k", timeout_s=timeout_s)


class Counted:
    """A handler wrapper that counts the connections it was given and the requests it read."""

    def __init__(self) -> None:
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []

    async def request(self, reader: asyncio.StreamReader) -> bool:
        try:
            self.requests.append(await read_request(reader))
        except asyncio.IncompleteReadError:
            return False  # the client closed its idle connection
        return True


async def test_a_chunked_stream_is_stamped_line_by_line_and_the_connection_reused() -> None:
    seen = Counted()

    async def streams(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        while await seen.request(reader):
            writer.write(STREAM_HEAD + chunk(token(0)))
            await asyncio.sleep(0.05)
            half = token(1)
            writer.write(chunk(half[:10]))  # a line split across two chunks: stamped when it is whole
            await asyncio.sleep(0.03)
            writer.write(chunk(half[10:]) + chunk(USAGE + line("[DONE]")) + END)

    async with tcp_server(streams) as url, Pool(endpoint(url).url) as pool:
        results = [await send(pool, endpoint(url), SPEC) for _ in range(2)]
    for r in results:
        assert r.ok, r.error
        assert len(r.chunk_times) == 2 and r.output_tokens == 2 and r.input_tokens == 3
        assert r.start < r.chunk_times[0] and r.chunk_times[1] - r.chunk_times[0] >= 0.075
        assert r.end == r.chunk_times[1]  # [DONE] came in the batch that completed the last token
    assert seen.connections == 1 and len(seen.requests) == 2
    head, body = seen.requests[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"\r\nauthorization: bearer k\r\n" in head.lower()
    assert orjson.loads(body)["stream"] is True and orjson.loads(body)["model"] == "m"


async def test_a_content_length_stream_and_a_non_200_keep_the_connection() -> None:
    seen = Counted()
    error = b'{"error": {"message": "overloaded"}}'
    events = token(0) + token(1) + USAGE + line("[DONE]")

    async def answers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        while await seen.request(reader):
            if len(seen.requests) == 1:
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: %d\r\n\r\n%s" % (len(error), error))
            else:
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(events), events))

    async with tcp_server(answers) as url, Pool(endpoint(url).url) as pool:
        failed = await send(pool, endpoint(url), SPEC)
        fine = await send(pool, endpoint(url), SPEC)
    assert failed.error == f"HTTP 503: {error.decode()}" and not failed.ok
    assert fine.ok and len(fine.chunk_times) == 2, fine.error
    assert seen.connections == 1


async def test_connection_close_from_the_server_is_honoured() -> None:
    seen = Counted()

    async def closes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        await seen.request(reader)
        body = token(0) + USAGE + line("[DONE]")
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))

    async with tcp_server(closes) as url, Pool(endpoint(url).url) as pool:
        results = [await send(pool, endpoint(url), SPEC) for _ in range(2)]
    assert all(r.ok for r in results), [r.error for r in results]
    assert seen.connections == 2


async def test_concurrent_requests_get_a_connection_each_then_reuse_them() -> None:
    seen = Counted()

    async def streams(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        while await seen.request(reader):
            await asyncio.sleep(0.02)
            writer.write(STREAM_HEAD + chunk(token(0) + line("[DONE]")) + END)

    async with tcp_server(streams) as url, Pool(endpoint(url).url) as pool:
        for _ in range(3):
            results = await asyncio.gather(*(send(pool, endpoint(url), SPEC) for _ in range(4)))
            assert all(r.ok for r in results), [r.error for r in results]
    assert seen.connections == 4 and len(seen.requests) == 12


@pytest.mark.parametrize(("answer", "message"), [
    (STREAM_HEAD + chunk(token(0)), "the server closed the connection mid-response"),
    (STREAM_HEAD + chunk(token(0) + USAGE) + END, "the stream ended without [DONE]"),
    (b"", "the server closed the connection before its response"),
    (STREAM_HEAD + chunk(line({"error": {"message": "boom"}})), "stream error: {'message': 'boom'}"),
])
async def test_a_broken_stream_is_an_error_on_the_result(answer: bytes, message: str) -> None:
    async def breaks(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        writer.close()

    async with tcp_server(breaks) as url, Pool(endpoint(url).url) as pool:
        result = await send(pool, endpoint(url), SPEC)
    assert result.error is not None and message in result.error, result.error
    assert not result.ok and result.end >= result.start


async def test_a_silent_server_is_a_timeout_and_a_refused_connection_an_error() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(STREAM_HEAD + chunk(token(0)))
        await asyncio.sleep(30)

    async with tcp_server(silent) as url, Pool(endpoint(url).url) as pool:
        t0 = time.perf_counter()
        result = await send(pool, endpoint(url, timeout_s=0.2), SPEC)
    assert result.error == "timed out after 0.2 s" and time.perf_counter() - t0 < 2.0
    assert len(result.chunk_times) == 1

    url = f"http://127.0.0.1:{free_port()}"
    async with Pool(endpoint(url).url) as pool:
        refused = await send(pool, endpoint(url), SPEC)
    assert refused.error is not None and "ConnectionRefusedError" in refused.error


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_bytes_are_stamped_when_they_arrive_not_when_a_task_reads_them(
    scheme: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two responses arrive in one turn of the loop; each reader then works 50 ms on what it read (as
    a client parsing many streams does). The second reader gets its event 50 ms late, but its stamp
    is that of the bytes' arrival, beside the first one's (plain http: the kernel's receive time;
    https: when the transport handed the bytes over, before any parsing)."""
    writers: list[asyncio.StreamWriter] = []

    async def both_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writers.append(writer)
        if len(writers) == 2:
            for w in writers:  # written back to back, before the client's loop polls again
                w.write(STREAM_HEAD + chunk(token(0)))
        await asyncio.sleep(30)

    async def one(pool: Pool) -> tuple[float, float]:
        connection = await pool.connect()
        await connection.post("/v1/chat/completions", [("host", "x")], b"{}")
        stamp, response = await connection.response()
        read = time.perf_counter()
        assert response.status_code == 200
        time.sleep(0.05)  # this task's own work, which holds the loop
        return stamp, read

    tls = None
    if scheme == "https":
        tls, ca = _server_tls(tmp_path)
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    async with tcp_server(both_at_once, tls) as url, Pool(endpoint(url).url) as pool:
        (stamp_a, read_a), (stamp_b, read_b) = await asyncio.gather(one(pool), one(pool))
    assert abs(read_a - read_b) >= 0.05  # one reader waited for the other's work
    assert abs(stamp_a - stamp_b) < 0.01  # but both stamps are the arrival


def test_a_url_that_is_not_http_is_a_clear_error() -> None:
    with pytest.raises(InvalidRequest, match="not an http"):
        Pool("ftp://127.0.0.1/v1")


@pytest.mark.skipif(sys.platform != "linux", reason="the kernel's receive time (SO_TIMESTAMPNS) is read on Linux")
async def test_a_stamp_is_the_kernels_receive_time_even_when_the_loop_was_held() -> None:
    """The server (a thread) answers while the client's loop is held for 100 ms: the stamp is when the
    bytes came, not when the loop could look at them."""
    answered = threading.Event()

    def answer(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        with conn:
            received = b""
            while not received.endswith(b"\r\n\r\n{}"):
                received += conn.recv(4096)
            conn.sendall(STREAM_HEAD + chunk(token(0)))
            answered.set()
            time.sleep(0.5)

    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=answer, args=(listener,), daemon=True)
        server.start()
        async with Pool(f"http://127.0.0.1:{listener.getsockname()[1]}/v1/chat/completions") as pool:
            connection = await pool.connect()
            start = await connection.post("/v1/chat/completions", [("host", "x")], b"{}")
            assert answered.wait(5.0)  # holds the loop: nothing on it runs until the server has answered
            time.sleep(0.1)
            held_until = time.perf_counter()
            stamp, response = await connection.response()
        server.join()
    assert response.status_code == 200
    assert start < stamp < held_until - 0.05  # when the bytes came, not when the loop got to them


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it: (the CA's PEM, the server's PEM with its key)."""
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def name(text: str) -> Any:
        return x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, text)])

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test CA")).issuer_name(name("test CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.pem").write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return directory / "ca.pem", directory / "server.pem"


def _server_tls(directory: Path) -> tuple[ssl.SSLContext, Path]:
    """A server context for 127.0.0.1, and its CA's PEM (trusted by a default context once ``SSL_CERT_FILE`` names it)."""
    ca, chain = _certificate(directory)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(chain)
    return tls, ca


async def test_https_is_verified_with_the_default_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = Counted()

    async def streams(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.connections += 1
        while await seen.request(reader):
            writer.write(STREAM_HEAD + chunk(token(0)))
            await asyncio.sleep(0.03)
            writer.write(chunk(token(1) + USAGE + line("[DONE]")) + END)

    tls, ca = _server_tls(tmp_path)
    async with tcp_server(streams, tls) as url:
        async with Pool(endpoint(url).url) as pool:  # the system's CAs only
            untrusted = await send(pool, endpoint(url), SPEC)
        monkeypatch.setenv("SSL_CERT_FILE", str(ca))  # what ssl.create_default_context() loads
        async with Pool(endpoint(url).url) as pool:
            results = [await send(pool, endpoint(url), SPEC) for _ in range(2)]
    assert untrusted.error is not None and "CERTIFICATE_VERIFY_FAILED" in untrusted.error
    for r in results:
        assert r.ok and len(r.chunk_times) == 2, r.error
        assert r.chunk_times[1] - r.chunk_times[0] >= 0.025
    assert seen.connections == 1  # one kept alive for both (the untrusted handshake never got to the handler)
