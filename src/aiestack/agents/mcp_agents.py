"""MCP servers named in ``[agents.NAME.mcp.SERVER]``: checked when the stack is built, connected on an
agent's first run, shared by its later runs, closed with the stack.

```toml
[agents.triage]
tools = ["calculator"]

[agents.triage.mcp.files]                 # a server spoken to over stdio
command = "npx"                           # or its whole argv: ["npx", "-y", ...]
args = ["-y", "@modelcontextprotocol/server-filesystem", "/srv/docs"]
env = { LOG_LEVEL = "warn" }
tools = ["read_file", "list_directory"]  # the allow-list (default: every tool the server has)

[agents.triage.mcp.issues]                # a server over streamable HTTP
url = "https://mcp.example.com/mcp"
headers = { Authorization = "Bearer ..." }
approval = ["create_issue"]              # or true: every tool of the server
prefix = "gh_"
```

:func:`mcp_servers` validates the tables (unknown keys, types, exactly one of ``command`` and
``url``, a command that is not on ``PATH``, a name an allowed tool would share with another tool
of the agent) into :class:`~aiestack.agents.mcp.McpServer` s; :class:`McpPool` holds the live
connections of a stack; :func:`open_agent` (in :mod:`aiestack.agents.config`) builds an agent
with them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aiestack.agents.mcp import McpServer, McpServerGone, McpTool, _Connection, connect
from aiestack.agents.tools import DEFAULT_MAX_RESULT_CHARS, DEFAULT_TIMEOUT_S
from aiestack.errors import AiestackError, ConfigError
from aiestack.settings import config_error


class McpTable(BaseModel):
    """One ``[agents.NAME.mcp.SERVER]`` table (the fields of :class:`~aiestack.agents.mcp.McpServer`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: str | tuple[str, ...] | None = Field(default=None, min_length=1, description="a stdio server's program, or its argv")
    args: tuple[str, ...] = Field(default=(), description="arguments after the program")
    url: str | None = Field(default=None, description="a streamable HTTP endpoint")
    env: dict[str, str] | None = None
    cwd: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    tools: tuple[str, ...] | None = None
    prefix: str = ""
    approval: bool | tuple[str, ...] = False
    timeout_s: float = Field(default=DEFAULT_TIMEOUT_S, gt=0)
    connect_timeout_s: float = Field(default=20.0, gt=0)
    max_result_chars: int = Field(default=DEFAULT_MAX_RESULT_CHARS, gt=0)


class McpUnavailable(AiestackError):
    """An agent's MCP server could not be started or reached (or lacks a tool its table names)."""

    http_status = 502
    error_type = "api_error"
    code = "mcp_server_unavailable"


def mcp_servers(prefix: str, tables: Mapping[str, Any], *, other_tools: Iterable[str] = ()) -> tuple[McpServer, ...]:
    """The servers of ``[PREFIX.mcp.*]``, checked; a :class:`ConfigError` names the first bad key.

    ``other_tools``: the agent's other tool names, which an allowed MCP tool (after its prefix) must
    not take.
    """
    servers: list[McpServer] = []
    taken = {name: "a built-in tool" for name in other_tools}
    for name, table in tables.items():
        where = f"{prefix}.mcp.{name}"
        if not isinstance(table, Mapping):
            raise ConfigError(where, "is not a table", f"write [{where}] with command = [...] or url = \"...\"")
        try:
            spec = McpTable(**table)
        except ValidationError as exc:
            raise config_error(exc, McpTable, source="aiestack.toml", prefix=where) from None
        if (spec.command is None) == (spec.url is None):
            raise ConfigError(
                where, "give exactly one of command (a stdio server) or url (streamable HTTP)",
                'set command = ["python", "-m", "my_server"] or url = "http://127.0.0.1:8000/mcp"',
            )  # fmt: skip
        if spec.url is not None and not spec.url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.url", f"{spec.url!r} is not an http(s) URL", "start it with http:// or https://")
        if spec.args and spec.command is None:
            raise ConfigError(f"{where}.args", "args go with a stdio server's command", f"set {where}.command, or drop args")
        argv = (spec.command,) if isinstance(spec.command, str) else spec.command
        if argv is not None:
            argv = (*argv, *spec.args)
            _check_command(f"{where}.command", argv, spec.cwd)
        if spec.cwd is not None and not os.path.isdir(spec.cwd):
            raise ConfigError(f"{where}.cwd", f"{spec.cwd!r} is not a directory", "give an existing directory or leave cwd out")
        if isinstance(spec.approval, tuple) and spec.tools is not None:
            extra = [t for t in spec.approval if t not in spec.tools]
            if extra:
                raise ConfigError(f"{where}.approval", f"{extra} are not among the allowed tools {list(spec.tools)}",
                                  f"name tools from {where}.tools")  # fmt: skip
        for tool in spec.tools or ():
            full = spec.prefix + tool
            if full in taken:
                raise ConfigError(f"{where}.tools", f"the tool name {full!r} is taken by {taken[full]}",
                                  f"set {where}.prefix, or leave the tool out")  # fmt: skip
            taken[full] = f"mcp server {name!r}"
        values = spec.model_dump(exclude_none=True, exclude={"command", "args"})
        servers.append(McpServer(name=name, command=argv or (), **values))
    return tuple(servers)


def _check_command(where: str, command: Sequence[str], cwd: str | None) -> None:
    program = command[0]
    if os.sep in program or (os.altsep and os.altsep in program):
        path = program if os.path.isabs(program) or cwd is None else os.path.join(cwd, program)
        if not os.access(path, os.X_OK):
            raise ConfigError(where, f"{program!r} is not an executable file", "give the server program's path")
    elif shutil.which(program) is None:
        raise ConfigError(where, f"{program!r} is not on PATH", f"install it, or give its full path in {where}")


class McpPool:
    """The live connections of a stack's agents' MCP servers (see the module doc).

    :meth:`tools` connects a server on first use and gives the same tools to later runs; a server
    whose connection ended (it exited, or the endpoint went away) is connected again on the next
    use. :meth:`aclose` closes every connection (the stack's ``aclose`` calls it).
    """

    def __init__(self) -> None:
        self._open: dict[tuple[str, str, str], tuple[_Connection, list[McpTool], asyncio.AbstractEventLoop]] = {}
        self._locks: dict[tuple[int, str, str, str], asyncio.Lock] = {}  # by event loop, agent and server
        self._closed = False

    async def tools(self, agent: str, servers: Sequence[McpServer]) -> list[McpTool]:
        """The tools of ``agent``'s servers, connecting those not connected; raises :class:`McpUnavailable`."""
        found: list[McpTool] = []
        for server in servers:
            found += await self._server_tools(agent, server)
        return found

    async def _server_tools(self, agent: str, server: McpServer) -> list[McpTool]:
        if self._closed:
            raise McpUnavailable("The stack is closed: its MCP connections are gone.", hint="Open a new stack.")
        key = (agent, server.name, repr(server))  # one agent name may come with other tables (an eval's inline agent)
        loop = asyncio.get_running_loop()
        lock = self._locks.setdefault((id(loop), *key), asyncio.Lock())
        async with lock:
            entry = self._open.get(key)
            if entry is not None and not entry[0].gone and entry[2] is loop:
                return entry[1]
            if entry is not None:  # gone, or made on another event loop (its task is that loop's): connect again
                del self._open[key]
                if entry[2] is loop:
                    await entry[0].close()
            try:
                conn, tools = await connect(server)
            except McpServerGone as exc:
                raise McpUnavailable(
                    f"Agent '{agent}': {exc}.",
                    hint=f"Check [agents.{agent}.mcp.{server.name}] in aiestack.toml and that the server starts or answers.",
                ) from None
            except ConfigError as exc:  # the server lacks a tool its table allows
                raise McpUnavailable(
                    f"Agent '{agent}', mcp server '{server.name}': {exc.message}",
                    hint=f"Fix [agents.{agent}.mcp.{server.name}] tools.",
                ) from None
            self._open[key] = (conn, tools, loop)
            return tools

    async def aclose(self) -> None:
        """Close every connection (idempotent); later uses raise :class:`McpUnavailable`."""
        self._closed = True
        loop = asyncio.get_running_loop()
        entries, self._open = list(self._open.values()), {}
        for conn, _, made_on in entries:
            if made_on is loop:
                await conn.close()
