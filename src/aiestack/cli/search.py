"""``aiestack search`` (ranked hits with scores and sources) and ``aiestack ask`` (a streamed, cited answer)."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from aiestack.cli.console import table_console
from aiestack.errors import InvalidRequest


def _filter(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"--filter is not valid JSON ({exc}).",
            hint='Pass e.g. --filter \'{"field": "source", "op": "contains", "value": "docs/"}\'.',
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequest("--filter must be a JSON object.", hint='e.g. {"field": "lang", "op": "eq", "value": "en"}')
    return value


def _snippet(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def register(app: typer.Typer) -> None:
    @app.command()
    def search(
        query: str = typer.Argument(..., help="What to search for."),
        collection: str = typer.Option(..., "--collection", "-c", help="The collection to search."),
        mode: str = typer.Option("hybrid", "--mode", help="bm25, vector or hybrid."),
        k: int = typer.Option(5, "--k", "-k", min=1, max=1000, help="How many hits."),
        filter_json: str = typer.Option(None, "--filter", help="A metadata filter as JSON (portable grammar)."),
        as_json: bool = typer.Option(False, "--json", help="One JSON object per hit instead of a table."),
        server: str = typer.Option(
            None, "--server", help="Search through this aiestack server (default: AIESTACK_URL, else one on "
            "127.0.0.1:8000 that reads this configuration's store, else in-process)."
        ),
        local: bool = typer.Option(False, "--local", help="Search in-process, even when a server is running."),
    ) -> None:
        """Search a collection: ranked hits with scores and sources."""
        from aiestack.cli.remote import find_server
        from aiestack.settings import load_settings

        settings = load_settings()
        search_filter = _filter(filter_json)
        if mode not in ("bm25", "vector", "hybrid"):
            raise InvalidRequest(f"Unknown retrieval mode {mode!r}.", hint="Use one of bm25, vector, hybrid.")
        remote = find_server(settings, server, local=local)
        if remote is not None:
            answer = remote.search(collection, query, mode=mode, k=k, filter=search_filter)
            hits, total_ms, where = answer["hits"], answer.get("timings", {}).get("total_ms", 0.0), remote.url
        else:
            found = _search_in_process(settings, collection, query, mode, k, search_filter)
            hits, total_ms, where = found.hits_json(), found.timings.get("total_ms", 0.0), "in-process"
        if as_json:
            for hit in hits:
                print(json.dumps(hit, ensure_ascii=False))
            return
        out = table_console(highlight=False, soft_wrap=False)
        if not hits:
            out.print(f"[yellow]No hits in '{escape(collection)}' for that query.[/]")
            return
        table = Table(title=f"{escape(collection)} · {mode} · {total_ms:.1f} ms · {escape(where)}")
        table.add_column("#", justify="right")
        table.add_column("score", justify="right")
        table.add_column("source")
        table.add_column("text")
        for hit in hits:
            where_from = escape(str(hit.get("source") or hit.get("document_id") or ""))
            if hit.get("heading_path"):
                where_from += f"\n[dim]{escape(str(hit['heading_path']))}[/]"
            table.add_row(str(hit["rank"]), f"{hit['score']:.4f}", where_from, escape(_snippet(hit["text"])))
        out.print(table)

    @app.command()
    def ask(
        question: str = typer.Argument(..., help="The question."),
        collection: str = typer.Option(..., "--collection", "-c", help="The collection to answer from."),
        model: str = typer.Option("", "--model", "-m", help="A model or route (default: default_model)."),
        max_tokens: int = typer.Option(256, "--max-tokens", "-n", help="Most tokens to generate."),
        temperature: float = typer.Option(0.0, "--temperature", "-t", help="Sampling temperature."),
        seed: int = typer.Option(None, "--seed"),
    ) -> None:
        """Answer a question from a collection: the answer streams, then its numbered sources."""
        from aiestack.build import open_stack
        from aiestack.context.citations import citations_for, cited_indices
        from aiestack.context.stage import COLLECTION_METADATA
        from aiestack.settings import load_settings
        from aiestack.streams import Accumulator
        from aiestack.types import ChatRequest, Message, Params

        settings = load_settings()
        out, err = Console(highlight=False, soft_wrap=True), Console(stderr=True, highlight=False)

        async def run() -> None:
            async with open_stack(settings) as stack:
                info = _collection_or_fail(stack.documents, collection)
                request = ChatRequest(
                    model=model or settings.default_model,
                    messages=(Message("user", question),),
                    params=Params(temperature=temperature, max_tokens=max_tokens, seed=seed),
                    stream=True,
                    metadata={COLLECTION_METADATA: collection},
                )
                # The operator asks as the tenant that owns the collection.
                ex = await stack.chat(request, tenant=info.tenant)
                assert ex.completion is not None and ex.completion.stream is not None
                acc = Accumulator(ex.completion)
                async for delta in ex.completion.stream:
                    acc.add(delta)
                    if delta.text:
                        sys.stdout.write(delta.text)
                        sys.stdout.flush()
                sys.stdout.write("\n")
                answer = acc.completion().text
                cites = citations_for(ex.hits)
                used = set(cited_indices(answer, len(cites)))
                if not cites:
                    out.print("[yellow]No sources were found for this question.[/]")
                    return
                out.print("\n[bold]Sources[/]")
                for c in cites:
                    mark = "*" if c.index in used else " "
                    where = c.source or c.document_id
                    if c.heading:
                        where += f" › {c.heading}"
                    out.print(f"{mark}{escape(f'[{c.index}]')} {escape(where)}  [dim](score {c.score:.4f})[/]")
                if used:
                    out.print("[dim]* cited in the answer[/]")

        import asyncio

        try:
            asyncio.run(run())
        except KeyboardInterrupt:
            err.print("\n[yellow]interrupted[/]")
            raise typer.Exit(130) from None


def _search_in_process(
    settings: Any, collection: str, query: str, mode: str, k: int, search_filter: dict[str, Any] | None
) -> Any:
    """Open the stack here (loads the embedding model for vector and hybrid) and search."""
    import asyncio

    from aiestack.build import open_stack
    from aiestack.context.retrieval import Retriever, SearchOptions

    options = SearchOptions(mode=mode, k=k, filter=search_filter)  # type: ignore[arg-type]

    async def run() -> Any:
        async with open_stack(settings) as stack:
            store = stack.documents
            _collection_or_fail(store, collection)
            retriever = Retriever(
                store, stack.embeddings if mode != "bm25" else None, models=stack.resources.embeddings_for
            )
            if mode != "bm25":
                await retriever.load_model(collection)  # before the clock starts: the title's ms is the search's
            return await retriever.search(collection, query, options)

    return asyncio.run(run())


def _collection_or_fail(store: Any, name: str) -> Any:
    from aiestack.errors import NotFound

    info = store.get_collection(store.resolve(name))
    if info is None:
        known = ", ".join(c.name for c in store.list_collections()) or "none yet"
        raise NotFound(
            f"The collection '{name}' does not exist (collections: {known}).",
            hint=f"Create it with: aiestack ingest PATH --collection {name}",
        )
    return info
