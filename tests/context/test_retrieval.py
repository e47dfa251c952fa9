"""The Retriever on the in-memory store: bm25, vector and hybrid search, filters, rerank, MMR, rewrite."""

from __future__ import annotations

import pytest

from aiestack.context.rerank import LLMReranker
from aiestack.context.retrieval import Retriever, SearchOptions
from aiestack.context.rewrite import LLMRewriter
from aiestack.errors import InvalidRequest
from aiestack.models.fake import FakeModel
from aiestack.stores.documents_memory import MemoryDocumentStore
from aiestack.types import Message

from ._rag_kit import BowEmbeddings, fill, memory_store

pytestmark = pytest.mark.unit


def sources(hits: object) -> list[str]:
    return [h.chunk.metadata["source"] for h in hits]  # type: ignore[attr-defined]


async def test_bm25_finds_the_documents_with_the_words() -> None:
    r = Retriever(memory_store(), None)
    found = await r.search("kb", "tokens per minute", SearchOptions(mode="bm25", k=3))
    assert sources(found.hits)[0] == "docs/gateway.md"
    assert all(h.retriever == "bm25" for h in found.hits)
    assert "embed_ms" not in found.timings and set(found.timings) == {"search_ms", "total_ms"}
    assert found.timings["total_ms"] >= found.timings["search_ms"]  # the whole includes its part


async def test_vector_search_embeds_the_query_once() -> None:
    emb = BowEmbeddings()
    r = Retriever(memory_store(), emb)
    found = await r.search("kb", "green tea temperature", SearchOptions(mode="vector", k=2))
    assert sources(found.hits)[0] == "docs/tea.md"
    assert emb.calls == [["green tea temperature"]]
    assert found.hits[0].retriever == "vector" and -1.0 <= found.hits[0].score <= 1.0


async def test_hybrid_fuses_both_lists() -> None:
    emb = BowEmbeddings()
    store = memory_store()
    r = Retriever(store, emb)
    opts = SearchOptions(mode="hybrid", fusion="rrf", vector_weight=0.5, k=6, rrf_k=60)
    found = await r.search("kb", "cats purr", opts)
    bm25 = store.term_search("kb", "cats purr", k=100)
    vec = store.vector_search("kb", (await emb.embed(["cats purr"]))[0], k=100)
    expected: dict[str, float] = {}
    for ranked in (bm25, vec):
        for rank, h in enumerate(ranked, start=1):
            expected[h.chunk.id] = expected.get(h.chunk.id, 0.0) + 0.5 / (60 + rank)
    assert [h.chunk.id for h in found.hits] == sorted(expected, key=lambda c: -expected[c])[:6]
    assert set(sources(found.hits[:2])) == {"docs/cats.md", "docs/cats2.md"}
    assert found.hits[0].score == pytest.approx(max(expected.values()))


async def test_weighted_fusion_and_weights_at_the_extremes() -> None:
    store = memory_store()
    r = Retriever(store, BowEmbeddings())
    bm25_only = await r.search("kb", "daily walks", SearchOptions(mode="hybrid", fusion="weighted", vector_weight=0.0, k=3))
    assert sources(bm25_only.hits)[0] == "docs/dogs.md"
    ranked_bm25 = [h.chunk.id for h in store.term_search("kb", "daily walks", k=100)]
    assert [h.chunk.id for h in bm25_only.hits][: len(ranked_bm25[:3])] == ranked_bm25[:3]


async def test_filters_reach_both_retrievers() -> None:
    r = Retriever(memory_store(), BowEmbeddings())
    flt = {"field": "source", "op": "eq", "value": "docs/cats2.md"}
    for mode in ("bm25", "vector", "hybrid"):
        found = await r.search("kb", "cats purr", SearchOptions(mode=mode, k=5, filter=flt))  # type: ignore[arg-type]
        assert sources(found.hits) == ["docs/cats2.md"], mode


async def test_min_score_and_k() -> None:
    r = Retriever(memory_store(), BowEmbeddings())
    found = await r.search("kb", "cats", SearchOptions(mode="vector", k=2))
    assert len(found.hits) == 2
    high = await r.search("kb", "cats", SearchOptions(mode="vector", k=5, min_score=0.99))
    assert high.hits == ()


async def test_rerank_reorders_the_head() -> None:
    model = FakeModel().enqueue(["1", "9"] + ["0"] * 10)
    r = Retriever(memory_store(), BowEmbeddings(), reranker=LLMReranker(model, "fake", concurrency=1))
    found = await r.search("kb", "cats purr sleep", SearchOptions(mode="hybrid", k=2, rerank_depth=2))
    plain = await Retriever(memory_store(), BowEmbeddings()).search(
        "kb", "cats purr sleep", SearchOptions(mode="hybrid", k=2)
    )
    assert [h.chunk.id for h in found.hits] == [plain.hits[1].chunk.id, plain.hits[0].chunk.id]
    assert found.hits[0].retriever == "rerank:llm" and "rerank_ms" in found.timings


async def test_mmr_prefers_a_different_document_over_a_near_copy() -> None:
    corpus = (
        ("a.md", "A", "cats purr and sleep all day long"),
        ("b.md", "B", "cats purr and sleep all day"),
        ("c.md", "C", "cats chase mice at night"),
    )
    store = fill(MemoryDocumentStore(), corpus=corpus)
    r = Retriever(store, BowEmbeddings())
    plain = await r.search("kb", "cats purr sleep", SearchOptions(mode="vector", k=2))
    assert set(sources(plain.hits)) == {"a.md", "b.md"}
    diverse = await r.search("kb", "cats purr sleep", SearchOptions(mode="vector", k=2, mmr_lambda=0.3))
    assert sources(diverse.hits)[1] == "c.md"


async def test_rewrite_changes_what_is_searched() -> None:
    model = FakeModel().enqueue(["green tea brewing temperature"])
    r = Retriever(memory_store(), None, rewriter=LLMRewriter(model, "fake"))
    history = [Message("user", "let's talk about tea"), Message("assistant", "Sure.")]
    found = await r.search("kb", "how hot should it be?", SearchOptions(mode="bm25", k=1), history=history)
    assert found.query == "green tea brewing temperature"
    assert sources(found.hits) == ["docs/tea.md"]


async def test_vector_mode_without_embeddings_says_what_to_do() -> None:
    r = Retriever(memory_store(), None)
    with pytest.raises(InvalidRequest, match="bm25"):
        await r.search("kb", "cats", SearchOptions(mode="vector"))


def test_search_options_are_checked() -> None:
    with pytest.raises(InvalidRequest, match="mode"):
        SearchOptions(mode="fuzzy")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequest, match="vector_weight"):
        SearchOptions(vector_weight=2.0)
    with pytest.raises(InvalidRequest):
        SearchOptions(k=0)


def test_a_rag_table_defaults_to_the_search_options_own() -> None:
    """The hybrid defaults are defined once (SearchOptions): a route's [rag] table without keys searches
    exactly as SearchOptions() does (``aiestack eval retrieval`` passes only the options it is given:
    tests/cli/test_search_cli.py runs it without any)."""
    from aiestack.context.config import RagConfig

    keys = ("candidates", "fusion", "rrf_k", "vector_weight", "norm", "rerank_depth")
    defaults = SearchOptions()
    options = RagConfig().options()
    assert {key: getattr(options, key) for key in keys} == {key: getattr(defaults, key) for key in keys}
