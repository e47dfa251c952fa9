"""Tools from typed Python functions.

``@tool`` derives the JSON Schema of a function's arguments from its signature (pydantic) and its
docstring (the first paragraph describes the tool; ``name: text`` lines under ``Args:`` describe the
arguments). ``FunctionTool.call`` validates the model's JSON arguments before the call and turns every
failure — malformed JSON, a bad argument, an exception, a timeout — into a ``ToolOutcome`` with an
error the model can read and correct, never a crash. Results longer than ``max_result_chars`` are cut
with a marker.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, get_type_hints, overload

import pydantic

from aiestack.types import Tool

DEFAULT_MAX_RESULT_CHARS = 20_000
DEFAULT_TIMEOUT_S = 30.0
_ARG_LINE = re.compile(r"^\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What one tool call gave: the text the model sees, and the error if the call failed."""

    content: str
    error: str | None = None
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def _parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    if not doc:
        return "", {}
    text = inspect.cleandoc(doc)
    summary = text.split("\n\n", 1)[0].strip()
    args: dict[str, str] = {}
    in_args = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.lower() in ("args:", "arguments:", "parameters:"):
            in_args = True
            continue
        if in_args:
            if stripped.endswith(":") and " " not in stripped:
                in_args = False
                continue
            m = _ARG_LINE.match(line)
            if m:
                args[m.group(1)] = m.group(2).strip()
    if summary.lower().startswith(("args:", "arguments:", "parameters:")):
        summary = ""
    return summary, args


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump_json()
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


class FunctionTool:
    """A Python function (sync or async) the model may call, with its derived schema."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        approval: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
    ) -> None:
        if timeout_s <= 0 or max_result_chars <= 0:
            raise ValueError("timeout_s and max_result_chars must be positive")
        self.fn = fn
        self.name = name or fn.__name__
        summary, arg_docs = _parse_docstring(fn.__doc__)
        self.description = description if description is not None else summary
        self.approval = approval
        self.timeout_s = timeout_s
        self.max_result_chars = max_result_chars
        self._is_async = inspect.iscoroutinefunction(fn)
        hints = get_type_hints(fn)
        fields: dict[str, Any] = {}
        for pname, param in inspect.signature(fn).parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(f"tool {self.name!r}: *args/**kwargs cannot be described to a model")
            annotation = hints.get(pname, Any)
            default = ... if param.default is param.empty else param.default
            fields[pname] = (annotation, pydantic.Field(default, description=arg_docs.get(pname)))
        self._args_model: type[pydantic.BaseModel] = pydantic.create_model(
            f"{self.name}_args", __config__=pydantic.ConfigDict(extra="forbid"), **fields
        )
        schema = self._args_model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        self.parameters: dict[str, Any] = schema

    @property
    def spec(self) -> Tool:
        """The OpenAI ``tools`` entry for this tool."""
        return Tool(name=self.name, description=self.description, parameters=self.parameters)

    def _truncate(self, text: str) -> ToolOutcome:
        if len(text) <= self.max_result_chars:
            return ToolOutcome(text)
        cut = len(text) - self.max_result_chars
        return ToolOutcome(
            text[: self.max_result_chars] + f"\n[truncated: {cut} more characters]", truncated=True
        )

    async def call(self, arguments: str | dict[str, Any]) -> ToolOutcome:
        """Validate ``arguments`` (JSON text or a dict) and run the tool; failures become outcomes."""
        if isinstance(arguments, str):
            try:
                parsed = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                msg = f"arguments are not valid JSON ({exc.msg} at char {exc.pos}); send a JSON object"
                return ToolOutcome(f"Error: {msg}", error=msg)
        else:
            parsed = arguments
        if not isinstance(parsed, dict):
            msg = "arguments must be a JSON object"
            return ToolOutcome(f"Error: {msg}", error=msg)
        try:
            validated = self._args_model.model_validate(parsed)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}" for e in exc.errors()
            )
            msg = f"invalid arguments for {self.name}: {problems}"
            return ToolOutcome(f"Error: {msg}", error=msg)
        kwargs = {k: getattr(validated, k) for k in self._args_model.model_fields}
        try:
            if self._is_async:
                result = await asyncio.wait_for(self.fn(**kwargs), self.timeout_s)
            else:
                result = await asyncio.wait_for(asyncio.to_thread(self.fn, **kwargs), self.timeout_s)
        except TimeoutError:
            msg = f"{self.name} timed out after {self.timeout_s:g} s"
            return ToolOutcome(f"Error: {msg}", error=msg)
        except Exception as exc:  # a tool's failure goes back to the model, never crashes the run
            msg = f"{self.name} raised {type(exc).__name__}: {exc}"
            return ToolOutcome(f"Error: {msg}", error=msg)
        return self._truncate(_render(result))


@overload
def tool(fn: Callable[..., Any], /) -> FunctionTool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    approval: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
) -> Callable[[Callable[..., Any]], FunctionTool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    approval: bool = False,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
) -> FunctionTool | Callable[[Callable[..., Any]], FunctionTool]:
    """Make a tool of a typed function: ``@tool`` or ``@tool(timeout_s=5, approval=True)``."""

    def wrap(f: Callable[..., Any]) -> FunctionTool:
        return FunctionTool(
            f,
            name=name,
            description=description,
            approval=approval,
            timeout_s=timeout_s,
            max_result_chars=max_result_chars,
        )

    return wrap(fn) if fn is not None else wrap


class Toolset:
    """A named group of tools; names are unique across the set."""

    def __init__(self, tools: Iterable[FunctionTool | Toolset] = (), *, name: str = "tools") -> None:
        self.name = name
        self._tools: dict[str, FunctionTool] = {}
        for t in tools:
            for one in t if isinstance(t, Toolset) else (t,):
                if one.name in self._tools:
                    raise ValueError(f"two tools are named {one.name!r}; give one another name")
                self._tools[one.name] = one

    def __iter__(self) -> Iterator[FunctionTool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def get(self, name: str) -> FunctionTool | None:
        return self._tools.get(name)

    @property
    def specs(self) -> tuple[Tool, ...]:
        return tuple(t.spec for t in self._tools.values())
