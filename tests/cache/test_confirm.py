"""Word swaps judged by a second embedder (cache/confirm.py): the static embedder's blind spot."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pytest

from aiestack.build import build_stack
from aiestack.cache.confirm import SwapConfirmer
from aiestack.cache.semantic import SemanticCache
from aiestack.cache.stage import CacheStage
from aiestack.cache.verify import LexicalVerifier
from aiestack.settings import CacheSettings, Settings
from aiestack.stores.cache import CachedAnswer
from aiestack.stores.cache_memory import MemoryCacheBackend

pytestmark = pytest.mark.unit

BROWN, WHITE = "How do I cook brown rice?", "How do I cook white rice?"


class Table:
    """An embedding model whose vectors put chosen questions at chosen similarities to a reference question."""

    name = "table"
    dim = 2

    def __init__(self, similarity: dict[str, float]) -> None:
        self.similarity = similarity
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        out = []
        for text in texts:
            s = self.similarity.get(text, 1.0)
            out.append([s, float(np.sqrt(max(0.0, 1 - s * s)))])
        return out

    async def aclose(self) -> None:
        pass


async def _cache(confirming: Table | None, *, ready: bool = True) -> SemanticCache:
    static = Table({"how do i cook white rice": 0.935})  # the static model's blind spot: 0.935
    confirm = SwapConfirmer(lambda: confirming, ready=lambda: ready) if confirming is not None else None
    cache = SemanticCache(MemoryCacheBackend(), static, threshold=0.80, verifier=LexicalVerifier(), confirm=confirm)
    await cache.store("p", tenant="t", route="r", query=BROWN, vector=await cache.embed(BROWN), answer=CachedAnswer("Boil it 45 min.", "m", "p"), ttl_s=None)
    return cache


async def _lookup(cache: SemanticCache, query: str) -> tuple[bool, tuple[str, ...]]:
    found = await cache.lookup("p", tenant="t", query=query, vector=await cache.embed(query))
    return found.hit is not None, tuple(r.reason for r in found.rejected)


async def test_without_a_confirming_model_a_high_index_similarity_lets_a_word_swap_through() -> None:
    """The premise: the static model scores brown/white rice above threshold + margin, and the lexical margin passes it."""
    hit, _ = await _lookup(await _cache(None), WHITE)
    assert hit


async def test_a_word_swap_the_confirming_model_scores_low_is_refused() -> None:
    confirming = Table({"how do i cook white rice": 0.78})  # MiniLM-like: below 0.80 + 0.06
    hit, rejected = await _lookup(await _cache(confirming), WHITE)
    assert not hit and rejected == ("substitution",)
    assert confirming.calls == [["how do i cook white rice", "how do i cook brown rice"]]


async def test_a_word_swap_the_confirming_model_agrees_with_is_served() -> None:
    confirming = Table({"how do i cook white rice": 0.90})
    hit, _ = await _lookup(await _cache(confirming), WHITE)
    assert hit


async def test_a_paraphrase_without_a_swapped_word_never_calls_the_confirming_model() -> None:
    confirming = Table({})
    hit, _ = await _lookup(await _cache(confirming), "How can I cook brown rice?")
    assert hit and confirming.calls == []


async def test_other_near_misses_are_refused_without_asking_the_confirming_model() -> None:
    confirming = Table({})
    hit, rejected = await _lookup(await _cache(confirming), "How do I not cook brown rice?")
    assert not hit and rejected == ("negation",) and confirming.calls == []


async def test_until_the_confirming_model_is_loaded_a_word_swap_misses_and_loading_starts() -> None:
    loaded = asyncio.Event()

    class Lazy(Table):
        async def load(self) -> None:
            loaded.set()

    confirming = Lazy({"how do i cook white rice": 0.99})
    state = {"ready": False}
    confirm = SwapConfirmer(lambda: confirming, ready=lambda: state["ready"])
    cache = await _cache(None)
    cache.confirm = confirm
    hit, rejected = await _lookup(cache, WHITE)
    assert not hit and rejected == ("substitution",) and confirming.calls == []  # nobody waited for a model
    await asyncio.wait_for(loaded.wait(), 5)
    state["ready"] = True
    hit, _ = await _lookup(cache, WHITE)
    assert hit


@pytest.mark.parametrize(("embedder", "confirm_swaps", "confirms"), [("static", True, True), ("static", False, False), ("embeddings", True, False)])
def test_the_static_embedder_confirms_word_swaps_by_default(tmp_path, embedder: str, confirm_swaps: bool, confirms: bool) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path, embedded_model=False, default_model="m", models={"m": {"provider": "fake"}},
                        cache=CacheSettings(embedder=embedder, confirm_swaps=confirm_swaps))  # type: ignore[arg-type]
    stack = build_stack(settings)
    try:
        (stage,) = [s for s in stack.pipeline.stages if isinstance(s, CacheStage)]
        assert stage.semantic is not None
        assert (stage.semantic.confirm is not None) is confirms
    finally:
        asyncio.run(stack.aclose())
