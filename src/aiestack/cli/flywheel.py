"""``aiestack flywheel run|runs|show``: one turn of the data flywheel, and its stored lineage.

The face only: the loop is :mod:`aiestack.flywheel`. ``flywheel run`` exits 0 when it promoted the
candidate, 1 when the gate (or the optimiser) refused it — nothing changed, and it says why — and 2
on an error (a failed step can be resumed with ``--resume RUN_ID``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aiestack.cli.console import table_console


class _Borrowed:
    """Another object's methods, without closing it: a variant stack must not close what it borrows."""

    def __init__(self, get: Callable[[], Any]) -> None:
        self._get = get

    def __getattr__(self, name: str) -> Any:
        return getattr(self._get(), name)

    def close(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def flywheel_tools(stack: Any, settings: Any, *, source: str = "", models: Iterable[Any] = (), use_cache: bool = True) -> Any:
    """The :class:`~aiestack.flywheel.runner.FlywheelTools` over ``stack``: the eval harness as
    ``aiestack eval run`` runs it, the side-call seam for rewrites, and variants of the stack (the
    same store and embedding model, routes changed) for route candidates. ``models``: ready-made
    model entries the variants need too (tests)."""
    from aiestack.build import open_stack
    from aiestack.cli.evals import run_suite
    from aiestack.flywheel.runner import FlywheelTools
    from aiestack.settings import config_path

    extra = list(models)

    def evaluator(target: Any) -> Any:
        async def evaluate(suite: Any, examples: Any) -> Any:
            return await run_suite(target, settings, suite, examples, source, use_cache=use_cache)

        return evaluate

    @asynccontextmanager
    async def variant(changes: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> AsyncIterator[Any]:
        routes = {name: dict(table) for name, table in settings.routes.items()}
        for route, patch in changes.get("routes", {}).items():
            routes[route] = {**routes[route], **patch}
        models = {**settings.models, **{name: dict(table) for name, table in changes.get("models", {}).items()}}
        patched = settings.model_copy(update={"routes": routes, "models": models})
        async with open_stack(patched, store=_Borrowed(lambda: stack.store), models=extra) as other:
            other.resources.use(embeddings=_Borrowed(stack.resources.get_embeddings))
            yield evaluator(other)

    return FlywheelTools(
        store=stack.store, prompts=stack.prompts, evaluate=evaluator(stack),
        rewriter=stack.side_calls.caller("prompts.optimise"), variant=variant,
        routes={name: dict(table) for name, table in settings.routes.items()}, config_path=config_path(),
        workdir=settings.data_dir / "flywheel", documents=_Borrowed(lambda: stack.documents),
        embeddings_for=stack.resources.embeddings_for, embedding_versions=_versions(settings),
    )  # fmt: skip


def _versions(settings: Any) -> Any:
    from aiestack.models.embedding_versions import EmbeddingVersions

    return EmbeddingVersions.in_data_dir(settings.data_dir)


def _when(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _open_store() -> Any:
    from aiestack.errors import ConfigError
    from aiestack.settings import load_settings
    from aiestack.stores.flywheel import FlywheelStore
    from aiestack.stores.open import open_store

    store = open_store(load_settings().store_url, "exchanges")
    store.migrate()
    if not isinstance(store, FlywheelStore):
        store.close()
        raise ConfigError("store.url", f"the store {type(store).__name__} cannot hold flywheel runs", "use SQLite or PostgreSQL")
    return store


def register(app: typer.Typer) -> None:
    flywheel = typer.Typer(help="The data flywheel: build, curate, optimise, evaluate, promote (see docs/flywheel.md).",
                           no_args_is_help=True)
    app.add_typer(flywheel, name="flywheel")

    @flywheel.command("run")
    def run(
        file: Path = typer.Argument(..., help="The flywheel.yaml (e.g. examples/flywheel/flywheel.yaml)."),
        resume: str = typer.Option(None, "--resume", help="Go on with this run: its finished steps are skipped."),
        no_cache: bool = typer.Option(False, "--no-cache", help="Make every eval call again (the eval's own call cache off)."),
    ) -> None:
        """Run one turn: build → curate → candidate → evaluate → promote only if the gate passes."""
        import asyncio

        from aiestack.flywheel.spec import load_flywheel

        spec = load_flywheel(file)
        record = asyncio.run(_run(spec, str(file.resolve()), resume, not no_cache))
        said = record.detail if record.detail.startswith(str(record.outcome)) else f"{record.outcome}: {record.detail}"
        typer.echo(f"run {record.run_id}: {said}")
        typer.echo(f"lineage: aiestack flywheel show {record.run_id}")
        if record.outcome != "promoted":
            raise typer.Exit(1)

    @flywheel.command("runs")
    def runs(
        name: str = typer.Option(None, "--name", help="Only runs of this flywheel."),
        limit: int = typer.Option(20, "--limit", "-n", min=1),
    ) -> None:
        """Flywheel runs, newest first."""
        store = _open_store()
        try:
            found = store.list_flywheel_runs(name=name, limit=limit)
        finally:
            store.close()
        if not found:
            typer.echo("no flywheel runs yet: aiestack flywheel run examples/flywheel/flywheel.yaml")
            return
        table = Table(box=None, pad_edge=False, header_style="bold")
        table.add_column("run", no_wrap=True, min_width=max(len(r.run_id) for r in found))
        for column in ("flywheel", "started", "status", "outcome", "detail"):
            table.add_column(column, overflow="fold")
        for r in found:
            table.add_row(r.run_id, r.name, _when(r.created_at), r.status, r.outcome or "-", escape(r.detail))
        table_console().print(table)

    @flywheel.command("show")
    def show(
        run_id: str = typer.Argument(..., help="The run."),
        as_json: bool = typer.Option(False, "--json", help="The run and its steps as JSON (inputs and outputs in full)."),
    ) -> None:
        """A run's lineage: each step with what it took and what it made (exchanges → datasets → candidate → eval runs → promotion)."""
        import dataclasses

        from aiestack.errors import NotFound

        store = _open_store()
        try:
            record = store.get_flywheel_run(run_id)
            steps = store.flywheel_steps(run_id)
        finally:
            store.close()
        if record is None:
            raise NotFound(f"No flywheel run {run_id!r}.", hint="List runs with `aiestack flywheel runs`.")
        if as_json:
            typer.echo(json.dumps({"run": dataclasses.asdict(record), "steps": [dataclasses.asdict(s) for s in steps]},
                                  ensure_ascii=False, indent=2, default=str))
            return
        typer.echo(f"{record.run_id}  {record.name}  {record.status}" + (f", {record.outcome}" if record.outcome else "")
                   + f"  started {_when(record.created_at)}")
        if record.detail:
            typer.echo(f"  {record.detail}")
        for step in steps:
            took = f" {step.finished_at - step.started_at:.1f} s" if step.finished_at else ""
            typer.echo(f"{step.position + 1}. {step.name} ({step.kind}) {step.status}{took}")
            if step.error:
                typer.echo(f"   error: {step.error}")
            for line in lineage_lines(step.outputs):
                typer.echo(f"   {line}")


def lineage_lines(outputs: Mapping[str, Any]) -> list[str]:
    """The ids a step's outputs link to, one per line (what ``show`` and the console list)."""
    lines = [str(outputs["summary"])] if outputs.get("summary") else []
    if outputs.get("exchange_count"):
        shown = ", ".join(outputs.get("exchanges", [])[:5])
        lines.append(f"exchanges: {outputs['exchange_count']} ({shown}{', ...' if outputs['exchange_count'] > 5 else ''})")
    for key in ("dataset", "parent", "candidate", "baseline", "baseline_run", "candidate_run"):
        if outputs.get(key):
            lines.append(f"{key.replace('_', ' ')}: {outputs[key]}")
    if outputs.get("eval_runs"):
        lines.append(f"eval runs: {', '.join(outputs['eval_runs'])}")
    if outputs.get("change"):
        lines.append("change: " + json.dumps(outputs["change"], ensure_ascii=False))
    return lines


async def _run(spec: Any, source: str, resume: str | None, use_cache: bool) -> Any:
    from aiestack.build import open_stack
    from aiestack.flywheel.runner import Flywheel
    from aiestack.settings import load_settings

    settings = load_settings()
    err = Console(stderr=True, highlight=False)
    async with open_stack(settings) as stack:
        tools = flywheel_tools(stack, settings, source=source, use_cache=use_cache)
        return await Flywheel(tools, on_progress=lambda line: err.print(line, markup=False)).run(spec, run_id=resume, source=source)
