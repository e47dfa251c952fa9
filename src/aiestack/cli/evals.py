"""``aiestack eval``: run suites, compare runs with gates, list runs, write HTML reports.

The face only: the work is in :mod:`aiestack.evals`. ``eval run`` and ``eval compare`` exit with
status 1 when a gate fails, so CI can use them directly.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from aiestack.cli.console import table_console


def register(app: typer.Typer) -> None:
    evals = typer.Typer(
        help="Evaluate models, routes and prompts: suites, leaderboards, gates, reports.",
        no_args_is_help=True,
    )
    app.add_typer(evals, name="eval")
    from aiestack.cli import eval_bfcl, eval_retrieval

    eval_retrieval.register(evals)
    eval_bfcl.register(evals)

    @evals.command("run")
    def run(
        suite_file: Path = typer.Argument(..., help="The suite YAML file."),
        system: list[str] = typer.Option([], "--system", "-s", help="Only these systems (repeatable)."),
        concurrency: int = typer.Option(
            None, "--concurrency", "-c", min=1, help="Calls in flight (default: the suite's)."
        ),
        limit: int = typer.Option(None, "--limit", "-n", min=1, help="Only the first N examples."),
        dataset: Path = typer.Option(
            None, "--dataset", help="Run on this data file instead of the suite's (same fields, e.g. the full set)."
        ),
        no_cache: bool = typer.Option(
            False, "--no-cache", help="Call the models even for calls made before."
        ),
        resume: str = typer.Option(None, "--resume", help="Continue an interrupted run (its id)."),
        baseline: str = typer.Option(
            None,
            "--baseline",
            help="Compare with this run and apply regression gates (default: the previous finished run of the suite).",
        ),
        gate: list[str] = typer.Option(
            [], "--gate", help="Extra gate, e.g. 'exact_match>=0.8' or 'acc drop<=0.05'."
        ),
        html: Path = typer.Option(None, "--html", help="Write a self-contained HTML report here."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Run a suite: every system on every example; prints the leaderboard."""
        from aiestack.evals.datasets import load_examples
        from aiestack.evals.suite import load_suite

        suite = load_suite(suite_file).select(system)
        update: dict[str, Any] = {"limit": limit} if limit is not None else {}
        if dataset is not None:
            update["path"] = dataset.expanduser().resolve()
        if update:
            suite = suite.model_copy(update={"dataset": suite.dataset.model_copy(update=update)})
        examples = load_examples(suite.dataset, suite.dataset_path)
        console = Console(stderr=True)
        progress = not quiet and console.is_terminal
        import asyncio

        failed = asyncio.run(
            _run(
                suite,
                examples,
                str(suite_file.resolve()),
                concurrency,
                not no_cache,
                resume,
                baseline,
                gate,
                html,
                progress,
            )
        )
        if failed:
            raise typer.Exit(1)

    @evals.command("compare")
    def compare(
        run_id: str = typer.Argument(..., help="The run to check."),
        baseline: str = typer.Option(
            None, "--baseline", help="The baseline run (default: the previous run of the suite)."
        ),
        gate: list[str] = typer.Option(
            [], "--gate", help="Extra gate, e.g. 'exact_match>=0.8' or 'acc drop<=0.05'."
        ),
        html: Path = typer.Option(None, "--html", help="Write a self-contained HTML report here."),
    ) -> None:
        """Compare a run with a baseline: deltas with CIs, flipped examples, gates (exit 1 on failure)."""
        with _store() as store:
            if _report(store, run_id, baseline, gate, html, default_baseline=True):
                raise typer.Exit(1)

    @evals.command("report")
    def report(
        run_id: str = typer.Argument(..., help="The run."),
        html: Path = typer.Option(..., "--html", help="Write a self-contained HTML report here."),
    ) -> None:
        """Print a run's leaderboard and write its HTML report."""
        with _store() as store:
            _report(store, run_id, None, [], html, default_baseline=False)

    @evals.command("list")
    def list_runs(
        suite: str = typer.Option(None, "--suite", help="Only runs of this suite."),
        limit: int = typer.Option(20, "--limit", "-n", min=1),
    ) -> None:
        """Recent evaluation runs, newest first."""
        import datetime as dt

        from rich.table import Table

        with _store() as store:
            runs = store.list_eval_runs(limit=limit, suite=suite)
        table = Table(title=f"{len(runs)} evaluation runs", header_style="bold", box=None)
        # Whole run ids, however narrow the terminal: they are pasted into --baseline and --resume.
        table.add_column("run", no_wrap=True, min_width=max((len(r.id) for r in runs), default=3))
        table.add_column("suite", no_wrap=True, min_width=max((len(r.suite) for r in runs), default=5))
        for col in ("systems", "started", "status", "examples"):
            table.add_column(col, overflow="fold")
        for r in runs:
            started = dt.datetime.fromtimestamp(r.started_at).strftime("%Y-%m-%d %H:%M")
            table.add_row(
                r.id,
                r.suite,
                ", ".join(r.systems),
                started,
                str(r.summary.get("status", "?")),
                str(r.summary.get("examples", "-")),
            )
        table_console().print(table)


class _store:
    """The configured store, migrated, as a context manager (closed on the way out)."""

    def __enter__(self) -> Any:
        from aiestack.errors import ConfigError
        from aiestack.settings import load_settings
        from aiestack.stores.base import EvalStore
        from aiestack.stores.open import open_store

        self._store = open_store(load_settings().store_url, "exchanges")
        self._store.migrate()
        if not isinstance(self._store, EvalStore):
            self._store.close()
            raise ConfigError(
                "store.url",
                "this store cannot hold evaluation runs",
                "use the SQLite, PostgreSQL or memory store",
            )
        return self._store

    def __exit__(self, *exc: object) -> None:
        self._store.close()


async def run_suite(
    stack: Any,
    settings: Any,
    suite: Any,
    examples: Any,
    source: str,
    *,
    concurrency: int | None = None,
    use_cache: bool = True,
    resume: str | None = None,
    progress: bool = False,
) -> Any:
    """Run ``suite`` on ``examples`` with ``stack`` as ``aiestack eval run`` does (also ``aiestack mcp``'s ``eval_run``)."""
    from aiestack.agents.runs import RunKeeper
    from aiestack.batch import open_runner
    from aiestack.errors import ConfigError
    from aiestack.evals.agent_systems import stack_agents
    from aiestack.evals.call_cache import CallCache
    from aiestack.evals.runner import EvalRunner, LazyEmbeddings
    from aiestack.stores.base import EvalStore
    from aiestack.stores.runs import RunStore

    if not isinstance(stack.store, EvalStore):
        raise ConfigError(
            "store.url",
            "this store cannot hold evaluation runs",
            "use the SQLite, PostgreSQL or memory store",
        )
    cache = CallCache(settings.data_dir / "eval_cache.db") if use_cache else None
    # [compute] ray_address set: the metrics that need no model are scored on Ray.
    batch = open_runner(settings.compute) if settings.compute.ray_address else None
    try:
        runner = EvalRunner(
            stack.chat,
            stack.store,
            cache=cache,
            fingerprint=_fingerprint(stack),
            embeddings=LazyEmbeddings(lambda: stack.embeddings),
            prompts=stack.prompts,
            metrics=stack.eval_metrics,
            batch=batch,
            judge=stack.side_calls.caller("eval.judge"),
            agents=stack_agents(stack),  # agent systems' runs are stored like any agent run
            run_agent=(
                RunKeeper(stack.store, content=stack.tracing.content, redact=stack.tracing.redact).run
                if isinstance(stack.store, RunStore)
                else None
            ),
        )
        return await runner.run(
            suite, examples, run_id=resume, concurrency=concurrency, progress=progress, source=source
        )
    finally:
        if cache is not None:
            cache.close()
        if batch is not None:
            await batch.aclose()


async def _run(
    suite: Any,
    examples: Any,
    source: str,
    concurrency: int | None,
    use_cache: bool,
    resume: str | None,
    baseline: str | None,
    gates: list[str],
    html: Path | None,
    progress: bool,
) -> bool:
    from aiestack.build import open_stack
    from aiestack.settings import load_settings

    settings = load_settings()
    async with open_stack(settings) as stack:
        result = await run_suite(
            stack, settings, suite, examples, source,
            concurrency=concurrency, use_cache=use_cache, resume=resume, progress=progress,
        )  # fmt: skip
        err = Console(stderr=True)
        gateway = f" ({result.gateway_hits} answered by the gateway cache)" if suite.gateway_cache else ""
        err.print(
            f"run [bold]{result.run.id}[/]: {result.calls} model calls{gateway}, "
            f"{result.cache_hits} from the eval cache",
            highlight=False,
            soft_wrap=True,
        )
        return _report(
            stack.store, result.run.id, baseline, gates, html, default_baseline=True, examples=examples
        )


def _fingerprint(stack: Any) -> Any:
    """What each model or route name resolves to now, for the eval cache's keys (computed once per name).

    A route: its configuration, the versions its prompt references name and its collection's
    version; a model: its provider and upstream name. Any change there re-runs the calls.
    """
    from aiestack.errors import AiestackError
    from aiestack.prompts.registry import parse_spec

    seen: dict[str, str] = {}

    def models(names: list[str]) -> list[str]:
        out = []
        for name in names:
            if name in stack.models:
                entry = stack.models.resolve(name)
                out.append(f"{name}={type(entry.provider).__name__}:{entry.upstream}")
        return out

    def compute(name: str) -> str:
        name = name or stack.settings.default_model
        if name not in stack.routes:
            return ",".join(models([name]))
        config = stack.routes.config(name)
        parts = [config.model_dump_json()]
        parts += models([d.model for d in config.deployments] + list(config.fallbacks))
        if config.prompt and stack.prompts is not None:
            for ref, _ in parse_spec(config.prompt).arms:
                try:
                    parts.append(f"{ref}={stack.prompts.get(ref).version}")
                except AiestackError:
                    parts.append(f"{ref}=?")
        if config.collection:
            target = stack.documents.resolve(config.collection)  # its current version
            info = stack.documents.get_collection(target)
            parts.append(f"{config.collection}={target}:{info.version if info is not None else 0}")
        return "\n".join(parts)

    def fingerprint(name: str) -> str:
        if name not in seen:
            seen[name] = compute(name)
        return seen[name]

    return fingerprint


def _report(
    store: Any,
    run_id: str,
    baseline_id: str | None,
    gate_texts: list[str],
    html: Path | None,
    *,
    default_baseline: bool,
    examples: Any = None,
) -> bool:
    """Print the leaderboard, the comparison and gates; write the HTML report. True when a gate failed."""
    from aiestack.errors import NotFound
    from aiestack.evals.compare import stored_ranking
    from aiestack.evals.gates import compare, gates_from_summary, parse_gate
    from aiestack.evals.report import comparison_tables, leaderboard, ranking_tables
    from aiestack.evals.report_html import render_html
    from aiestack.evals.summary import summaries_from_run

    run = store.get_eval_run(run_id)
    if run is None:
        raise NotFound(f"No evaluation run {run_id!r}.", hint="List runs with `aiestack eval list`.")
    baseline = None
    if baseline_id is not None:
        baseline = store.get_eval_run(baseline_id)
        if baseline is None:
            raise NotFound(f"No baseline run {baseline_id!r}.", hint="List runs with `aiestack eval list`.")
    elif default_baseline:
        earlier = [
            r
            for r in store.list_eval_runs(limit=50, suite=run.suite)
            if r.id != run.id and r.started_at <= run.started_at
        ]
        baseline = next((r for r in earlier if r.summary.get("status") == "finished"), None)
    info = run.summary.get("metrics", {})
    summaries = summaries_from_run(run.summary)
    console = table_console()
    console.print(leaderboard(summaries, info, f"{run.suite} — run {run.id}"))
    prompts = run.summary.get("prompts") or {}
    if prompts:  # the registry version each system ran with
        console.print("prompts: " + ", ".join(f"{k} = {v}" for k, v in prompts.items()), highlight=False)
    compared = stored_ranking(run.summary)
    if compared is not None:
        for table in ranking_tables(*compared):
            console.print(table)
    results = store.eval_results(run.id)
    gates = [*gates_from_summary(run.summary), *(parse_gate(g) for g in gate_texts)]
    orientation = {
        name: bool(i.get("higher_is_better", True)) for name, i in info.items() if not i.get("corpus")
    }
    comparison = compare(results, store.eval_results(baseline.id) if baseline else None, orientation, gates)
    if baseline is not None:
        console.print(f"baseline: run {baseline.id}", highlight=False)
    for table in comparison_tables(comparison):
        console.print(table)
    if html is not None:
        inputs = _inputs(run.summary.get("source"), examples)
        html.parent.mkdir(parents=True, exist_ok=True)
        html.write_text(
            render_html(run, summaries, results, comparison=comparison, inputs=inputs), encoding="utf-8"
        )
        Console(stderr=True).print(f"report written to {html}", highlight=False)
    if comparison.failed:
        print("gate failed", file=sys.stderr)
    return comparison.failed


def _inputs(source: str | None, examples: Any) -> dict[str, str]:
    """Example id → input text, from the examples at hand or re-read from the run's suite file."""
    if examples is None and source and Path(source).is_file():
        from aiestack.errors import ConfigError
        from aiestack.evals.datasets import load_examples
        from aiestack.evals.suite import load_suite

        try:
            suite = load_suite(source)
            examples = load_examples(
                suite.dataset.model_copy(update={"limit": None, "offset": 0}), suite.dataset_path
            )
        except ConfigError:
            return {}
    return {e.id: str(e.input.get("input", "")) for e in examples or ()}
