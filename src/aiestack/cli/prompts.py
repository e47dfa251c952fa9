"""``aiestack prompts push|list|show|diff|label``: the prompt registry from the terminal."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from aiestack.cli.keys import table_console

if TYPE_CHECKING:
    from aiestack.prompts.registry import PromptRegistry


@contextmanager
def open_registry() -> Iterator[PromptRegistry]:
    """The prompt registry over the configured store (migrated), closed afterwards."""
    from aiestack.errors import ConfigError
    from aiestack.prompts.registry import PromptRegistry
    from aiestack.settings import load_settings
    from aiestack.stores.open import open_store
    from aiestack.stores.prompts import PromptStore

    store = open_store(load_settings().store_url, "exchanges")
    try:
        store.migrate()
        if not isinstance(store, PromptStore):
            raise ConfigError("store.url", f"the store {type(store).__name__} cannot hold prompts", "use SQLite or PostgreSQL")
        yield PromptRegistry(store, ttl_s=0)
    finally:
        store.close()


def _when(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _read(file: Path) -> str:
    if str(file) == "-":
        return sys.stdin.read()
    try:
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {file}: {exc.strerror}", param_hint="FILE") from None


def _pairs(items: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="--render")
        pairs[key.strip()] = value
    return pairs


def colored_diff(diff: str) -> Text:
    """A unified diff with additions green, removals red and hunk headers cyan."""
    text = Text()
    for line in diff.splitlines(keepends=True):
        style = (
            "bold" if line.startswith(("+++", "---"))
            else "green" if line.startswith("+")
            else "red" if line.startswith("-")
            else "cyan" if line.startswith("@@")
            else ""
        )
        text.append(line, style=style)
    return text


def register(app: typer.Typer) -> None:
    prompts = typer.Typer(help="Versioned prompt templates with labels (see docs/prompts.md).", no_args_is_help=True)
    app.add_typer(prompts, name="prompts")

    @prompts.command("push")
    def push(
        name: str = typer.Argument(..., help="The prompt's name, e.g. support."),
        file: Path = typer.Argument(..., help="The Jinja2 template file ('-' reads stdin)."),
        label: list[str] = typer.Option([], "--label", "-l", help="Point this label at the version (repeatable)."),
        message: str = typer.Option(None, "--message", "-m", help="What changed."),
        variable: list[str] = typer.Option([], "--var", help="Declare a variable (those the template reads are inferred)."),
    ) -> None:
        """Store FILE as the next version of NAME (nothing new if it equals the newest version)."""
        template = _read(file)
        with open_registry() as registry:
            version, created = registry.push(name, template, variables=variable, message=message)
            for each in label:
                registry.set_label(name, each, version.version)
        what = "pushed" if created else "unchanged, still"
        labels = f" [{', '.join(label)}]" if label else ""
        typer.echo(f"{name}@{version.version} {what}{labels}; variables: {', '.join(version.variables) or 'none'}")

    @prompts.command("import")
    def import_(
        directory: Path = typer.Argument(..., help="A folder of NAME.j2 templates, e.g. examples/companion/prompts."),
        label: str = typer.Option("production", "--label", "-l", help="Point this label at each version."),
        message: str = typer.Option(None, "--message", "-m", help="What changed."),
    ) -> None:
        """Push every NAME.j2 in DIRECTORY as prompt NAME (a template equal to the newest version stays as it is)."""
        with open_registry() as registry:
            pushed = registry.push_dir(directory, label=label, message=message)
        for version, created in pushed:
            what = "pushed" if created else "unchanged, still"
            typer.echo(f"{version.name}@{version.version} {what} [{label}]")

    @prompts.command("list")
    def list_() -> None:
        """Every prompt with its newest version, labels and uses."""
        with open_registry() as registry:
            summaries = registry.store.list_prompts()
            used = registry.store.prompt_usage_all()
            usage = {s.name: sum(used.get(s.name, {}).values()) for s in summaries}
        if not summaries:
            typer.echo("No prompts yet. Push one: aiestack prompts push NAME FILE --label production")
            return
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("name", "latest", "labels", "uses", "updated"):
            table.add_column(column, no_wrap=True, justify="right" if column in ("latest", "uses") else "left")
        for s in summaries:
            labels = ", ".join(f"{label}→{v}" for label, v in s.labels.items()) or "-"
            table.add_row(s.name, str(s.latest_version), labels, f"{usage[s.name]:,}", _when(s.updated_at))
        table_console().print(table)

    @prompts.command("show")
    def show(
        ref: str = typer.Argument(..., help="NAME, NAME@LABEL or NAME@VERSION (NAME alone: every version)."),
        render: list[str] = typer.Option(
            [], "--render", "-r", help="Render with this variable, KEY=VALUE (repeatable), instead of printing the template."
        ),
    ) -> None:
        """A prompt's versions with labels and uses, or one version's template (or its rendering)."""
        from aiestack.prompts.registry import parse_ref
        from aiestack.prompts.stage import render_version

        with open_registry() as registry:
            if "@" in ref or render:
                version = registry.get(parse_ref(ref))
                typer.echo(f"# {version.name}@{version.version}  ({_when(version.created_at)})", err=True)
                typer.echo(f"# variables: {', '.join(version.variables) or 'none'}", err=True)
                text = render_version(version, _pairs(render)) if render else version.template
                typer.echo(text, nl=not text.endswith("\n"))
                return
            name = parse_ref(ref).name
            versions = registry.store.prompt_versions(name)
            if not versions:
                raise registry.missing(parse_ref(ref))
            labels: dict[int, list[str]] = {}
            for lb in registry.store.prompt_labels(name):
                labels.setdefault(lb.version, []).append(lb.label)
            usage = registry.store.prompt_usage(name)
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("version", "labels", "uses", "variables", "created", "message"):
            table.add_column(column, no_wrap=column != "message")
        for v in reversed(versions):
            table.add_row(
                str(v.version),
                ", ".join(labels.get(v.version, [])) or "-",
                f"{usage.get(v.version, 0):,}",
                ", ".join(v.variables) or "-",
                _when(v.created_at),
                v.message or "",
            )
        table_console().print(table)

    @prompts.command("diff")
    def diff(
        name: str = typer.Argument(..., help="The prompt."),
        a: str = typer.Argument(..., help="From: a version number or a label."),
        b: str = typer.Argument(..., help="To: a version number or a label."),
    ) -> None:
        """A unified diff between two versions (colored on a terminal)."""
        from aiestack.prompts.registry import parse_ref
        from aiestack.prompts.templates import diff_versions

        with open_registry() as registry:
            old = registry.get(parse_ref(f"{name}@{a}"))
            new = registry.get(parse_ref(f"{name}@{b}"))
        text = diff_versions(old, new)
        if not text:
            typer.echo(f"{name}@{old.version} and {name}@{new.version} are the same.", err=True)
            return
        console = Console(highlight=False)
        if console.is_terminal:
            console.print(colored_diff(text), end="")
        else:
            typer.echo(text, nl=False)

    @prompts.command("label")
    def label(
        name: str = typer.Argument(..., help="The prompt."),
        version: int = typer.Argument(..., help="The version the label should point at."),
        label_name: str = typer.Argument(..., metavar="LABEL", help="e.g. production, staging, canary."),
    ) -> None:
        """Point LABEL at VERSION. Routes using NAME@LABEL switch within a second, without a restart."""
        with open_registry() as registry:
            previous = registry.store.resolve_label(name, label_name)
            registry.set_label(name, label_name, version)
        moved = f" (was {previous.version})" if previous is not None and previous.version != version else ""
        typer.echo(f"{name}@{label_name} → {version}{moved}")
