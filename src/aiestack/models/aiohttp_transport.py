"""An httpx transport backed by aiohttp: httpx's API and error types, aiohttp's connection pool.

Why: httpcore's pool (httpx's default transport) checks every pooled connection on each request
(``has_expired`` → ``is_socket_readable`` through anyio), so its cost per request grows with the
number of connections: at 64 concurrent requests the provider's HTTP client used most of a core.
aiohttp's connector keeps idle connections in a per-host deque and hands one out in O(1), and its
HTTP parser is written in C.

The providers keep speaking httpx (requests, responses, ``MockTransport`` in tests), and every
failure still reaches them as the httpx exception that says what happened, so their error
reporting stays honest:

=================================================  ==========================================
aiohttp                                            httpx
=================================================  ==========================================
connection refused / reset / DNS / TLS at connect  :class:`httpx.ConnectError`
connect timeout (including the wait for a slot)    :class:`httpx.ConnectTimeout`
no data within the read timeout (head or body)     :class:`httpx.ReadTimeout`
server closed before answering / mid-body           :class:`httpx.RemoteProtocolError`
malformed HTTP from the server                     :class:`httpx.RemoteProtocolError`
connection reset or other OS error after connect   :class:`httpx.ReadError`
anything else aiohttp raises                        :class:`httpx.TransportError`
=================================================  ==========================================

httpx's ``write`` timeout has no aiohttp equivalent and is not enforced (the request bodies sent
here are small); ``pool`` and ``connect`` together bound the time to get a connection. Bodies are
passed through undecoded (httpx decodes gzip and friends itself), cookies and proxies from the
environment are not used (:func:`aiestack.models.http.make_client` picks httpx's own transport
when a proxy is configured), redirects are not followed, and TLS is verified against the trust
store httpx would use.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import aiohttp
import httpx
from yarl import URL

__all__ = ["AiohttpTransport", "client_timeout", "read_body"]

_DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=5.0)
_MAX_CACHED_URLS = 64


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncClient(transport=AiohttpTransport(limits=...))``: pooled keep-alive HTTP/1.1.

    ``limits.max_connections`` caps the open connections (requests beyond it wait for one, within
    the pool + connect timeout); idle connections are kept ``limits.keepalive_expiry`` seconds.
    The aiohttp session is created on first use inside the running event loop (aiohttp sessions
    belong to one loop); :meth:`aclose` closes it and every pooled connection.
    """

    def __init__(self, *, limits: httpx.Limits = _DEFAULT_LIMITS) -> None:
        self._limit = limits.max_connections or 0  # 0: unlimited, as aiohttp spells it
        self._keepalive_s = limits.keepalive_expiry if limits.keepalive_expiry is not None else 5.0
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._urls: dict[str, URL] = {}  # a provider asks for a few fixed URLs: each is parsed once

    def _current_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(
                # The trust store httpx would use (certifi, or SSL_CERT_FILE / SSL_CERT_DIR).
                ssl=httpx.create_ssl_context(),
                limit=self._limit,
                limit_per_host=0,
                keepalive_timeout=self._keepalive_s,
                enable_cleanup_closed=False,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
                timeout=aiohttp.ClientTimeout(total=None),
                # httpx has set every header it wants; aiohttp must not add its own.
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent", "Content-Type"),
            )
            self._loop = loop
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeout = client_timeout(request.extensions.get("timeout") or {})
        headers = request.headers.multi_items()
        try:
            body: bytes | AsyncIterator[bytes] | None = request.content or None
        except httpx.RequestNotRead:  # a streamed body: aiohttp sends it chunked and says so itself
            body = _request_chunks(request)
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        return await self._send(request.method, str(request.url), headers, body, timeout, lambda: request)

    async def send(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | None,
        timeout: aiohttp.ClientTimeout,
        request: Callable[[], httpx.Request],
    ) -> httpx.Response:
        """:meth:`handle_async_request` for a request given as plain values (``url`` percent-encoded).

        ``request()`` builds the equivalent :class:`httpx.Request`; it is called only when
        something asks for it (an error to raise, ``response.request``), which spares a provider's
        hot path the cost of building one per call.
        """
        return await self._send(method, url, headers, body or None, timeout, request)

    async def _send(
        self,
        method: str,
        raw_url: str,
        headers: Sequence[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
        timeout: aiohttp.ClientTimeout,
        request: Callable[[], httpx.Request],
    ) -> httpx.Response:
        session = self._current_session()
        url = self._urls.get(raw_url)
        if url is None:
            if len(self._urls) >= _MAX_CACHED_URLS:
                self._urls.clear()
            url = self._urls[raw_url] = URL(raw_url, encoded=True)  # httpx has percent-encoded it
        try:
            response = await session.request(
                method,
                url,
                headers=headers,
                data=body,
                timeout=timeout,
                allow_redirects=False,
                compress=None,
                proxy=None,
            )
        except Exception as exc:
            mapped = _mapped(exc, request, started=False)
            if mapped is None:
                raise
            raise mapped from exc
        return _Response(
            response.status,
            headers=response.raw_headers,
            stream=_ResponseStream(response, request),
            extensions={
                "http_version": b"HTTP/%d.%d" % (response.version or (1, 1)),
                "reason_phrase": (response.reason or "").encode("latin-1", "replace"),
            },
            make_request=request,
        )

    async def aclose(self) -> None:
        session, self._session, self._loop = self._session, None, None
        if session is not None and not session.closed:
            await session.close()

    async def __aenter__(self) -> AiohttpTransport:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        await self.aclose()


class _Response(httpx.Response):
    """An :class:`httpx.Response` whose ``request`` is built when first asked for."""

    def __init__(self, *args: Any, make_request: Callable[[], httpx.Request], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._make_request = make_request

    @property
    def request(self) -> httpx.Request:
        if self._request is None:
            self._request = self._make_request()
        return self._request

    @request.setter
    def request(self, value: httpx.Request) -> None:
        self._request = value


class _ResponseStream(httpx.AsyncByteStream):
    """The response body as it arrives; closing it early closes the connection (never reused half-read)."""

    __slots__ = ("_request", "_response")

    def __init__(self, response: aiohttp.ClientResponse, request: Callable[[], httpx.Request]) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        content = self._response.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except Exception as exc:
            mapped = _mapped(exc, self._request, started=True)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        # A body read to its end has already handed the connection back to the pool; otherwise
        # release() closes it, since a half-read HTTP/1.1 connection cannot carry another request.
        self._response.release()


async def read_body(response: httpx.Response) -> bytes:
    """The whole (decoded) body of ``response``; transport failures as ``httpx`` exceptions.

    For a response of this transport sent without a ``content-encoding``, aiohttp reads the body in
    one call: ``response.aread()`` passes it through httpx's chunk iterators and decoders, a
    tenth of a small whole answer's cost in the gateway. Anything else is ``aread()``.
    """
    stream = response.stream
    if isinstance(stream, _ResponseStream) and "content-encoding" not in response.headers:
        raw = stream._response
        try:
            return await raw.read()
        except Exception as exc:
            mapped = _mapped(exc, stream._request, started=True)
            if mapped is None:
                raise
            raise mapped from exc
    return await response.aread()


async def _request_chunks(request: httpx.Request) -> AsyncIterator[bytes]:
    stream = request.stream
    assert isinstance(stream, httpx.AsyncByteStream), "an AsyncClient request has an async body"
    async for chunk in stream:
        yield chunk


def client_timeout(spec: Mapping[str, float | None]) -> aiohttp.ClientTimeout:
    """aiohttp's timeouts for an httpx timeout extension (``connect``, ``read``, ``write``, ``pool``)."""
    connect, pool, read = spec.get("connect"), spec.get("pool"), spec.get("read")
    acquire = None if connect is None or pool is None else connect + pool
    return aiohttp.ClientTimeout(total=None, connect=acquire, sock_connect=connect, sock_read=read)


def _mapped(
    exc: Exception, make_request: Callable[[], httpx.Request], *, started: bool
) -> httpx.TransportError | None:
    """The httpx exception for an aiohttp (or OS) failure; ``None`` for anything else (a bug: re-raised).

    ``started``: the response head had arrived, so the failure happened in the body.
    """
    if not isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | OSError):
        return None
    request = make_request()
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, aiohttp.ServerTimeoutError | asyncio.TimeoutError):
        # A timeout that aiohttp does not classify: before the head it is connect or read; the
        # socket read timeout is the only one left running once the connection is up.
        return httpx.ReadTimeout(message or "timed out waiting for the server", request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        what = "mid-body" if started else "without sending a response"
        return httpx.RemoteProtocolError(f"Server disconnected {what}: {message}", request=request)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return httpx.RemoteProtocolError(
            f"Peer closed the connection without sending the complete body: {message}", request=request
        )
    if isinstance(exc, aiohttp.ClientResponseError):  # the server's HTTP could not be parsed
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(exc, aiohttp.InvalidURL):
        return httpx.UnsupportedProtocol(message, request=request)
    if isinstance(exc, aiohttp.ClientOSError | OSError):
        return httpx.ReadError(message, request=request)
    if isinstance(exc, aiohttp.ClientError):
        return httpx.TransportError(message, request=request)
    return None
