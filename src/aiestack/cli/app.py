"""The Typer application, built on demand (no module-level app), and the entry point."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

import typer
from rich.console import Console

from aiestack.errors import AiestackError, ConfigError
from aiestack.native_output import VERBOSE_ENV


def build_app(plugins: Iterable[object] = (), *, entry_points: bool = True) -> typer.Typer:
    """A fresh CLI with every command registered; each command lives in its own module.

    Then the plugins' commands (the ``register_commands`` hook: installed plugins, and ``plugins``
    given here, as tests do); a plugin command may not take a built-in command's name.
    """
    from aiestack.cli import chat, evals, ingest, init, keys, logs, models, search, serve, usage

    app = typer.Typer(
        name="aiestack",
        help="The AI-engineering stack: gateway, context, guardrails, caches, tracing, evals.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # plain click help: typer's rich help imports markdown-it and pygments
    )

    @app.callback()
    def _options(
        verbose: bool = typer.Option(
            False, "--verbose", help="Show what model libraries print while loading (llama.cpp's log, progress bars)."
        ),
    ) -> None:
        if verbose:  # an environment variable, so that `serve --workers N` processes inherit it
            os.environ[VERBOSE_ENV] = "1"

    for module in (init, serve, models, chat, logs, keys, usage, evals, ingest, search):
        module.register(app)
    from aiestack.cli import datasets, feedback, finetune, flywheel, prompts

    for module in (feedback, prompts, datasets, finetune, flywheel):
        module.register(app)
    from aiestack.cli import agents, bench, collections, mcp, redteam, routes

    routes.register(app)
    agents.register(app)
    mcp.register(app)
    redteam.register(app)
    collections.register(app)
    bench.register(app)
    _add_plugin_commands(app, plugins, entry_points=entry_points)
    return app


def _add_plugin_commands(app: typer.Typer, plugins: Iterable[object], *, entry_points: bool) -> None:
    from aiestack.plugins import collect_commands, plugin_manager

    taken = {c.name or (c.callback.__name__.replace("_", "-") if c.callback else "") for c in app.registered_commands}
    taken |= {g.name or "" for g in app.registered_groups}
    # Only the commands hook, without the built-ins (they register no command): `aiestack --help`
    # imports no model provider (tests/cli/test_cold_start.py).
    manager = plugin_manager(plugins, entry_points=entry_points, builtins=False)
    for name, spec in collect_commands(manager).items():
        if name in taken:
            raise ConfigError(
                f"plugins.commands.{name}",
                f"a plugin registers the command '{name}', which is a built-in aiestack command",
                "give the plugin's command another name",
            )
        if isinstance(spec.command, typer.Typer):
            app.add_typer(spec.command, name=name, help=spec.help)
        else:
            app.command(name, help=spec.help)(spec.command)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; an expected error prints its message and hint instead of a traceback."""
    try:
        build_app()(args=argv, standalone_mode=True)
    except AiestackError as exc:
        from rich.markup import escape

        err = Console(stderr=True, highlight=False)
        # Messages and hints name TOML tables ("[models]"): text, not markup.
        err.print(f"[bold red]error:[/] {escape(exc.message)}")
        if exc.hint:
            err.print(f"[yellow]hint:[/] {escape(exc.hint)}")
        sys.exit(2)
