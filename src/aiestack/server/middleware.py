"""Pure-ASGI middleware: the request body limit, and the direct dispatch of the hot routes.

Written against the raw ASGI interface rather than Starlette's ``BaseHTTPMiddleware``: that
class runs every request through an extra task and memory stream, which costs tens of
microseconds per request and breaks streaming back-pressure; this one adds a dictionary lookup.
:class:`FrontDoor` serves the hot routes ahead of the app's own middleware stack.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiestack.errors import AiestackError, InvalidRequest
from aiestack.server.responses import aiestack_error_response, error_response
from aiestack.tracing import Deferred, deferring, run_deferred

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024


class BodyTooLarge(InvalidRequest):
    http_status = 413
    code = "request_too_large"


def too_large(limit: int, size: int | None = None) -> BodyTooLarge:
    said = f"{size} bytes" if size is not None else f"more than {limit} bytes"
    return BodyTooLarge(
        f"The request body is {said}; this server accepts at most {limit} bytes.",
        hint="Send less (fewer or shorter messages), or raise the server's body limit.",
    )


class BodyLimit:
    """Refuses bodies over ``max_bytes`` with a 413 in the OpenAI error shape.

    A declared ``Content-Length`` over the limit is answered at once, before the body is read.
    A chunked body (no length) is counted as it arrives; past the limit, reading it raises
    :class:`BodyTooLarge`, which the app's error handler turns into the same 413.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None:
            if declared > self.max_bytes:
                err = too_large(self.max_bytes, declared)
                response = error_response(413, str(err), type_=err.error_type, code=err.code)
                await response(scope, receive, send)
                return
            await self.app(scope, receive, send)  # the server enforces the declared length
            return
        await self.app(scope, _counting(receive, self.max_bytes), send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _counting(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise too_large(limit)
        return message

    return counted


Handler = Callable[[Request], Awaitable[Response]]
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


class HotRoutes:
    """Dispatches the gateway's hot routes by one dictionary lookup, ahead of FastAPI's router.

    FastAPI's per-request machinery (exception middleware, the exit-stack middleware, matching
    every route's regex, dependency solving) costs about a third of a millisecond a request,
    which is most of what the gateway itself adds. The hot handlers read their own bodies and
    return finished responses, so they need none of it: this middleware calls them directly.
    The same handlers stay registered with FastAPI, which still describes them in the OpenAPI
    schema and serves every other route. A typed error becomes its OpenAI-shaped response here;
    anything else propagates to the server-error handler as it would from the router. A whole
    answer's trace record (span end, exchange record, metrics) is made after its response has
    been sent (:func:`aiestack.tracing.deferring`): the client does not wait for it.
    """

    def __init__(self, app: ASGIApp, *, routes: Mapping[tuple[str, str], Handler]) -> None:
        self.app = app
        self.routes = dict(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = (
            self.routes.get((scope.get("method", ""), scope.get("path", "")))
            if scope["type"] == "http"
            else None
        )
        if handler is None:
            await self.app(scope, receive, send)
            return
        later: Deferred = []  # a whole answer's trace record: made once the response has left
        try:
            try:
                with deferring(later):
                    response = await handler(Request(scope, receive))
            except AiestackError as exc:
                response = aiestack_error_response(exc)
            await response(scope, receive, send)
        finally:
            if later:
                await run_deferred(later)


class FrontDoor:
    """The hot routes served ahead of the app's own middleware stack, as that stack serves them.

    FastAPI runs every request through Starlette's server-error middleware, its own telemetry and
    body-limit middleware and then the app's (:class:`BodyLimit`, :class:`HotRoutes`): about 4% of
    the gateway's instructions a request with the guards and cache off, for layers that do nothing
    for a hot route while FastAPI's OpenTelemetry bridge is off (no global provider; the app asks
    :meth:`serves` only then). This does what the stack does for a hot route: the body limit, the
    dispatch (errors, deferred trace records), and an unexpected exception answered by the app's
    server-error handler ``on_error`` unless the response had started, then re-raised for the
    server to log, as Starlette's ``ServerErrorMiddleware`` does.
    """

    def __init__(
        self, routes: Mapping[tuple[str, str], Handler], *, max_bytes: int, on_error: ErrorHandler
    ) -> None:
        self._routes = dict(routes)
        self._app = BodyLimit(HotRoutes(_not_hot, routes=self._routes), max_bytes=max_bytes)
        self._on_error = on_error

    def serves(self, scope: Scope) -> bool:
        """Whether ``scope`` (an HTTP request) is for a hot route."""
        return (scope.get("method", ""), scope.get("path", "")) in self._routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self._app(scope, receive, sending)
        except Exception as exc:
            if not started:
                response = await self._on_error(Request(scope), exc)
                await response(scope, receive, send)
            raise


async def _not_hot(scope: Scope, receive: Receive, send: Send) -> None:
    raise RuntimeError(f"FrontDoor was handed {scope.get('method')} {scope.get('path')}, which is not a hot route")
