"""MCP servers' tools as agent tools (the official ``mcp`` SDK; ``pip install aiestack[agents]``).

``async with mcp_tools(McpServer(name="files", command=["files-mcp", "--root", "."])) as tools:``
starts the server (stdio; ``url=...`` connects over streamable HTTP instead), lists its tools and
yields a :class:`~aiestack.agents.tools.Toolset` of :class:`McpTool`, each carrying the server's
name, description and JSON Schema to the model. An agent takes them like any other tool
(``Agent(tools=[tools, ...])``), so the loop's spans, timeouts, truncation and error handling apply.

The connection lives in a task of its own. A call is validated against the tool's schema first (a
bad argument goes back to the model as an error it can correct), then raced against the server's
death and the call's timeout: a server that exits mid-call, or answers nothing, gives a tool error
saying so, never a hung run; once a server has died, its tools answer with that error at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from aiestack.agents.tools import (
    DEFAULT_MAX_RESULT_CHARS,
    DEFAULT_TIMEOUT_S,
    ToolContext,
    ToolOutcome,
    Toolset,
    ToolThreads,
    parse_arguments,
    truncate_outcome,
)
from aiestack.errors import ConfigError
from aiestack.types import Tool


@dataclass(frozen=True)
class McpServer:
    """How to reach one MCP server, and which of its tools an agent gets.

    Exactly one of ``command`` (argv of a server spoken to over stdio; ``env`` is added to a minimal
    environment, ``cwd`` its directory) or ``url`` (a streamable HTTP endpoint, with ``headers``).
    ``tools`` keeps only the named tools (default: all); ``prefix`` is put before each tool's name
    (two servers with a tool of the same name); ``approval`` lists tools that need a human's approval
    (``True``: all of them). ``timeout_s`` bounds each call, ``connect_timeout_s`` the start and
    the tool listing.
    """

    name: str
    command: Sequence[str] = ()
    url: str | None = None
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    tools: Sequence[str] | None = None
    prefix: str = ""
    approval: bool | Sequence[str] = False
    timeout_s: float = DEFAULT_TIMEOUT_S
    connect_timeout_s: float = 20.0
    max_result_chars: int = DEFAULT_MAX_RESULT_CHARS

    def __post_init__(self) -> None:
        where = f"mcp.{self.name}"
        if bool(self.command) == bool(self.url):
            raise ConfigError(
                where,
                "give exactly one of command (a stdio server) or url (streamable HTTP)",
                'set command = ["python", "-m", "my_server"] or url = "http://127.0.0.1:8000/mcp"',
            )
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.url", f"{self.url!r} is not an http(s) URL", "start it with http://")
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0 or self.max_result_chars <= 0:
            raise ConfigError(
                where,
                "timeout_s, connect_timeout_s and max_result_chars must be positive",
                "use positive numbers",
            )

    @classmethod
    def from_dict(cls, name: str, spec: Mapping[str, Any]) -> McpServer:
        """From a TOML table such as ``[agents.NAME.mcp.files]`` (keys as the fields)."""
        known = set(cls.__dataclass_fields__) - {"name"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ConfigError(f"mcp.{name}", f"unknown keys {unknown}", f"use only {sorted(known)}")
        values = dict(spec)
        for key in ("command", "tools"):
            if key in values and values[key] is not None:
                if isinstance(values[key], str):
                    raise ConfigError(
                        f"mcp.{name}.{key}", "must be a list of strings", f'write {key} = ["..."]'
                    )
                values[key] = tuple(values[key])
        if isinstance(values.get("approval"), list):
            values["approval"] = tuple(values["approval"])
        return cls(name=name, **values)


class McpServerGone(RuntimeError):
    """The server's connection ended (the process exited, the endpoint went away)."""


class _Connection:
    """One live session with a server, owned by a task of its own (see the module doc); ``gone``: it ended."""

    def __init__(self, server: McpServer) -> None:
        self.server = server
        self.session: Any = None
        self.failure: str | None = None
        self._ready = asyncio.Event()
        self._gone = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _client(self) -> Any:
        from mcp import Client, StdioServerParameters

        s = self.server
        if s.url is not None:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            http = httpx2.AsyncClient(headers=dict(s.headers), timeout=httpx2.Timeout(s.timeout_s, read=None))
            return Client(streamable_http_client(s.url, http_client=http), cache=None), http
        argv = list(s.command)
        params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(s.env or {}), cwd=s.cwd)
        return Client(params, cache=None, mode="legacy"), None

    async def _own(self) -> None:
        http = None
        try:
            client, http = self._client()
            async with client:
                self.session = client
                self._ready.set()
                await self._stop.wait()
        except BaseException as exc:
            if not self._stop.is_set():
                self.failure = _describe(exc)
        finally:
            if self.failure is None and not self._stop.is_set():
                self.failure = "the connection closed"
            self._gone.set()
            self._ready.set()
            if http is not None:
                with contextlib.suppress(Exception):
                    await http.aclose()

    @property
    def gone(self) -> bool:
        return self._gone.is_set()

    async def open(self) -> None:
        self._task = asyncio.create_task(self._own(), name=f"mcp:{self.server.name}")
        try:
            await asyncio.wait_for(self._ready.wait(), self.server.connect_timeout_s)
        except TimeoutError:
            await self.close()
            raise McpServerGone(
                f"mcp server {self.server.name!r} did not start within {self.server.connect_timeout_s:g} s"
            ) from None
        if self._gone.is_set():
            await self.close()
            raise McpServerGone(f"mcp server {self.server.name!r} could not be reached: {self.failure}")

    async def run(self, make: Any, timeout_s: float) -> Any:
        """``await make(session)``, raced against the server's death and ``timeout_s``."""
        if self._gone.is_set():
            raise McpServerGone(self.failure or "the connection closed")
        call = asyncio.ensure_future(make(self.session))
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            done, _ = await asyncio.wait({call, gone}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if call in done:
            try:
                return call.result()
            except Exception as exc:
                if not _connection_closed(exc):
                    raise
                # the server went away (a stdio server exited): the SDK says so before the session ends
                self.failure = self.failure or "the connection closed"
                self._gone.set()
                raise McpServerGone(self.failure) from exc
        call.cancel()
        with contextlib.suppress(BaseException):
            await call
        if gone in done:
            raise McpServerGone(self.failure or "the connection closed")
        raise TimeoutError

    async def close(self) -> None:
        self._stop.set()
        task = self._task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), 5.0)
        except (TimeoutError, Exception):  # a server that will not stop: cancel its task
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


def _connection_closed(exc: BaseException) -> bool:
    """Whether ``exc`` is the SDK's "connection closed" error (JSON-RPC code -32000 on a closed transport)."""
    from mcp.shared.exceptions import MCPError
    from mcp.types import CONNECTION_CLOSED

    return isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _result_text(result: Any) -> tuple[str, bool]:
    """The text of a ``CallToolResult`` for the model, and whether the server said it is an error."""
    parts: list[str] = []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource" and hasattr(block.resource, "text"):
            parts.append(block.resource.text)
        elif kind == "resource_link":
            parts.append(f"[resource {block.uri}]")
        else:
            parts.append(f"[{kind or 'content'} omitted: only text reaches the model]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, default=str))
    return "\n".join(parts), bool(result.is_error)


class McpTool:
    """One tool of an MCP server, shaped as the agent loop's :class:`~aiestack.agents.tools.AgentTool`."""

    def __init__(
        self,
        connection: _Connection,
        remote_name: str,
        *,
        name: str,
        description: str,
        parameters: Mapping[str, Any],
        approval: bool,
    ) -> None:
        server = connection.server
        self._connection = connection
        self.remote_name = remote_name
        self.server = server.name
        self.name = name
        self.description = description
        self.parameters: dict[str, Any] = dict(parameters)
        self.approval = approval
        self.timeout_s = server.timeout_s
        self.max_result_chars = server.max_result_chars
        self._validator = jsonschema.Draft202012Validator(self.parameters)

    @property
    def spec(self) -> Tool:
        return Tool(name=self.name, description=self.description, parameters=self.parameters)

    async def call(
        self,
        arguments: str | Mapping[str, Any],
        *,
        context: ToolContext | None = None,
        threads: ToolThreads | None = None,
        timeout_s: float | None = None,
    ) -> ToolOutcome:
        """Validate ``arguments`` against the server's schema and call the tool; failures become outcomes."""
        parsed = parse_arguments(arguments)
        if isinstance(parsed, ToolOutcome):
            return parsed
        problems = [
            f"{'.'.join(str(p) for p in e.absolute_path) or '(arguments)'}: {e.message}"
            for e in self._validator.iter_errors(parsed)
        ]
        if problems:
            msg = f"invalid arguments for {self.name}: {'; '.join(problems)}"
            return ToolOutcome(f"Error: {msg}", error=msg)
        limit = self.timeout_s if timeout_s is None else max(min(self.timeout_s, timeout_s), 0.0)
        where = f"mcp server {self.server!r}"
        try:
            result = await self._connection.run(lambda s: s.call_tool(self.remote_name, parsed), limit)
        except McpServerGone as exc:
            msg = f"{self.name} failed: {where} is gone ({exc})"
            return ToolOutcome(f"Error: {msg}", error=msg)
        except TimeoutError:
            msg = f"{self.name} timed out after {limit:g} s ({where} did not answer)"
            return ToolOutcome(f"Error: {msg}", error=msg)
        except Exception as exc:  # a protocol error goes back to the model, never crashes the run
            msg = f"{self.name} failed on {where}: {_describe(exc)}"
            return ToolOutcome(f"Error: {msg}", error=msg)
        text, is_error = _result_text(result)
        if is_error:
            msg = f"{self.name} failed on {where}: {text or 'an error without a message'}"
            return truncate_outcome(f"Error: {msg}", self.max_result_chars, msg)
        return truncate_outcome(text, self.max_result_chars)


async def connect(server: McpServer) -> tuple[_Connection, list[McpTool]]:
    """Start (or reach) ``server`` and list its tools: its live connection (``close()`` it) and its tools.

    Raises :class:`McpServerGone` when the server cannot be started or listed, and ``ConfigError``
    when ``tools`` names a tool the server does not have (the connection is closed then).
    """
    conn = _Connection(server)
    await conn.open()
    try:
        try:
            listing = await conn.run(lambda s: s.list_tools(), server.connect_timeout_s)
        except TimeoutError:
            raise McpServerGone(f"mcp server {server.name!r} did not list its tools in time") from None
        remote = {t.name: t for t in listing.tools}
        wanted = list(remote) if server.tools is None else list(server.tools)
        missing = [n for n in wanted if n not in remote]
        if missing:
            raise ConfigError(
                f"mcp.{server.name}.tools",
                f"the server has no tool named {missing} (it has: {sorted(remote)})",
                "list only tools the server has",
            )
    except BaseException:
        await conn.close()
        raise
    found = []
    for remote_name in wanted:
        t = remote[remote_name]
        approval = server.approval if isinstance(server.approval, bool) else remote_name in server.approval
        found.append(
            McpTool(
                conn,
                remote_name,
                name=server.prefix + remote_name,
                description=t.description or "",
                parameters=t.input_schema or {"type": "object", "properties": {}},
                approval=approval,
            )
        )
    return conn, found


@contextlib.asynccontextmanager
async def mcp_tools(*servers: McpServer) -> AsyncIterator[Toolset]:
    """Connect to ``servers`` and yield their tools as one toolset; the connections close on exit.

    Raises :class:`McpServerGone` when a server cannot be started or listed, and ``ConfigError``
    when ``tools`` names a tool the server does not have.
    """
    connections: list[_Connection] = []
    try:
        found: list[McpTool] = []
        for server in servers:
            conn, tools = await connect(server)
            connections.append(conn)
            found += tools
        yield Toolset(found, name="mcp")
    finally:
        for conn in reversed(connections):
            await conn.close()
