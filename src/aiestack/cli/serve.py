"""``aiestack serve``: the OpenAI-compatible gateway on the configured models."""

from __future__ import annotations

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for all)."),
        port: int = typer.Option(8000, "--port", "-p", help="TCP port."),
        workers: int = typer.Option(1, "--workers", "-w", min=1, help="Server processes."),
        log_level: str = typer.Option("info", "--log-level"),
    ) -> None:
        """Serve the OpenAI-compatible API (point any OpenAI SDK at http://HOST:PORT/v1)."""
        import uvicorn

        from aiestack.settings import load_settings

        settings = load_settings()  # fail fast, with the config error, before uvicorn starts
        Console(stderr=True).print(
            f"aiestack on [bold]http://{host}:{port}/v1[/] · default model [bold]{settings.default_model}[/] · "
            f"data in {settings.data_dir}"
        )
        uvicorn.run(
            "aiestack.server.main:app_factory",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            timeout_graceful_shutdown=30,
        )
