"""``aiestack datasets build|list|show|diff|export``: versioned datasets from the terminal."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from aiestack.cli.console import table_console
from aiestack.cli.usage import parse_time
from aiestack.errors import ConfigError, NotFound
from aiestack.stores.datasets import DatasetStore, DatasetVersion


class Source(StrEnum):
    exchanges = "exchanges"
    file = "file"
    suite = "suite"
    conversations = "conversations"


class Kind(StrEnum):
    chat = "chat"
    preference = "preference"


class Guard(StrEnum):
    any = "any"
    none = "none"
    flag = "flag"
    redact = "redact"


STEPS = ("exact", "near", "semantic", "quality", "pii", "contamination")


class Format(StrEnum):
    openai = "openai"
    hf = "hf"
    preference = "preference"
    qrels = "qrels"


@contextmanager
def open_datasets() -> Iterator[Any]:
    """The configured store (migrated), which holds exchanges and datasets; closed afterwards."""
    from aiestack.settings import load_settings
    from aiestack.stores.open import open_store

    store = open_store(load_settings().store_url, "exchanges")
    try:
        store.migrate()
        if not isinstance(store, DatasetStore):
            raise ConfigError("store.url", f"the store {type(store).__name__} cannot hold datasets", "use SQLite or PostgreSQL")
        yield store
    finally:
        store.close()


def _when(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _resolve(store: DatasetStore, ref: str) -> DatasetVersion:
    from aiestack.datasets import resolve

    try:
        return resolve(store, ref)
    except KeyError as exc:
        raise NotFound(str(exc.args[0]), hint="`aiestack datasets list` shows the datasets and their newest versions") from None


def _where(version: DatasetVersion) -> str:
    source = dict(version.source)
    origin = str(source.pop("from", "?"))
    if origin == "curation":
        return f"curation of {source.get('of')} ({', '.join(str(s.get('step')) for s in source.get('steps', []))})"
    source.pop("skipped", None)
    details = source.pop("filters", None) or source
    return origin + (f" ({', '.join(f'{k}={v}' for k, v in details.items())})" if details else "")


def register(app: typer.Typer) -> None:
    datasets = typer.Typer(help="Versioned datasets for finetuning and evals (see docs/datasets.md).", no_args_is_help=True)
    app.add_typer(datasets, name="datasets")
    _register_synthesis(datasets)

    @datasets.command("build")
    def build(
        name: str = typer.Argument(..., help="The dataset's name (lower-case letters, digits, '_', '.', '-')."),
        source: Source = typer.Option(Source.exchanges, "--from", help="Where the rows come from."),
        path: Path = typer.Option(None, "--path", "-p", help="The file (--from file), suite YAML (suite) or export (conversations)."),
        kind: Kind = typer.Option(None, "--kind", help="chat or preference (default: chat; a file: what its rows look like)."),
        route: str = typer.Option(None, "--route", help="Exchanges: only this route."),
        model: str = typer.Option(None, "--model", help="Exchanges: only this model."),
        tenant: str = typer.Option(None, "--tenant", help="Exchanges: only this tenant."),
        since: str = typer.Option(None, "--since", help="Exchanges: from this UTC date or time on."),
        until: str = typer.Option(None, "--until", help="Exchanges: up to this UTC date (inclusive) or time."),
        min_feedback: float = typer.Option(None, "--min-feedback", min=0, max=1, help="Exchanges: only those judged at least this well (0-1)."),
        guard: Guard = typer.Option(Guard.any, "--guard", help="Exchanges: none = no guardrail acted; flag/redact = only those."),
        prompt: str = typer.Option(None, "--prompt", help="Exchanges: only those that used this registry prompt."),
        prompt_version: int = typer.Option(None, "--prompt-version", min=1, help="Exchanges: only this version of --prompt."),
        limit: int = typer.Option(None, "--limit", min=1, help="At most this many rows."),
        skip_invalid: bool = typer.Option(False, "--skip-invalid", help="File: leave invalid rows out (counted) instead of failing."),
        message: str = typer.Option(None, "--message", "-m", help="What this version is for."),
    ) -> None:
        """Build a new version of a dataset (nothing new is stored if the rows are unchanged)."""
        from aiestack.datasets import (
            ExchangeSelection,
            build_dataset,
            from_conversations,
            from_exchanges,
            from_file,
            from_suite,
        )
        from aiestack.stores.datasets import check_dataset_name

        try:
            check_dataset_name(name)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="NAME") from None
        if source != Source.exchanges and path is None:
            raise typer.BadParameter(f"--from {source.value} needs --path", param_hint="--path")
        if prompt_version is not None and prompt is None:
            raise typer.BadParameter("--prompt-version needs --prompt (the prompt's name)", param_hint="--prompt-version")
        with open_datasets() as store:
            if source == Source.exchanges:
                selection = ExchangeSelection(
                    route=route, model=model, tenant=tenant, since=parse_time(since, option="--since"),
                    until=parse_time(until, option="--until", end_of_day=True), min_feedback=min_feedback,
                    guard=guard.value, prompt=prompt, prompt_version=prompt_version, limit=limit,
                )
                built = from_exchanges(store, selection, kind.value if kind else "chat")
            elif source == Source.file:
                built = from_file(path, kind.value if kind else None, skip_invalid=skip_invalid)
            elif source == Source.suite:
                built = from_suite(path, limit=limit)
            else:
                built = from_conversations(path)
            if kind is not None and built.kind != kind.value:
                raise typer.BadParameter(f"--from {source.value} gives {built.kind} rows, not {kind.value}", param_hint="--kind")
            if not built.rows:
                left = ", ".join(f"{n} {why}" for why, n in built.skipped.items()) or "nothing matched"
                hint = " (turn on tracing.content to store messages)" if "no stored content" in built.skipped else ""
                raise NotFound(f"no rows to build {name!r} from: {left}{hint}", hint="widen the filters or check the source")
            version, created = build_dataset(store, name, built, message=message)
        out = typer.echo
        out(f"{'built' if created else 'unchanged:'} {version.ref}: {version.rows} {version.kind} rows from {_where(version)}")
        for why, count in sorted(built.skipped.items()):
            out(f"  left out {count}: {why}")

    @datasets.command("list")
    def list_() -> None:
        """Every dataset with its newest version."""
        with open_datasets() as store:
            found = store.list_datasets()
        if not found:
            typer.echo("no datasets yet: build one with `aiestack datasets build NAME`")
            return
        table = Table("dataset", "version", "kind", "rows", "built", "from", box=None)
        for v in found:
            table.add_row(v.name, str(v.version), v.kind, str(v.rows), _when(v.created_at), _where(v))
        table_console().print(table)

    @datasets.command("show")
    def show(
        ref: str = typer.Argument(..., help="NAME (the newest version) or NAME@VERSION."),
        rows: int = typer.Option(3, "--rows", "-n", min=0, help="How many rows to print (with lineage)."),
    ) -> None:
        """A version's details and its first rows."""
        from aiestack.datasets import iter_rows

        with open_datasets() as store:
            version = _resolve(store, ref)
            versions = store.dataset_versions(version.name)
            sample = [r for _, r in zip(range(rows), iter_rows(store, version), strict=False)]
        out = typer.echo
        out(f"{version.ref}  {version.kind}, {version.rows} rows, built {_when(version.created_at)}")
        out(f"  content hash {version.content_hash}")
        out(f"  from {_where(version)}" + (f", derived from {version.parent}" if version.parent else ""))
        for why, count in dict(version.source).get("skipped", {}).items():
            out(f"  left out {count}: {why}")
        if version.message:
            out(f"  {version.message}")
        out(f"  versions: {', '.join(str(v.version) for v in versions)}")
        for row in sample:
            out(json.dumps({"id": row.id[:12], "lineage": dict(row.lineage), **dict(row.data)}, ensure_ascii=False))

    @datasets.command("diff")
    def diff(
        old: str = typer.Argument(..., help="NAME@VERSION (the older)."),
        new: str = typer.Argument(None, help="NAME@VERSION (default: the newest version of OLD's dataset)."),
        rows: int = typer.Option(5, "--rows", "-n", min=0, help="How many added and removed rows to print."),
    ) -> None:
        """Rows added and removed between two versions (rows compare by content)."""
        from aiestack.datasets import diff_versions

        with open_datasets() as store:
            a = _resolve(store, old)
            b = _resolve(store, new or a.name)
            result = diff_versions(store, a, b)
        out = typer.echo
        out(f"{a.ref} → {b.ref}: +{len(result.added)} added, -{len(result.removed)} removed, {result.unchanged} unchanged")
        for sign, found in (("+", result.added), ("-", result.removed)):
            for row in found[:rows]:
                out(f"{sign} {row.id[:12]} {json.dumps(dict(row.lineage), ensure_ascii=False)}")

    @datasets.command("export")
    def export(
        ref: str = typer.Argument(..., help="NAME (the newest version) or NAME@VERSION."),
        format: Format = typer.Option(Format.openai, "--format", "-f", help="openai (fine-tuning API), hf (TRL / datasets), preference, qrels (question → source document)."),
        out: Path = typer.Option(..., "--out", "-o", help="The JSONL file to write ('-' for stdout)."),
        lineage: bool = typer.Option(False, "--lineage", help="hf: add each row's id and lineage."),
    ) -> None:
        """Write a version as JSONL for a trainer."""
        from aiestack.datasets import export_dataset

        with open_datasets() as store:
            version = _resolve(store, ref)
            if format == Format.preference and version.kind != "preference":
                raise typer.BadParameter(f"{version.ref} holds chat rows, which have no pairs; use openai or hf", param_hint="--format")
            if str(out) == "-":
                written = export_dataset(store, version, sys.stdout, format.value, lineage=lineage)
            else:
                with out.open("w", encoding="utf-8") as handle:
                    written = export_dataset(store, version, handle, format.value, lineage=lineage)
        if str(out) != "-":
            typer.echo(f"wrote {written} lines of {version.ref} to {out} ({format.value})")

    @datasets.command("curate")
    def curate_(
        ref: str = typer.Argument(..., help="NAME (the newest version) or NAME@VERSION to curate."),
        steps: str = typer.Option("exact,near,quality", "--steps", help=f"Comma-separated, run in order: {', '.join(STEPS)}."),
        into: str = typer.Option(None, "--into", help="Push the result as this dataset (default: a new version of REF's)."),
        near_threshold: float = typer.Option(0.7, "--near-threshold", min=0.05, max=1, help="near: least Jaccard similarity of word 3-grams."),
        semantic_threshold: float = typer.Option(0.8, "--semantic-threshold", min=0.05, max=1, help="semantic: least cosine similarity of the prompts (then the cache's lexical checks)."),
        language: str = typer.Option(None, "--language", help="quality: keep only answers in this language (ISO 639-1, e.g. en)."),
        min_answer_words: int = typer.Option(1, "--min-answer-words", min=0, help="quality: fewest words in an answer."),
        max_chars: int = typer.Option(32_000, "--max-chars", min=1, help="quality: most characters in a row."),
        against: list[Path] = typer.Option([], "--against", help="contamination: an eval suite YAML (repeat for several)."),
        keep_contaminated: bool = typer.Option(False, "--keep-contaminated", help="contamination: report, do not remove."),
        show: int = typer.Option(5, "--show", min=0, help="List this many removed rows per step (ids and reasons)."),
        message: str = typer.Option(None, "--message", "-m", help="What this version is for."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar (semantic: the embedding)."),
    ) -> None:
        """Deduplicate, filter and scrub a version into a new one (its parent), reporting what each step removed and why."""
        wanted = [s.strip() for s in steps.split(",") if s.strip()]
        unknown = [s for s in wanted if s not in STEPS]
        if unknown or not wanted:
            raise typer.BadParameter(f"unknown step(s) {', '.join(unknown) or '(none given)'}; use {', '.join(STEPS)}", param_hint="--steps")
        if "contamination" in wanted and not against:
            raise typer.BadParameter("the contamination step needs --against SUITE.yaml", param_hint="--against")
        if into is not None:
            from aiestack.stores.datasets import check_dataset_name

            try:
                check_dataset_name(into)
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint="--into") from None
        options = {"near": near_threshold, "semantic": semantic_threshold, "language": language,
                   "min_answer_words": min_answer_words, "max_chars": max_chars, "against": against, "keep": keep_contaminated}
        with open_datasets() as store:
            version = _resolve(store, ref)
            if "semantic" in wanted:
                import asyncio

                pushed, created, result = asyncio.run(_curate_with_embeddings(store, version, wanted, options, into, message, quiet))
            else:
                pushed, created, result = _curate(store, version, wanted, options, into, message, embed=None)
        _print_curation(version, pushed, created, result, show)

    @datasets.command("contamination")
    def contamination(
        ref: str = typer.Argument(..., help="NAME (the newest version) or NAME@VERSION to check."),
        against: list[Path] = typer.Option(..., "--against", help="An eval suite YAML (repeat for several)."),
        ngram: int = typer.Option(5, "--ngram", min=1, help="Word n-gram length."),
        min_overlap: float = typer.Option(0.5, "--min-overlap", min=0.01, max=1, help="Least share of an item's n-grams found in a row."),
        show: int = typer.Option(10, "--show", min=0, help="List this many flagged rows."),
    ) -> None:
        """Report the rows of a version that contain eval suite items (nothing is changed)."""
        from aiestack.datasets import iter_rows
        from aiestack.datasets.contamination import check_rows, suite_items

        items = [item for path in against for item in suite_items(path)]
        with open_datasets() as store:
            version = _resolve(store, ref)
            report = check_rows(list(iter_rows(store, version)), items, ngram=ngram, min_overlap=min_overlap)
        suites = report.detail["suites"]
        typer.echo(f"{version.ref}: {len(report.detail['flagged'])} of {report.rows_in} rows contain eval items "
                   f"({ngram}-grams, overlap ≥ {min_overlap})")
        table = Table("suite", "items in suite", "rows flagged", "items found", box=None)
        for name in sorted({i.suite for i in items}):
            found = suites.get(name, {"rows": 0, "items": 0})
            table.add_row(name, str(sum(1 for i in items if i.suite == name)), str(found["rows"]), str(found["items"]))
        table_console().print(table)
        for flag in report.detail["flagged"][:show]:
            typer.echo(f"  {flag['row_id'][:12]} contains {flag['item']} (overlap {flag['overlap']})")


def _steps(wanted: list[str], options: dict[str, Any], embed: Any, progress: Any = None) -> list[Any]:
    from aiestack.datasets.curate import build_steps

    return build_steps(
        wanted, near=options["near"], semantic=options["semantic"], language=options["language"],
        min_answer_words=options["min_answer_words"], max_chars=options["max_chars"], against=options["against"],
        keep_contaminated=options["keep"], embed=embed, progress=progress,
    )


def _curate(store: Any, version: DatasetVersion, wanted: list[str], options: dict[str, Any], into: str | None,
            message: str | None, *, embed: Any, progress: Any = None) -> Any:
    from aiestack.datasets.curate import curate

    return curate(store, version, _steps(wanted, options, embed, progress), into=into, message=message)


async def _curate_with_embeddings(store: Any, version: DatasetVersion, wanted: list[str], options: dict[str, Any],
                                  into: str | None, message: str | None, quiet: bool = False) -> Any:
    """Curation runs in a worker thread; the semantic step's embeddings come from the stack's model on this loop
    (the batch runner's: Ray when ``[compute]`` asks), with a progress bar of the texts embedded."""
    import asyncio

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    from aiestack.build import open_stack

    bar = Bar(TextColumn("[bold]semantic: embedding[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
              TimeRemainingColumn(), console=Console(stderr=True), disable=quiet, transient=True)
    task = bar.add_task("semantic", total=None)

    loop = asyncio.get_running_loop()
    async with open_stack() as stack:
        model = stack.batch_embeddings

        def embed(texts: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(model.embed(list(texts)), loop).result()

        with bar:
            return await asyncio.to_thread(_curate, store, version, wanted, options, into, message, embed=embed,
                                           progress=lambda done, total: bar.update(task, completed=done, total=total))


def _print_curation(version: DatasetVersion, pushed: DatasetVersion, created: bool, result: Any, show: int) -> None:
    table = Table("step", "in", "removed", "changed", "why", box=None)
    for report in result.reports:
        why = ", ".join(f"{n} {r}" for r, n in report.reasons.most_common()) or "-"
        table.add_row(report.step, str(report.rows_in), str(len(report.removed)), str(report.changed or "-"), why)
    table_console().print(table)
    for report in result.reports:
        for removal in report.removed[:show]:
            if removal.duplicate_of == removal.row_id:  # two copies of one row share its id
                other = " (a later copy of the same row; the first is kept)"
            else:
                other = f" of {removal.duplicate_of[:24]}" if removal.duplicate_of else ""
            score = f" ({removal.score})" if removal.score is not None else ""
            typer.echo(f"  {report.step}: {removal.row_id[:12]} {removal.reason}{other}{score}")
    verb = "curated" if created else "unchanged:"
    typer.echo(f"{verb} {pushed.ref} ({pushed.rows} rows) from {version.ref} ({version.rows} rows)")


def _register_synthesis(datasets: typer.Typer) -> None:
    @datasets.command("synthesize")
    def synthesize(
        name: str = typer.Argument(..., help="The dataset to build a version of."),
        model: str = typer.Option(..., "--model", help="The model or route that writes (through the gateway's routes and budgets)."),
        collection: str = typer.Option(None, "--collection", help="Questions from this collection's chunks (one per chunk)."),
        limit: int = typer.Option(100, "--limit", min=1, help="Collection: at most this many chunks."),
        check: bool = typer.Option(True, "--check/--no-check", help="Collection: keep a question only if the model finds it answerable from its chunk."),
        seed: str = typer.Option(None, "--seed", help="Instruction variants from this dataset version's rows (NAME or NAME@VERSION)."),
        methods: str = typer.Option("deepen,constrain", "--methods", help="Seed: Evol-Instruct moves: deepen, constrain, concretise, breadth."),
        judge: str = typer.Option(None, "--judge", help="Score every row with this model and drop those under --min-score."),
        min_score: int = typer.Option(4, "--min-score", min=1, max=5, help="Judge: least score (1-5) to keep a row."),
        concurrency: int = typer.Option(4, "--concurrency", min=1, max=64, help="Model calls at a time."),
        message: str = typer.Option(None, "--message", "-m", help="What this version is for."),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Build a version of synthetic rows: questions from a collection, or variants of seed rows; optionally judged.

        Resumable: each finished item is checkpointed in the data directory, so the same command run
        again after an interruption makes only the items left."""
        from aiestack.stores.datasets import check_dataset_name

        try:
            check_dataset_name(name)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="NAME") from None
        if (collection is None) == (seed is None):
            raise typer.BadParameter("give --collection (questions from chunks) or --seed (variants of rows), one of them", param_hint="--collection")
        with open_datasets() as store:
            seeds, parent = None, None
            if seed is not None:
                from aiestack.datasets import iter_rows

                seed_version = _resolve(store, seed)
                seeds, parent = list(iter_rows(store, seed_version)), seed_version.ref
            import asyncio

            built, report = asyncio.run(_synthesize(store, collection, limit, check, seeds, [m.strip() for m in methods.split(",") if m.strip()],
                                                    model, judge, min_score, concurrency, quiet))
            if not built.rows:
                left = ", ".join(f"{n} {why}" for why, n in built.skipped.items()) or "nothing was generated"
                raise NotFound(f"no synthetic rows for {name!r}: {left}", hint="check the model's replies with `aiestack logs`")
            from aiestack.datasets import build_dataset

            version, created = build_dataset(store, name, built, message=message, parent=parent)
        typer.echo(f"{'built' if created else 'unchanged:'} {version.ref}: {version.rows} synthetic rows ({built.source['method']}, by {model})")
        for why, count in sorted(built.skipped.items()):
            typer.echo(f"  left out {count}: {why}")
        if report is not None:
            typer.echo(f"  judge {judge} removed {len(report.removed)} of {report.rows_in} (score under {min_score})")


async def _synthesize(store: Any, collection: str | None, limit: int, check: bool, seeds: list[Any] | None, methods: list[str],
                      model: str, judge: str | None, min_score: int, concurrency: int, quiet: bool = False) -> Any:
    import asyncio

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    from aiestack.build import open_stack
    from aiestack.datasets.synthesis import judge_rows, synthesize_questions, synthesize_variants

    bar = Bar(TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
              TimeRemainingColumn(), console=Console(stderr=True), disable=quiet, transient=True)

    def progress(description: str) -> Any:
        task = bar.add_task(description, total=None)
        return lambda done, total: bar.update(task, completed=done, total=total)

    async with open_stack() as stack:
        call = stack.side_calls.caller("datasets.synthesis")
        checkpoints = stack.settings.data_dir / "checkpoints"
        with bar:
            if seeds is not None:
                try:
                    built = await synthesize_variants(seeds, call, model=model, methods=methods, concurrency=concurrency,
                                                      checkpoints=checkpoints, progress=progress("variants"))
                except ValueError as exc:
                    raise typer.BadParameter(str(exc), param_hint="--methods") from None
            else:
                chunks = await asyncio.to_thread(_chunks, stack.documents, str(collection), limit)
                built = await synthesize_questions(chunks, call, model=model, check=check, collection=collection, concurrency=concurrency,
                                                   checkpoints=checkpoints, progress=progress("questions"))
            report = None
            if judge is not None and built.rows:
                built.rows, report = await judge_rows(built.rows, stack.side_calls.caller("datasets.judge"), model=judge,
                                                      min_score=min_score, concurrency=concurrency,
                                                      checkpoints=checkpoints, progress=progress("judge"))
                built.source["judge"] = {"model": judge, "min_score": min_score, "removed": len(report.removed)}
                for removal in report.removed:
                    built.skip(f"judge: {removal.reason}")
        return built, report


def _chunks(documents: Any, collection: str, limit: int) -> list[Any]:
    """The first ``limit`` chunks of a collection, document by document in source order."""
    if documents.get_collection(collection) is None:
        raise NotFound(f"there is no collection {collection!r}", hint="`aiestack collections list` shows them; `aiestack ingest` makes one")
    chunks: list[Any] = []
    for doc in sorted(documents.documents(collection), key=lambda d: d.source):
        for _, doc_chunks, _ in documents.read_documents(collection, [doc.source]):
            chunks.extend(doc_chunks)
        if len(chunks) >= limit:
            break
    return chunks[:limit]
