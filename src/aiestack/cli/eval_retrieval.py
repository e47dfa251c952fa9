"""``aiestack eval retrieval --beir PATH``: nDCG@10, recall@10, recall@100 and MRR@10 on a BEIR data set.

The corpus is indexed once into a collection of the stack's document store (one chunk per
document, named ``beir-<folder>`` unless ``--collection`` says otherwise); later runs reuse it and
embed nothing that is already stored.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from aiestack.cli.console import table_console


def register(evals: typer.Typer) -> None:
    @evals.command("retrieval")
    def retrieval(
        beir: Path = typer.Option(..., "--beir", help="A BEIR folder: corpus.jsonl, queries.jsonl, qrels/."),
        split: str = typer.Option("test", "--split", help="The qrels split to evaluate (test, train, dev)."),
        mode: list[str] = typer.Option(
            ["hybrid"], "--mode", help="bm25, vector or hybrid (repeatable: compare modes in one run)."
        ),
        collection: str = typer.Option(None, "--collection", "-c", help="Index into this collection."),
        fusion: str = typer.Option(None, "--fusion", help="Hybrid fusion: weighted or rrf (default: the retrieval default, docs/rag.md)."),
        norm: str = typer.Option(None, "--norm", help="Weighted fusion's score normalisation: max, minmax or z (default: the retrieval default)."),
        rrf_k: float = typer.Option(None, "--rrf-k", help="The RRF constant (default: the retrieval default)."),
        candidates: int = typer.Option(None, "--candidates", min=1, help="Depth of each retriever's list; queries are ranked 100 deep, so only a value above 100 changes it."),
        vector_weight: float = typer.Option(None, "--vector-weight", help="The vector share in the fusion (default: the retrieval default)."),
        limit: int = typer.Option(None, "--limit", "-n", min=1, help="Only the first N queries."),
        as_json: bool = typer.Option(False, "--json", help="Print the figures as JSON."),
    ) -> None:
        """Evaluate retrieval on a BEIR data set (e.g. SciFact)."""
        from aiestack.build import open_stack
        from aiestack.context.beir import evaluate, index_corpus, load_corpus, load_split, run_queries
        from aiestack.context.retrieval import Retriever, SearchOptions
        from aiestack.settings import load_settings

        given = {"fusion": fusion, "norm": norm, "rrf_k": rrf_k, "vector_weight": vector_weight, "candidates": candidates}
        chosen = {key: value for key, value in given.items() if value is not None}  # the rest: SearchOptions' defaults
        options = [SearchOptions(mode=m, **chosen) for m in mode]  # type: ignore[arg-type]
        data = load_split(beir, split)
        queries = dict(list(data.queries.items())[:limit]) if limit else data.queries
        qrels = {q: data.qrels[q] for q in queries}
        name = collection or f"beir-{beir.resolve().name}".lower()
        err = Console(stderr=True)

        async def run() -> list[dict[str, Any]]:
            async with open_stack(load_settings()) as stack:
                store, embeddings = stack.documents, stack.embeddings
                docs = load_corpus(beir)
                with Progress(console=err, transient=True, disable=not err.is_terminal) as bar:
                    task = bar.add_task("indexing", total=len(docs))
                    await index_corpus(
                        store, embeddings, name, docs, progress=lambda done, total: bar.update(task, completed=done, total=total)
                    )
                retriever = Retriever(store, embeddings)
                if any(o.mode != "bm25" for o in options):
                    await retriever.load_model(name)  # before the first timed query: p50 is the search's
                rows = []
                for opts in options:
                    runs, latencies = await run_queries(retriever, name, queries, opts)
                    figures = evaluate(runs, qrels)
                    figures["p50_ms"] = statistics.median(latencies)
                    rows.append({"mode": opts.mode, "queries": len(queries), **figures})
                return rows

        import asyncio

        rows = asyncio.run(run())
        if as_json:
            print(json.dumps(rows))
            return
        table = Table(title=f"{beir.name} · {split} · {len(queries)} queries")
        for column in ("mode", "nDCG@10", "recall@10", "recall@100", "MRR@10", "p50 ms"):
            table.add_column(column, justify="left" if column == "mode" else "right")
        for r in rows:
            table.add_row(
                r["mode"], f"{r['ndcg@10']:.4f}", f"{r['recall@10']:.4f}", f"{r['recall@100']:.4f}",
                f"{r['mrr@10']:.4f}", f"{r['p50_ms']:.2f}",
            )
        table_console(highlight=False).print(table)
