"""``aiestack serve``: the OpenAI-compatible gateway on the configured models."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from aiestack.settings import Settings


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for all)."),
        port: int = typer.Option(8000, "--port", "-p", help="TCP port."),
        workers: int = typer.Option(1, "--workers", "-w", min=1, help="Server processes."),
        log_level: str = typer.Option("info", "--log-level"),
        allow_open: bool = typer.Option(
            False, "--allow-open", help="Serve without API keys on a non-loopback address (open mode)."
        ),
    ) -> None:
        """Serve the OpenAI-compatible API (point any OpenAI SDK at http://HOST:PORT/v1)."""
        import uvicorn

        from aiestack.server.exposure import check_exposure, uvicorn_proxy_options
        from aiestack.settings import load_settings

        settings = load_settings()  # fail fast, with the config error, before uvicorn starts
        err = Console(stderr=True)
        exposure = check_exposure(settings, host, has_keys=_has_keys(settings), allow_open=allow_open)
        if exposure.warning is not None:
            err.print(f"[yellow]Warning:[/] {exposure.warning}", highlight=False)
        if exposure.refuse:
            err.print(
                f"[red]Refusing to serve without keys on {host}.[/] Create a key first, listen on 127.0.0.1, "
                "or pass --allow-open if every caller that can reach it may use it.",
                highlight=False,
            )
            raise typer.Exit(2)
        err.print(
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
            # Outlive clients' idle connections: a request sent on a connection the server is closing is reset.
            timeout_keep_alive=settings.gateway.keep_alive_s,
            **uvicorn_proxy_options(settings),
        )


def _has_keys(settings: Settings) -> bool:
    """Whether any API key exists in the configured store (migrated first: a fresh install has none)."""
    from aiestack.stores.base import KeyStore
    from aiestack.stores.open import open_store

    store = open_store(settings.store_url, "exchanges")
    try:
        store.migrate()
        return isinstance(store, KeyStore) and store.has_keys()
    finally:
        store.close()
