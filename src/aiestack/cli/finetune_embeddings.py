"""``aiestack finetune embeddings COLLECTION --dataset NAME@V``: finetune the collection's embedding model.

Trains on the dataset's questions (qrels: synthetic questions, rated RAG exchanges, a qrels file) with
hard negatives from the collection's own index, registers the model as an embedding model version,
re-indexes the collection into a new version with it, and prints retrieval before and after on held-out
questions (:mod:`aiestack.finetune.embedding_run`). ``--switch`` makes the new version current;
otherwise ``aiestack collections switch COLLECTION N`` does, when the figures say so.
``aiestack finetune embedding-models`` lists the registered versions with their lineage.
"""

from __future__ import annotations

import json
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aiestack.cli.console import table_console

_METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


def register(finetune: typer.Typer) -> None:
    @finetune.command("embeddings")
    def embeddings(
        collection: str = typer.Argument(..., help="The collection whose embedding model is finetuned (its current version)."),
        dataset: str = typer.Option(..., "--dataset", "-d", help="NAME or NAME@VERSION: questions with sources (qrels)."),
        eval_dataset: str = typer.Option(None, "--eval", help="Evaluate on this dataset version (default: --holdout of --dataset)."),
        holdout: float = typer.Option(0.2, "--holdout", min=0.0, max=0.9, help="Share of the questions held out for the evaluation."),
        epochs: float = typer.Option(1.0, "--epochs", min=0.01, help="Passes over the examples."),
        batch_size: int = typer.Option(32, "--batch-size", min=2, help="Questions per step (each one's positive is a negative for the others)."),
        learning_rate: float = typer.Option(2e-5, "--lr", min=0.0, help="AdamW learning rate."),
        max_seq_length: int = typer.Option(None, "--max-seq-length", min=8, help="Truncate passages to this for training (default: the model's)."),
        negatives: int = typer.Option(1, "--negatives", min=0, help="Hard negatives per question."),
        mine: str = typer.Option("hybrid", "--mine", help="How negatives are mined from the index: hybrid or vector."),
        mine_depth: int = typer.Option(30, "--mine-depth", min=1, help="Candidates looked at per question."),
        mine_skip: int = typer.Option(3, "--mine-skip", min=0, help="Unjudged top candidates passed over (likely unlabelled positives)."),
        mode: list[str] = typer.Option(["hybrid", "vector"], "--mode", help="Retrieval modes to evaluate (repeatable)."),
        threads: int = typer.Option(0, "--threads", min=0, help="Torch CPU threads for training (0: torch's default)."),
        seed: int = typer.Option(0, "--seed"),
        dev: float = typer.Option(0.0, "--dev", min=0.0, max=0.9,
                                  help="Hold out this share of the training questions to choose the hybrid vector weight for the new model."),
        weights: str = typer.Option("0.3,0.35,0.4,0.45,0.5,0.55,0.6,0.65,0.7", "--weights", help="The vector weights --dev chooses from."),
        refit: bool = typer.Option(True, "--refit/--no-refit",
                                   help="With --dev: once the weight is chosen, train again on all the training questions (a second training and re-index)."),
        vector_weight: float = typer.Option(None, "--vector-weight", min=0.0, max=1.0,
                                            help="Also evaluate hybrid at this weight, chosen before (by an earlier --dev run); not with --dev."),
        switch: bool = typer.Option(False, "--switch", help="Make the new collection version current at the end."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ) -> None:
        """Finetune a collection's embedding model, re-index the collection into a new version, and measure retrieval before and after."""
        from aiestack.finetune.embedding_data import MiningOptions
        from aiestack.finetune.embedding_run import FinetuneOptions
        from aiestack.finetune.embeddings import TrainSettings

        options = FinetuneOptions(
            train=TrainSettings(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, max_seq_length=max_seq_length,
                                negatives=negatives, seed=seed, threads=threads),
            mining=MiningOptions(mode=mine, depth=mine_depth, skip=mine_skip, count=negatives),
            holdout=holdout, eval_dataset=eval_dataset, modes=tuple(mode), switch=switch, seed=seed,
            dev=dev, weights=_weights(weights), refit=refit, vector_weight=vector_weight,
        )
        report = _run(collection, dataset, options, quiet=as_json)
        if as_json:
            typer.echo(json.dumps(report_json(report), indent=2))
            return
        _print(report)

    @finetune.command("embedding-models")
    def embedding_models(as_json: bool = typer.Option(False, "--json", help="Print them as JSON.")) -> None:
        """The registered embedding model versions (finetuned models in the data directory) with their lineage."""
        from aiestack.models.embedding_versions import EmbeddingVersions
        from aiestack.settings import load_settings

        versions = EmbeddingVersions.in_data_dir(load_settings().data_dir).list()
        if as_json:
            typer.echo(json.dumps([{**v.record(), "path": str(v.path)} for v in versions], indent=2))
            return
        if not versions:
            typer.echo("No embedding model versions yet: train one with `aiestack finetune embeddings COLLECTION --dataset NAME`.")
            return
        table = Table(title="embedding model versions")
        for column in ("id", "base model", "dataset", "collection", "hybrid nDCG@10 before → after"):
            table.add_column(column)
        for v in versions:
            before, after = v.metrics.get("before", {}), v.metrics.get("after", {})
            figure = f"{before['hybrid']['ndcg@10']:.4f} → {after['hybrid']['ndcg@10']:.4f}" if "hybrid" in before and "hybrid" in after else ""
            table.add_row(v.id, v.base_model, v.dataset, v.collection, figure)
        table_console(highlight=False).print(table)


def _weights(text: str) -> tuple[float, ...]:
    from aiestack.errors import InvalidRequest

    try:
        return tuple(float(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise InvalidRequest(f"--weights takes comma-separated numbers, got {text!r}.", hint="E.g. --weights 0.3,0.4,0.5,0.6") from None


def _run(collection: str, dataset: str, options: Any, *, quiet: bool) -> Any:
    import asyncio

    from aiestack.build import open_stack
    from aiestack.errors import ConfigError
    from aiestack.finetune.embedding_run import finetune_embeddings
    from aiestack.models.embedding_versions import EmbeddingVersions
    from aiestack.settings import load_settings
    from aiestack.stores.datasets import DatasetStore

    settings = load_settings()
    registry = EmbeddingVersions.in_data_dir(settings.data_dir)
    err = Console(stderr=True)
    labels = {"before": "retrieval before", "mining": "mining negatives", "training": "training",
              "reindex": "re-indexing", "after": "retrieval after", "dev training": "training without the dev questions",
              "dev reindex": "re-indexing for the dev questions", "weights": "choosing the vector weight"}

    async def run() -> Any:
        async with open_stack(settings) as stack:
            if not isinstance(stack.store, DatasetStore):
                raise ConfigError("store.url", f"the store {type(stack.store).__name__} cannot hold datasets", "use SQLite or PostgreSQL")
            cfg = settings.embeddings
            with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                          TimeElapsedColumn(), console=err, transient=True, disable=quiet or not err.is_terminal) as bar:
                tasks: dict[str, Any] = {}

                def progress(phase: str, done: int, total: int) -> None:
                    if phase not in tasks:
                        tasks[phase] = bar.add_task(labels.get(phase, phase), total=total)
                    bar.update(tasks[phase], completed=done, total=total)

                return await finetune_embeddings(
                    documents=stack.documents, datasets=stack.store, registry=registry,
                    embeddings_for=stack.resources.embeddings_for, collection=collection, dataset=dataset,
                    options=options, progress=progress,
                    open_version=lambda name: registry.open(name, batch_size=cfg.batch_size, threads=cfg.threads),
                )

    return asyncio.run(run())


def report_json(report: Any) -> dict[str, Any]:
    return {
        "model": report.model.id, "model_path": str(report.model.path), "base_model": report.base_model,
        "dataset": report.dataset, "collection": report.collection.name, "collection_version": report.collection.version,
        "stored_as": report.collection.collection, "switched": report.switched, "examples": report.examples,
        "train_queries": report.train_queries, "eval_queries": report.eval_queries, "eval": report.eval_source,
        "steps": report.train.steps, "first_loss": report.train.first_loss, "last_loss": report.train.last_loss,
        "device": report.train.device, "before": report.before, "after": report.after,
        "seconds": report.seconds, "cpu_seconds": report.cpu_seconds, "phases": dict(report.phases),
        "vector_weight": report.vector_weight, "dev_queries": report.dev_queries,
        "dev_ndcg@10": {f"{w:g}": v for w, v in report.dev_ndcg.items()},
    }


def _print(report: Any) -> None:
    out = table_console(highlight=False)
    table = Table(title=f"{report.collection.name}: retrieval on {report.eval_queries} questions ({report.eval_source})")
    table.add_column("mode")
    for metric in _METRICS:
        table.add_column(f"{metric} before → after", justify="right")
    for mode in report.before:
        cells = [f"{report.before[mode][m]:.4f} → {report.after[mode][m]:.4f} ({report.after[mode][m] - report.before[mode][m]:+.4f})"
                 for m in _METRICS]
        table.add_row(mode, *cells)
    out.print(table)
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in report.phases.items())
    out.print(f"model {report.model.id} (from {report.base_model}, {report.train.steps} steps on {report.examples} examples "
              f"from {report.train_queries} questions of {report.dataset}, on {report.train.device}; loss "
              f"{report.train.first_loss:.3f} → {report.train.last_loss:.3f})")
    out.print(f"collection version {report.collection.version} ({report.collection.collection}); "
              f"{report.seconds:.0f} s wall, {report.cpu_seconds:.0f} s CPU ({phases})")
    if report.dev_ndcg:
        grid = ", ".join(f"{w:g}: {v:.4f}" for w, v in report.dev_ndcg.items())
        refit = report.model.params.get("refit")
        out.print(f"hybrid vector weight chosen on {report.dev_queries} held-out training questions: {report.vector_weight:g} "
                  f"(nDCG@10 {grid}{'; then trained again on all of them' if refit else ''}); "
                  f"use it with: [routes.NAME.rag] vector_weight = {report.vector_weight:g}")
    if report.switched:
        out.print(f"{report.collection.name} now uses version {report.collection.version}.")
    else:
        out.print(f"make it current with: aiestack collections switch {report.collection.name} {report.collection.version}")
