"""``aiestack ingest PATH|GLOB|URL... --collection NAME``: load, chunk, embed and store documents."""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from aiestack.cli.console import table_console
from aiestack.context.chunking import DEFAULT_OVERLAP, DEFAULT_SIZE

if TYPE_CHECKING:
    from aiestack.context.ingest import IngestOptions, IngestReport
    from aiestack.settings import Settings


class ChunkerChoice(StrEnum):
    auto = "auto"
    recursive = "recursive"
    tokens = "tokens"
    markdown = "markdown"
    code = "code"


def register(app: typer.Typer) -> None:
    @app.command()
    def ingest(
        paths: list[str] = typer.Argument(..., help="Files, directories, globs (quoted) or http(s) URLs."),
        collection: str = typer.Option(
            ..., "--collection", "-c", help="The collection to add to (created if missing)."
        ),
        tenant: str = typer.Option("default", "--tenant", help="The tenant the collection belongs to."),
        chunker: ChunkerChoice = typer.Option(
            ChunkerChoice.auto,
            "--chunker",
            help="auto: markdown for .md/.html, code for source code, else recursive.",
        ),
        chunk_size: int = typer.Option(DEFAULT_SIZE, "--chunk-size", min=1, help="Most tokens per chunk."),
        overlap: int = typer.Option(
            DEFAULT_OVERLAP, "--overlap", min=0, help="Tokens shared by neighbours (--chunker tokens)."
        ),
        prune: bool = typer.Option(False, "--prune", help="Delete documents whose files are gone."),
        contextual: str = typer.Option(
            None, "--contextual", help="A configured model that writes a situating context for each chunk."
        ),
        allow_private: bool = typer.Option(
            False, "--allow-private", help="Let URLs reach private, loopback and link-local addresses."
        ),
        text_field: str = typer.Option(
            "text", "--text-field", help="JSON records: the field holding the text."
        ),
        id_field: str = typer.Option(
            None, "--id-field", help="JSON records: the id field (default: _id, then id)."
        ),
        title_field: str = typer.Option(
            "title", "--title-field", help="JSON records: the title field ('' for none)."
        ),
        quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    ) -> None:
        """Ingest documents into a collection: unchanged files are skipped, changed ones replaced."""
        from aiestack.context.ingest import IngestOptions
        from aiestack.context.loaders import RecordFields
        from aiestack.context.urls import URLPolicy
        from aiestack.settings import load_settings

        _check_sizes(chunk_size, overlap, chunker.value)
        options = IngestOptions(
            chunker=chunker.value,
            chunk_size=chunk_size,
            overlap=overlap,
            fields=RecordFields(text=text_field, id=id_field or None, title=title_field or None),
            urls=URLPolicy(allow_private=allow_private),
            tenant=tenant,
            prune=prune,
        )
        import asyncio

        report = asyncio.run(
            _run(load_settings(), paths, collection, options, contextual=contextual, quiet=quiet)
        )
        _print(report)
        if report.failed:
            raise typer.Exit(1)


async def _run(
    settings: Settings,
    paths: list[str],
    collection: str,
    options: IngestOptions,
    *,
    contextual: str | None,
    quiet: bool,
) -> IngestReport:
    from aiestack.build import open_stack
    from aiestack.context.contextual import Contextualizer
    from aiestack.context.ingest import Progress, ingest

    err = Console(stderr=True)
    async with open_stack(settings) as stack:
        if contextual:
            entry = stack.models.resolve(contextual)  # a clear error for a name that is not a model
            cache = stack.resources.context_cache  # closed with the stack
            model = stack.side_calls.model(entry.name, purpose="rag.contextual")  # routes, pricing, a span each
            options = replace(
                options,
                contextualizer=Contextualizer(model, entry.name, name=entry.name, cache=cache),
            )
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        bar = Bar(
            TextColumn("[bold]ingest[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("docs · {task.fields[files]} files"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[source]}", style="dim"),
            console=err,
            disable=quiet,
            transient=True,
        )
        task = bar.add_task("ingest", total=None, files="0/0", source="")

        def show(p: Progress) -> None:
            name = p.source.rsplit("/", 1)[-1][-40:]
            bar.update(
                task,
                completed=p.written,
                total=max(p.total, 1),
                files=f"{p.files_loaded}/{p.files}",
                source=name,
            )

        with bar:
            batch = stack.batch_embeddings
            return await ingest(
                paths, collection, stack.documents, batch, options=options, progress=show,
                models=lambda model: stack.resources.embedding_version(model) or batch,  # a re-indexed version's own model
            )


def _check_sizes(size: int, overlap: int, chunker: str) -> None:
    from aiestack.errors import InvalidRequest

    if chunker == "tokens" and overlap >= size:
        raise InvalidRequest(
            f"--overlap {overlap} must be smaller than --chunk-size {size}.",
            hint="Lower --overlap (e.g. a sixth of the size).",
        )


def _print(report: IngestReport) -> None:
    out = table_console()
    table = Table(title=f"ingested into '{report.collection}'", show_edge=False)
    for col in ("added", "updated", "unchanged", "pruned", "failed", "chunks", "seconds"):
        table.add_column(col, justify="right")
    table.add_row(
        str(report.added),
        str(report.updated),
        str(report.unchanged),
        str(report.pruned),
        str(len(report.failed)),
        str(report.chunks),
        f"{report.seconds:.1f}",
    )
    out.print(table)
    if report.failed:
        err = Console(stderr=True, highlight=False)
        for failure in report.failed:
            err.print(f"[red]failed:[/] {failure.source}: {failure.reason}")
