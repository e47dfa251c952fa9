"""``aiestack models``: the configured models and whether each can be reached."""

from __future__ import annotations

import typer
from rich.table import Table

from aiestack.cli.console import table_console


def register(app: typer.Typer) -> None:
    @app.command()
    def models(check: bool = typer.Option(True, "--check/--no-check", help="Check reachability.")) -> None:
        """List configured models and whether each is reachable now."""
        from aiestack.build import open_stack
        from aiestack.models.base import Health
        from aiestack.settings import load_settings

        settings = load_settings()

        async def run() -> list[tuple[str, str, str, bool, Health | None]]:
            async with open_stack(settings) as stack:
                health = await stack.check_models() if check else {}
                return [
                    (
                        e.name,
                        e.provider.provider,
                        e.upstream,
                        e.name == settings.default_model,
                        health.get(e.name),
                    )
                    for e in stack.models
                ]

        import asyncio

        rows = asyncio.run(run())
        table = Table(title="Models")
        for col in ("name", "provider", "upstream model", "default", "reachable", "detail"):
            table.add_column(col)
        unreachable = 0
        for name, provider, upstream, default, health in rows:
            if health is None:
                state, detail = "-", ""
            else:
                state = "[green]yes[/]" if health.ok else "[red]no[/]"
                detail = health.detail + (
                    f" ({health.latency_ms:.0f} ms)" if health.latency_ms is not None else ""
                )
                unreachable += not health.ok
            table.add_row(name, provider, upstream, "*" if default else "", state, detail)
        table_console().print(table)
        if unreachable:
            raise typer.Exit(1)
