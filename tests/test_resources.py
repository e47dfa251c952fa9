"""Resources: built before the stages, handed down, each part opened on first use and closed once."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiestack.build import build_stack
from aiestack.context.stage import Context
from aiestack.resources import Resources
from aiestack.settings import Settings
from aiestack.stores.documents_memory import MemoryDocumentStore
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.testing.embeddings import BagOfWordsEmbeddings

pytestmark = pytest.mark.unit


class Closing(BagOfWordsEmbeddings):
    closed = 0

    async def aclose(self) -> None:
        type(self).closed += 1


async def test_each_part_is_built_on_first_use_once_and_closed_once() -> None:
    built: list[str] = []

    def embeddings() -> Closing:
        built.append("embeddings")
        return Closing(dim=64)

    def documents() -> MemoryDocumentStore:
        built.append("documents")
        return MemoryDocumentStore()

    resources = Resources(embeddings=embeddings, documents=documents)
    assert built == [] and not resources.embeddings_built
    assert resources.embeddings is resources.get_embeddings() is resources.batch_embeddings
    assert resources.embeddings_built and built == ["embeddings"]
    assert resources.documents is resources.documents and built == ["embeddings", "documents"]
    with pytest.raises(LookupError):
        _ = resources.context_cache
    Closing.closed = 0
    await resources.aclose()
    await resources.aclose()
    assert Closing.closed == 1


async def test_use_puts_a_ready_part_in_place_of_the_factory() -> None:
    def never() -> BagOfWordsEmbeddings:
        raise AssertionError("built although a model was given")

    resources = Resources(embeddings=never, documents=MemoryDocumentStore)
    given = BagOfWordsEmbeddings(dim=32)
    resources.use(embeddings=given)
    assert resources.embeddings is given and resources.embeddings_built


def test_the_stack_hands_its_stages_the_resources_it_built_before_them(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, embedded_model=False, default_model="m", models={"m": {"provider": "fake"}})
    stack = build_stack(settings, store=MemoryExchangeStore())
    (context,) = [s for s in stack.pipeline.stages if isinstance(s, Context)]
    assert context._resources is stack.resources
    store = MemoryDocumentStore()
    stack.resources.use(documents=store)
    assert stack.documents is store
