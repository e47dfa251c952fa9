"""Tools from typed Python functions.

``@tool`` derives the JSON Schema of a function's arguments from its signature (pydantic) and its
docstring (the first paragraph describes the tool; ``name: text`` lines under ``Args:`` describe the
arguments). ``FunctionTool.call`` validates the model's JSON arguments before the call and turns every
failure — malformed JSON, a bad argument, an exception, a timeout — into a ``ToolOutcome`` with an
error the model can read and correct, never a crash. Results longer than ``max_result_chars`` are cut
with a marker.

Sync tools run on :class:`ToolThreads`: daemon threads, at most ``max_threads`` at once. A sync
function cannot be interrupted, so a call past its timeout returns an error at once while its thread
runs on, holding its slot until the function returns; when every slot is held, further sync calls
wait for one only as long as their own timeout (and then fail with an error saying so). Daemon
threads never keep the process from exiting. A parameter annotated :class:`ToolContext` is not
shown to the model: the agent loop passes the run's context there (its id, step, and the sources
a tool cites).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, get_type_hints, overload, runtime_checkable

import pydantic

from aiestack.types import Hit, Tool

DEFAULT_MAX_RESULT_CHARS = 20_000
DEFAULT_TIMEOUT_S = 30.0
_ARG_LINE = re.compile(r"^\s*(\w+)\s*(?:\([^)]*\))?\s*:\s*(.+)$")


DEFAULT_MAX_THREADS = 8


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    """What one tool call gave: the text the model sees, and the error if the call failed.

    A tool may return a ``ToolOutcome`` itself (its content is still cut to the size limit).
    """

    content: str
    error: str | None = None
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ToolContext:
    """What a tool learns of the run that calls it (a parameter annotated ``ToolContext``).

    ``cite(hits)`` numbers retrieved chunks across the whole run (a chunk cited twice keeps its
    number), so that the final answer's ``[n]`` markers name the sources; the run's citations are
    :attr:`sources` in that order.
    """

    run_id: str = ""
    step: int = 0
    tenant: str = "default"
    sources: list[Hit] = field(default_factory=list)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def cite(self, hits: Sequence[Hit]) -> list[int]:
        """The run-wide source numbers (from 1) of ``hits``, adding the new ones."""
        numbers: list[int] = []
        for hit in hits:
            known = next((i for i, h in enumerate(self.sources, 1) if h.chunk.id == hit.chunk.id), None)
            if known is None:
                self.sources.append(hit)
                known = len(self.sources)
            numbers.append(known)
        return numbers


@runtime_checkable
class AgentTool(Protocol):
    """What the agent loop needs of a tool: :class:`FunctionTool` is one, an MCP server's tool another.

    ``call`` never raises for what the tool did: every failure is a :class:`ToolOutcome` with an error.
    """

    name: str
    description: str
    approval: bool
    parameters: dict[str, Any]

    @property
    def spec(self) -> Tool: ...

    async def call(
        self,
        arguments: str | Mapping[str, Any],
        *,
        context: ToolContext | None = None,
        threads: ToolThreads | None = None,
        timeout_s: float | None = None,
    ) -> ToolOutcome: ...


def truncate_outcome(text: str, max_chars: int, error: str | None = None) -> ToolOutcome:
    """``text`` as an outcome, cut to ``max_chars`` with a marker saying how much was cut."""
    if len(text) <= max_chars:
        return ToolOutcome(text, error=error)
    cut = len(text) - max_chars
    return ToolOutcome(text[:max_chars] + f"\n[truncated: {cut} more characters]", error=error, truncated=True)


def parse_arguments(arguments: str | Mapping[str, Any]) -> dict[str, Any] | ToolOutcome:
    """The model's arguments (JSON text or a dict) as a dict, or the error outcome the model sees."""
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as exc:
            msg = f"arguments are not valid JSON ({exc.msg} at char {exc.pos}); send a JSON object"
            return ToolOutcome(f"Error: {msg}", error=msg)
    else:
        parsed = dict(arguments)
    if not isinstance(parsed, dict):
        msg = "arguments must be a JSON object"
        return ToolOutcome(f"Error: {msg}", error=msg)
    return parsed


class ToolThreads:
    """Runs sync tools on a pool of daemon threads, at most ``max_threads`` at once (see the module doc).

    Threads start on demand and are reused; one idle for ``idle_s`` ends. A call past its timeout
    keeps its thread (a sync function cannot be interrupted) and its slot until it returns.
    """

    def __init__(self, max_threads: int = DEFAULT_MAX_THREADS, *, idle_s: float = 30.0) -> None:
        if max_threads < 1:
            raise ValueError("max_threads must be at least 1")
        self.max_threads = max_threads
        self._idle_s = idle_s
        self._slots = threading.BoundedSemaphore(max_threads)
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._busy = 0  # jobs running or queued
        self._idle = 0  # threads waiting for a job that no job has been promised to

    @property
    def busy(self) -> int:
        """Calls running now (stuck ones included)."""
        return self._busy

    def _worker(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self._idle_s)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # nobody was promised this thread: end it
                        self._idle -= 1
                        return
                continue
            job()

    async def run(self, fn: Callable[..., Any], kwargs: Mapping[str, Any], timeout_s: float) -> Any:
        """``fn(**kwargs)`` on a thread; raises ``TimeoutError`` after ``timeout_s`` (waiting for a slot included)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not self._slots.acquire(blocking=False):  # every slot held: poll until one frees
            if loop.time() >= deadline:
                raise _NoSlot(self.max_threads)
            await asyncio.sleep(min(0.01, max(deadline - loop.time(), 0)))
        future: asyncio.Future[Any] = loop.create_future()

        def settle(ok: bool, value: Any) -> None:
            if not future.done():
                future.set_result(value) if ok else future.set_exception(value)

        def job() -> None:
            try:
                value, ok = fn(**kwargs), True
            except BaseException as exc:  # handed to the awaiting task
                value, ok = exc, False
            finally:
                with self._lock:
                    self._busy -= 1
                    self._idle += 1
                self._slots.release()
            if not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
                    loop.call_soon_threadsafe(settle, ok, value)

        with self._lock:
            self._busy += 1
            start = self._idle == 0
            if not start:
                self._idle -= 1
        if start:
            threading.Thread(target=self._worker, name="aiestack-tool", daemon=True).start()
        self._jobs.put(job)
        return await asyncio.wait_for(future, max(deadline - loop.time(), 0))


class _NoSlot(TimeoutError):
    def __init__(self, n: int) -> None:
        super().__init__(f"all {n} tool threads are busy (calls still running past their timeout)")


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
        self._context_param: str | None = None
        for pname, param in inspect.signature(fn).parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise TypeError(f"tool {self.name!r}: *args/**kwargs cannot be described to a model")
            annotation = hints.get(pname, Any)
            if annotation is ToolContext:
                self._context_param = pname
                continue
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

    def _truncate(self, text: str, error: str | None = None) -> ToolOutcome:
        return truncate_outcome(text, self.max_result_chars, error)

    async def call(
        self,
        arguments: str | Mapping[str, Any],
        *,
        context: ToolContext | None = None,
        threads: ToolThreads | None = None,
        timeout_s: float | None = None,
    ) -> ToolOutcome:
        """Validate ``arguments`` (JSON text or a dict) and run the tool; failures become outcomes.

        ``context`` is passed to a ``ToolContext`` parameter; ``threads`` runs a sync tool (a fresh
        one-call runner if not given); ``timeout_s`` lowers the tool's own limit (a run's deadline).
        """
        parsed = parse_arguments(arguments)
        if isinstance(parsed, ToolOutcome):
            return parsed
        try:
            validated = self._args_model.model_validate(parsed)
        except pydantic.ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(arguments)'}: {e['msg']}" for e in exc.errors()
            )
            msg = f"invalid arguments for {self.name}: {problems}"
            return ToolOutcome(f"Error: {msg}", error=msg)
        kwargs = {k: getattr(validated, k) for k in self._args_model.model_fields}
        if self._context_param is not None:
            kwargs[self._context_param] = context if context is not None else ToolContext()
        limit = self.timeout_s if timeout_s is None else max(min(self.timeout_s, timeout_s), 0.0)
        try:
            if self._is_async:
                result = await asyncio.wait_for(self.fn(**kwargs), limit)
            else:
                result = await (threads or ToolThreads(1)).run(self.fn, kwargs, limit)
        except _NoSlot as exc:
            msg = f"{self.name} could not start: {exc}"
            return ToolOutcome(f"Error: {msg}", error=msg)
        except TimeoutError:
            msg = f"{self.name} timed out after {limit:g} s"
            return ToolOutcome(f"Error: {msg}", error=msg)
        except Exception as exc:  # a tool's failure goes back to the model, never crashes the run
            msg = f"{self.name} raised {type(exc).__name__}: {exc}"
            return ToolOutcome(f"Error: {msg}", error=msg)
        if isinstance(result, ToolOutcome):
            return self._truncate(result.content, result.error)
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

    def __init__(self, tools: Iterable[AgentTool | Toolset] = (), *, name: str = "tools") -> None:
        self.name = name
        self._tools: dict[str, AgentTool] = {}
        for t in tools:
            for one in t if isinstance(t, Toolset) else (t,):
                if one.name in self._tools:
                    raise ValueError(f"two tools are named {one.name!r}; give one another name")
                self._tools[one.name] = one

    def __iter__(self) -> Iterator[AgentTool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def get(self, name: str) -> AgentTool | None:
        return self._tools.get(name)

    @property
    def specs(self) -> tuple[Tool, ...]:
        return tuple(t.spec for t in self._tools.values())
