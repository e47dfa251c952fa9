"""The FastAPI application: OpenAI-compatible routes, admin and platform routes, and the error shape.

The app holds one :class:`aiestack.build.Stack`, built in the lifespan and closed when the app
shuts down. Uvicorn's graceful shutdown (SIGTERM/SIGINT) first stops accepting connections and
lets in-flight requests, streams included, finish; only then does the lifespan end and
``Stack.aclose`` flush every trace and exchange to the store.

Every error leaves in the OpenAI shape with a 4xx/5xx that says who must act: malformed or
oversized bodies, unknown models and bad keys are 4xx with a message saying what to change;
a provider failing is 429/502/503/504; only a bug in aiestack is a 500.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from aiestack.build import Stack
from aiestack.errors import AiestackError
from aiestack.feedback.pending import settle_forever
from aiestack.server import (
    routes_admin,
    routes_agents,
    routes_collections,
    routes_embeddings,
    routes_feedback,
    routes_models,
    routes_openai,
    routes_platform,
)
from aiestack.server.bodies import invalid_body
from aiestack.server.console.routes import mount_console
from aiestack.server.middleware import DEFAULT_MAX_BODY_BYTES, BodyLimit, FrontDoor, Handler, HotRoutes
from aiestack.server.responses import aiestack_error_response, error_response
from aiestack.server.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    KeyCreateRequest,
)
from aiestack.stores.feedback import PendingFeedbackStore

_log = logging.getLogger(__name__)

#: Bodies the routes parse themselves; their schemas are added to the OpenAPI components.
_BODIES = (ChatCompletionRequest, CompletionRequest, EmbeddingRequest, KeyCreateRequest, routes_feedback.FeedbackRequest)
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


def _settle_pending_feedback(stack: Stack) -> asyncio.Task[None] | None:
    """Settle feedback sent before its exchange was stored, every store flush interval (none: no such store)."""
    if not isinstance(stack.store, PendingFeedbackStore):
        return None
    interval = max(stack.settings.store.flush_interval_s, 0.05)
    return asyncio.create_task(
        settle_forever(stack.store, interval_s=interval, count=stack.metrics.pending_feedback_outcome),
        name="aiestack-pending-feedback",
    )


def freeze_startup_heap() -> None:
    """Move every object alive after start-up out of the garbage collector's view (:func:`gc.freeze`).

    The default configuration holds the embedding models, tokenizers and their modules: a heap of
    millions of objects that live as long as the process. The collector's full pass walks all of
    them; in the default configuration that was ~0.5 s on the event loop every few hundred requests
    (about 1.2 ms a request on average at c = 1, and one request in hundreds stalled by half a
    second). Frozen, they are never walked again; what requests allocate is collected as before.
    Garbage made at start-up is collected first, so none of it is frozen."""
    gc.collect()
    gc.freeze()


class GatewayApp(FastAPI):
    """The FastAPI app, whose hot routes (:func:`_hot_routes`) are served by :attr:`front` ahead of its
    middleware stack while FastAPI's own OpenTelemetry bridge is off.

    FastAPI turns its bridge on when a global tracer, meter or logger provider is configured; its
    check reads three environment variables (~28k instructions, 2% of a request through the gateway
    with the guards and cache off), so it is asked at most once a :data:`TELEMETRY_RECHECK_S`, and
    once on, every request goes through the stack as before. A provider configured before the app
    serves (``opentelemetry-instrument``, FastAPI's auto-configuration at start-up) is seen from the
    first request; one configured while it serves, within that interval.

    The front door does only what :func:`create_app`'s own stack does, so it stands aside for good when
    the app it is about to serve was given more: middleware or an ``Exception`` handler added after
    :func:`create_app` (by a plugin or an embedding application) is honoured on every route.
    Starlette fixes both when it builds the stack on the first request, so that is when it is decided.
    """

    front: FrontDoor | None = None
    _front_setup: tuple[int, object] | None = None
    _telemetry_checked = -math.inf
    _telemetry_on = False

    def set_front(self, front: FrontDoor) -> None:
        """Serve the hot routes through ``front`` while the app keeps the middleware and the ``Exception``
        handler it has now."""
        self.front = front
        self._front_setup = (len(self.user_middleware), self.exception_handlers.get(Exception))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front = self.front
        if front is not None and self._front_setup is not None:
            if self._front_setup != (len(self.user_middleware), self.exception_handlers.get(Exception)):
                front = self.front = None  # given more than create_app gave it: the stack serves all
            self._front_setup = None
        if front is not None and scope["type"] == "http" and front.serves(scope) and not self._stack_needed():
            scope["app"] = self
            await front(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    def _stack_needed(self) -> bool:
        """Whether FastAPI's telemetry (or a root path) needs the stack: once true, for good."""
        if self._telemetry_on:
            return True
        now = time.monotonic()
        if now - self._telemetry_checked >= TELEMETRY_RECHECK_S:
            self._telemetry_checked = now
            self._telemetry_on = bool(self.root_path) or self._native_telemetry.enabled()
        return self._telemetry_on


#: How often :class:`GatewayApp` asks whether FastAPI's telemetry has been turned on since (seconds).
TELEMETRY_RECHECK_S = 1.0


def create_app(
    stack_factory: Callable[[], Stack],
    *,
    title: str = "aiestack",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    freeze_heap: bool = False,
) -> FastAPI:
    """Build the app; ``stack_factory`` is called once at start-up and its stack closed at shutdown.

    ``freeze_heap`` (the server process's setting, :func:`aiestack.server.main.app_factory`) hands
    what start-up built to :func:`freeze_startup_heap` once the stack is warm; an app embedded in
    another process (tests, a notebook) leaves that process's collector alone.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stack = stack_factory()
        app.state.stack = stack
        app.state.started = time.time()
        settler = _settle_pending_feedback(stack)
        try:
            await stack.warm()
            if freeze_heap:
                freeze_startup_heap()
            yield
        finally:
            if settler is not None:
                settler.cancel()
                await asyncio.gather(settler, return_exceptions=True)
            await stack.aclose()

    app = GatewayApp(title=title, version="0.1.0", lifespan=lifespan)
    # Added last, so outermost: the body limit applies to the hot routes too.
    app.add_middleware(HotRoutes, routes=_hot_routes())
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    _install_error_handlers(app)
    app.set_front(FrontDoor(_hot_routes(), max_bytes=max_body_bytes, on_error=_server_error))
    for module in (routes_openai, routes_embeddings, routes_models, routes_admin, routes_platform):
        app.include_router(module.router)
    mount_console(app)  # the web console at / (after the API, so /v1, /health, /metrics keep their routes)
    app.include_router(routes_feedback.router)
    app.include_router(routes_agents.router)
    app.include_router(routes_collections.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _hot_routes() -> dict[tuple[str, str], Handler]:
    """The gateway's hot path: dispatched directly (see :class:`HotRoutes`), still documented by FastAPI."""
    return {
        ("POST", "/v1/chat/completions"): routes_openai.chat_completions,
        ("POST", "/v1/completions"): routes_openai.completions,
        ("POST", "/v1/embeddings"): routes_embeddings.embeddings,
    }


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AiestackError)
    async def _aiestack_error(request: Request, exc: AiestackError) -> Response:
        return aiestack_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {**e, "loc": tuple(p for p in e.get("loc", ()) if p not in ("query", "path", "body"))}
            for e in exc.errors()
        ]
        return aiestack_error_response(invalid_body(errors))  # type: ignore[arg-type]

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = (
                f"There is no endpoint {request.method} {request.url.path}. The OpenAI API is under /v1."
            )
        elif exc.status_code == 405:
            message = f"{request.url.path} does not accept {request.method}."
        return error_response(
            exc.status_code,
            message,
            type_="invalid_request_error",
            code=_HTTP_CODES.get(exc.status_code),
            headers=exc.headers,
        )

    app.add_exception_handler(Exception, _server_error)


async def _server_error(request: Request, exc: Exception) -> Response:
    """An exception nothing else handled: a 500 that says it is a bug; the traceback goes to the log."""
    _log.exception("unhandled error in %s %s", request.method, request.url.path)
    return error_response(
        500,
        f"aiestack failed to handle this request ({type(exc).__name__}). This is a bug: the server log has the traceback.",
        type_="server_error",
        code="internal_error",
    )


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, plus the bodies that the routes validate themselves (referenced by name)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
    _, defs = models_json_schema(
        [(m, "validation") for m in _BODIES], ref_template="#/components/schemas/{model}"
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, body in defs.get("$defs", {}).items():
        components.setdefault(name, body)
    app.openapi_schema = schema
    return schema
