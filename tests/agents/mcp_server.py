"""A tiny MCP server written with the official SDK, for the MCP client tests.

``python mcp_server.py`` speaks stdio; ``python mcp_server.py --http PORT`` serves streamable HTTP
on 127.0.0.1:PORT/mcp. Tools: ``add``, ``shout``, ``fail`` (an error result), ``big`` (a long
result), ``env_var``, ``header``, ``hang`` (never answers) and ``die`` (the process exits mid-call).
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("aiestack-test-tools")


@server.tool()
def add(a: int, b: int) -> str:
    """Add two integers."""
    return str(a + b)


@server.tool()
def shout(text: str, times: int = 1) -> str:
    """Upper-case a text, repeated `times` times."""
    return " ".join([text.upper()] * times)


@server.tool()
def fail(why: str) -> str:
    """Always fails, saying why."""
    raise ToolError(f"refused: {why}")


@server.tool()
def big(n: int) -> str:
    """Return n characters."""
    return "x" * n


@server.tool()
def env_var(name: str) -> str:
    """The value of an environment variable of the server process."""
    return os.environ.get(name, "<unset>")


@server.tool()
def header(name: str, ctx: Context) -> str:
    """The value of a header of the HTTP request that carried this call."""
    return (ctx.headers or {}).get(name.lower(), "<unset>")


@server.tool()
async def hang() -> str:
    """Never answers."""
    await asyncio.sleep(3600)
    return "late"


@server.tool()
def die() -> str:
    """The server process exits in the middle of the call."""
    os._exit(3)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
