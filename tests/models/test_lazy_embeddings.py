"""LazyEmbeddings: an embedder given ready-made or built by its factory once, on first use."""

from __future__ import annotations

from aiestack.models.base import EmbeddingModel, LazyEmbeddings
from aiestack.testing.embeddings import BagOfWordsEmbeddings


def test_a_ready_made_embedder_is_ready_and_returned_as_given() -> None:
    model = BagOfWordsEmbeddings()
    lazy = LazyEmbeddings(model)
    assert lazy.ready is model
    assert lazy.get() is model


def test_a_factory_runs_once_on_first_use_and_not_before() -> None:
    built: list[EmbeddingModel] = []

    def factory() -> EmbeddingModel:
        built.append(BagOfWordsEmbeddings())
        return built[-1]

    lazy = LazyEmbeddings(factory)
    assert lazy.ready is None and built == []
    first = lazy.get()
    assert lazy.get() is first and lazy.ready is first
    assert built == [first]
