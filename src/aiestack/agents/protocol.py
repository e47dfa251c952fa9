"""The text tool-call protocol, for models without native tool calls (the embedded llama.cpp model).

The model is told its tools in the system message and must reply with one JSON object: either
``{"tool": NAME, "arguments": {...}}`` or ``{"answer": TEXT}``. The request carries that reply's
JSON Schema as ``response_format`` (an ``anyOf`` of one object per tool, each with the tool's own
argument schema, and the answer object); a provider that turns schemas into grammars (llama_cpp
does, through GBNF) can then only sample replies that parse and name a real tool with well-typed
arguments. A provider that ignores ``response_format`` may still reply with anything: such a reply
is read leniently (a code fence or text around the object is dropped) and, when it still cannot be
read, the loop tells the model what was wrong (``ModelCall.error``) and asks again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiestack.agents.tools import AgentTool
from aiestack.types import ResponseFormat, ToolCall

_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


@dataclass(frozen=True, slots=True)
class TextReply:
    """A text-protocol reply, read: one tool call, or the answer, or why it could not be read."""

    call: ToolCall | None = None
    answer: str | None = None
    error: str | None = None


def _rename_refs(value: Any, prefix: str) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/"):
                out[k] = "#/$defs/" + prefix + v[len("#/$defs/") :]
            else:
                out[k] = _rename_refs(v, prefix)
        return out
    if isinstance(value, list):
        return [_rename_refs(v, prefix) for v in value]
    return value


def reply_schema(tools: Sequence[AgentTool]) -> dict[str, Any]:
    """The JSON Schema every reply must match: one tool call (per tool) or the answer.

    Each tool's ``$defs`` (nested models) are hoisted to the root, prefixed with the tool's name.
    """
    choices: list[dict[str, Any]] = []
    defs: dict[str, Any] = {}
    for tool in tools:
        params = _rename_refs(dict(tool.parameters), f"{tool.name}__")
        for name, definition in (params.pop("$defs", None) or {}).items():
            defs[f"{tool.name}__{name}"] = definition
        choices.append(
            {
                "type": "object",
                "properties": {"tool": {"const": tool.name}, "arguments": params},
                "required": ["tool", "arguments"],
                "additionalProperties": False,
            }
        )
    choices.append(
        {
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
            "additionalProperties": False,
        }
    )
    schema: dict[str, Any] = {"anyOf": choices}
    if defs:
        schema["$defs"] = defs
    return schema


def response_format(tools: Sequence[AgentTool]) -> ResponseFormat:
    return ResponseFormat(type="json_schema", schema=reply_schema(tools), name="agent_reply", strict=True)


def instructions(tools: Sequence[AgentTool]) -> str:
    """The system-message part that teaches the protocol and lists the tools."""
    lines = [
        "You can use tools. Reply with exactly one JSON object and nothing else:",
        '- to call a tool: {"tool": "<tool name>", "arguments": {<the arguments>}}',
        '- to give your final answer: {"answer": "<your answer>"}',
        "After a tool call you will see its result; then call another tool or answer.",
        "Tools:",
    ]
    for tool in tools:
        args = json.dumps(tool.parameters.get("properties", {}), ensure_ascii=False)
        lines.append(f"- {tool.name}: {tool.description or '(no description)'} Arguments: {args}")
    return "\n".join(lines)


def _json_object(text: str) -> Mapping[str, Any] | None:
    stripped = _FENCE.sub("", text.strip()).strip()
    for candidate in (stripped, stripped[stripped.find("{") : stripped.rfind("}") + 1]):
        if not candidate:
            continue
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def read_reply(text: str, call_id: str) -> TextReply:
    """Read a text-protocol reply (leniently: a fence or words around the object are ignored)."""
    value = _json_object(text)
    if value is None:
        return TextReply(error="the reply is not a JSON object")
    if "tool" in value:
        name = value.get("tool")
        arguments = value.get("arguments", {})
        if not isinstance(name, str) or not name:
            return TextReply(error='"tool" must be the name of a tool')
        if not isinstance(arguments, dict):
            return TextReply(error='"arguments" must be a JSON object')
        return TextReply(call=ToolCall(call_id, name, json.dumps(arguments, ensure_ascii=False)))
    answer = value.get("answer")
    if isinstance(answer, str):
        return TextReply(answer=answer)
    return TextReply(error='the object has neither "tool" nor "answer"')


CORRECTION = (
    "Your last reply could not be read ({error}). Reply with exactly one JSON object: "
    '{{"tool": "<tool name>", "arguments": {{...}}}} or {{"answer": "<your answer>"}}.'
)
