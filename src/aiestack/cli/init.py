"""``aiestack init``: write a commented example configuration."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    @app.command()
    def init(
        path: Path = typer.Option(Path("aiestack.toml"), "--path", "-p", help="Where to write the config."),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
    ) -> None:
        """Write a commented example aiestack.toml (every key optional; defaults run offline)."""
        console = Console()
        if path.exists() and not force:
            console.print(f"[yellow]{path} already exists[/]; use --force to overwrite it.")
            raise typer.Exit(1)
        text = resources.files("aiestack").joinpath("example.toml").read_text(encoding="utf-8")
        path.write_text(text, encoding="utf-8")
        console.print(f"Wrote [bold]{path}[/]. Edit it, then try: aiestack models")
