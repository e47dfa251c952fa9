"""``POST /v1/embeddings``: the stack's embedding model behind the OpenAI embeddings API.

The stack has one embedding model (``[embeddings]`` in the config); a request must name it, so
that a client asking for another model learns at once that it would get different vectors,
rather than silently mixing spaces. Inputs are strings: token arrays are refused with a clear
message, because the model's tokenizer is not OpenAI's and the ids would mean other words.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from aiestack.build import Stack
from aiestack.errors import AiestackError, ModelNotFound, ProviderUnavailable
from aiestack.gateway.embeddings import MeteredEmbeddings
from aiestack.models.base import EmbeddingModel
from aiestack.offload import run_cpu
from aiestack.server import translate
from aiestack.server.auth import principal
from aiestack.server.bodies import InvalidBody, body_openapi, check_text_sizes, parse_body
from aiestack.server.responses import (
    EXCHANGE_ID_HEADER,
    OVERHEAD_HEADER,
    JSONBytesResponse,
    aiestack_error_response,
)
from aiestack.server.schemas import EmbeddingRequest
from aiestack.types import new_id

router = APIRouter(prefix="/v1", tags=["openai"])

@router.post("/embeddings", response_model=None, openapi_extra=body_openapi(EmbeddingRequest))
async def embeddings(request: Request) -> Response:
    """Vectors for one string or a list of strings, as floats or base64-packed float32."""
    started = time.perf_counter()
    stack: Stack = request.app.state.stack
    who = await principal(stack, request)
    raw = await request.body()
    body = parse_body(EmbeddingRequest, raw)
    gateway = stack.settings.gateway
    check_text_sizes(body, gateway.max_text_chars, raw_bytes=len(raw))
    texts = _texts(body.input, gateway.max_embedding_inputs, gateway.max_embedding_chars)
    model = _model(stack, body.model)
    if body.dimensions is not None and body.dimensions != model.dim:
        raise InvalidBody(
            f"The model '{model.name}' makes {model.dim}-dimensional vectors; it cannot make "
            f"{body.dimensions}-dimensional ones.",
            param="dimensions",
            hint="Leave 'dimensions' out.",
        )
    metered = MeteredEmbeddings(stack.tracing, stack.prices, stack.limits, local=stack.settings.embeddings.provider != "openai")
    exchange_id = new_id()
    embed_started = time.perf_counter()
    try:
        vectors, tokens = await metered.embed(model, texts, exchange_id=exchange_id, key_id=who.key_id, tenant=who.tenant)
    except AiestackError as exc:
        return aiestack_error_response(exc, {EXCHANGE_ID_HEADER: exchange_id})
    embed_ms = (time.perf_counter() - embed_started) * 1000
    data = await run_cpu(len(vectors) * model.dim * 8, lambda: [translate.embedding_json(v, i, body.encoding_format) for i, v in enumerate(vectors)])
    payload: dict[str, Any] = {
        "object": "list",
        "data": data,
        "model": model.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    overhead = max(0.0, (time.perf_counter() - started) * 1000 - embed_ms)
    return JSONBytesResponse(payload, headers={OVERHEAD_HEADER: f"{overhead:.3f}", EXCHANGE_ID_HEADER: exchange_id})


def _model(stack: Stack, name: str) -> EmbeddingModel:
    try:
        model = stack.embeddings
    except AiestackError:
        raise
    except Exception as exc:  # the model is built on first use; a missing extra fails here
        raise ProviderUnavailable(
            f"The embedding model could not be loaded: {exc}",
            provider="embeddings",
            hint="Install the local extra (pip install 'aiestack[local]') or set [embeddings] provider = 'openai'.",
        ) from exc
    if name != model.name:
        raise ModelNotFound(
            f"The embedding model '{name}' does not exist.",
            hint=f"This server embeds with '{model.name}'; name it as 'model' (configure others under [embeddings]).",
        )
    return model


def _texts(given: str | list[str] | list[int] | list[list[int]], max_inputs: int, max_chars: int) -> list[str]:
    texts: list[Any] = [given] if isinstance(given, str) else list(given)
    if not texts:
        raise InvalidBody("'input' is an empty list.", param="input", hint="Send at least one string.")
    if not all(isinstance(t, str) for t in texts):
        raise InvalidBody(
            "'input' holds token ids; this server embeds text only.",
            param="input",
            hint="Send the text itself: a string or a list of strings (its tokenizer is not OpenAI's).",
        )
    if len(texts) > max_inputs:
        raise InvalidBody(
            f"'input' has {len(texts)} items; at most {max_inputs} are allowed.",
            param="input",
            hint="Split the inputs over several requests, or raise [gateway] max_embedding_inputs.",
        )
    if any(not t for t in texts):
        raise InvalidBody("'input' contains an empty string.", param="input", hint="Remove empty inputs.")
    total = sum(map(len, texts))
    if total > max_chars:
        raise InvalidBody(
            f"'input' holds {total:,} characters; at most {max_chars:,} are allowed in one request.",
            param="input",
            hint="Split the inputs over several requests, or raise [gateway] max_embedding_chars.",
        )
    return texts
