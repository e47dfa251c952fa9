"""``aiestack prompts push|list|show|diff|label``: the prompt registry from the terminal."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from aiestack.cli.console import table_console

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
    _register_optimise(prompts)

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
        ref = f"{name}@{version.version}"
        said = f"{ref} pushed" if created else f"unchanged, still {ref}"
        labels = f" [{', '.join(label)}]" if label else ""
        typer.echo(f"{said}{labels}; variables: {', '.join(version.variables) or 'none'}")

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
            ref = f"{version.name}@{version.version}"
            typer.echo(f"{ref} pushed [{label}]" if created else f"unchanged, still {ref} [{label}]")

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


def _register_optimise(prompts: typer.Typer) -> None:
    @prompts.command("optimise")
    def optimise(
        name: str = typer.Argument(..., help="The prompt to improve: NAME (its production label), NAME@LABEL or NAME@VERSION."),
        suite_file: Path = typer.Option(..., "--suite", help="The dev suite YAML: its examples, metrics and gates score the candidates."),
        system: str = typer.Option(None, "--system", help="The suite's system to optimise (default: the one whose prompt_ref names the prompt)."),
        rewrites: int = typer.Option(3, "--rewrites", min=0, max=20, help="Rewrites to ask the model for."),
        model: str = typer.Option(None, "--model", help="The model or route that writes rewrites (default: the system's)."),
        examples: str = typer.Option(None, "--examples", help="Few-shot candidates from this chat dataset (NAME or NAME@VERSION)."),
        shots: str = typer.Option("2,4", "--shots", help="Examples per few-shot candidate, comma-separated."),
        sets: int = typer.Option(2, "--sets", min=1, max=20, help="Random example sets per number of shots."),
        metric: str = typer.Option(None, "--metric", help="The metric to optimise (default: the suite's first quality metric)."),
        min_gain: float = typer.Option(0.0, "--min-gain", help="Push only if the 95% interval's low end of the gain is above this."),
        limit: int = typer.Option(None, "--limit", "-n", min=1, help="Only the first N dev examples."),
        label: str = typer.Option(None, "--label", "-l", help="Point this label at the pushed version (e.g. staging)."),
        seed: int = typer.Option(0, "--seed", help="Seeds the rewrites and the example sets."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Score and judge, push nothing."),
    ) -> None:
        """Try rewrites and few-shot example sets of a prompt on a dev suite; push the best as a new version if it beats the current one."""
        import asyncio

        from aiestack.flywheel.prompt_opt import OptimiseOptions

        try:
            shot_counts = tuple(int(s) for s in shots.split(",") if s.strip())
        except ValueError:
            raise typer.BadParameter(f"{shots!r} is not a list of numbers such as 2,4", param_hint="--shots") from None
        if any(k < 1 for k in shot_counts):
            raise typer.BadParameter("every number of shots must be at least 1", param_hint="--shots")
        options = OptimiseOptions(rewrites=rewrites, model=model, examples=examples, shots=shot_counts, sets=sets,
                                  metric=metric, min_gain=min_gain, seed=seed)
        if rewrites == 0 and examples is None:
            raise typer.BadParameter("nothing to try: ask for --rewrites or give --examples", param_hint="--rewrites")
        result = asyncio.run(_optimise(name, suite_file, system, options, limit, label, not dry_run))
        _print_optimisation(result)
        if result.pushed is None and not dry_run:
            raise typer.Exit(1)


async def _optimise(ref: str, suite_file: Path, system: str | None, options: Any, limit: int | None,
                    label: str | None, push: bool) -> Any:
    from aiestack.build import open_stack
    from aiestack.cli.evals import run_suite
    from aiestack.errors import ConfigError
    from aiestack.evals.datasets import load_examples
    from aiestack.evals.suite import load_suite
    from aiestack.flywheel.prompt_opt import PromptOptimiser
    from aiestack.settings import load_settings
    from aiestack.stores.datasets import DatasetStore

    suite = load_suite(suite_file)
    if limit is not None:
        suite = suite.model_copy(update={"dataset": suite.dataset.model_copy(update={"limit": limit})})
    examples = load_examples(suite.dataset, suite.dataset_path)
    settings = load_settings()
    err = Console(stderr=True, highlight=False)
    async with open_stack(settings) as stack:
        if stack.prompts is None:
            raise ConfigError("store.url", "this store cannot hold prompts", "use the SQLite, PostgreSQL or memory store")

        async def evaluate(candidate_suite: Any, items: Any) -> Any:
            return await run_suite(stack, settings, candidate_suite, items, str(suite_file.resolve()))

        optimiser = PromptOptimiser(
            stack.prompts, evaluate, rewriter=stack.side_calls.caller("prompts.optimise"),
            datasets=stack.store if isinstance(stack.store, DatasetStore) else None,
        )
        return await optimiser.optimise(ref, suite, examples, options, system=system, push=push, label=label,
                                        on_progress=lambda line: err.print(line, markup=False))


def _print_optimisation(result: Any) -> None:
    from aiestack.flywheel.prompt_opt import OptimiseResult

    assert isinstance(result, OptimiseResult)
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("candidate", "kind", result.metric, "scored", "errors", "eval run"):
        table.add_column(column, no_wrap=True)
    for s in sorted(result.scored, key=lambda s: (s.score is None, -(s.score or 0.0))):
        mark = " *" if s is result.best else ""
        table.add_row(s.candidate.id + mark, s.candidate.kind, "n/a" if s.score is None else f"{s.score:.4f}",
                      str(s.scored), str(s.errors), s.eval_run)
    table_console().print(table)
    for cid, why in result.rejected:
        typer.echo(f"  not tried: {cid}: {why}")
    typer.echo(f"decision: {'pass' if result.decision.passed else 'fail'}: {result.decision.reason}")
    if result.pushed is not None:
        typer.echo(f"pushed {result.pushed.name}@{result.pushed.version} (from {result.base.name}@{result.base.version}, {result.best.candidate.id})")
    else:
        typer.echo(f"nothing pushed: {result.base.name}@{result.base.version} stays as it is")
