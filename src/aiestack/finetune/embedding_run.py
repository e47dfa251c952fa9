"""``aiestack finetune embeddings``: finetune a collection's embedding model, re-index, and measure both.

:func:`finetune_embeddings` runs the whole step of the flywheel for embeddings:

1. the collection's current version and its embedding model (a local sentence-transformers model:
   the packaged all-MiniLM-L6-v2, a model directory, or a version finetuned before);
2. the judgements of a dataset version (:func:`~aiestack.finetune.embedding_data.qrels_from_dataset`),
   split into train and held-out questions (or evaluated on another dataset version);
3. retrieval on the held-out questions *before*: nDCG@10, recall@10/100 and MRR@10 per mode
   (:func:`aiestack.context.beir.evaluate`, the metrics of ``aiestack eval retrieval``), searching the
   store directly (no cache sits in between);
4. hard negatives mined from the collection's index, and training (:mod:`aiestack.finetune.embeddings`);
5. the model registered as an embedding model version with its lineage (base model, dataset
   version, collection, hyper-parameters; :mod:`aiestack.models.embedding_versions`);
6. the collection re-indexed into a new version with it (:func:`aiestack.context.versions.reindex_collection`);
7. retrieval on the same questions *after*, on the new version with the new model; the figures are
   recorded on the model version and returned. The new version becomes current only with
   ``switch=True`` (or later: ``aiestack collections switch``, or the flywheel's gate).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiestack.context.beir import evaluate, run_queries
from aiestack.context.retrieval import Retriever, SearchOptions
from aiestack.context.versions import CollectionVersion, reindex_collection, switch_collection
from aiestack.datasets.export import resolve
from aiestack.errors import InvalidRequest, NotFound
from aiestack.finetune.embedding_data import (
    MiningOptions,
    Qrel,
    build_examples,
    judged,
    qrels_from_dataset,
    split_queries,
)
from aiestack.finetune.embeddings import TrainReport, TrainSettings, train_embeddings
from aiestack.models.base import EmbeddingModel
from aiestack.models.embedding_versions import EmbeddingVersion, EmbeddingVersions
from aiestack.stores.datasets import DatasetStore
from aiestack.stores.documents import DocumentStore

Figures = dict[str, dict[str, float]]  # mode → metric → value
#: (phase, done, total): phases "before", "mining", "training", "reindex", "after".
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class FinetuneOptions:
    train: TrainSettings = field(default_factory=TrainSettings)
    mining: MiningOptions = field(default_factory=MiningOptions)
    holdout: float = 0.2  # share of the dataset's questions held out for the evaluation
    eval_dataset: str | None = None  # evaluate on this dataset version instead (then holdout may be 0)
    modes: tuple[str, ...] = ("hybrid", "vector")
    switch: bool = False  # make the new version current at the end
    seed: int = 0


@dataclass(frozen=True, slots=True)
class FinetuneReport:
    model: EmbeddingVersion
    collection: CollectionVersion
    base_model: str
    dataset: str
    train: TrainReport
    examples: int
    train_queries: int
    eval_queries: int
    eval_source: str  # "holdout of NAME@V" or "NAME@V"
    before: Figures
    after: Figures
    switched: bool
    seconds: float
    cpu_seconds: float
    phases: Mapping[str, float] = field(default_factory=dict)  # wall seconds per phase

    def delta(self, mode: str, metric: str = "ndcg@10") -> float:
        return self.after[mode][metric] - self.before[mode][metric]


def base_model_dir(model: EmbeddingModel) -> Path:
    """The sentence-transformers directory behind ``model`` (through a cache wrapper), or InvalidRequest."""
    inner = getattr(model, "inner", model)
    path = getattr(inner, "path", None)
    if not isinstance(path, Path) or not (path / "modules.json").is_file():
        raise InvalidRequest(
            f"The collection's embedding model {model.name!r} is not a local sentence-transformers model, so it cannot be finetuned here.",
            hint="Use [embeddings] provider = 'sentence_transformers' (the packaged all-MiniLM-L6-v2 or a model directory) and re-ingest.",
        )
    return path


async def evaluate_modes(
    store: DocumentStore, collection: str, model: EmbeddingModel, qrels: list[Qrel], modes: tuple[str, ...],
    *, progress: Callable[[int, int], None] | None = None,
) -> Figures:
    """nDCG@10, recall@10, recall@100 and MRR@10 of each mode on ``qrels``, searching ``collection`` with ``model``."""
    queries, grades = judged(qrels)
    retriever = Retriever(store, model)
    out: Figures = {}
    for i, mode in enumerate(modes):

        def step(done: int, total: int, i: int = i) -> None:
            if progress is not None:
                progress(i * total + done, total * len(modes))

        runs, _ = await run_queries(retriever, collection, queries, SearchOptions(mode=mode), progress=step)  # type: ignore[arg-type]
        out[mode] = evaluate(runs, grades)
    return out


async def finetune_embeddings(
    *,
    documents: DocumentStore,
    datasets: DatasetStore,
    registry: EmbeddingVersions,
    embeddings_for: Callable[[str], EmbeddingModel],
    collection: str,
    dataset: str,
    options: FinetuneOptions | None = None,
    progress: Progress | None = None,
    open_version: Callable[[str], EmbeddingModel] | None = None,
) -> FinetuneReport:
    """The step of the module docstring; see :class:`FinetuneOptions`. ``embeddings_for`` maps a
    collection's ``embedding_model`` to its model (:meth:`aiestack.resources.Resources.embeddings_for`);
    ``open_version`` opens a registered version (default: ``registry.open``)."""
    opts = options or FinetuneOptions()
    started, cpu_started = time.perf_counter(), time.process_time()
    phases: dict[str, float] = {}
    current = documents.resolve(collection)
    info = documents.get_collection(current)
    if info is None:
        raise NotFound(f"The collection {collection!r} does not exist.", hint=f"Ingest it first: aiestack ingest PATH -c {collection}")
    model = embeddings_for(info.embedding_model)
    base_dir = base_model_dir(model)
    try:
        version = resolve(datasets, dataset)
    except KeyError as exc:
        raise NotFound(str(exc.args[0]), hint="List datasets with `aiestack datasets list`.") from None
    qrels = qrels_from_dataset(datasets, version)
    if opts.eval_dataset:
        try:
            held_version = resolve(datasets, opts.eval_dataset)
        except KeyError as exc:
            raise NotFound(str(exc.args[0]), hint="List datasets with `aiestack datasets list`.") from None
        held = qrels_from_dataset(datasets, held_version)
        asked = {q.query.strip().lower() for q in held}
        train_qrels = [q for q in qrels if q.query.strip().lower() not in asked]  # never train on an eval question
        eval_source = held_version.ref
    else:
        if opts.holdout <= 0:
            raise InvalidRequest("Nothing to evaluate on: holdout is 0 and no eval dataset is given.", hint="Use --holdout 0.2 or --eval NAME@V.")
        train_qrels, held = split_queries(qrels, opts.holdout, opts.seed)
        eval_source = f"holdout {opts.holdout:g} of {version.ref}"
    if not held or not train_qrels:
        raise InvalidRequest(
            f"{version.ref} has {len(judged(qrels)[0])} questions: too few to train on some and evaluate on others.",
            hint="Add questions (datasets synthesize), or give --eval NAME@V.",
        )

    def tick(phase: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda done, total: progress(phase, done, total))

    t = time.perf_counter()
    before = await evaluate_modes(documents, current, model, held, opts.modes, progress=tick("before"))
    phases["before"] = time.perf_counter() - t

    t = time.perf_counter()
    examples = await build_examples(documents, current, model, train_qrels, opts.mining, progress=tick("mining"))
    phases["mining"] = time.perf_counter() - t
    if len(examples) < 2:
        raise InvalidRequest(
            f"Only {len(examples)} of the {len(train_qrels)} judgements name a chunk of {collection!r}.",
            hint="Was the dataset made from another collection? Synthesize questions from this one.",
        )

    t = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="aiestack-embedft-"))
    try:
        out = scratch / "model"
        report = await asyncio.to_thread(
            train_embeddings, base_dir, examples, out, opts.train,
            progress=None if progress is None else (lambda step, steps, loss: progress("training", step, steps)),
        )
        phases["training"] = time.perf_counter() - t
        params = {**opts.train.describe(), "mining": {k: getattr(opts.mining, k) for k in opts.mining.__dataclass_fields__},
                  "holdout": opts.holdout, "seed": opts.seed}
        registered = registry.register(
            out, base_model=info.embedding_model, dataset=version.ref, collection=current, params=params,
            lineage={"dataset_hash": version.content_hash, "examples": len(examples), "train_queries": len(judged(train_qrels)[0]),
                     "steps": report.steps, "device": report.device, "base_path": str(base_dir)},
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    tuned = (open_version or registry.open)(registered.id)
    try:
        t = time.perf_counter()
        reindexed = await reindex_collection(
            documents, collection, tuned, lineage={"dataset": version.ref, "embedding_model": registered.id, "source": current},
            progress=tick("reindex"),
        )
        phases["reindex"] = time.perf_counter() - t
        t = time.perf_counter()
        after = await evaluate_modes(documents, reindexed.version.collection, tuned, held, opts.modes, progress=tick("after"))
        phases["after"] = time.perf_counter() - t
    finally:
        await tuned.aclose()
    metrics: dict[str, Any] = {"eval": eval_source, "queries": len(judged(held)[0]), "before": before, "after": after}
    registered = registry.set_metrics(registered.id, metrics)
    target = reindexed.version
    if opts.switch:
        target = switch_collection(documents, collection, target.version)
    return FinetuneReport(
        model=registered,
        collection=target,
        base_model=info.embedding_model,
        dataset=version.ref,
        train=report,
        examples=len(examples),
        train_queries=len(judged(train_qrels)[0]),
        eval_queries=len(judged(held)[0]),
        eval_source=eval_source,
        before=before,
        after=after,
        switched=opts.switch,
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
        phases=phases,
    )
