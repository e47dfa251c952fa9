"""CachedEmbeddings serves repeated texts from the cache and embeds each missing text once."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from aiestack.errors import ProviderError
from aiestack.models.base import EmbeddingModel
from aiestack.models.embedding_cache import CachedEmbeddings, MemoryEmbeddingCache, text_hash
from aiestack.stores.base import EmbeddingCacheStore

pytestmark = pytest.mark.unit


class CountingModel:
    """A deterministic fake: the vector of a text is (length, number of spaces, first code point)."""

    def __init__(self, name: str = "fake-embed") -> None:
        self.name = name
        self.dim = 3
        self.calls: list[list[str]] = []
        self.closed = False

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return [[float(len(t)), float(t.count(" ")), float(ord(t[0]) if t else 0)] for t in texts]

    async def aclose(self) -> None:
        self.closed = True


def vector(text: str) -> list[float]:
    return [float(len(text)), float(text.count(" ")), float(ord(text[0]) if text else 0)]


def test_the_wrapper_and_the_store_satisfy_their_protocols():
    cached = CachedEmbeddings(CountingModel(), MemoryEmbeddingCache())
    assert isinstance(cached, EmbeddingModel)
    assert isinstance(MemoryEmbeddingCache(), EmbeddingCacheStore)
    assert cached.name == "fake-embed" and cached.dim == 3


def test_text_hash_is_the_sha256_of_the_utf8_bytes():
    assert text_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert text_hash("é") != text_hash("e")


async def test_misses_are_embedded_once_and_results_keep_the_input_order():
    inner = CountingModel()
    cached = CachedEmbeddings(inner, MemoryEmbeddingCache())
    texts = ["a b", "hello", "a b", "", "hello", "zz"]
    assert await cached.embed(texts) == [vector(t) for t in texts]
    assert inner.calls == [["a b", "hello", "", "zz"]]  # deduplicated, first-seen order
    assert (cached.hits, cached.misses) == (0, 6)


async def test_a_second_call_only_embeds_new_texts():
    inner = CountingModel()
    cached = CachedEmbeddings(inner, MemoryEmbeddingCache())
    await cached.embed(["one", "two"])
    out = await cached.embed(["two", "three", "one"])
    assert out == [vector("two"), vector("three"), vector("one")]
    assert inner.calls == [["one", "two"], ["three"]]
    assert (cached.hits, cached.misses) == (2, 3)


async def test_a_fully_cached_call_does_not_reach_the_model():
    inner = CountingModel()
    cached = CachedEmbeddings(inner, MemoryEmbeddingCache())
    await cached.embed(["x y"])
    await cached.embed(["x y", "x y"])
    assert inner.calls == [["x y"]]


async def test_models_do_not_share_vectors():
    store = MemoryEmbeddingCache()
    first, second = CountingModel("model-a"), CountingModel("model-b")
    await CachedEmbeddings(first, store).embed(["same text"])
    await CachedEmbeddings(second, store).embed(["same text"])
    assert first.calls == second.calls == [["same text"]]
    assert len(store) == 2


async def test_empty_input_calls_nothing():
    inner = CountingModel()
    assert await CachedEmbeddings(inner, MemoryEmbeddingCache()).embed([]) == []
    assert inner.calls == []


async def test_callers_cannot_corrupt_the_cache_by_mutating_results():
    cached = CachedEmbeddings(CountingModel(), MemoryEmbeddingCache())
    first = await cached.embed(["abc"])
    first[0][0] = -1.0
    assert await cached.embed(["abc"]) == [vector("abc")]


async def test_a_model_that_returns_the_wrong_number_of_vectors_is_an_error():
    class Broken(CountingModel):
        async def embed(self, texts: Sequence[str]) -> list[list[float]]:
            return [[0.0]]

    store = MemoryEmbeddingCache()
    with pytest.raises(ProviderError, match="1 vectors for 2 texts"):
        await CachedEmbeddings(Broken(), store).embed(["a", "b"])
    assert len(store) == 0  # nothing half-written


async def test_aclose_closes_the_inner_model():
    inner = CountingModel()
    await CachedEmbeddings(inner, MemoryEmbeddingCache()).aclose()
    assert inner.closed


def test_memory_cache_evicts_the_least_recently_used():
    store = MemoryEmbeddingCache(max_entries=2)
    store.put_embeddings("m", {"a": [1.0], "b": [2.0]})
    assert store.get_embeddings("m", ["a"]) == {"a": [1.0]}  # "a" is now the most recent
    store.put_embeddings("m", {"c": [3.0]})
    assert store.get_embeddings("m", ["a", "b", "c"]) == {"a": [1.0], "c": [3.0]}
    assert len(store) == 2


def test_memory_cache_rejects_a_nonsense_bound():
    with pytest.raises(ValueError, match="max_entries"):
        MemoryEmbeddingCache(max_entries=0)
