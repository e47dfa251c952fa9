"""``GET /v1/models`` and ``GET /v1/models/{model}``: what a request may name as its ``model``.

That is every configured model, every route (an application pipeline declared in config,
``owned_by: "aiestack-route"``) and the embedding model that ``/v1/embeddings`` serves
(``owned_by: "aiestack-embeddings"``), so a client's model picker shows all three. Names match
exactly, case included, as OpenAI's API does: ``Gemma-3-270m`` is not ``gemma-3-270m`` (the 404
names the known ones).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from aiestack.build import Stack
from aiestack.errors import ModelNotFound
from aiestack.server.auth import principal
from aiestack.server.responses import JSONBytesResponse

router = APIRouter(prefix="/v1", tags=["openai"])

ROUTE_OWNER = "aiestack-route"
EMBEDDINGS_OWNER = "aiestack-embeddings"


def _embedding_model_name(stack: Stack) -> str:
    """The name ``/v1/embeddings`` accepts, without loading the model to learn it."""
    resources = stack.resources
    return resources.embeddings.name if resources.embeddings_built else stack.settings.embeddings.model


def _listing(stack: Stack, created: int) -> list[dict[str, Any]]:
    data = [
        {"id": e.name, "object": "model", "created": created, "owned_by": e.provider.provider}
        for e in stack.models
    ]
    known = {e.name for e in stack.models}
    data.extend(
        {"id": name, "object": "model", "created": created, "owned_by": ROUTE_OWNER}
        for name in stack.routes.names
        if name not in known
    )
    known.update(stack.routes.names)
    embedding = _embedding_model_name(stack)
    if embedding not in known:
        data.append({"id": embedding, "object": "model", "created": created, "owned_by": EMBEDDINGS_OWNER})
    return data


@router.get("/models", response_model=None)
async def list_models(request: Request) -> Response:
    """Every model and route a request may name."""
    stack: Stack = request.app.state.stack
    await principal(stack, request)
    created = int(getattr(request.app.state, "started", time.time()))
    return JSONBytesResponse({"object": "list", "data": _listing(stack, created)})


@router.get("/models/{model:path}", response_model=None)
async def get_model(model: str, request: Request) -> Response:
    """One model or route; 404 ``model_not_found`` naming the known ones otherwise."""
    stack: Stack = request.app.state.stack
    await principal(stack, request)
    created = int(getattr(request.app.state, "started", time.time()))
    listing = _listing(stack, created)
    for entry in listing:
        if entry["id"] == model:
            return JSONBytesResponse(entry)
    names = ", ".join(e["id"] for e in listing) or "none"
    raise ModelNotFound(f"The model '{model}' does not exist.", hint=f"Known models and routes: {names}.")
