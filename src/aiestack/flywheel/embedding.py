"""The flywheel's embedding candidate: finetune a collection's embedding model, gate the new version.

- ``candidate`` (:func:`finetune`): :func:`aiestack.finetune.embedding_run.finetune_embeddings` on the
  dataset step's version (its rows cite the chunks that answer them): train with hard negatives from
  the collection's index, register the model version, re-index the collection into a new version —
  not made current.
- ``evaluate`` (:func:`evaluate`): the held-out questions (the same seeded split the training left out)
  searched on the current version with its model and on the new version with the new model, in the
  chosen mode; the per-question scores (nDCG@10 by default) go through the same gate as every other
  candidate (:func:`aiestack.flywheel.gate.decide`: the paired bootstrap of the per-question gain).
- ``promote``: :func:`aiestack.context.versions.switch_collection` — one pointer write; every search
  and RAG route naming the collection uses the new version and its model from its next call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiestack.errors import ConfigError
from aiestack.flywheel.gate import decide
from aiestack.flywheel.runner import Context
from aiestack.flywheel.spec import EmbeddingCandidate
from aiestack.stores.base import EvalResultRecord


def _documents(ctx: Context) -> Any:
    if ctx.tools.documents is None or ctx.tools.embeddings_for is None:
        raise ConfigError("candidate.kind", "these flywheel tools have no document store or embedding models",
                          "run it with `aiestack flywheel run`")
    return ctx.tools.documents


async def finetune(ctx: Context) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    from aiestack.finetune.embedding_run import FinetuneOptions
    from aiestack.finetune.embeddings import TrainSettings

    c = ctx.spec.candidate
    assert isinstance(c, EmbeddingCandidate)
    documents = _documents(ctx)
    ref = str((ctx.outputs.get("curate") or ctx.outputs["dataset"])["dataset"])
    from aiestack.finetune.embedding_run import finetune_embeddings

    run: Callable[..., Awaitable[Any]] = ctx.tools.finetune_embeddings or finetune_embeddings
    if ctx.tools.embedding_versions is None:
        raise ConfigError("data_dir", "these flywheel tools have no registry of embedding model versions", "run it with `aiestack flywheel run`")
    options = FinetuneOptions(train=TrainSettings(epochs=c.epochs, batch_size=c.batch_size, max_steps=c.max_steps, seed=c.seed),
                              holdout=c.holdout, modes=(c.mode,), switch=False, seed=c.seed, dev=c.dev)
    ctx.say(f"finetuning the embedding model of {c.collection} on {ref} (holdout {c.holdout:g}"
            f"{f', dev {c.dev:g} to choose the hybrid vector weight' if c.dev else ''})")
    report = await run(documents=documents, datasets=ctx.tools.store, registry=ctx.tools.embedding_versions,
                       embeddings_for=ctx.tools.embeddings_for, collection=c.collection, dataset=ref, options=options)
    before, after = report.before[c.mode][c.metric], report.after[c.mode][c.metric]
    weight = report.vector_weight
    advice = (f"; hybrid vector weight {weight:g} chosen on {report.dev_queries} held-out training questions "
              f"(set [routes.NAME.rag] vector_weight = {weight:g} to use it)") if weight is not None else ""
    return {"collection": c.collection, "dataset": ref, "holdout": c.holdout, "mode": c.mode, "dev": c.dev}, {
        "collection": c.collection,
        "version": report.collection.version,
        "version_collection": report.collection.collection,
        "model": report.model.id,
        "base_model": report.base_model,
        "eval_queries": report.eval_queries,
        "train_queries": report.train_queries,
        "before": report.before,
        "after": report.after,
        "vector_weight": weight,
        "candidate": f"{c.collection} version {report.collection.version} (model {report.model.id})",
        "summary": f"trained {report.model.id} on {ref}, re-indexed {c.collection} into version {report.collection.version}; "
                   f"{c.mode} {c.metric} on {report.eval_queries} held-out questions {before:.4g} → {after:.4g}{advice}",
    }


async def evaluate(ctx: Context) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    from aiestack.context.beir import run_queries
    from aiestack.context.retrieval import Retriever, SearchOptions
    from aiestack.datasets.export import resolve
    from aiestack.finetune.embedding_data import judged, qrels_from_dataset, split_queries
    from aiestack.retrieval_metrics import mrr_at_k, ndcg_at_k, recall_at_k

    c = ctx.spec.candidate
    assert isinstance(c, EmbeddingCandidate)
    documents = _documents(ctx)
    assert ctx.tools.embeddings_for is not None
    cand = ctx.outputs["candidate"]
    version = await asyncio.to_thread(resolve, ctx.tools.store, str((ctx.outputs.get("curate") or ctx.outputs["dataset"])["dataset"]))
    qrels = await asyncio.to_thread(qrels_from_dataset, ctx.tools.store, version)
    _, held = split_queries(qrels, c.holdout, c.seed)
    queries, grades = judged(held)
    current = documents.resolve(c.collection)
    info = documents.get_collection(current)
    score = {"ndcg@10": lambda r, g: ndcg_at_k(r, g, 10), "recall@10": lambda r, g: recall_at_k(r, g, 10),
             "recall@100": lambda r, g: recall_at_k(r, g, 100), "mrr@10": lambda r, g: mrr_at_k(r, g, 10)}[c.metric]

    async def scored(collection: str, model_name: str, system: str) -> list[EvalResultRecord]:
        retriever = Retriever(documents, ctx.tools.embeddings_for(model_name))  # type: ignore[misc]
        runs, latencies = await run_queries(retriever, collection, queries, SearchOptions(mode=c.mode))
        return [EvalResultRecord("", qid, system, "", scores={c.metric: score(runs.get(qid, []), grades[qid])}, latency_ms=ms)
                for qid, ms in zip(queries, latencies, strict=True)]

    base = await scored(current, info.embedding_model, "retrieval")
    new = await scored(str(cand["version_collection"]), str(cand["model"]), "retrieval")
    decision = decide(new, base, metric=c.metric, higher_is_better=True, orientation={c.metric: True},
                      min_gain=ctx.spec.evaluate.min_gain)
    return {"collection": c.collection, "questions": len(queries), "mode": c.mode}, {
        "baseline": f"{c.collection} as it is ({current}, model {info.embedding_model})",
        "candidate": str(cand["candidate"]),
        "metric": c.metric,
        "per_question": {"baseline": {r.example_id: r.scores[c.metric] for r in base},
                         "candidate": {r.example_id: r.scores[c.metric] for r in new}},
        "passed": decision.passed,
        "decision": decision.as_dict(),
        "summary": f"gate {'passed' if decision.passed else 'failed'}: {decision.reason}",
    }


async def promote(ctx: Context) -> Mapping[str, Any]:
    from aiestack.context.versions import switch_collection

    c = ctx.spec.candidate
    assert isinstance(c, EmbeddingCandidate)
    documents = _documents(ctx)
    cand = ctx.outputs["candidate"]
    before = documents.resolve(c.collection)
    switched = await asyncio.to_thread(switch_collection, documents, c.collection, int(cand["version"]))
    change = {"kind": "collection_version", "collection": c.collection, "from": before, "to": switched.collection,
              "version": switched.version, "model": switched.embedding_model}
    return {"promoted": True, "change": change,
            "summary": f"promoted: {c.collection} now serves version {switched.version} (model {switched.embedding_model})"}
