"""``POST /v1/embeddings``: the stack's embedding model behind the OpenAI embeddings API.

The stack has one embedding model (``[embeddings]`` in the config); a request must name it, so
that a client asking for another model learns at once that it would get different vectors,
rather than silently mixing spaces. Inputs are strings: token arrays are refused with a clear
message, because the model's tokenizer is not OpenAI's and the ids would mean other words.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from aiestack.build import Stack
from aiestack.errors import AiestackError, ModelNotFound, ProviderUnavailable
from aiestack.models.base import EmbeddingModel
from aiestack.server import translate
from aiestack.server.auth import principal
from aiestack.server.bodies import InvalidBody, body_openapi, parse_body
from aiestack.server.responses import OVERHEAD_HEADER, JSONBytesResponse
from aiestack.server.schemas import EmbeddingRequest

router = APIRouter(prefix="/v1", tags=["openai"])

#: Inputs per request, as OpenAI allows.
MAX_INPUTS = 2048


@router.post("/embeddings", response_model=None, openapi_extra=body_openapi(EmbeddingRequest))
async def embeddings(request: Request) -> Response:
    """Vectors for one string or a list of strings, as floats or base64-packed float32."""
    started = time.perf_counter()
    stack: Stack = request.app.state.stack
    await principal(stack, request)
    body = parse_body(EmbeddingRequest, await request.body())
    model = _model(stack, body.model)
    texts = _texts(body.input)
    if body.dimensions is not None and body.dimensions != model.dim:
        raise InvalidBody(
            f"The model '{model.name}' makes {model.dim}-dimensional vectors; it cannot make "
            f"{body.dimensions}-dimensional ones.",
            param="dimensions",
            hint="Leave 'dimensions' out.",
        )
    embed_started = time.perf_counter()
    vectors = await model.embed(texts)
    embed_ms = (time.perf_counter() - embed_started) * 1000
    data = [translate.embedding_json(v, i, body.encoding_format) for i, v in enumerate(vectors)]
    tokens = _count_tokens(model, texts)
    payload: dict[str, Any] = {
        "object": "list",
        "data": data,
        "model": model.name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    overhead = max(0.0, (time.perf_counter() - started) * 1000 - embed_ms)
    return JSONBytesResponse(payload, headers={OVERHEAD_HEADER: f"{overhead:.3f}"})


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


def _texts(given: str | list[str] | list[int] | list[list[int]]) -> list[str]:
    texts: list[Any] = [given] if isinstance(given, str) else list(given)
    if not texts:
        raise InvalidBody("'input' is an empty list.", param="input", hint="Send at least one string.")
    if not all(isinstance(t, str) for t in texts):
        raise InvalidBody(
            "'input' holds token ids; this server embeds text only.",
            param="input",
            hint="Send the text itself: a string or a list of strings (its tokenizer is not OpenAI's).",
        )
    if len(texts) > MAX_INPUTS:
        raise InvalidBody(f"'input' has {len(texts)} items; at most {MAX_INPUTS} are allowed.", param="input")
    if any(not t for t in texts):
        raise InvalidBody("'input' contains an empty string.", param="input", hint="Remove empty inputs.")
    return texts


def _count_tokens(model: EmbeddingModel, texts: Sequence[str]) -> int:
    """Exact when the model offers ``count_tokens(texts)``; otherwise approximate: whitespace-separated words.

    The approximation undercounts subword tokens (MiniLM's WordPiece splits rare words); usage is
    informational here, since local embeddings cost nothing.
    """
    counter: Callable[[Sequence[str]], int] | None = getattr(model, "count_tokens", None)
    if callable(counter):
        return int(counter(texts))
    return sum(len(t.split()) for t in texts)
