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

The hybrid fusion's vector weight (``SearchOptions().vector_weight``, 0.5) was chosen for the base model; a finetuned model's
vector list is better, so it may deserve a larger share. With ``dev > 0`` the weight is chosen by the
standard protocol: a seeded share of the *training* questions (the dev questions) is held out, a model
is trained on the rest, the collection is re-indexed with it into a scratch version, and the weight of
``weights`` that gives the best hybrid nDCG@10 on the dev questions is chosen (ties: the one nearest the
default) — never on the evaluation questions. Then (``refit``, the default) the scratch version and
model are dropped and the model is trained again on *all* the training questions, dev ones included,
with the same settings: that is the model registered, re-indexed and evaluated (it costs a second
training and re-index; ``refit=False`` keeps the model trained without the dev questions instead). A
weight chosen before (by an earlier run's dev questions) is given as ``vector_weight``. Either way the
evaluation also reports hybrid at that weight (mode ``hybrid w=W``, before and after), and the report
carries the weight to set (``[routes.NAME.rag] vector_weight``).
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
from aiestack.finetune.embeddings import Example, TrainReport, TrainSettings, train_embeddings
from aiestack.models.base import EmbeddingModel
from aiestack.models.embedding_cache import CachedEmbeddings, MemoryEmbeddingCache
from aiestack.models.embedding_versions import EmbeddingVersion, EmbeddingVersions
from aiestack.stores.datasets import DatasetStore
from aiestack.stores.documents import DocumentStore

Figures = dict[str, dict[str, float]]  # mode → metric → value
#: (phase, done, total): phases "before", "mining", "training", "reindex", "after"; with ``dev``
#: also "dev training", "dev reindex" (the refit's first model) and "weights".
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
    dev: float = 0.0  # share of the training questions held out to choose the hybrid vector weight (0: none)
    weights: tuple[float, ...] = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)  # the candidates
    refit: bool = True  # with dev: train again on all the training questions once the weight is chosen
    vector_weight: float | None = None  # a weight chosen before (an earlier run's dev questions) to evaluate at

    def __post_init__(self) -> None:
        if not 0 <= self.dev < 1:
            raise InvalidRequest(f"dev is a share of the training questions in [0, 1), got {self.dev}.", hint="Use 0.2, or 0 to keep the weight.")
        if self.dev and (not self.weights or not all(0 <= w <= 1 for w in self.weights)):
            raise InvalidRequest(f"The vector weights to choose from must be in [0, 1], got {self.weights}.", hint="E.g. 0.3,0.4,0.5,0.6.")
        if self.vector_weight is not None and not 0 <= self.vector_weight <= 1:
            raise InvalidRequest(f"vector_weight must be in [0, 1], got {self.vector_weight}.", hint="E.g. 0.5, as an earlier --dev run chose.")
        if self.vector_weight is not None and self.dev:
            raise InvalidRequest("Give dev (choose the weight in this run) or vector_weight (a weight chosen before), not both.",
                                 hint="Drop --vector-weight, or set --dev 0.")


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
    vector_weight: float | None = None  # the hybrid vector weight chosen on the dev questions (dev > 0)
    dev_ndcg: Mapping[float, float] = field(default_factory=dict)  # weight → hybrid nDCG@10 on them, new model
    dev_queries: int = 0

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
    searches = {mode: SearchOptions(mode=mode) for mode in modes}  # type: ignore[arg-type]
    return await evaluate_searches(store, collection, model, qrels, searches, progress=progress)


async def evaluate_searches(
    store: DocumentStore, collection: str, model: EmbeddingModel, qrels: list[Qrel], searches: Mapping[str, SearchOptions],
    *, progress: Callable[[int, int], None] | None = None,
) -> Figures:
    """The metrics of :func:`evaluate_modes` for each named search setting; each question is embedded once."""
    queries, grades = judged(qrels)
    cached = CachedEmbeddings(model, MemoryEmbeddingCache(None))
    if any(o.mode != "bm25" for o in searches.values()):
        await cached.embed(list(queries.values()))  # one batch, then every setting reads the vectors
    retriever = Retriever(store, cached)
    out: Figures = {}
    for i, (label, options) in enumerate(searches.items()):

        def step(done: int, total: int, i: int = i) -> None:
            if progress is not None:
                progress(i * total + done, total * len(searches))

        runs, _ = await run_queries(retriever, collection, queries, options, progress=step)
        out[label] = evaluate(runs, grades)
    return out


def choose_weight(ndcg: Mapping[float, float], default: float | None = None) -> float:
    """The weight with the best nDCG@10; ties go to the one nearest ``default`` (the retrieval default)."""
    if not ndcg:
        raise InvalidRequest("No vector weight to choose from.", hint="Give one or more weights in [0, 1].")
    anchor = SearchOptions().vector_weight if default is None else default
    return max(ndcg, key=lambda w: (round(ndcg[w], 10), -abs(w - anchor)))


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
    dev: list[Qrel] = []
    if opts.dev:
        fit, dev = split_queries(train_qrels, opts.dev, opts.seed + 1)  # another hash than the holdout's
    else:
        fit = train_qrels
    if not held or not fit or (opts.dev and not dev):
        raise InvalidRequest(
            f"{version.ref} has {len(judged(qrels)[0])} questions: too few to train on some and evaluate on others.",
            hint="Add questions (datasets synthesize), or give --eval NAME@V.",
        )
    refit = bool(dev) and opts.refit
    final_qrels = train_qrels if refit or not dev else fit

    def tick(phase: str) -> Callable[[int, int], None] | None:
        return None if progress is None else (lambda done, total: progress(phase, done, total))

    t = time.perf_counter()
    before = await evaluate_modes(documents, current, model, held, opts.modes, progress=tick("before"))
    phases["before"] = time.perf_counter() - t

    t = time.perf_counter()
    mined = await build_examples(documents, current, model, train_qrels, opts.mining, progress=tick("mining"))
    phases["mining"] = time.perf_counter() - t
    held_out = set(judged(dev)[0]) if dev and not refit else set()
    examples = [e for e in mined if e.query_id not in held_out]
    if len(examples) < 2:
        raise InvalidRequest(
            f"Only {len(examples)} of the {len(final_qrels)} judgements name a chunk of {collection!r}.",
            hint="Was the dataset made from another collection? Synthesize questions from this one.",
        )

    chosen: float | None = opts.vector_weight
    dev_ndcg: dict[float, float] = {}
    if refit:  # the weight from a model trained without the dev questions, on a scratch version
        fit_ids = set(judged(fit)[0])
        chosen, dev_ndcg = await _dev_weight(
            documents, collection, base_dir, info.embedding_model, [e for e in mined if e.query_id in fit_ids], dev, opts, phases, tick
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
                  "holdout": opts.holdout, "dev": opts.dev, "refit": refit, "seed": opts.seed}
        registered = registry.register(
            out, base_model=info.embedding_model, dataset=version.ref, collection=current, params=params,
            lineage={"dataset_hash": version.content_hash, "examples": len(examples), "train_queries": len(judged(final_qrels)[0]),
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
        if dev and not refit:  # the weight from this very model, on its own version
            t = time.perf_counter()
            dev_ndcg = await _weight_grid(documents, reindexed.version.collection, tuned, dev, opts.weights, tick("weights"))
            chosen = choose_weight(dev_ndcg)
            phases["weights"] = time.perf_counter() - t
        if chosen is not None:
            label, search = f"hybrid w={chosen:g}", {f"hybrid w={chosen:g}": SearchOptions(mode="hybrid", vector_weight=chosen)}
            after[label] = (await evaluate_searches(documents, reindexed.version.collection, tuned, held, search))[label]
            before[label] = (await evaluate_searches(documents, current, model, held, search))[label]
    finally:
        await tuned.aclose()
    metrics: dict[str, Any] = {"eval": eval_source, "queries": len(judged(held)[0]), "before": before, "after": after}
    if chosen is not None:
        metrics["vector_weight"] = {"chosen": chosen, "dev_queries": len(judged(dev)[0]), "refit": refit,
                                    "dev_ndcg@10": {f"{w:g}": v for w, v in dev_ndcg.items()}}
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
        train_queries=len(judged(final_qrels)[0]),
        eval_queries=len(judged(held)[0]),
        eval_source=eval_source,
        before=before,
        after=after,
        switched=opts.switch,
        seconds=time.perf_counter() - started,
        cpu_seconds=time.process_time() - cpu_started,
        phases=phases,
        vector_weight=chosen,
        dev_ndcg=dev_ndcg,
        dev_queries=len(judged(dev)[0]),
    )


async def _weight_grid(
    store: DocumentStore, version: str, model: EmbeddingModel, dev: list[Qrel], weights: tuple[float, ...],
    progress: Callable[[int, int], None] | None,
) -> dict[float, float]:
    """Hybrid nDCG@10 on the dev questions at each vector weight, searching ``version`` with ``model``."""
    grid = {f"{w:g}": SearchOptions(mode="hybrid", vector_weight=w) for w in weights}
    on_dev = await evaluate_searches(store, version, model, dev, grid, progress=progress)
    return {w: on_dev[f"{w:g}"]["ndcg@10"] for w in weights}


async def _dev_weight(
    store: DocumentStore, collection: str, base_dir: Path, base_model: str, examples: list[Example], dev: list[Qrel],
    opts: FinetuneOptions, phases: dict[str, float], tick: Callable[[str], Callable[[int, int], None] | None],
) -> tuple[float, dict[float, float]]:
    """The refit's first half: train on ``examples`` (no dev question), re-index into a scratch version,
    choose the weight on ``dev``; the scratch version and model are dropped. (weight, the dev grid)."""
    from aiestack.models.local_embeddings import SentenceTransformerEmbeddings

    if len(examples) < 2:
        raise InvalidRequest(f"Only {len(examples)} examples are left once the dev questions are held out.",
                             hint="Use a smaller --dev, or add questions.")
    scratch = Path(tempfile.mkdtemp(prefix="aiestack-embedft-dev-"))
    try:
        t = time.perf_counter()
        progress = tick("dev training")
        await asyncio.to_thread(
            train_embeddings, base_dir, examples, scratch / "model", opts.train,
            progress=None if progress is None else (lambda step, steps, loss: progress(step, steps)),
        )
        phases["dev training"] = time.perf_counter() - t
        # A name of its own: an interrupted scratch version is never resumed by another model.
        probe = SentenceTransformerEmbeddings(str(scratch / "model"), name=f"{base_model}-dev-{scratch.name}", threads=opts.train.threads)
        try:
            t = time.perf_counter()
            made = await reindex_collection(store, collection, probe, lineage={"purpose": "dev: choose the hybrid vector weight"},
                                            progress=tick("dev reindex"))
            phases["dev reindex"] = time.perf_counter() - t
            try:
                t = time.perf_counter()
                grid = await _weight_grid(store, made.version.collection, probe, dev, opts.weights, tick("weights"))
                phases["weights"] = time.perf_counter() - t
            finally:
                await asyncio.to_thread(store.drop_collection, made.version.collection)
        finally:
            await probe.aclose()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return choose_weight(grid), grid
