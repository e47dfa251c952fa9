"""``/health``, ``/ready`` and ``/metrics``: what load balancers, orchestrators and Prometheus ask.

``/health`` says the process answers (liveness: restart me if not). ``/ready`` says it can serve
(readiness: send me traffic): the store answers a ping and at least one model is configured.
Neither calls a model: a readiness probe that spends tokens, or that fails when one upstream has
a bad minute, would take the whole gateway out of rotation for a problem fallbacks handle.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from aiestack.build import Stack
from aiestack.errors import AiestackError
from aiestack.server.responses import JSONBytesResponse

router = APIRouter(tags=["platform"])

#: How long /ready waits for the store before calling it unreachable.
STORE_PING_TIMEOUT_S = 5.0


@router.get("/health", response_model=None)
async def health() -> Response:
    """Alive: the process answers."""
    return JSONBytesResponse({"status": "ok"})


@router.get("/ready", response_model=None)
async def ready(request: Request) -> Response:
    """Ready: the store is reachable and at least one model is configured (503 otherwise, saying which)."""
    stack: Stack = request.app.state.stack
    checks: dict[str, Any] = {"models": len(stack.models)}
    problems: list[str] = []
    if not len(stack.models):
        problems.append("no model is configured (add one under [models] in aiestack.toml)")
    try:
        await asyncio.wait_for(asyncio.to_thread(stack.store.ping), timeout=STORE_PING_TIMEOUT_S)
        checks["store"] = "ok"
    except TimeoutError:
        checks["store"] = f"no answer within {STORE_PING_TIMEOUT_S:g} s"
        problems.append("the store does not answer")
    except AiestackError as exc:
        checks["store"] = str(exc)
        problems.append("the store is unreachable")
    body: dict[str, Any] = {"status": "not ready" if problems else "ready", "checks": checks}
    if problems:
        body["problems"] = problems
    return JSONBytesResponse(body, status_code=503 if problems else 200)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition of the stack's instruments."""
    stack: Stack = request.app.state.stack
    return Response(stack.metrics.render(), media_type=stack.metrics.content_type)
