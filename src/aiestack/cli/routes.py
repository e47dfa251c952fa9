"""``aiestack routes``: the semantic router's routes, and ``routes fit`` to tune their thresholds."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from aiestack.cli.console import table_console


def register(app: typer.Typer) -> None:
    routes = typer.Typer(
        name="routes",
        help="Semantic routing: pick a route by the meaning of a request.",
        no_args_is_help=True,
    )

    @routes.command("fit")
    def fit_command(
        file: Path = typer.Argument(
            ..., exists=True, dir_okay=False, help='JSONL: {"text": ..., "route": ... | null}.'
        ),
        split: str = typer.Option(
            None, "--split", help='Use only the lines whose "split" is this (e.g. train).'
        ),
        write: Path = typer.Option(None, "--write", help="Also write the thresholds as TOML to this file."),
    ) -> None:
        """Tune each route's threshold on labelled utterances and print them (as TOML to paste)."""
        from aiestack.build import open_stack
        from aiestack.errors import ConfigError
        from aiestack.gateway.semantic_router import FitResult, RouteStage, fit, load_labelled
        from aiestack.settings import load_settings

        settings = load_settings()
        rows = load_labelled(file, split=split)

        async def run() -> FitResult:
            async with open_stack(settings) as stack:
                stage = next((s for s in stack.pipeline.stages if isinstance(s, RouteStage)), None)
                if stage is None:
                    raise ConfigError(
                        "routes",
                        "no route declares examples, so there is nothing to fit",
                        'give routes example utterances: examples = ["...", "..."] under [routes.NAME]',
                    )
                return await fit(stage.router, rows)

        import asyncio

        result = asyncio.run(run())
        table = Table(title=f"Thresholds fitted on {result.examples} utterances")
        table.add_column("route")
        table.add_column("threshold", justify="right")
        for route, threshold in result.thresholds.items():
            table.add_row(route, f"{threshold:.2f}")
        console = table_console()
        console.print(table)
        typer.echo(
            f"accuracy on {result.examples} utterances: {result.before:.3f} with the current thresholds "
            f"→ {result.after:.3f} fitted"
        )
        toml = "".join(f"[routes.{route}]\nthreshold = {t:.2f}\n\n" for route, t in result.thresholds.items())
        typer.echo(toml.rstrip())
        if write is not None:
            write.write_text(toml, encoding="utf-8")
            typer.echo(f"written to {write}")

    app.add_typer(routes)
