"""Translation between aiestack's chat types and the OpenAI chat-completions wire format.

Pure functions (and one small per-stream parser) with no I/O, so every mapping is testable on
its own. The same format is spoken by OpenAI, vLLM, Ollama, llama.cpp server, TGI and many
hosted services, which differ only in what they tolerate. Decisions:

- A streamed request asks for ``stream_options.include_usage`` so the usage arrives in a final
  chunk. A request for a whole answer (``stream=False`` in :func:`chat_body`) leaves out both
  ``stream`` keys, and :func:`answer_delta` reads the one JSON object that comes back.
- ``top_k`` is not an OpenAI parameter and api.openai.com rejects it, while vLLM and llama.cpp
  server honour it. It is sent only when the model's config says ``send_top_k = true``.
- ``max_tokens`` is sent under the name the config picks: ``max_tokens`` (understood everywhere)
  or ``max_completion_tokens`` (required by OpenAI's reasoning models).
- A ``response_format`` of type ``text`` is the default and is left out (some servers reject it).
- ``tool_choice`` may be ``"auto"``, ``"none"``, ``"required"``, a function name (shorthand for
  forcing that function) or an OpenAI-shaped mapping, passed as given.
- Fields a server adds beyond the format (``reasoning_content``, llama.cpp ``timings``) are ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aiestack.errors import InvalidRequest
from aiestack.types import (
    ChatRequest,
    ContentPart,
    Delta,
    FinishReason,
    Message,
    Params,
    ResponseFormat,
    Timing,
    TokenLogprob,
    Tool,
    ToolCallDelta,
    Usage,
)

MaxTokensField = Literal["max_tokens", "max_completion_tokens"]

_FINISH: Mapping[str, FinishReason] = {
    "stop": "stop",
    "eos": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "max_tokens": "length",
    "model_length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
    "error": "error",
    "abort": "error",
}
_TOOL_CHOICE_WORDS = ("auto", "none", "required")


@dataclass(frozen=True, slots=True)
class WireOptions:
    """Per-model choices about what the upstream understands (see the module docstring)."""

    max_tokens_field: MaxTokensField = "max_tokens"
    send_top_k: bool = False


# --------------------------------------------------------------------------- request


def chat_body(request: ChatRequest, options: WireOptions | None = None, *, stream: bool = True) -> dict[str, Any]:
    """The JSON body of a ``POST /chat/completions`` for ``request``: streamed, or for a whole answer."""
    options = options or WireOptions()
    body: dict[str, Any] = {"model": request.model, "messages": [message_json(m) for m in request.messages]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    body.update(params_json(request.params, options))
    if request.user:
        body["user"] = request.user
    return body


def message_json(message: Message) -> dict[str, Any]:
    """One message in the OpenAI shape (multi-part content, assistant tool calls, tool results)."""
    out: dict[str, Any] = {"role": message.role}
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id or ""
        out["content"] = message.text
        return out
    if message.tool_calls:
        out["content"] = message.text or None
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments or "{}"}}
            for c in message.tool_calls
        ]
    else:
        out["content"] = _content_json(message.content)
    if message.name:
        out["name"] = message.name
    return out


def _content_json(content: str | tuple[ContentPart, ...]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content:
        if part.type == "text":
            parts.append({"type": "text", "text": part.text or ""})
        else:
            parts.append({"type": "image_url", "image_url": {"url": part.url or ""}})
    return parts


def params_json(params: Params, options: WireOptions) -> dict[str, Any]:
    """The sampling, decoding, tool and format parameters that are set (``None`` = upstream default)."""
    out: dict[str, Any] = {}
    scalars = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        options.max_tokens_field: params.max_tokens,
        "seed": params.seed,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
    }
    out.update({k: v for k, v in scalars.items() if v is not None})
    if options.send_top_k and params.top_k is not None:
        out["top_k"] = params.top_k
    if params.stop:
        out["stop"] = list(params.stop)
    if params.logprobs:
        out["logprobs"] = True
        if params.top_logprobs is not None:
            out["top_logprobs"] = params.top_logprobs
    if params.response_format is not None and params.response_format.type != "text":
        out["response_format"] = response_format_json(params.response_format)
    if params.tools:
        out["tools"] = [tool_json(t) for t in params.tools]
    if params.tool_choice is not None:
        out["tool_choice"] = tool_choice_json(params.tool_choice)
    return out


def response_format_json(fmt: ResponseFormat) -> dict[str, Any]:
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    if fmt.schema is None:
        raise InvalidRequest(
            "response_format of type json_schema was given without a schema.",
            hint="Pass the JSON schema, or use the type json_object for free-form JSON.",
        )
    spec: dict[str, Any] = {"name": fmt.name or "response", "schema": dict(fmt.schema)}
    if fmt.strict:
        spec["strict"] = True
    return {"type": "json_schema", "json_schema": spec}


def tool_json(tool: Tool) -> dict[str, Any]:
    """A function tool; an empty ``parameters`` is left out (the API reads that as no arguments)."""
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    if tool.parameters:
        function["parameters"] = dict(tool.parameters)
    return {"type": "function", "function": function}


def tool_choice_json(choice: str | Mapping[str, Any]) -> str | dict[str, Any]:
    if not isinstance(choice, str):
        return dict(choice)
    if choice in _TOOL_CHOICE_WORDS:
        return choice
    return {"type": "function", "function": {"name": choice}}


# --------------------------------------------------------------------------- response


def finish_reason(value: str | None) -> FinishReason | None:
    """The aiestack finish reason for an upstream one; an unknown reason is still a finish."""
    if value is None:
        return None
    return _FINISH.get(value, "stop")


def usage_from(data: Mapping[str, Any]) -> Usage:
    details = data.get("prompt_tokens_details") or {}
    return Usage(
        input_tokens=int(data.get("prompt_tokens") or 0),
        output_tokens=int(data.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
    )


def logprobs_from(data: Mapping[str, Any] | None) -> tuple[TokenLogprob, ...]:
    if not data:
        return ()
    return tuple(
        TokenLogprob(
            token=str(item.get("token", "")),
            logprob=float(item.get("logprob", 0.0)),
            top=tuple(
                (str(t.get("token", "")), float(t.get("logprob", 0.0)))
                for t in item.get("top_logprobs") or ()
            ),
        )
        for item in data.get("content") or ()
    )


def answer_delta(answer: Mapping[str, Any], timing: Timing) -> Delta | None:
    """A whole ``chat.completion`` object as the one delta that carries it all (``None`` without a choice).

    The first choice is the answer, as in a stream; tool calls are numbered by their position. A
    missing usage is zero usage (as in a stream). The body was read to its end, so a missing finish
    reason cannot mean a cut answer as it does in a stream: it reads as ``stop``.
    """
    choices = answer.get("choices") or ()
    choice = next((c for c in choices if isinstance(c, Mapping) and c.get("index", 0) == 0), None)
    if choice is None:
        return None
    usage = answer.get("usage")
    message = choice.get("message") or {}
    calls = message.get("tool_calls")
    logprobs = choice.get("logprobs")
    return Delta(
        text=message.get("content") or "",
        tool_calls=tuple(
            ToolCallDelta(
                index=i,
                id=raw.get("id") or None,
                name=(raw.get("function") or {}).get("name") or None,
                arguments=_arguments((raw.get("function") or {}).get("arguments")),
            )
            for i, raw in enumerate(calls)
        )
        if calls
        else (),
        logprobs=logprobs_from(logprobs) if logprobs else (),
        finish_reason=finish_reason(choice.get("finish_reason")) or "stop",
        usage=usage_from(usage) if isinstance(usage, Mapping) else Usage(),
        timing=timing,
    )


class ChunkParser:
    """Turns the chunks of one stream into deltas and remembers how the stream finished.

    Its only state is what spans chunks: the finish reason and usage (which arrive in different
    chunks: usage comes last, with an empty ``choices``), and tool-call positions for servers that
    leave out a tool call's ``index`` (each new ``id`` then starts the next position).
    """

    def __init__(self) -> None:
        self.finish_reason: FinishReason | None = None
        self.usage: Usage | None = None
        self._tool_ids: dict[str, int] = {}
        self._last_tool = -1

    def feed(self, chunk: Mapping[str, Any]) -> Delta:
        """The content of ``chunk`` (text, tool-call fragments, logprobs) as a delta."""
        # Called once per streamed chunk: the common shapes are tested first, without generators.
        usage = chunk.get("usage")
        if usage is not None and isinstance(usage, Mapping):
            self.usage = usage_from(usage)
        choices = chunk.get("choices")
        if not choices:
            return Delta()
        choice = choices[0]
        if choice.get("index", 0) != 0:
            choice = next((c for c in choices if c.get("index", 0) == 0), None)
            if choice is None:
                return Delta()
        reason = choice.get("finish_reason")
        if reason is not None:
            self.finish_reason = finish_reason(reason)
        delta = choice.get("delta") or {}
        calls = delta.get("tool_calls")
        logprobs = choice.get("logprobs")
        return Delta(
            text=delta.get("content") or "",
            tool_calls=tuple(self._tool_call(raw) for raw in calls) if calls else (),
            logprobs=logprobs_from(logprobs) if logprobs else (),
        )

    def _tool_call(self, raw: Mapping[str, Any]) -> ToolCallDelta:
        function = raw.get("function") or {}
        call_id = raw.get("id") or None
        index = raw.get("index")
        if index is None:
            if call_id is not None and call_id not in self._tool_ids:
                self._tool_ids[call_id] = self._last_tool + 1
            index = self._tool_ids[call_id] if call_id is not None else max(self._last_tool, 0)
        self._last_tool = max(self._last_tool, int(index))
        return ToolCallDelta(
            index=int(index),
            id=call_id,
            name=function.get("name") or None,
            arguments=_arguments(function.get("arguments")),
        )


def _arguments(value: Any) -> str:
    """Tool-call arguments as a JSON text; a few servers send them as an object."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)
