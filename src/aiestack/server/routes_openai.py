"""``POST /v1/chat/completions`` and ``POST /v1/completions``: the OpenAI-compatible generation routes.

Each request is authenticated, parsed, translated to a :class:`~aiestack.types.ChatRequest` and
sent through the stack's pipeline as one exchange whose id the server chooses, so that even an
error response can name it (``x-aiestack-exchange-id``). ``x-aiestack-overhead-ms`` is the time
spent in aiestack before the response started, minus the time spent waiting on the provider: for
a full answer the provider's total, for a stream the wait for its first delta.

These handlers are the gateway's hot path; they read the body themselves (see
:mod:`aiestack.server.bodies`) and render with orjson.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from aiestack.build import Stack
from aiestack.cache.stage import CACHE_HEADER
from aiestack.cache.stage import header_value as cache_header_value
from aiestack.errors import AiestackError
from aiestack.feedback.signals import CLIENT_ATTR
from aiestack.guardrails import header_value
from aiestack.server import sse, translate
from aiestack.server.auth import principal
from aiestack.server.bodies import body_openapi, check_text_sizes, parse_body
from aiestack.server.responses import (
    EXCHANGE_ID_HEADER,
    GUARD_HEADER,
    OVERHEAD_HEADER,
    JSONBytesResponse,
    aiestack_error_response,
)
from aiestack.server.schemas import ChatCompletionRequest, CompletionRequest
from aiestack.types import ChatRequest, Completion, Delta, Exchange, Usage, new_id

router = APIRouter(prefix="/v1", tags=["openai"])


def _headers(ex: Exchange, completion: Completion, started: float) -> dict[str, str]:
    provider_ms = (
        completion.timing.total_ms if completion.stream is None else completion.timing.ttft_ms
    ) or 0.0
    overhead = max(0.0, (time.perf_counter() - started) * 1000 - provider_ms)
    return {EXCHANGE_ID_HEADER: ex.id, OVERHEAD_HEADER: f"{overhead:.3f}", **_guard_header(ex), **_cache_header(ex)}


def _cache_header(ex: Exchange) -> dict[str, str]:
    """``x-aiestack-cache: hit|semantic-hit|miss|bypass`` when a cache stage ran."""
    value = cache_header_value(ex)
    return {CACHE_HEADER: value} if value is not None else {}


def _guard_header(ex: Exchange) -> dict[str, str]:
    """``x-aiestack-guard: pii:redact,injection:pass,...`` from the exchange's verdicts (none: no header)."""
    return {GUARD_HEADER: header_value(ex.verdicts)} if ex.verdicts else {}


def _client(request: Request) -> dict[str, str]:
    """Who is calling, as an opaque hash of the address: implicit feedback never mixes two callers."""
    host = request.client.host if request.client is not None else ""
    return {CLIENT_ATTR: hashlib.sha256(f"client\x00{host}".encode()).hexdigest()[:16]}


async def _run(stack: Stack, request: Request, chat: Callable[[], ChatRequest]) -> Exchange | Response:
    """Authenticate, then send the request through the pipeline; a typed error becomes its response."""
    who = await principal(stack, request)
    exchange_id = new_id()
    try:
        ex = await stack.chat(
            chat(), id=exchange_id, key_id=who.key_id, tenant=who.tenant, attributes=_client(request)
        )
    except AiestackError as exc:
        return aiestack_error_response(exc, {EXCHANGE_ID_HEADER: exchange_id})
    if ex.completion is None:  # a stage ended the request without an answer or an error
        error = ex.error or AiestackError("The pipeline ended without an answer.", hint="Check its stages.")
        return aiestack_error_response(error, {EXCHANGE_ID_HEADER: exchange_id, **_guard_header(ex)})
    return ex


def _streaming(body: AsyncIterator[bytes], headers: dict[str, str]) -> sse.EventStreamResponse:
    return sse.EventStreamResponse(body, media_type="text/event-stream", headers={**sse.SSE_HEADERS, **headers})


@router.post("/chat/completions", response_model=None, openapi_extra=body_openapi(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    """Chat completion, streamed (``stream: true``) or whole, in the OpenAI wire format."""
    started = time.perf_counter()
    stack: Stack = request.app.state.stack
    raw = await request.body()
    body = parse_body(ChatCompletionRequest, raw)
    check_text_sizes(body, stack.settings.gateway.max_text_chars, raw_bytes=len(raw))
    if body.model.startswith("agent:"):  # an [agents.NAME] answering like a model
        from aiestack.server.routes_agents import chat_as_agent

        return await chat_as_agent(stack, request, body)
    outcome = await _run(stack, request, lambda: translate.chat_request(body))
    if isinstance(outcome, Response):
        return outcome
    ex, completion = outcome, outcome.completion
    assert completion is not None  # _run answers for an exchange without one
    headers = _headers(ex, completion, started)
    if completion.stream is None:
        citations = translate.rag_citations(ex, completion.text)
        return JSONBytesResponse(
            translate.chat_completion_json(completion, exchange_id=ex.id, citations=citations), headers=headers
        )

    created, model = int(time.time()), completion.model
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    usage: list[Usage] = []
    rag = translate.is_rag(ex)
    answer: list[str] = []  # a RAG answer's text, to mark the citations it uses on the final chunk

    text_chunk = translate.chat_text_chunk(exchange_id=ex.id, model=model, created=created)

    def render(d: Delta) -> dict[str, Any] | bytes | None:
        if d.usage is not None:
            usage.append(d.usage)
        if rag and d.text:
            answer.append(d.text)
        if not (d.tool_calls or d.logprobs or d.finish_reason):
            if not d.text:
                return None
            if text_chunk is not None:  # the common chunk, spliced rather than built
                return text_chunk(d.text)
        chunk = translate.chat_chunk_json(
            exchange_id=ex.id, model=model, created=created, delta=d, finish_reason=d.finish_reason
        )
        if rag and d.finish_reason is not None:
            chunk["citations"] = translate.rag_citations(ex, "".join(answer))
        return chunk

    def last() -> dict[str, Any] | None:
        if not include_usage:
            return None
        return translate.chat_chunk_json(
            exchange_id=ex.id, model=model, created=created, usage=usage[-1] if usage else Usage()
        )

    first = translate.chat_chunk_json(exchange_id=ex.id, model=model, created=created, role=True)
    return _streaming(
        sse.events(completion.stream, render, exchange_id=ex.id, first=first, last=last), headers
    )


@router.post("/completions", response_model=None, openapi_extra=body_openapi(CompletionRequest))
async def completions(request: Request) -> Response:
    """Legacy text completion: the prompt is sent as one user message (the embedded model continues it)."""
    started = time.perf_counter()
    stack: Stack = request.app.state.stack
    raw = await request.body()
    body = parse_body(CompletionRequest, raw)
    check_text_sizes(body, stack.settings.gateway.max_text_chars, raw_bytes=len(raw))
    outcome = await _run(stack, request, lambda: translate.completion_request(body))
    if isinstance(outcome, Response):
        return outcome
    ex, completion = outcome, outcome.completion
    assert completion is not None
    headers = _headers(ex, completion, started)
    if completion.stream is None:
        prompt = ex.request.messages[0].text
        return JSONBytesResponse(
            translate.text_completion_json(completion, exchange_id=ex.id, prompt=prompt, echo=body.echo),
            headers=headers,
        )

    created, model = int(time.time()), completion.model
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    usage: list[Usage] = []

    def render(d: Delta) -> dict[str, Any] | None:
        if d.usage is not None:
            usage.append(d.usage)
        if not (d.text or d.logprobs or d.finish_reason):
            return None
        return translate.text_chunk_json(exchange_id=ex.id, model=model, created=created, delta=d)

    def last() -> dict[str, Any] | None:
        if not include_usage:
            return None
        return translate.text_chunk_json(
            exchange_id=ex.id, model=model, created=created, usage=usage[-1] if usage else Usage()
        )

    first = None
    if body.echo:
        prompt = ex.request.messages[0].text
        first = translate.text_chunk_json(exchange_id=ex.id, model=model, created=created, text=prompt)
    return _streaming(
        sse.events(completion.stream, render, exchange_id=ex.id, first=first, last=last), headers
    )
