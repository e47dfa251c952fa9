"""finetune_embeddings end to end on memory stores with a tiny model: data, mining, training,
registration with lineage, re-index into a new version, before/after figures, and the switch."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiestack.context.retrieval import SearchOptions
from aiestack.context.versions import collection_versions
from aiestack.errors import InvalidRequest
from aiestack.finetune.embedding_data import (
    MiningOptions,
    Qrel,
    build_examples,
    qrels_from_dataset,
    split_queries,
)
from aiestack.finetune.embedding_run import (
    FinetuneOptions,
    choose_weight,
    evaluate_searches,
    finetune_embeddings,
)
from aiestack.finetune.embeddings import TrainSettings
from aiestack.models.base import EmbeddingModel
from aiestack.models.embedding_versions import EmbeddingVersions
from aiestack.stores.datasets import DatasetRow
from aiestack.stores.documents_memory import MemoryDocumentStore
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.testing.embeddings import BagOfWordsEmbeddings
from aiestack.types import Chunk, Document

FACTS = [
    ("Mercury is a silvery metal that stays liquid at room temperature.", "which metal is liquid at room temperature"),
    ("Honey bees collect nectar and turn it into honey in the hive.", "what do bees make"),
    ("The Moon orbits the Earth at an average distance of 384,400 kilometres.", "how far away is the moon"),
    ("Hamlet is a tragedy written by William Shakespeare around 1600.", "who wrote hamlet"),
    ("Ocean tides are caused by the gravitational pull of the Moon and the Sun.", "what causes tides"),
    ("Sunlight scattered by air molecules makes the daytime sky look blue.", "why is the sky blue"),
    ("Penguins are flightless birds that live mostly in the southern hemisphere.", "where do penguins live"),
    ("The Nile is often said to be the longest river in the world.", "which river is the longest"),
]


async def _collection(store: MemoryDocumentStore, model: EmbeddingModel, name: str = "facts") -> dict[str, Chunk]:
    store.create_collection(name, embedding_model=model.name, dim=model.dim)
    chunks: dict[str, Chunk] = {}
    for i, (text, _) in enumerate(FACTS):
        doc = Document(id=f"d{i}", text=text, source=f"fact-{i}.txt", title=f"fact {i}")
        chunk = Chunk(id=f"c{i}", document_id=doc.id, text=text, position=0, metadata={"source": doc.source})
        (vector,) = await model.embed([text])
        store.put_document(name, doc, [chunk], [vector])
        chunks[doc.id] = chunk
    return chunks


def _dataset(datasets: MemoryExchangeStore, chunks: dict[str, Chunk], name: str = "facts-qa", suffix: str = "") -> str:
    rows = [
        DatasetRow({"messages": [{"role": "user", "content": q + suffix}, {"role": "assistant", "content": text}],
                    "sources": [{"document_id": f"d{i}", "chunk_id": chunks[f"d{i}"].id, "text": text}]})
        for i, (text, q) in enumerate(FACTS)
    ]
    version, _ = datasets.push_dataset(name, "chat", rows, created_at=1.0)
    return version.ref


async def test_examples_take_positives_from_the_collection_and_negatives_from_its_index() -> None:
    store, datasets, model = MemoryDocumentStore(), MemoryExchangeStore(), BagOfWordsEmbeddings()
    chunks = await _collection(store, model)
    qrels = qrels_from_dataset(datasets, datasets.get_dataset(_dataset(datasets, chunks).split("@")[0]))  # type: ignore[arg-type]
    assert len(qrels) == len(FACTS) and qrels[0].chunk_id == "c0" and qrels[0].document_id == "d0"
    # A judgement naming only a document takes the document's chunk.
    qrels.append(Qrel("extra", "silvery liquid metal", "d0"))
    examples = await build_examples(store, "facts", model, qrels, MiningOptions(mode="hybrid", depth=5, skip=0, count=2))
    assert len(examples) == len(qrels)
    for ex in examples:
        assert ex.positive == chunks[ex.positive_id].text
        assert len(ex.negatives) == 2 and ex.positive not in ex.negatives
    skipped = await build_examples(store, "facts", model, qrels[:1], MiningOptions(mode="vector", depth=5, skip=1, count=1))
    top = await build_examples(store, "facts", model, qrels[:1], MiningOptions(mode="vector", depth=5, skip=0, count=2))
    assert skipped[0].negatives == top[0].negatives[1:]  # skip passes over the top candidates


def test_the_split_is_seeded_and_complete() -> None:
    qrels = [Qrel(f"q{i}", f"question {i}", f"d{i}") for i in range(200)]
    train, held = split_queries(qrels, 0.25, seed=3)
    assert len(train) + len(held) == 200 and 30 < len(held) < 70
    assert split_queries(qrels, 0.25, seed=3) == (train, held)
    assert split_queries(qrels, 0.25, seed=4) != (train, held)
    with pytest.raises(InvalidRequest, match="holdout"):
        split_queries(qrels, 1.0)


@pytest.mark.slow
async def test_finetune_registers_reindexes_measures_and_switches(tiny_st: Path, tmp_path: Path, one_thread: object) -> None:
    from aiestack.models.local_embeddings import SentenceTransformerEmbeddings

    base = SentenceTransformerEmbeddings(str(tiny_st), name="tiny")
    store, datasets = MemoryDocumentStore(), MemoryExchangeStore()
    chunks = await _collection(store, base)
    ref = _dataset(datasets, chunks)
    asked = _dataset(datasets, chunks, "facts-asked", "?")  # the same questions, asked with a question mark
    registry = EmbeddingVersions(tmp_path / "embedding-models")
    options = FinetuneOptions(
        train=TrainSettings(epochs=12, batch_size=4, learning_rate=3e-3, warmup=0.0),
        mining=MiningOptions(mode="vector", depth=4, skip=0, count=1),
        eval_dataset=asked,  # (almost) the same questions: this test checks the plumbing, not generalisation
        modes=("vector",),
        switch=True,
    )
    phases: set[str] = set()
    report = await finetune_embeddings(
        documents=store, datasets=datasets, registry=registry, embeddings_for=lambda name: base,
        collection="facts", dataset=ref, options=options, progress=lambda phase, done, total: phases.add(phase),
    )
    await base.aclose()
    assert phases == {"before", "mining", "training", "reindex", "after"}
    # The model version and its lineage.
    version = registry.require(report.model.id)
    assert version.base_model == "tiny" and version.dataset == ref and version.collection == "facts"
    assert version.params["learning_rate"] == 3e-3 and version.params["mining"]["mode"] == "vector"
    assert version.metrics["before"]["vector"]["ndcg@10"] == report.before["vector"]["ndcg@10"]
    assert (version.path / "modules.json").is_file() and report.model.id.startswith("tiny-ft-")
    # The new collection version, made current.
    assert (report.collection.collection, report.collection.embedding_model, report.collection.current) == (
        "facts.v2", report.model.id, True)
    assert store.resolve("facts") == "facts.v2"
    assert [v.version for v in collection_versions(store, "facts")] == [1, 2]
    # Measured before and after; trained on these very questions, the tiny model must find them.
    assert report.after["vector"]["ndcg@10"] > report.before["vector"]["ndcg@10"]
    assert report.after["vector"]["mrr@10"] >= 0.9
    assert report.train.steps > 0 and report.eval_queries == report.train_queries == len(FACTS)
    assert report.eval_source == asked


def test_the_weight_with_the_best_dev_figure_is_chosen_and_ties_go_to_the_default() -> None:
    assert choose_weight({0.3: 0.70, 0.5: 0.74, 0.7: 0.72}) == 0.5
    assert choose_weight({0.3: 0.70, 0.45: 0.70, 0.7: 0.70}) == 0.45  # nearest the retrieval default (0.5)
    assert choose_weight({0.3: 0.70, 0.6: 0.70}, default=0.6) == 0.6
    with pytest.raises(InvalidRequest, match="No vector weight"):
        choose_weight({})
    with pytest.raises(InvalidRequest, match="dev is a share"):
        FinetuneOptions(dev=1.0)
    with pytest.raises(InvalidRequest, match=r"in \[0, 1\]"):
        FinetuneOptions(dev=0.2, weights=(0.4, 1.5))


class _Counting(BagOfWordsEmbeddings):
    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    async def embed(self, texts: list[str]) -> list[list[float]]:  # type: ignore[override]
        self.texts.extend(texts)
        return await super().embed(texts)


async def test_each_search_setting_is_measured_and_each_question_embedded_once() -> None:
    store, model = MemoryDocumentStore(), _Counting()
    await _collection(store, model)
    model.texts.clear()
    qrels = [Qrel(f"q{i}", q, f"d{i}") for i, (_, q) in enumerate(FACTS)]
    weights = {f"{w:g}": SearchOptions(mode="hybrid", vector_weight=w) for w in (0.0, 0.5, 1.0)}
    figures = await evaluate_searches(store, "facts", model, qrels, {**weights, "bm25": SearchOptions(mode="bm25")})
    assert set(figures) == {"0", "0.5", "1", "bm25"}
    assert sorted(model.texts) == sorted(q for _, q in FACTS)  # one batch for the four settings
    assert figures["0"]["ndcg@10"] == pytest.approx(figures["bm25"]["ndcg@10"])  # weight 0 is BM25's ranking
    assert all(0 < f["ndcg@10"] <= 1 for f in figures.values())


@pytest.mark.slow
@pytest.mark.parametrize("refit", [True, False])
async def test_dev_questions_choose_the_hybrid_weight_then_the_model_is_refit_on_all(
    tiny_st: Path, tmp_path: Path, one_thread: object, refit: bool
) -> None:
    from aiestack.models.local_embeddings import SentenceTransformerEmbeddings

    base = SentenceTransformerEmbeddings(str(tiny_st), name="tiny")
    store, datasets = MemoryDocumentStore(), MemoryExchangeStore()
    chunks = await _collection(store, base)
    ref = _dataset(datasets, chunks)
    asked = _dataset(datasets, chunks, "facts-asked", "?")
    registry = EmbeddingVersions(tmp_path / "embedding-models")
    options = FinetuneOptions(
        train=TrainSettings(epochs=2, batch_size=4, learning_rate=1e-3, warmup=0.0),
        mining=MiningOptions(mode="vector", depth=4, skip=0, count=1),
        eval_dataset=asked, modes=("hybrid",), dev=0.4, weights=(0.2, 0.5, 0.8), refit=refit,
    )
    phases: list[str] = []

    def progress(phase: str, done: int, total: int) -> None:
        if phase not in phases:
            phases.append(phase)

    report = await finetune_embeddings(
        documents=store, datasets=datasets, registry=registry, embeddings_for=lambda name: base,
        collection="facts", dataset=ref, options=options, progress=progress,
    )
    await base.aclose()
    assert 0 < report.dev_queries < len(FACTS)
    assert set(report.dev_ndcg) == {0.2, 0.5, 0.8} and report.vector_weight == choose_weight(report.dev_ndcg)
    label = f"hybrid w={report.vector_weight:g}"
    assert set(report.before) == set(report.after) == {"hybrid", label}
    assert "weights" in phases and "weights" in report.phases
    recorded = registry.require(report.model.id)
    assert recorded.metrics["vector_weight"]["chosen"] == report.vector_weight and recorded.metrics["after"][label] == report.after[label]
    assert recorded.params["dev"] == 0.4 and recorded.params["refit"] is refit
    assert [m.id for m in registry.list()] == [report.model.id]  # the refit's first model is not registered
    assert [v.version for v in collection_versions(store, "facts")] == [1, 2]  # nor is its scratch version kept
    if refit:
        # The weight is chosen with a model trained without the dev questions, before the one kept is trained on all.
        assert phases == ["before", "mining", "dev training", "dev reindex", "weights", "training", "reindex", "after"]
        assert report.train_queries == report.examples == len(FACTS)
        assert recorded.lineage["train_queries"] == len(FACTS)
    else:
        assert phases == ["before", "mining", "training", "reindex", "after", "weights"]
        assert report.train_queries + report.dev_queries == len(FACTS) and report.examples == report.train_queries


@pytest.mark.slow
async def test_a_weight_chosen_before_is_evaluated_without_dev_questions(tiny_st: Path, tmp_path: Path, one_thread: object) -> None:
    from aiestack.models.local_embeddings import SentenceTransformerEmbeddings

    base = SentenceTransformerEmbeddings(str(tiny_st), name="tiny")
    store, datasets = MemoryDocumentStore(), MemoryExchangeStore()
    chunks = await _collection(store, base)
    options = FinetuneOptions(
        train=TrainSettings(epochs=1, batch_size=4, learning_rate=1e-3, warmup=0.0),
        mining=MiningOptions(mode="vector", depth=4, skip=0, count=1),
        eval_dataset=_dataset(datasets, chunks, "facts-asked", "?"), modes=("hybrid",), vector_weight=0.65,
    )
    report = await finetune_embeddings(
        documents=store, datasets=datasets, registry=EmbeddingVersions(tmp_path / "m"), embeddings_for=lambda name: base,
        collection="facts", dataset=_dataset(datasets, chunks), options=options,
    )
    await base.aclose()
    assert report.vector_weight == 0.65 and report.dev_ndcg == {} and report.dev_queries == 0
    assert set(report.after) == {"hybrid", "hybrid w=0.65"} and report.train_queries == len(FACTS)
    assert "weights" not in report.phases and "dev training" not in report.phases
    # Weight 0.65 is a different fusion from the default 0.4: its own figures, from its own searches.
    assert 0 < report.after["hybrid w=0.65"]["ndcg@10"] <= 1


def test_a_weight_is_given_or_chosen_not_both() -> None:
    with pytest.raises(InvalidRequest, match="not both"):
        FinetuneOptions(dev=0.2, vector_weight=0.5)
    with pytest.raises(InvalidRequest, match="vector_weight must be in"):
        FinetuneOptions(vector_weight=1.5)
    assert FinetuneOptions(dev=0.2).refit  # refitting on all the training questions is the default


async def test_a_remote_embedding_model_cannot_be_finetuned(tmp_path: Path) -> None:
    store, datasets, model = MemoryDocumentStore(), MemoryExchangeStore(), BagOfWordsEmbeddings()
    chunks = await _collection(store, model)
    ref = _dataset(datasets, chunks)
    with pytest.raises(InvalidRequest, match="not a local sentence-transformers model"):
        await finetune_embeddings(
            documents=store, datasets=datasets, registry=EmbeddingVersions(tmp_path), embeddings_for=lambda name: model,
            collection="facts", dataset=ref,
        )
