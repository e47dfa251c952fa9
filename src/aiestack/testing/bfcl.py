"""Scripted BFCL upstreams for the harness's own tests: an oracle that always answers right, and one always wrong.

Both are :class:`~aiestack.models.base.ChatModel` s that read the question's id from the request's
metadata (``bfcl.id``, set by :func:`aiestack.evals.bfcl.runner.request_for`) and answer under the
protocol the request names (``bfcl.protocol``): tool calls for ``native``, else the JSON of
the ``json`` protocol. The oracle answers each question with its first possible answer (the first allowed value
of every parameter, optional ones left out); the wrong one calls nothing where a call is expected
and calls a function where none is. Checked against them, the harness must score 100% and 0%.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from aiestack.evals.bfcl.checker import wire_name
from aiestack.evals.bfcl.data import Entry
from aiestack.models.base import Health
from aiestack.types import ChatRequest, Delta, ToolCallDelta, Usage


def _first(allowed: Sequence[Any]) -> tuple[bool, Any]:
    """(present, value): the first allowed value; absent when only "" (optional, left out) is allowed."""
    for option in allowed:
        if option != "":
            return True, option
    return False, None


def _literal_dict(option: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """A dict parameter's value from one of its allowed dicts (each key: a list of allowed values)."""
    out: dict[str, Any] = {}
    for key, allowed in option.items():
        present, value = _first(allowed)
        if present:
            out[key] = value
    return out


def _args(answer: Mapping[str, Sequence[Any]], required: Sequence[str]) -> dict[str, Any]:
    """A call's arguments from its possible answer: each parameter's first allowed value; the optional
    ones (``""`` allowed, not required by the function) left out, since a few answers allow parameters
    the function does not declare."""
    out: dict[str, Any] = {}
    for param, allowed in answer.items():
        present, value = _first(allowed)
        if "" in allowed and param not in required:
            continue
        if not present:  # required, yet only "" allowed: "" is what matches
            out[param] = ""
            continue
        if isinstance(value, dict):
            value = _literal_dict(value)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            value = [_literal_dict(v) for v in value]
        out[param] = value
    return out


class BfclScripted:
    """The oracle (``right=True``) or the always-wrong upstream, for ``entries``."""

    provider = "bfcl-scripted"

    def __init__(self, entries: Iterable[Entry], *, right: bool = True) -> None:
        self._entries = {e.id: e for e in entries}
        self._right = right

    def script(self, entry: Entry) -> list[tuple[str, dict[str, Any]]]:
        """The calls this upstream makes for ``entry``: (wire name, arguments)."""
        expects_call = entry.category == "live_relevance" or "irrelevance" not in entry.category
        first: list[tuple[str, dict[str, Any]]] = [(wire_name(entry.functions[0]["name"]) if entry.functions else "no_such_function", {})]
        if not self._right:
            return [] if expects_call else first
        if entry.answers:
            required = {f["name"]: f["parameters"].get("required", []) for f in entry.functions}
            return [
                (wire_name(name), _args(args, required.get(name, ())))
                for answer in entry.answers
                for name, args in answer.items()
            ]
        return first if expects_call else []

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        entry = self._entries[str(request.metadata["bfcl.id"])]
        calls = self.script(entry)
        if request.metadata.get("bfcl.protocol") == "native":
            deltas = tuple(ToolCallDelta(index=i, id=f"call_{i}", name=n, arguments=json.dumps(a)) for i, (n, a) in enumerate(calls))
            yield Delta(tool_calls=deltas)
            yield Delta(finish_reason="tool_calls" if calls else "stop", usage=Usage(10, 5 * len(calls) + 1))
            return
        text = json.dumps({"calls": [{"name": n, "arguments": a} for n, a in calls]})
        yield Delta(text=text)
        yield Delta(finish_reason="stop", usage=Usage(10, len(text) // 4))

    async def check(self, model: str) -> Health:
        return Health(ok=True, detail="scripted BFCL answers")

    async def aclose(self) -> None:
        return None
