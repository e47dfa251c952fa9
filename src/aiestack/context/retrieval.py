"""Retrieval over a :class:`~aiestack.stores.documents.DocumentStore`: term, vector and hybrid search.

One :class:`Retriever` per store and embedding model; each :meth:`Retriever.search` call runs:

0. the collection name resolved through the store's pointers (a collection's current version,
   :mod:`aiestack.context.versions`), and — when the retriever has ``models`` — the embedding model
   that collection was indexed with (a re-indexed version records its finetuned model);
1. an optional query rewrite (:mod:`aiestack.context.rewrite`);
2. BM25 (``store.term_search``) and/or nearest neighbours of the query embedding
   (``store.vector_search``), each ``candidates`` deep; in hybrid mode the query is embedded on the
   embedding model's worker while BM25 runs;
3. fusion of the two lists (hybrid): reciprocal rank fusion or weighted normalised scores
   (:mod:`aiestack.context.fusion`);
4. an optional reranker over the best ``rerank_depth`` (:mod:`aiestack.context.rerank`);
5. optional MMR diversification (:mod:`aiestack.context.mmr`), ``min_score``, and the top ``k``.

The hybrid defaults (weighted fusion of scores divided by each list's best, vector weight 0.5, 50
candidates per list) are the best of 216 settings (RRF and weighted with three normalisations,
several weights and depths) on the SciFact *train* queries (``bench/retrieval_rag.py --tune``); the
test-query figures are in bench/README.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aiestack.context.fusion import Norm, rrf, weighted
from aiestack.context.mmr import mmr
from aiestack.context.rerank import Reranker
from aiestack.context.rewrite import QueryRewriter
from aiestack.errors import InvalidRequest
from aiestack.models.base import EmbeddingModel
from aiestack.stores.documents import DocumentStore, Filter
from aiestack.types import Hit, Message

if TYPE_CHECKING:
    from aiestack.hookspecs import PluginRetriever

Mode = Literal["bm25", "vector", "hybrid"]
Fusion = Literal["rrf", "weighted"]
MODES: tuple[Mode, ...] = ("bm25", "vector", "hybrid")


@dataclass(frozen=True, slots=True)
class SearchOptions:
    """How to search. ``vector_weight`` is the vector list's share in the fusion (bm25 gets the rest)."""

    mode: Mode = "hybrid"
    k: int = 5
    candidates: int = 50
    fusion: Fusion = "weighted"
    rrf_k: float = 20.0
    vector_weight: float = 0.5
    norm: Norm = "max"
    rerank_depth: int = 20
    mmr_lambda: float | None = None
    min_score: float | None = None
    filter: Filter | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidRequest(
                f"Unknown retrieval mode {self.mode!r}.", hint=f"Use one of {', '.join(MODES)}."
            )
        if self.k < 1 or self.candidates < 1:
            raise InvalidRequest("k and candidates must be at least 1.", hint="Ask for 1 or more hits.")
        if not 0.0 <= self.vector_weight <= 1.0:
            raise InvalidRequest(
                f"vector_weight must be between 0 and 1, got {self.vector_weight}.",
                hint="0 is BM25 only, 1 vector only, 0.5 an even mix.",
            )


@dataclass(frozen=True, slots=True)
class Retrieval:
    """What one search found, and how long each step took (milliseconds)."""

    query: str  # the query searched (after any rewrite)
    hits: tuple[Hit, ...]
    timings: dict[str, float] = field(default_factory=dict)

    def hits_json(self) -> list[dict[str, Any]]:
        """The hits as JSON objects, best first (``aiestack search --json`` and the search endpoint)."""
        return [
            {
                "rank": rank,
                "score": hit.score,
                "retriever": hit.retriever,
                "chunk_id": hit.chunk.id,
                "document_id": hit.chunk.document_id,
                "source": hit.chunk.metadata.get("source"),
                "title": hit.chunk.metadata.get("title"),
                "heading_path": hit.chunk.metadata.get("heading_path"),
                "text": hit.chunk.text,
            }
            for rank, hit in enumerate(self.hits, start=1)
        ]


class Retriever:
    """Term, vector and hybrid search with optional rewrite, rerank and MMR.

    ``embeddings`` may be ``None`` for BM25-only use; vector and hybrid modes then fail with a
    clear error. ``models`` maps a collection's ``embedding_model`` to the model that embeds its
    queries (:meth:`aiestack.resources.Resources.embeddings_for`); without it every collection is
    searched with ``embeddings``.
    """

    def __init__(
        self,
        store: DocumentStore,
        embeddings: EmbeddingModel | None,
        *,
        reranker: Reranker | None = None,
        rewriter: QueryRewriter | None = None,
        extra: Sequence[PluginRetriever] = (),
        models: Callable[[str], EmbeddingModel] | None = None,
    ) -> None:
        self.store = store
        self.embeddings = embeddings
        self.models = models
        self.reranker = reranker
        self.rewriter = rewriter
        self.extra = tuple(extra)  # plugin retrievers: each list is fused with the term and vector lists

    def model_for(self, collection: str) -> EmbeddingModel | None:
        """The model that embeds queries for ``collection`` (a resolved name): its own with ``models``."""
        if self.embeddings is None or self.models is None:
            return self.embeddings
        info = self.store.get_collection(collection)
        return self.embeddings if info is None else self.models(info.embedding_model)

    async def load_model(self, collection: str) -> None:
        """Load the weights of the model that embeds ``collection``'s queries now, if it loads them lazily,
        so that the next search's timings are the search's own (a command that times its first query)."""
        model = self.model_for(self.store.resolve(collection))
        load = getattr(model, "load", None)
        if load is not None:
            await load()

    async def embed_query(self, query: str, model: EmbeddingModel | None = None) -> list[float]:
        model = model or self.embeddings
        if model is None:
            raise InvalidRequest(
                "Vector and hybrid search need an embedding model, and none is configured.",
                hint="Use mode 'bm25', or configure [embeddings] in aiestack.toml.",
            )
        (vector,) = await model.embed([query])
        return vector

    async def search(
        self,
        collection: str,
        query: str,
        options: SearchOptions | None = None,
        *,
        history: Sequence[Message] = (),
    ) -> Retrieval:
        """The best ``options.k`` hits for ``query`` in ``collection``, best first."""
        opts = options or SearchOptions()
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        collection = self.store.resolve(collection)
        needs_model = opts.mode in ("vector", "hybrid") or opts.mmr_lambda is not None
        model = self.model_for(collection) if needs_model else None
        if self.rewriter is not None:
            query = await self.rewriter.rewrite(query, history)
            timings["rewrite_ms"] = _ms(t0)
        if not query.strip():
            return Retrieval(query, (), timings)
        depth = max(opts.candidates, opts.k)
        t1 = time.perf_counter()
        query_vector: list[float] | None = None
        lists: list[list[Hit]] = []
        embedding = (
            asyncio.ensure_future(self.embed_query(query, model)) if opts.mode in ("vector", "hybrid") else None
        )
        try:
            # The store's searches are I/O (PostgreSQL) or CPU (the embedded index): off the event loop.
            if opts.mode in ("bm25", "hybrid"):
                lists.append(await asyncio.to_thread(self.store.term_search, collection, query, k=depth, filter=opts.filter))
            if embedding is not None:
                query_vector = await embedding
                timings["embed_ms"] = _ms(t1)
                lists.append(await asyncio.to_thread(self.store.vector_search, collection, query_vector, k=depth, filter=opts.filter))
            for plugin in self.extra:
                lists.append(await plugin.search(collection, query, k=depth, filter=opts.filter))
        finally:
            if embedding is not None and not embedding.done():
                embedding.cancel()
        hits = self._fuse(lists, opts)
        timings["search_ms"] = _ms(t1)
        if self.reranker is not None and hits:
            t2 = time.perf_counter()
            head = hits[: max(opts.rerank_depth, opts.k)]
            hits = await self.reranker.rerank(query, head)
            timings["rerank_ms"] = _ms(t2)
        if opts.mmr_lambda is not None and len(hits) > 1:
            t3 = time.perf_counter()
            hits = await self._diversify(query, query_vector, hits[: max(opts.rerank_depth, opts.k)], opts, model)
            timings["mmr_ms"] = _ms(t3)
        if opts.min_score is not None:
            hits = [h for h in hits if h.score >= opts.min_score]
        timings["total_ms"] = _ms(t0)
        return Retrieval(query, tuple(hits[: opts.k]), timings)

    def _fuse(self, lists: list[list[Hit]], opts: SearchOptions) -> list[Hit]:
        if len(lists) == 1:
            return lists[0]
        builtin = {"bm25": (1.0,), "vector": (1.0,), "hybrid": (1.0 - opts.vector_weight, opts.vector_weight)}
        weights = (*builtin[opts.mode], *(1.0 for _ in self.extra))  # a plugin's list weighs as one of ours
        if opts.fusion == "weighted":
            return weighted(lists, weights=weights, norm=opts.norm)
        return rrf(lists, k=opts.rrf_k, weights=weights)

    async def _diversify(
        self, query: str, query_vector: list[float] | None, hits: list[Hit], opts: SearchOptions, model: EmbeddingModel | None
    ) -> list[Hit]:
        assert opts.mmr_lambda is not None
        if model is None:
            return mmr(hits, k=opts.k, lambda_=opts.mmr_lambda)
        if query_vector is None:
            query_vector = await self.embed_query(query, model)
        vectors = await model.embed([h.chunk.text for h in hits])
        return mmr(hits, k=opts.k, lambda_=opts.mmr_lambda, query_vector=query_vector, vectors=vectors)


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000.0
