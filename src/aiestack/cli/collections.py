"""``aiestack collections copy|versions|switch``: copy a collection between stores; its versions.

``versions`` lists a collection's versions (the same chunks embedded by other models, written by
``aiestack finetune embeddings``) and ``switch`` makes one current (:mod:`aiestack.context.versions`).

``copy`` moves a collection between document stores without re-embedding.

Typical use: outgrowing one machine, copy the embedded store's collections to PostgreSQL::

    aiestack collections copy --from sqlite:///data/aiestack.db --to postgresql+psycopg://db/aiestack

The copy is resumable (run it again after an interruption: what is there is skipped) and ends with
a verification of the counts and a checksum of both sides; it exits 1 when they disagree.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console

from aiestack.cli.console import table_console


def register(app: typer.Typer) -> None:
    collections = typer.Typer(help="Collections of the document store (see docs/document-stores.md).", no_args_is_help=True)
    app.add_typer(collections, name="collections")

    @collections.command("copy")
    def copy(
        from_url: str = typer.Option(..., "--from", help="The source store's URL (sqlite:///…, postgresql+psycopg://…)."),
        to_url: str = typer.Option(..., "--to", help="The destination store's URL."),
        names: list[str] = typer.Option(
            None, "--collection", "-c", help="A collection to copy (repeatable; default: every collection)."
        ),
        prune: bool = typer.Option(
            False, "--prune", help="Delete destination documents that the source collection does not hold."
        ),
        batch: int = typer.Option(256, "--batch", min=1, max=100_000, help="Documents per transaction."),
    ) -> None:
        """Copy collections (documents, chunks and vectors) from one store to another, then verify them."""
        from aiestack.errors import InvalidRequest
        from aiestack.stores.documents_copy import copy_collection, copy_pointers
        from aiestack.stores.open import open_store

        if from_url.strip() == to_url.strip():
            raise InvalidRequest("--from and --to name the same store.", hint="Copy to another database.")
        out = Console(highlight=False)
        err = Console(stderr=True, highlight=False)
        source = open_store(from_url, "documents")
        destination = open_store(to_url, "documents")
        failed = 0
        try:
            source.migrate()
            destination.migrate()
            chosen = names or [c.name for c in source.list_collections()]
            if not chosen:
                err.print("The source store has no collections.")
            for name in chosen:

                def progress(done: int, total: int, name: str = name) -> None:
                    err.print(f"  {name}: {done}/{total} documents", end="\r")

                report = copy_collection(source, destination, name, prune=prune, batch=batch, progress=progress)
                status = "[green]verified[/]" if report.verified else f"[red]NOT verified[/]: {report.problem}"
                out.print(
                    f"{name}: {report.documents} documents, {report.chunks} chunks; copied {report.copied}, "
                    f"already there {report.skipped}, removed {report.removed}; sha256:{report.checksum[:16]}… {status}"
                )
                failed += not report.verified
            if not failed:
                for alias, target in copy_pointers(source, destination, chosen).items():
                    out.print(f"{alias} → {target} (current version)")
        finally:
            source.close()
            destination.close()
        if failed:
            err.print(
                "[yellow]hint:[/] run the copy again (it resumes); use --prune when the destination "
                "held other documents in the same collection."
            )
            raise typer.Exit(1)

    _register_versions(collections)


def _register_versions(collections: typer.Typer) -> None:
    @collections.command("versions")
    def versions(
        name: str = typer.Argument(..., help="The collection (or any version of it)."),
        as_json: bool = typer.Option(False, "--json", help="Print the versions as JSON."),
    ) -> None:
        """The versions of a collection (re-indexed with other embedding models) and which one is current."""
        import json

        from rich.table import Table

        from aiestack.context.versions import collection_versions

        with _documents() as store:
            found = collection_versions(store, name)
        if as_json:
            typer.echo(json.dumps([_version_json(v) for v in found], indent=2))
            return
        table = Table(title=f"versions of {found[0].name}")
        for column in ("", "version", "collection", "embedding model", "documents", "chunks", "dataset"):
            table.add_column(column)
        for v in found:
            table.add_row("*" if v.current else "", str(v.version), v.collection, v.embedding_model, str(v.documents),
                          str(v.chunks), str(v.lineage.get("dataset", "")))
        table_console(highlight=False).print(table)

    @collections.command("switch")
    def switch(
        name: str = typer.Argument(..., help="The collection."),
        version: int = typer.Argument(..., min=1, help="The version to make current (1: the original)."),
    ) -> None:
        """Make a version current: searches, RAG routes and ingestion naming the collection use it from their next call."""
        from aiestack.context.versions import switch_collection

        with _documents() as store:
            chosen = switch_collection(store, name, version)
        typer.echo(f"{chosen.name} → version {chosen.version} ({chosen.collection}, embedded by {chosen.embedding_model})")


def _version_json(v: Any) -> dict[str, Any]:
    return {"name": v.name, "version": v.version, "collection": v.collection, "embedding_model": v.embedding_model,
            "dim": v.dim, "documents": v.documents, "chunks": v.chunks, "created_at": v.created_at,
            "current": v.current, "lineage": dict(v.lineage)}


@contextmanager
def _documents() -> Iterator[Any]:
    """The configured document store, migrated; closed afterwards."""
    from aiestack.build import build_documents
    from aiestack.settings import load_settings

    store = build_documents(load_settings())
    try:
        yield store
    finally:
        store.close()
