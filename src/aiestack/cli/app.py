"""The Typer application, built on demand (no module-level app), and the entry point."""

from __future__ import annotations

import sys

import typer
from rich.console import Console

from aiestack.errors import AiestackError


def build_app() -> typer.Typer:
    """A fresh CLI with every command registered; each command lives in its own module."""
    from aiestack.cli import chat, evals, ingest, init, keys, logs, models, search, serve, usage

    app = typer.Typer(
        name="aiestack",
        help="The AI-engineering stack: gateway, context, guardrails, caches, tracing, evals.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for module in (init, serve, models, chat, logs, keys, usage, evals, ingest, search):
        module.register(app)
    from aiestack.cli import datasets, feedback, prompts

    for module in (feedback, prompts, datasets):
        module.register(app)
    from aiestack.cli import bench, collections, redteam, routes

    routes.register(app)
    redteam.register(app)
    collections.register(app)
    bench.register(app)
    return app


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; an expected error prints its message and hint instead of a traceback."""
    try:
        build_app()(args=argv, standalone_mode=True)
    except AiestackError as exc:
        err = Console(stderr=True, highlight=False)
        err.print(f"[bold red]error:[/] {exc.message}")
        if exc.hint:
            err.print(f"[yellow]hint:[/] {exc.hint}")
        sys.exit(2)
