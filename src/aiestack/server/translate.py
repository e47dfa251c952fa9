"""OpenAI wire shapes ↔ core types, for the server side (requests in, completions and chunks out)."""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Callable
from typing import Any

from aiestack.context.citations import citations_json
from aiestack.context.stage import RAG_COLLECTION
from aiestack.errors import InvalidRequest
from aiestack.server.responses import dumps
from aiestack.server.schemas import ChatCompletionRequest, CompletionRequest, MessageIn
from aiestack.types import (
    ChatRequest,
    Completion,
    ContentPart,
    Delta,
    Exchange,
    FinishReason,
    Message,
    Params,
    ResponseFormat,
    TokenLogprob,
    Tool,
    ToolCall,
    Usage,
)


def _stops(stop: str | list[str] | None) -> tuple[str, ...]:
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    if len(stops) > 4:
        raise InvalidRequest("At most 4 stop sequences are allowed.", hint="Pass up to 4 strings in 'stop'.")
    return stops


def _message(m: MessageIn) -> Message:
    role = "system" if m.role == "developer" else m.role
    content: str | tuple[ContentPart, ...]
    if m.content is None or isinstance(m.content, str):
        content = m.content or ""
    else:
        content = tuple(
            ContentPart(type="image_url", url=p.image_url.url if p.image_url else None)
            if p.type == "image_url"
            else ContentPart(type="text", text=p.text or "")
            for p in m.content
        )
    calls = tuple(
        ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments) for c in m.tool_calls or ()
    )
    return Message(role=role, content=content, name=m.name, tool_calls=calls, tool_call_id=m.tool_call_id)


def chat_request(body: ChatCompletionRequest) -> ChatRequest:
    fmt = None
    if body.response_format is not None and body.response_format.type != "text":
        js = body.response_format.json_schema
        if body.response_format.type == "json_schema" and (js is None or js.schema_ is None):
            raise InvalidRequest(
                "response_format of type json_schema needs json_schema.schema.",
                hint='Send {"type": "json_schema", "json_schema": {"name": "...", "schema": {...}}}.',
            )
        fmt = ResponseFormat(
            type=body.response_format.type,
            schema=js.schema_ if js else None,
            name=js.name if js else None,
            strict=bool(js.strict) if js else False,
        )
    params = Params(
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        stop=_stops(body.stop),
        seed=body.seed,
        logprobs=bool(body.logprobs),
        top_logprobs=body.top_logprobs,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        response_format=fmt,
        tools=tuple(
            Tool(
                name=t.function.name,
                description=t.function.description or "",
                parameters=t.function.parameters or {},
            )
            for t in body.tools or ()
        ),
        tool_choice=body.tool_choice,
    )
    return ChatRequest(
        model=body.model,
        messages=tuple(_message(m) for m in body.messages),
        params=params,
        stream=body.stream,
        user=body.user,
        metadata=body.metadata or {},
    )


def completion_request(body: CompletionRequest) -> ChatRequest:
    """A raw-prompt completion as a one-message request (the embedded model continues it verbatim)."""
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise InvalidRequest(
                "Only one prompt per request is supported.", hint="Send 'prompt' as a string."
            )
        prompt = body.prompt[0]
    else:
        prompt = body.prompt
    params = Params(
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        max_tokens=body.max_tokens,
        stop=_stops(body.stop),
        seed=body.seed,
        logprobs=body.logprobs is not None,
        top_logprobs=body.logprobs or None,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
    )
    return ChatRequest(
        model=body.model,
        messages=(Message("user", prompt),),
        params=params,
        stream=body.stream,
        user=body.user,
    )


def usage_json(u: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.total_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    }


def _logprob_json(lp: TokenLogprob) -> dict[str, Any]:
    return {
        "token": lp.token,
        "logprob": lp.logprob,
        "bytes": list(lp.token.encode("utf-8")),
        "top_logprobs": [{"token": t, "logprob": v, "bytes": list(t.encode("utf-8"))} for t, v in lp.top],
    }


def _tool_calls_json(calls: tuple[ToolCall, ...]) -> list[dict[str, Any]]:
    return [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in calls
    ]


def is_rag(ex: Exchange) -> bool:
    """Whether ``ex`` was answered from a collection (the Context stage ran retrieval for it)."""
    return RAG_COLLECTION in ex.attributes


def rag_citations(ex: Exchange, answer: str | None) -> list[dict[str, Any]] | None:
    """The ``citations`` of a RAG answer (its numbered sources, each marked ``cited``); ``None`` if not RAG."""
    if not is_rag(ex):
        return None
    return citations_json(ex.hits, answer)


def chat_completion_json(
    c: Completion,
    *,
    exchange_id: str,
    created: int | None = None,
    citations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": c.text if c.text or not c.message.tool_calls else None,
    }
    if c.message.tool_calls:
        message["tool_calls"] = _tool_calls_json(c.message.tool_calls)
    return {
        "id": chat_id(exchange_id),
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": c.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": {"content": [_logprob_json(lp) for lp in c.logprobs]} if c.logprobs else None,
                "finish_reason": c.finish_reason or "stop",
            }
        ],
        "usage": usage_json(c.usage),
        **({"citations": citations} if citations is not None else {}),
    }


def chat_id(exchange_id: str) -> str:
    return "chatcmpl-" + exchange_id.split("_", 1)[-1]


_CONTENT_MARK = "\u2063aiestack-content\u2063"  # never produced by a model: marks where content goes


def chat_text_chunk(*, exchange_id: str, model: str, created: int) -> Callable[[str], bytes] | None:
    """A fast renderer of text-only chunks: ``text -> JSON bytes`` equal to ``dumps(chat_chunk_json(...))``.

    A stream's chunks differ only in their text. The chunk is serialised once with a marker for
    its content, and each delta's text is then spliced in (its own JSON string): the bytes are
    those the full serialisation gives, without building and serialising the dicts per chunk.
    ``None`` if the marker cannot be found exactly once (the caller then builds every chunk).
    """
    whole = dumps(chat_chunk_json(exchange_id=exchange_id, model=model, created=created, delta=Delta(text=_CONTENT_MARK)))
    parts = whole.split(dumps(_CONTENT_MARK))
    if len(parts) != 2:
        return None
    head, tail = parts
    return lambda text: head + dumps(text) + tail


def chat_chunk_json(
    *,
    exchange_id: str,
    model: str,
    created: int,
    delta: Delta | None = None,
    role: bool = False,
    finish_reason: FinishReason | None = None,
    usage: Usage | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``. ``usage`` alone gives the final usage chunk (empty choices)."""
    chunk: dict[str, Any] = {
        "id": chat_id(exchange_id),
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
    }
    if usage is not None and delta is None and not role and finish_reason is None:
        chunk["choices"] = []
        chunk["usage"] = usage_json(usage)
        return chunk
    d: dict[str, Any] = {}
    if role:
        d["role"] = "assistant"
        d["content"] = ""
    if delta is not None:
        if delta.text:
            d["content"] = delta.text
        if delta.tool_calls:
            d["tool_calls"] = [
                {
                    "index": t.index,
                    **({"id": t.id, "type": "function"} if t.id else {}),
                    "function": {
                        k: v for k, v in (("name", t.name), ("arguments", t.arguments)) if v is not None
                    },
                }
                for t in delta.tool_calls
            ]
    choice: dict[str, Any] = {"index": 0, "delta": d, "finish_reason": finish_reason}
    if delta is not None and delta.logprobs:
        choice["logprobs"] = {"content": [_logprob_json(lp) for lp in delta.logprobs]}
    else:
        choice["logprobs"] = None
    chunk["choices"] = [choice]
    return chunk


def _text_logprobs_json(logprobs: tuple[TokenLogprob, ...], start: int) -> dict[str, Any] | None:
    """The legacy completions ``logprobs`` object; ``text_offset`` counts characters from ``start``."""
    if not logprobs:
        return None
    offsets, at = [], start
    for lp in logprobs:
        offsets.append(at)
        at += len(lp.token)
    return {
        "tokens": [lp.token for lp in logprobs],
        "token_logprobs": [lp.logprob for lp in logprobs],
        "top_logprobs": [dict(lp.top) for lp in logprobs],
        "text_offset": offsets,
    }


def completion_id(exchange_id: str) -> str:
    return "cmpl-" + exchange_id.split("_", 1)[-1]


def text_completion_json(c: Completion, *, exchange_id: str, prompt: str, echo: bool) -> dict[str, Any]:
    prefix = prompt if echo else ""
    return {
        "id": completion_id(exchange_id),
        "object": "text_completion",
        "created": int(time.time()),
        "model": c.model,
        "choices": [
            {
                "index": 0,
                "text": prefix + c.text,
                "logprobs": _text_logprobs_json(c.logprobs, len(prefix)),
                "finish_reason": c.finish_reason or "stop",
            }
        ],
        "usage": usage_json(c.usage),
    }


def text_chunk_json(
    *,
    exchange_id: str,
    model: str,
    created: int,
    delta: Delta | None = None,
    text: str = "",
    usage: Usage | None = None,
) -> dict[str, Any]:
    """One streamed ``text_completion`` event; ``usage`` alone gives the final usage event (no choices)."""
    chunk: dict[str, Any] = {
        "id": completion_id(exchange_id),
        "object": "text_completion",
        "created": created,
        "model": model,
    }
    if delta is None and usage is not None:
        chunk["choices"] = []
        chunk["usage"] = usage_json(usage)
        return chunk
    choice: dict[str, Any] = {
        "index": 0,
        "text": text or (delta.text if delta is not None else ""),
        "logprobs": _text_logprobs_json(delta.logprobs, 0) if delta is not None else None,
        "finish_reason": delta.finish_reason if delta is not None else None,
    }
    chunk["choices"] = [choice]
    return chunk


def embedding_json(vector: list[float], index: int, encoding: str) -> dict[str, Any]:
    """One ``embedding`` item; ``base64`` packs little-endian float32, as OpenAI's API does."""
    data: list[float] | str = vector
    if encoding == "base64":
        data = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return {"object": "embedding", "index": index, "embedding": data}
