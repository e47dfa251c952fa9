"""``/v1/collections``: list the caller's collections and search one (BM25, vector or hybrid).

A key sees only its own tenant's collections (the admin key: all); a collection of another tenant
is a 404, like one that does not exist. Searching embeds the query with the stack's embedding model
(for ``vector`` and ``hybrid``) and calls no chat model.

Every answer carries ``x-aiestack-store``: a fingerprint of the store this server reads (see
:func:`store_fingerprint`), so ``aiestack search`` can tell whether a server running on this machine
serves the same deployment as its own configuration before it uses it instead of loading the
models itself (docs/rag.md, "Searching from the terminal").
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from aiestack.build import Stack
from aiestack.context.retrieval import Retriever, SearchOptions
from aiestack.errors import NotFound
from aiestack.gateway.keys import Principal
from aiestack.server.auth import principal
from aiestack.server.bodies import body_openapi, parse_body
from aiestack.server.responses import JSONBytesResponse
from aiestack.stores.documents import CollectionInfo

router = APIRouter(prefix="/v1/collections", tags=["collections"])

#: The response header naming the store a server reads.
STORE_HEADER = "x-aiestack-store"


class SearchRequest(BaseModel):
    """The body of ``POST /v1/collections/NAME/search``."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=20_000, description="What to search for, in words.")
    mode: Literal["bm25", "vector", "hybrid"] = Field(default="hybrid", description="bm25, vector or hybrid.")
    k: int = Field(default=5, ge=1, le=1000, description="How many hits.")
    filter: dict[str, Any] | None = Field(default=None, description="A metadata filter (the portable grammar, docs/rag.md).")


def _visible(who: Principal, info: CollectionInfo | None) -> bool:
    return info is not None and (who.is_admin or info.tenant == who.tenant)


def _headers(stack: Stack) -> dict[str, str]:
    return {STORE_HEADER: stack.settings.store_fingerprint}


@router.get("", response_model=None)
async def list_collections(request: Request) -> Response:
    """The caller's collections: name, tenant, documents, chunks and embedding model."""
    stack: Stack = request.app.state.stack
    who = await principal(stack, request)
    data = [
        {"name": c.name, "tenant": c.tenant, "documents": c.documents, "chunks": c.chunks,
         "embedding_model": c.embedding_model}
        for c in stack.documents.list_collections()
        if _visible(who, c)
    ]
    return JSONBytesResponse({"object": "list", "data": data}, headers=_headers(stack))


@router.post("/{name}/search", response_model=None, openapi_extra=body_openapi(SearchRequest))
async def search(name: str, request: Request) -> Response:
    """Ranked hits of one collection, with scores, sources and the retrieval's timings."""
    stack: Stack = request.app.state.stack
    who = await principal(stack, request)
    body = parse_body(SearchRequest, await request.body())
    if not _visible(who, stack.documents.get_collection(stack.documents.resolve(name))):  # its current version
        raise NotFound(
            f"The collection '{name}' does not exist for this key.",
            hint="GET /v1/collections lists the collections this key can search.",
        )
    retriever = Retriever(
        stack.documents, stack.embeddings if body.mode != "bm25" else None, models=stack.resources.embeddings_for
    )
    found = await retriever.search(name, body.query, SearchOptions(mode=body.mode, k=body.k, filter=body.filter))
    payload = {"object": "aiestack.search", "collection": name, "mode": body.mode, "hits": found.hits_json(),
               "timings": found.timings}
    return JSONBytesResponse(payload, headers=_headers(stack))
