"""Running BFCL on a configured model or route: one request per question, scored with BFCL's AST rules.

Two protocols carry the calls:

- ``native``: the functions are sent as OpenAI ``tools`` and the model's tool calls are read back
  (BFCL's "FC" mode); for models and routes that support tool calls;
- ``json``: for models without native tool calls (the embedded llama.cpp model), the functions are
  described in the prompt and the answer is constrained by a JSON-schema grammar
  (``response_format``) to ``{"calls": [{"name": ..., "arguments": {...}}]}``, each name one of the
  offered functions and its arguments that function's parameters, so it always parses. An empty
  list means "no call" (what the irrelevance categories want).

Every call goes through the stack (keys, limits, traces; the caches bypassed, as for any evaluation),
at temperature 0. A tool call whose arguments are not JSON, or that names no offered function, is
counted as invalid and the entry as wrong (BFCL's "decoder failed").
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from aiestack.errors import AiestackError
from aiestack.evals.bfcl.checker import Call, Check, check, wire_name
from aiestack.evals.bfcl.data import Entry
from aiestack.types import ChatRequest, Completion, Exchange, Message, Params, ResponseFormat, Tool

Protocol = Literal["native", "json"]
ChatCall = Callable[[ChatRequest], Awaitable[Exchange]]

#: BFCL's type names as JSON Schema types (``GORILLA_TO_OPENAPI``).
_JSON_TYPES = {
    "integer": "integer", "number": "number", "float": "number", "string": "string", "boolean": "boolean",
    "bool": "boolean", "array": "array", "list": "array", "dict": "object", "object": "object",
    "tuple": "array", "any": "string",
}  # fmt: skip
_JSON_PROMPT = (
    "You can call these functions:\n{functions}\n\n"
    'Answer with JSON: {{"calls": [{{"name": "<function>", "arguments": {{...}}}}]}}. List every call the '
    'request needs (several if it asks for several); answer {{"calls": []}} if no function fits the request.'
)


def _schema(properties: Mapping[str, Any]) -> dict[str, Any]:
    """BFCL parameter properties as JSON Schema (BFCL's ``_cast_to_openai_type``)."""
    out = copy.deepcopy(dict(properties))
    for spec in out.values():
        kind = spec.get("type", "string")
        if kind == "float":
            spec["format"] = "float"
            spec["description"] = spec.get("description", "") + " This is a float type value."
        spec["type"] = _JSON_TYPES.get(kind, "string")
        if "properties" in spec:
            spec["properties"] = _schema(spec["properties"])
        items = spec.get("items")
        if isinstance(items, dict):
            items["type"] = _JSON_TYPES.get(items.get("type", "string"), "string")
            if "properties" in items:
                items["properties"] = _schema(items["properties"])
            if isinstance(items.get("items"), dict):
                items["items"]["type"] = _JSON_TYPES.get(items["items"].get("type", "string"), "string")
    return out


def parameters(function: Mapping[str, Any]) -> dict[str, Any]:
    """A BFCL function's parameters as a JSON Schema object."""
    params = function.get("parameters", {})
    return {"type": "object", "properties": _schema(params.get("properties", {})), "required": list(params.get("required", []))}


def tools(functions: Sequence[Mapping[str, Any]]) -> tuple[Tool, ...]:
    """The functions as OpenAI-style tools (dots in names become underscores, as BFCL sends them)."""
    return tuple(Tool(name=wire_name(f["name"]), description=f.get("description", ""), parameters=parameters(f)) for f in functions)


def calls_schema(functions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The JSON Schema of the ``json`` protocol's answer: a list of calls of the offered functions."""
    variants = [
        {
            "type": "object",
            "properties": {"name": {"type": "string", "enum": [wire_name(f["name"])]}, "arguments": parameters(f)},
            "required": ["name", "arguments"],
        }
        for f in functions
    ]
    if not variants:  # nothing offered: the only answer is no call
        return {"type": "object", "properties": {"calls": {"type": "array", "maxItems": 0}}, "required": ["calls"]}
    item = variants[0] if len(variants) == 1 else {"anyOf": variants}
    return {"type": "object", "properties": {"calls": {"type": "array", "items": item}}, "required": ["calls"]}


def request_for(entry: Entry, model: str, protocol: Protocol, *, max_tokens: int = 512) -> ChatRequest:
    """The chat request that asks ``model`` the entry's question under ``protocol``."""
    messages = tuple(Message(role=m["role"], content=m.get("content") or "") for m in entry.messages)
    if protocol == "native":
        params = Params(temperature=0.0, max_tokens=max_tokens, tools=tools(entry.functions))  # none: answer in text
    else:
        listing = "\n".join(json.dumps({"name": t.name, "description": t.description, "parameters": t.parameters}) for t in tools(entry.functions))
        messages = (Message(role="system", content=_JSON_PROMPT.format(functions=listing)), *messages)
        fmt = ResponseFormat(type="json_schema", schema=calls_schema(entry.functions), name="calls", strict=True)
        params = Params(temperature=0.0, max_tokens=max_tokens, response_format=fmt)
    return ChatRequest(model=model, messages=messages, params=params, metadata={"cache": "off", "bfcl.id": entry.id, "bfcl.protocol": protocol})


def decode(completion: Completion, protocol: Protocol) -> tuple[list[Call] | None, int]:
    """The calls an answer makes (None when it cannot be decoded) and how many of them are invalid."""
    if protocol == "native":
        calls: list[Call] = []
        invalid = 0
        for tc in completion.message.tool_calls:
            try:
                args = json.loads(tc.arguments or "{}")
            except json.JSONDecodeError:
                invalid += 1
                continue
            if not isinstance(args, dict):
                invalid += 1
                continue
            calls.append({tc.name: args})
        return (None if invalid else calls), invalid
    try:
        data = json.loads(completion.text)
        items = data["calls"]
        return [{str(c["name"]): dict(c["arguments"])} for c in items], 0
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None, 1


@dataclass(frozen=True, slots=True)
class Outcome:
    """One entry's result."""

    entry: Entry
    check: Check
    invalid_calls: int = 0
    latency_ms: float = 0.0
    cost_usd: float | None = None
    exchange_id: str | None = None


@dataclass
class CategoryReport:
    category: str
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return sum(o.check.valid for o in self.outcomes) / len(self.outcomes) if self.outcomes else 0.0

    @property
    def invalid_calls(self) -> int:
        return sum(o.invalid_calls for o in self.outcomes)

    @property
    def cost_usd(self) -> float:
        return sum(o.cost_usd or 0.0 for o in self.outcomes)

    @property
    def p50_ms(self) -> float:
        times = sorted(o.latency_ms for o in self.outcomes)
        return times[len(times) // 2] if times else 0.0


def score(entry: Entry, completion: Completion | None, protocol: Protocol) -> tuple[Check, int]:
    """The entry's check given the model's answer (None: the call failed)."""
    if completion is None:
        return Check(False, "call_failed", "the model call failed"), 0
    calls, invalid = decode(completion, protocol)
    if calls is None:
        if "irrelevance" in entry.category:  # BFCL: an answer that does not decode made no call
            return Check(True), invalid
        return Check(False, "ast_decoder:decoder_failed", "the answer's calls could not be decoded"), invalid
    return check(entry.category, entry.functions, calls, entry.answers), invalid


async def run_entries(
    call: ChatCall, model: str, entries: Sequence[Entry], *, protocol: Protocol, concurrency: int = 4, max_tokens: int = 512
) -> list[Outcome]:
    """Ask ``model`` every entry (at most ``concurrency`` at once) and score each answer."""
    gate = asyncio.Semaphore(concurrency)

    async def one(entry: Entry) -> Outcome:
        async with gate:
            started = time.perf_counter()
            try:
                ex = await call(request_for(entry, model, protocol, max_tokens=max_tokens))
                completion, ex_id, error = ex.completion, ex.id, None
            except AiestackError as exc:
                completion, ex_id, error = None, None, f"{type(exc).__name__}: {exc.message}"
            latency = (time.perf_counter() - started) * 1000
        result, invalid = score(entry, completion, protocol)
        if error is not None:
            result = Check(False, "call_failed", error)
        cost = completion.cost_usd if completion is not None else None
        return Outcome(entry, result, invalid, latency, cost, ex_id)

    return list(await asyncio.gather(*(one(e) for e in entries)))


def by_category(outcomes: Sequence[Outcome]) -> list[CategoryReport]:
    """The outcomes grouped per category, in the order the categories first appear."""
    reports: dict[str, CategoryReport] = {}
    for outcome in outcomes:
        reports.setdefault(outcome.entry.category, CategoryReport(outcome.entry.category)).outcomes.append(outcome)
    return list(reports.values())
