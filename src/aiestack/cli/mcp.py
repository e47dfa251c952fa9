"""``aiestack mcp``: this deployment as an MCP server (collections, search, ask with citations, eval runs)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command("mcp")
    def mcp_command(
        http: bool = typer.Option(
            False, "--http", help="Serve streamable HTTP on 127.0.0.1 (at /mcp) instead of stdio."
        ),
        port: int = typer.Option(
            8765, "--port", min=1, max=65535, help="With --http: the port on 127.0.0.1."
        ),
    ) -> None:
        """Serve this deployment's collections, cited answers and eval runs as MCP tools (stdio by default)."""
        import asyncio
        import importlib.util

        from aiestack.errors import ConfigError
        from aiestack.settings import load_settings

        if importlib.util.find_spec("mcp") is None:
            raise ConfigError("mcp", "the MCP SDK is not installed", "pip install 'aiestack[agents]'")
        from aiestack.mcp_server import serve

        settings = load_settings()
        try:
            asyncio.run(serve(settings, http=http, port=port))
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
