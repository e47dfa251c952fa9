"""Translation between aiestack's chat types (the OpenAI shape) and Anthropic's Messages API.

Pure functions and one per-stream parser, no I/O. The two APIs differ in ways that need care:

- System messages, wherever they appear, become the top-level ``system`` (joined by a blank line).
- Assistant tool calls become ``tool_use`` blocks; ``tool`` messages become ``tool_result`` blocks
  inside a *user* turn. Consecutive turns of one role are merged into one, as the API asks for
  the results of one assistant turn's tool calls in a single user turn.
- ``max_tokens`` is required: the configured default fills in when the request leaves it out.
- ``top_k`` and ``stop_sequences`` are native. ``seed``, ``logprobs`` and the presence/frequency
  penalties have no equivalent and are left out.
- ``response_format`` (``json_object``/``json_schema``) has no equivalent either, so it is done
  the way Anthropic documents for JSON output: a tool whose input schema is the wanted schema,
  which the model is made to call. The parser turns that tool's input back into answer text and
  its ``tool_use`` stop into ``stop``, so callers see an ordinary JSON answer.
- Usage: Anthropic's ``input_tokens`` excludes prompt-cache reads and writes; aiestack's
  ``input_tokens`` counts every prompt token (as OpenAI's does), with cache reads as ``cached_tokens``
  and cache writes as ``cache_write_tokens``.
- Prompt caching: a request with ``prompt_cache`` set (a route with ``prompt_cache = true``) gets
  ``cache_control`` breakpoints, in the order Anthropic caches a prompt (tools, system, messages): on
  the last tool, on the system prompt, and on the last block before the final user turn (the chat
  history). Three of the four breakpoints the API allows; a prefix shorter than the model's minimum
  (1,024 tokens for most) is simply not cached.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiestack.errors import InvalidRequest
from aiestack.types import (
    ChatRequest,
    ContentPart,
    Delta,
    FinishReason,
    Message,
    Params,
    ResponseFormat,
    Tool,
    ToolCallDelta,
    Usage,
)

RESPONSE_TOOL = "json_response"

_STOP: Mapping[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


# --------------------------------------------------------------------------- request


def messages_body(request: ChatRequest, *, max_tokens_default: int) -> dict[str, Any]:
    """The JSON body of a streaming ``POST /v1/messages`` for ``request``."""
    params = request.params
    body: dict[str, Any] = {
        "model": request.model,
        "max_tokens": params.max_tokens if params.max_tokens is not None else max_tokens_default,
        "messages": turns_json(request.messages),
        "stream": True,
    }
    system = "\n\n".join(m.text for m in request.messages if m.role == "system" and m.text)
    if system:
        body["system"] = system
    scalars = {"temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k}
    body.update({k: v for k, v in scalars.items() if v is not None})
    if params.stop:
        body["stop_sequences"] = list(params.stop)
    body.update(tools_json(params))
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if request.prompt_cache:
        mark_cache_breakpoints(body, [m.text for m in request.messages if m.role == "system" and m.text])
    return body


_EPHEMERAL = {"type": "ephemeral"}


def mark_cache_breakpoints(body: dict[str, Any], systems: list[str]) -> None:
    """Add ``cache_control`` to the last tool, the system prompt and the turn before the last user turn.

    The system prompt becomes one text block per system message, the breakpoint on the last one
    that is not a per-request canary line (which would make the cached prefix new every time).
    """
    from aiestack.guardrails.canary import is_canary_line  # loaded already where guards run

    if body.get("tools"):
        body["tools"][-1] = {**body["tools"][-1], "cache_control": _EPHEMERAL}
    if systems:
        blocks: list[dict[str, Any]] = [{"type": "text", "text": text} for text in systems]
        stable = [i for i, text in enumerate(systems) if not is_canary_line(text)]
        if stable:
            blocks[stable[-1]]["cache_control"] = _EPHEMERAL
        body["system"] = blocks
    turns = body["messages"]
    last_user = next((i for i in range(len(turns) - 1, -1, -1) if turns[i]["role"] == "user"), None)
    if last_user is not None and last_user > 0 and turns[last_user - 1]["content"]:
        blocks = turns[last_user - 1]["content"]
        blocks[-1] = {**blocks[-1], "cache_control": _EPHEMERAL}


def turns_json(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """The conversation as alternating user/assistant turns of content blocks (system left out)."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            continue
        role = "assistant" if message.role == "assistant" else "user"
        blocks = blocks_json(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return turns


def blocks_json(message: Message) -> list[dict[str, Any]]:
    """One message's content blocks; empty text is dropped (the API rejects empty text blocks)."""
    if message.role == "tool":
        if not message.tool_call_id:
            raise InvalidRequest(
                "A tool message has no tool_call_id.",
                hint="Set tool_call_id to the id of the assistant tool call it answers.",
            )
        return [{"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.text}]
    blocks = _content_blocks(message.content)
    for call in message.tool_calls:
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.name, "input": _tool_input(call.arguments)}
        )
    return blocks


def _content_blocks(content: str | tuple[ContentPart, ...]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content:
        if part.type == "text":
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif part.url:
            blocks.append({"type": "image", "source": image_source(part.url)})
    return blocks


def image_source(url: str) -> dict[str, str]:
    """A ``data:`` URL becomes an inline base64 source; any other URL is fetched by Anthropic."""
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header.removeprefix("data:").split(";")[0] or "image/png"
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _tool_input(arguments: str) -> Any:
    if not arguments.strip():
        return {}
    try:
        return json.loads(arguments)
    except ValueError:
        raise InvalidRequest(
            f"A tool call's arguments are not valid JSON: {arguments[:200]!r}.",
            hint="Pass the arguments exactly as the model produced them (a JSON object).",
        ) from None


def tools_json(params: Params) -> dict[str, Any]:
    """``tools`` and ``tool_choice``, including the answer tool that emulates ``response_format``."""
    tools = [tool_json(t) for t in params.tools]
    choice = None if params.tool_choice is None else tool_choice_json(params.tool_choice)
    fmt = params.response_format
    if fmt is not None and fmt.type != "text":
        tools.append(response_tool_json(fmt))
        if choice is None:
            # Alone, the answer tool is forced; beside real tools, the model must call one of them.
            choice = {"type": "tool", "name": RESPONSE_TOOL} if not params.tools else {"type": "any"}
    out: dict[str, Any] = {}
    if tools:
        out["tools"] = tools
    if choice is not None:
        out["tool_choice"] = choice
    return out


def tool_json(tool: Tool) -> dict[str, Any]:
    """A tool; Anthropic requires an input schema, so an empty one means: no arguments."""
    out: dict[str, Any] = {"name": tool.name, "input_schema": dict(tool.parameters) or _EMPTY_OBJECT}
    if tool.description:
        out["description"] = tool.description
    return out


def response_tool_json(fmt: ResponseFormat) -> dict[str, Any]:
    if fmt.type == "json_schema" and fmt.schema is None:
        raise InvalidRequest(
            "response_format of type json_schema was given without a schema.",
            hint="Pass the JSON schema, or use the type json_object for free-form JSON.",
        )
    schema = dict(fmt.schema) if fmt.type == "json_schema" and fmt.schema is not None else {"type": "object"}
    described = f" ({fmt.name})" if fmt.name else ""
    return {
        "name": RESPONSE_TOOL,
        "description": f"Give the final answer{described} as this JSON object.",
        "input_schema": schema,
    }


def tool_choice_json(choice: str | Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI-style tool choice → Anthropic's: required → any, a function name → that tool."""
    if isinstance(choice, str):
        words = {"auto": {"type": "auto"}, "none": {"type": "none"}, "required": {"type": "any"}}
        return words.get(choice, {"type": "tool", "name": choice})
    if choice.get("type") == "function":
        return {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    return dict(choice)


_EMPTY_OBJECT: Mapping[str, Any] = {"type": "object", "properties": {}}


# --------------------------------------------------------------------------- response


def stop_reason(value: str | None) -> FinishReason | None:
    if value is None:
        return None
    return _STOP.get(value, "stop")


class EventParser:
    """Folds one Messages stream's events into deltas and remembers how it finished.

    Usage is split across events: ``message_start`` carries the prompt side, ``message_delta``
    the (cumulative) output side. Tool calls are numbered 0, 1, ... in order of appearance,
    whatever their content-block index. The answer tool (``response_format``) is turned back
    into text: its ``input_json_delta`` fragments are the JSON answer.
    """

    def __init__(self) -> None:
        self.finish_reason: FinishReason | None = None
        self.done = False
        self._input = 0
        self._cache_read = 0
        self._cache_write = 0
        self._output = 0
        self._tools: dict[int, int] = {}  # content block index -> tool call number
        self._answer_blocks: set[int] = set()
        self._with_input: set[int] = set()  # tool blocks that received argument fragments

    @property
    def usage(self) -> Usage:
        prompt = self._input + self._cache_read + self._cache_write
        return Usage(
            input_tokens=prompt,
            output_tokens=self._output,
            cached_tokens=self._cache_read,
            cache_write_tokens=self._cache_write,
        )

    def feed(self, event: Mapping[str, Any]) -> Delta:
        """The content an event carries, as a delta (empty for bookkeeping events)."""
        kind = event.get("type")
        if kind == "message_start":
            self._count((event.get("message") or {}).get("usage") or {})
        elif kind == "content_block_start":
            return self._block_start(int(event.get("index", 0)), event.get("content_block") or {})
        elif kind == "content_block_delta":
            return self._block_delta(int(event.get("index", 0)), event.get("delta") or {})
        elif kind == "content_block_stop":
            return self._block_stop(int(event.get("index", 0)))
        elif kind == "message_delta":
            self._count(event.get("usage") or {})
            reason = stop_reason((event.get("delta") or {}).get("stop_reason"))
            if reason == "tool_calls" and not self._tools:
                reason = "stop"  # only the answer tool was called: an ordinary answer
            if reason is not None:
                self.finish_reason = reason
        elif kind == "message_stop":
            self.done = True
        return Delta()

    def _count(self, usage: Mapping[str, Any]) -> None:
        """Later usage figures replace earlier ones (``message_delta`` counts are cumulative)."""
        if usage.get("input_tokens") is not None:
            self._input = int(usage["input_tokens"])
        if usage.get("cache_read_input_tokens") is not None:
            self._cache_read = int(usage["cache_read_input_tokens"])
        if usage.get("cache_creation_input_tokens") is not None:
            self._cache_write = int(usage["cache_creation_input_tokens"])
        if usage.get("output_tokens") is not None:
            self._output = int(usage["output_tokens"])

    def _block_start(self, index: int, block: Mapping[str, Any]) -> Delta:
        if block.get("type") == "text" and block.get("text"):
            return Delta(text=str(block["text"]))
        if block.get("type") != "tool_use":
            return Delta()
        if block.get("name") == RESPONSE_TOOL:
            self._answer_blocks.add(index)
            return Delta()
        number = self._tools[index] = len(self._tools)
        return Delta(tool_calls=(ToolCallDelta(index=number, id=block.get("id"), name=block.get("name")),))

    def _block_delta(self, index: int, delta: Mapping[str, Any]) -> Delta:
        kind = delta.get("type")
        if kind == "text_delta":
            return Delta(text=str(delta.get("text") or ""))
        if kind != "input_json_delta":
            return Delta()  # thinking and signature deltas are not part of the answer
        fragment = str(delta.get("partial_json") or "")
        if fragment:
            self._with_input.add(index)
        if index in self._answer_blocks:
            return Delta(text=fragment)
        if index in self._tools and fragment:
            return Delta(tool_calls=(ToolCallDelta(index=self._tools[index], arguments=fragment),))
        return Delta()

    def _block_stop(self, index: int) -> Delta:
        """A tool block that streamed no input had empty input: say ``{}``, as OpenAI would."""
        if index in self._with_input:
            return Delta()
        if index in self._answer_blocks:
            return Delta(text="{}")
        if index in self._tools:
            return Delta(tool_calls=(ToolCallDelta(index=self._tools[index], arguments="{}"),))
        return Delta()
