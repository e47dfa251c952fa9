"""What every HTTP provider shares: the pooled client, server-sent events, and typed errors.

An upstream fails in a handful of ways that callers treat differently: a rate limit is retried
after the time the upstream asked for, a prompt that is too long is not retried at all but may be
shortened, a 5xx or a refused connection is retried or sent to a fallback model. This module turns
each HTTP status, in-stream ``error`` event and transport exception into the one
:class:`~aiestack.errors.ProviderError` subclass that says so, with the upstream's own message
(it is usually the most useful sentence in the error) and a hint on what to do. It never puts the
API key in a message: an upstream that echoes the key has it replaced by ``***``.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import orjson

from aiestack.errors import (
    ContextLengthExceeded,
    ProviderAuthError,
    ProviderBadRequest,
    ProviderConnectionError,
    ProviderError,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    StreamBroken,
)
from aiestack.models.aiohttp_transport import AiohttpTransport, client_timeout, read_body

USER_AGENT = "aiestack/0.1"
_MAX_MESSAGE_CHARS = 600

# Phrases with which OpenAI, vLLM, llama.cpp server, Ollama and Anthropic say that the prompt
# (plus max_tokens) does not fit the model's context window.
_CONTEXT_LENGTH = re.compile(
    r"context_length_exceeded|maximum context length|context length|prompt is too long"
    r"|exceeds? the (?:available )?context|context size|context window|too many tokens",
    re.IGNORECASE,
)
_DURATION = re.compile(
    r"^(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m(?!s))?(?:(?P<s>\d+(?:\.\d+)?)s)?"
    r"(?:(?P<ms>\d+(?:\.\d+)?)ms)?$"
)


@dataclass(frozen=True, slots=True)
class Upstream:
    """What an error message needs to know about the upstream it names."""

    provider: str
    base_url: str
    timeout_s: float
    api_key_env: str | None = None
    secret: str | None = field(default=None, repr=False)
    #: The configuration key that sets ``timeout_s`` here, named in a timeout's hint.
    timeout_key: str = "timeout_s"

    def redact(self, text: str) -> str:
        """``text`` with the API key (should an upstream echo it) replaced by ``***``."""
        return text.replace(self.secret, "***") if self.secret else text


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One server-sent event: its ``event:`` name (None when absent) and its joined ``data:`` lines."""

    event: str | None
    data: str


class HttpClient:
    """One provider's HTTP client: a pooled transport, its base URL, default headers and timeout.

    It speaks httpx (requests, responses, exceptions, any :class:`httpx.AsyncBaseTransport`, so
    tests substitute :class:`httpx.MockTransport`), but sends each request straight to the
    transport. ``httpx.AsyncClient`` would merge URLs, headers and cookies, run the auth and
    redirect machinery and store cookies on every request: about a quarter of a millisecond that
    a provider needs none of (the key is a header, redirects are errors, APIs set no cookies).
    """

    def __init__(
        self,
        *,
        base_url: str,
        timeout_s: float,
        headers: Mapping[str, str],
        transport: httpx.AsyncBaseTransport,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.transport = transport
        self.headers = httpx.Headers(
            {"accept": "*/*", "accept-encoding": "gzip, deflate", "connection": "keep-alive", **headers}
        )
        self._json_headers = self.headers.copy()
        self._json_headers["content-type"] = "application/json"
        self._timeout = {"connect": timeout_s, "read": timeout_s, "write": timeout_s, "pool": timeout_s}
        # Parsing a URL costs more than building the rest of a request: each path is parsed once.
        # Providers ask for a handful of fixed paths, so this stays small.
        self._urls: dict[str, httpx.URL] = {}
        self._aiohttp = transport if isinstance(transport, AiohttpTransport) else None
        self._aiohttp_timeout = client_timeout(self._timeout)
        # Other read timeouts asked for by some calls (a whole answer's wait), each built once.
        self._read_timeouts: dict[float, tuple[dict[str, float], Any]] = {}
        self._prepared: dict[tuple[bool, tuple[tuple[str, str], ...]], tuple[httpx.Headers, list[tuple[str, str]]]] = {}

    async def send(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        read_timeout_s: float | None = None,
    ) -> httpx.Response:
        """Send a request to ``base_url + path``; the answer's body is left to stream (``aclose`` it).

        ``body`` goes out as JSON. ``read_timeout_s`` replaces the client's read timeout (the
        longest wait for data) for this request; connecting keeps the client's. Transport failures
        raise the transport's ``httpx`` exceptions.
        """
        timeout, aiohttp_timeout = self._timeout, self._aiohttp_timeout
        if read_timeout_s is not None:
            kept = self._read_timeouts.get(read_timeout_s)
            if kept is None:
                spec = {**self._timeout, "read": read_timeout_s}
                kept = self._read_timeouts[read_timeout_s] = (spec, client_timeout(spec))
            timeout, aiohttp_timeout = kept
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(self.base_url + path.lstrip("/"))
        # The headers of a request depend only on whether it has a body and on the extra headers:
        # providers send a handful of combinations, each merged once.
        key = (body is not None, tuple(headers.items()) if headers else ())
        prepared = self._prepared.get(key)
        if prepared is None:
            merged = self._json_headers if body is not None else self.headers
            if headers:
                merged = merged.copy()
                merged.update(headers)
            if len(self._prepared) >= _MAX_HEADER_SETS:
                self._prepared.clear()
            prepared = self._prepared[key] = (merged, merged.multi_items())
        merged, items = prepared
        content = orjson.dumps(body) if body is not None else None

        def request() -> httpx.Request:
            return httpx.Request(method, url, headers=merged, content=content, extensions={"timeout": timeout})

        if self._aiohttp is not None:
            # The same request, handed over as plain values: building an httpx.Request (headers
            # normalised again, content-length and host set) costs more than aiohttp's own request,
            # and only an error or a caller that reads response.request needs one.
            return await self._aiohttp.send(method, str(url), items, content, aiohttp_timeout, request)
        built = request()
        response = await self.transport.handle_async_request(built)
        response.request = built
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()


def make_client(
    *,
    base_url: str,
    timeout_s: float,
    headers: Mapping[str, str],
    max_connections: int,
    transport: httpx.AsyncBaseTransport | None = None,
) -> HttpClient:
    """One pooled client per provider instance: keep-alive connections are reused across requests.

    The read timeout applies between two chunks of a stream, so a long answer that keeps
    streaming never times out, while an upstream that stalls does. Unless a test substitutes
    one, the transport is :class:`~aiestack.models.aiohttp_transport.AiohttpTransport`, whose
    pool costs O(1) per request where httpx's default one scans every connection; behind an
    HTTP(S) proxy set in the environment (``HTTPS_PROXY``, ``NO_PROXY``...) it is httpx's own,
    which speaks to proxies.
    """
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    if transport is None:
        proxy = _environment_proxy(base_url)
        transport = (
            AiohttpTransport(limits=limits)
            if proxy is None
            else httpx.AsyncHTTPTransport(limits=limits, proxy=proxy)
        )
    return HttpClient(
        base_url=base_url,
        timeout_s=timeout_s,
        headers={"user-agent": USER_AGENT, **headers},
        transport=transport,
    )


def _environment_proxy(base_url: str) -> str | None:
    """The proxy the environment asks requests to ``base_url`` to go through, as httpx would find it."""
    url = httpx.URL(base_url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(url.host):
        return None
    return proxy if "://" in proxy else "http://" + proxy


# --------------------------------------------------------------------------- requests


async def stream_events(
    client: HttpClient, path: str, body: Mapping[str, Any], upstream: Upstream
) -> AsyncGenerator[SSEEvent, None]:
    """POST ``body`` and yield the server-sent events of the answer.

    A non-2xx answer raises the matching :class:`ProviderError` before anything is yielded.
    A transport failure before the answer's headers is a connection error or timeout; one in
    the middle of the body is :class:`StreamBroken` (or a timeout when the upstream stalled).
    Close this generator (``contextlib.aclosing``) to release the connection early.
    """
    started = False
    try:
        response = await client.send("POST", path, body=body, headers=_ACCEPT_SSE)
        try:
            if response.status_code >= 300:
                await response.aread()
                raise status_error(upstream, response.status_code, response.text, response.headers)
            started = True
            async for event in sse_events(response.aiter_bytes()):
                yield event
        finally:
            await response.aclose()
    except httpx.RequestError as exc:
        raise transport_error(upstream, exc, mid_stream=started) from exc


async def answer_json(client: HttpClient, path: str, body: Mapping[str, Any], upstream: Upstream) -> dict[str, Any]:
    """POST ``body`` and decode the answer, asked for whole: one JSON object instead of a stream.

    ``upstream.timeout_s`` bounds the wait for data (read timeout) in place of the client's own:
    a whole answer's head arrives only once the upstream has generated all of it. A non-2xx
    answer raises the matching :class:`ProviderError`; an error document in a 2xx body is the
    upstream's error, typed as an ``error`` event in a stream would be. A transport failure
    before the answer's head is a connection error or timeout; one while its body arrives is
    :class:`StreamBroken` (or a timeout). A body that is not a JSON object is a
    :class:`ProviderError` that shows it.
    """
    started = False
    try:
        response = await client.send("POST", path, body=body, read_timeout_s=upstream.timeout_s)
        started = True
        try:
            if response.status_code >= 300:
                await response.aread()
                raise status_error(upstream, response.status_code, response.text, response.headers)
            content = await read_body(response)
        finally:
            await response.aclose()
    except httpx.RequestError as exc:
        raise transport_error(upstream, exc, mid_stream=started) from exc
    try:
        value = orjson.loads(content)
    except ValueError:  # orjson is strict (no NaN, 64-bit integers): the standard library decides
        try:
            value = json.loads(content)
        except ValueError:
            value = None
    if not isinstance(value, dict):
        raise _not_json(upstream, response.status_code, content.decode("utf-8", "replace"), "a JSON object")
    if (failure := error_in(value)) is not None:
        raise event_error(upstream, *failure, where="in its answer")
    return value


async def get_json(client: HttpClient, path: str, upstream: Upstream) -> Any:
    """GET ``path`` and decode its JSON body (``None`` for a body that is not JSON); errors as above."""
    response = await _read(client, "GET", path, None, upstream)
    if response.status_code >= 300:
        raise status_error(upstream, response.status_code, response.text, response.headers)
    try:
        return response.json()
    except ValueError:
        return None


async def post_json(client: HttpClient, path: str, body: Mapping[str, Any], upstream: Upstream) -> Any:
    """POST ``body`` and decode the JSON answer; a body that is not JSON is a :class:`ProviderError`."""
    response = await _read(client, "POST", path, body, upstream)
    if response.status_code >= 300:
        raise status_error(upstream, response.status_code, response.text, response.headers)
    try:
        return response.json()
    except ValueError:
        raise _not_json(upstream, response.status_code, response.text, "JSON") from None


def _not_json(upstream: Upstream, status: int, body: str, wanted: str) -> ProviderError:
    """The error for an answer whose body is not ``wanted`` (JSON, a JSON object), its start shown redacted."""
    return ProviderError(
        f"{upstream.base_url} answered HTTP {status} with a body that is not {wanted}: {_clip(upstream.redact(body))!r}",
        provider=upstream.provider,
        status=status,
        hint="Check that base_url points at an OpenAI-compatible API (usually ending in /v1).",
    )


async def _read(
    client: HttpClient, method: str, path: str, body: Mapping[str, Any] | None, upstream: Upstream
) -> httpx.Response:
    """Send a request and read its whole answer; a transport failure on the way is a ProviderError."""
    try:
        response = await client.send(method, path, body=body)
        try:
            await response.aread()
        finally:
            await response.aclose()
    except httpx.RequestError as exc:
        raise transport_error(upstream, exc, mid_stream=False) from exc
    return response


_ACCEPT_SSE = {"accept": "text/event-stream"}
_MAX_HEADER_SETS = 64


# --------------------------------------------------------------------------- server-sent events


async def lines(chunks: AsyncIterable[bytes]) -> AsyncGenerator[str, None]:
    """Split a byte stream into lines (``\\n``, ``\\r\\n`` or ``\\r``), each decoded as UTF-8 without its ending.

    Cheaper than ``httpx.Response.aiter_lines`` (which decodes text chunk by chunk, then splits):
    a line is decoded once it is whole, so a character split across chunks is never a problem. A
    chunk that ends in ``\\r`` holds that line back until the next chunk says whether ``\\n`` follows.
    """
    pending = b""
    async for chunk in chunks:
        if pending:
            chunk = pending + chunk
        parts = chunk.splitlines(keepends=True)
        pending = parts.pop() if parts and parts[-1][-1:] != b"\n" else b""
        for part in parts:
            yield part.rstrip(b"\r\n").decode("utf-8", "replace")
    if pending:
        yield pending.rstrip(b"\r\n").decode("utf-8", "replace")


async def parse_sse(lines: AsyncIterable[str]) -> AsyncGenerator[SSEEvent, None]:
    """Decode server-sent events (WHATWG rules) from a stream of lines.

    ``data:`` lines accumulate until a blank line dispatches the event; comments (``:``) and
    ``id:``/``retry:`` fields are ignored. An event still pending when the body ends is dispatched
    too, because some servers omit the final blank line; a body cut in the middle of a JSON
    document then fails to decode, which callers report as a broken stream.
    """
    decoder = _EventDecoder()
    async for raw in lines:
        event = decoder.line(raw.rstrip("\r\n"))
        if event is not None:
            yield event
    event = decoder.end()
    if event is not None:
        yield event


async def sse_events(chunks: AsyncIterable[bytes]) -> AsyncGenerator[SSEEvent, None]:
    """``parse_sse(lines(chunks))`` in one generator: the events of a byte stream.

    The same rules as :func:`lines` and :func:`parse_sse`, applied to every line of a chunk in one
    pass on bytes (only field values are decoded), so that a chunk holding many events (a fast
    upstream) costs one generator step per event rather than two per line.
    """
    name: str | None = None
    data: list[str] = []
    pending = b""
    ended = False
    chunk_iter = chunks.__aiter__()
    while not ended:
        try:
            chunk = await chunk_iter.__anext__()
        except StopAsyncIteration:
            if not pending:
                break
            chunk, pending, ended = pending + b"\n", b"", True  # the last line had no ending
        if pending:
            chunk = pending + chunk
        parts = chunk.splitlines(keepends=True)
        pending = parts.pop() if parts and parts[-1][-1:] != b"\n" else b""
        for part in parts:
            line = part.rstrip(b"\r\n")
            if not line:
                if data:
                    yield SSEEvent(name, "\n".join(data))
                name, data = None, []
            elif line[:1] != b":":
                key, _, value = line.partition(b":")
                if value[:1] == b" ":
                    value = value[1:]
                if key == b"data":
                    data.append(value.decode("utf-8", "replace"))
                elif key == b"event":
                    name = value.decode("utf-8", "replace")
    if data:
        yield SSEEvent(name, "\n".join(data))


class _EventDecoder:
    """The event-stream rules, one line (without its ending) at a time."""

    __slots__ = ("data", "name")

    def __init__(self) -> None:
        self.name: str | None = None
        self.data: list[str] = []

    def line(self, line: str) -> SSEEvent | None:
        """The event a blank line dispatches; ``None`` for every other line."""
        if not line:
            event = SSEEvent(self.name, "\n".join(self.data)) if self.data else None
            self.name, self.data = None, []
            return event
        if line.startswith(":"):
            return None
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "data":
            self.data.append(value)
        elif key == "event":
            self.name = value
        return None

    def end(self) -> SSEEvent | None:
        """The event still pending when the body ends (some servers omit the last blank line)."""
        return SSEEvent(self.name, "\n".join(self.data)) if self.data else None


def event_json(event: SSEEvent, upstream: Upstream) -> dict[str, Any]:
    """The JSON object an event carries; anything else means the stream is damaged."""
    try:
        value = orjson.loads(event.data)
    except ValueError:  # orjson is strict (no NaN, 64-bit integers): the standard library decides
        try:
            value = json.loads(event.data)
        except ValueError:
            value = None
    if not isinstance(value, dict):
        raise StreamBroken(
            f"{upstream.base_url} sent a malformed stream event: {_clip(upstream.redact(event.data))!r}",
            provider=upstream.provider,
            hint="The connection was probably cut mid-event; retry the request.",
        )
    return value


# --------------------------------------------------------------------------- error mapping


def status_error(upstream: Upstream, status: int, body: str, headers: Mapping[str, str]) -> ProviderError:
    """The typed error for an HTTP error answer, carrying the upstream's own message."""
    message, kind = error_detail(body)
    text = f"{upstream.base_url} answered HTTP {status}: {_clip(upstream.redact(message or body or 'no details'))}"
    common: dict[str, Any] = {"provider": upstream.provider, "status": status}
    if status in (400, 413, 422) and _is_context_length(message or body, kind):
        return ContextLengthExceeded(text, **common, hint=_CONTEXT_HINT)
    if status == 429:
        wait = retry_after(headers)
        return ProviderRateLimited(text, **common, retry_after=wait, hint=_rate_hint(wait, kind))
    if status in (401, 403):
        return ProviderAuthError(text, **common, hint=_auth_hint(upstream))
    if status == 404:
        return ProviderBadRequest(text, **common, hint=_NOT_FOUND_HINT)
    if status == 408:
        return ProviderTimeout(text, **common, hint=_timeout_hint(upstream))
    if 400 <= status < 500:
        return ProviderBadRequest(text, **common, hint=_BAD_REQUEST_HINT)
    if status >= 500:
        return ProviderUnavailable(text, **common, hint=_UNAVAILABLE_HINT)
    return ProviderError(text, **common, hint="Check that base_url points at the provider's API.")


def event_error(upstream: Upstream, message: str, kind: str | None, *, where: str = "mid-stream") -> ProviderError:
    """The typed error for an ``error`` event inside an accepted stream.

    ``kind`` is the upstream's error type or code (``overloaded_error``, ``rate_limit_error``,
    ``server_error``, or an HTTP status as vLLM sends it). An error reported after the upstream
    accepted the request is its own failure unless it says otherwise, so the default is
    :class:`ProviderUnavailable` (retryable).
    """
    text = (
        f"{upstream.base_url} reported an error {where}: {_clip(upstream.redact(message or 'no details'))}"
    )
    common: dict[str, Any] = {"provider": upstream.provider}
    key = (kind or "").lower()
    if _is_context_length(message, kind):
        return ContextLengthExceeded(text, **common, hint=_CONTEXT_HINT)
    if key.isdigit():
        return status_error(upstream, int(key), json.dumps({"error": {"message": message}}), {})
    if "rate_limit" in key:
        return ProviderRateLimited(text, **common, hint=_rate_hint(None, kind))
    if key in ("authentication_error", "permission_error", "invalid_api_key"):
        return ProviderAuthError(text, **common, hint=_auth_hint(upstream))
    if key in ("invalid_request_error", "not_found_error", "request_too_large", "badrequesterror"):
        return ProviderBadRequest(text, **common, hint=_BAD_REQUEST_HINT)
    if key in ("timeout_error", "timeout"):
        return ProviderTimeout(text, **common, hint=_timeout_hint(upstream))
    return ProviderUnavailable(text, **common, hint=_UNAVAILABLE_HINT)


def transport_error(upstream: Upstream, exc: httpx.RequestError, *, mid_stream: bool) -> ProviderError:
    """The typed error for an exception raised by httpx (no HTTP answer, or a cut one)."""
    detail = upstream.redact(str(exc) or type(exc).__name__)
    if isinstance(exc, httpx.TimeoutException):
        where = "in the middle of the answer" if mid_stream else "before answering"
        return ProviderTimeout(
            f"{upstream.base_url} stopped responding {where} (no data for {upstream.timeout_s:g}s): {detail}",
            provider=upstream.provider,
            hint=_timeout_hint(upstream),
        )
    if mid_stream:
        return StreamBroken(
            f"the connection to {upstream.base_url} broke in the middle of the answer: {detail}",
            provider=upstream.provider,
            hint="Retry the request; if it keeps happening, check the server's logs or a proxy's timeouts.",
        )
    return ProviderConnectionError(
        f"could not connect to {upstream.base_url}: {detail}",
        provider=upstream.provider,
        hint=f"Is the server at {upstream.base_url} running, and is base_url right?",
    )


def error_detail(body: str) -> tuple[str, str | None]:
    """The upstream's error message and its type/code, from any of the common error shapes.

    OpenAI ``{"error": {"message", "type", "code"}}``, Anthropic ``{"type": "error", "error": {...}}``,
    vLLM ``{"object": "error", "message", "code"}``, Ollama ``{"error": "text"}``, FastAPI ``{"detail"}``.
    A body that is not JSON is returned as the message.
    """
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip(), None
    return error_in(data) or (body.strip(), None)


def error_in(data: Any) -> tuple[str, str | None] | None:
    """``(message, kind)`` if the decoded JSON ``data`` is an error document, else ``None``."""
    if not isinstance(data, dict):
        return None
    inner = data.get("error")
    if isinstance(inner, str):
        return inner, None
    if isinstance(inner, dict):
        kind = inner.get("code") or inner.get("type")
        return str(inner.get("message") or inner), None if kind is None else str(kind)
    if data.get("object") == "error" or data.get("type") == "error":
        kind = data.get("code") or data.get("type")
        return str(data.get("message") or data), None if kind is None else str(kind)
    if "detail" in data and len(data) == 1:
        return str(data["detail"]), None
    return None


def retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait before retrying, as the upstream asked; ``None`` when it did not say.

    Reads ``retry-after-ms``, ``retry-after`` (seconds or an HTTP date), OpenAI-style
    ``x-ratelimit-reset-requests``/``-tokens`` durations (``"6m0s"``, ``"250ms"``) and Anthropic's
    ``anthropic-ratelimit-*-reset`` timestamps. Of several reset times the latest wins, because
    the request must wait for whichever limit it hit.
    """
    now = time.time() if now is None else now
    lower = {k.lower(): v for k, v in headers.items()}
    if (ms := _number(lower.get("retry-after-ms"))) is not None:
        return max(ms / 1000, 0.0)
    if (value := lower.get("retry-after")) is not None:
        seconds = _number(value)
        if seconds is None:
            seconds = _date_delay(value, now)
        if seconds is not None:
            return max(seconds, 0.0)
    waits: list[float] = []
    for key, value in lower.items():
        if key.startswith("x-ratelimit-reset"):
            wait = _duration(value)
            if wait is not None:
                waits.append(wait - now if wait > 1e9 else wait)  # some servers send an epoch time
        elif key.startswith("anthropic-ratelimit-") and key.endswith("-reset"):
            wait = _iso_delay(value, now)
            if wait is not None:
                waits.append(wait)
    return max(max(waits), 0.0) if waits else None


def listing_detail(listing: Any, model: str) -> str:
    """What a ``GET /models`` answer says about ``model`` (OpenAI and Anthropic share the shape)."""
    items = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(items, list):
        return "reachable (the model list was not returned)"
    ids = [str(item.get("id")) for item in items if isinstance(item, dict) and item.get("id")]
    if model in ids:
        return f"reachable; '{model}' is listed"
    shown = ", ".join(ids[:10]) + (", ..." if len(ids) > 10 else "")
    more = " (more pages exist)" if isinstance(listing, dict) and listing.get("has_more") else ""
    return f"reachable, but '{model}' is not among the {len(ids)} listed models{more}: {shown or 'none'}"


# --------------------------------------------------------------------------- helpers

_CONTEXT_HINT = "Shorten the conversation or the retrieved context, or lower max_tokens."
_NOT_FOUND_HINT = (
    "Check the model's upstream id and base_url (OpenAI-compatible servers serve their API under /v1)."
)
_BAD_REQUEST_HINT = "The upstream rejected the request as invalid; its message above says which part."
_UNAVAILABLE_HINT = "The upstream is failing or overloaded; retry later or configure a fallback model."


def _rate_hint(wait: float | None, kind: str | None) -> str:
    if kind == "insufficient_quota":
        return "The upstream account is out of quota: check its billing, or configure a fallback model."
    when = f"after {wait:g}s" if wait is not None else "later"
    return f"Retry {when}, lower the request rate, or configure a fallback model."


def _auth_hint(upstream: Upstream) -> str:
    if upstream.api_key_env:
        return (
            f"Set the environment variable {upstream.api_key_env} to a valid API key for {upstream.base_url}."
        )
    return (
        "No API key is configured for this model: set api_key_env in its [models] table "
        "to the environment variable that holds the key."
    )


def _timeout_hint(upstream: Upstream) -> str:
    return f"Raise {upstream.timeout_key} for this model (now {upstream.timeout_s:g}s) or check the server's load."


def _is_context_length(message: str, kind: str | None) -> bool:
    return kind == "context_length_exceeded" or bool(_CONTEXT_LENGTH.search(message or ""))


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE_CHARS else text[: _MAX_MESSAGE_CHARS - 1] + "…"


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def _duration(value: str) -> float | None:
    """Seconds in a plain number or a Go-style duration such as ``1m30.5s`` or ``250ms``."""
    plain = _number(value)
    if plain is not None:
        return plain
    match = _DURATION.match(value.strip())
    if match is None or not any(match.groupdict().values()):
        return None
    parts = {k: float(v) for k, v in match.groupdict().items() if v}
    return parts.get("h", 0) * 3600 + parts.get("m", 0) * 60 + parts.get("s", 0) + parts.get("ms", 0) / 1000


def _date_delay(value: str, now: float) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - now


def _iso_delay(value: str, now: float) -> float | None:
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.timestamp() - now
