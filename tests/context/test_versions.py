"""Collection versions: re-index with another model, switch, and the readers that follow the switch."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aiestack.context.ingest import IngestOptions, ingest
from aiestack.context.retrieval import Retriever, SearchOptions
from aiestack.context.versions import collection_versions, reindex_collection, switch_collection
from aiestack.errors import NotFound
from aiestack.models.base import EmbeddingModel
from aiestack.stores.documents import DocumentStore
from aiestack.stores.documents_embedded import EmbeddedDocumentStore
from aiestack.stores.documents_memory import MemoryDocumentStore
from aiestack.testing.embeddings import BagOfWordsEmbeddings


class Reversed(BagOfWordsEmbeddings):
    """Another model: the bag-of-words vectors with their dimensions rotated (same similarities among
    its own vectors, unrelated to the first model's)."""

    async def embed(self, texts):  # type: ignore[no-untyped-def]
        return [v[7:] + v[:7] for v in await super().embed(texts)]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DocumentStore]:
    s: DocumentStore = MemoryDocumentStore() if request.param == "memory" else EmbeddedDocumentStore(f"sqlite:///{tmp_path / 'd.db'}")
    s.migrate()
    yield s
    s.close()


async def _fill(store: DocumentStore, tmp_path: Path, base: EmbeddingModel) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "cats.md").write_text("Cats purr and sleep all day long.")
    (folder / "dogs.md").write_text("Dogs bark at the postman every morning.")
    (folder / "fish.md").write_text("Fish swim in the cold river water.")
    await ingest([str(folder)], "docs", store, base)


async def test_reindex_switch_and_back(store: DocumentStore, tmp_path: Path) -> None:
    base, tuned = BagOfWordsEmbeddings(name="base"), Reversed(name="tuned-v1")
    await _fill(store, tmp_path, base)
    report = await reindex_collection(store, "docs", tuned, lineage={"dataset": "qa@1"})
    v2 = report.version
    assert (v2.name, v2.version, v2.collection, v2.embedding_model) == ("docs", 2, "docs.v2", "tuned-v1")
    assert (report.embedded, report.skipped, v2.documents, v2.current) == (3, 0, 3, False)
    assert v2.lineage == {"dataset": "qa@1"}
    # The chunks are the same; the vectors are the new model's.
    old = store.read_documents("docs", ["x"] + [d.source for d in store.documents("docs")])
    new = store.read_documents("docs.v2", [d.source for d in store.documents("docs")])
    assert [c.text for _, cs, _ in old for c in cs] == [c.text for _, cs, _ in new for c in cs]
    assert [v for _, _, vs in old for v in vs] != [v for _, _, vs in new for v in vs]

    assert [(v.version, v.current) for v in collection_versions(store, "docs")] == [(1, True), (2, False)]
    switched = switch_collection(store, "docs", 2)
    assert switched.current and store.resolve("docs") == "docs.v2"
    assert [(v.version, v.current) for v in collection_versions(store, "docs.v2")] == [(1, False), (2, True)]
    with pytest.raises(NotFound, match="no version 7"):
        switch_collection(store, "docs", 7)
    switch_collection(store, "docs", 1)
    assert store.resolve("docs") == "docs" and store.pointers() == {}


async def test_reindex_resumes_an_interrupted_version(store: DocumentStore, tmp_path: Path) -> None:
    base, tuned = BagOfWordsEmbeddings(name="base"), Reversed(name="tuned-v1")
    await _fill(store, tmp_path, base)
    await reindex_collection(store, "docs", tuned)
    first = store.documents("docs.v2")[0]
    store.delete_documents("docs.v2", [first.id])  # as if the run had stopped before this document
    report = await reindex_collection(store, "docs", tuned)
    assert (report.version.collection, report.embedded, report.skipped) == ("docs.v2", 1, 2)
    assert [v.version for v in collection_versions(store, "docs")] == [1, 2]


async def test_the_retriever_and_ingestion_follow_the_current_version_and_its_model(store: DocumentStore, tmp_path: Path) -> None:
    base, tuned = BagOfWordsEmbeddings(name="base"), Reversed(name="tuned-v1")
    await _fill(store, tmp_path, base)
    await reindex_collection(store, "docs", tuned)
    models = {"tuned-v1": tuned}

    def model_for(name: str) -> EmbeddingModel:
        return models.get(name, base)

    retriever = Retriever(store, base, models=model_for)
    options = SearchOptions(mode="vector", k=1)
    before = await retriever.search("docs", "cats purr and sleep", options)
    assert before.hits[0].chunk.text.startswith("Cats")
    base.calls.clear()
    switch_collection(store, "docs", 2)
    after = await retriever.search("docs", "cats purr and sleep", options)
    # Served from docs.v2, the query embedded by the version's own model (so the ranking holds).
    assert after.hits[0].chunk.text.startswith("Cats") and base.calls == []
    assert after.hits[0].score == pytest.approx(before.hits[0].score)
    # Without the model lookup the query would be embedded by the wrong model: the ranking breaks.
    wrong = await Retriever(store, base).search("docs", "cats purr and sleep", options)
    assert wrong.hits[0].score < before.hits[0].score

    extra = tmp_path / "more"
    extra.mkdir()
    (extra / "owls.md").write_text("Owls hoot at night in the forest.")
    tuned.calls.clear()
    await ingest([str(extra)], "docs", store, base, options=IngestOptions(), models=model_for)
    assert {d.source.rsplit("/", 1)[-1] for d in store.documents("docs.v2")} >= {"owls.md"}
    assert len(store.documents("docs")) == 3  # the version switched away from keeps what it had
    assert tuned.calls  # embedded by the version's model
