"""An embedding cache: vectors keyed by (model name, sha256 of the text).

Embedding the same text twice gives the same vector, and re-ingesting a corpus or re-running an eval
embeds mostly texts seen before. :class:`CachedEmbeddings` wraps any embedding model: it looks every
text's hash up in an :class:`~aiestack.stores.base.EmbeddingCacheStore`, sends only the misses (each
distinct text once) to the model, stores their vectors and returns all vectors in the input order.
The model's ``name`` is part of the key, so two models never share vectors.

Stores are synchronous (a SQL store does I/O), so the cache is read and written off the event loop.
:class:`MemoryEmbeddingCache` is the in-process store, for tests and short-lived programs.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from aiestack.errors import ProviderError
from aiestack.models.base import EmbeddingModel
from aiestack.stores.base import EmbeddingCacheStore


def text_hash(text: str) -> str:
    """The cache key of a text: the hex sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CachedEmbeddings:
    """An :class:`~aiestack.models.base.EmbeddingModel` that serves repeated texts from ``cache``.

    ``hits`` and ``misses`` count texts (not calls) since creation, for metrics and tests.
    """

    def __init__(self, inner: EmbeddingModel, cache: EmbeddingCacheStore) -> None:
        self.inner = inner
        self.cache = cache
        self.hits = 0
        self.misses = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        hashes = [text_hash(t) for t in texts]
        unique = list(dict.fromkeys(hashes))
        found = await asyncio.to_thread(self.cache.get_embeddings, self.name, unique)
        missing = {h: t for h, t in zip(hashes, texts, strict=True) if h not in found}
        missed = sum(1 for h in hashes if h in missing)
        self.hits += len(hashes) - missed
        self.misses += missed
        if missing:
            vectors = await self.inner.embed(list(missing.values()))
            if len(vectors) != len(missing):
                raise ProviderError(
                    f"the embedding model returned {len(vectors)} vectors for {len(missing)} texts",
                    provider=self.name,
                    hint="This is a bug in the embedding provider; report it with the model name.",
                )
            fresh = dict(zip(missing, vectors, strict=True))
            await asyncio.to_thread(self.cache.put_embeddings, self.name, fresh)
            found = {**found, **fresh}
        return [list(found[h]) for h in hashes]

    async def load(self) -> None:
        """Load the wrapped model's weights now, if it loads them lazily."""
        load = getattr(self.inner, "load", None)
        if load is not None:
            await load()

    async def aclose(self) -> None:
        await self.inner.aclose()


class MemoryEmbeddingCache:
    """An in-process :class:`~aiestack.stores.base.EmbeddingCacheStore`, least-recently-used first out.

    ``max_entries`` bounds memory (None: unbounded). Thread-safe: :class:`CachedEmbeddings` calls it
    from worker threads.
    """

    def __init__(self, max_entries: int | None = 100_000) -> None:
        if max_entries is not None and max_entries < 1:
            raise ValueError(f"max_entries must be at least 1 (or None), got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[float, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def get_embeddings(self, model: str, hashes: Sequence[str]) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        with self._lock:
            for h in hashes:
                vector = self._entries.get((model, h))
                if vector is not None:
                    self._entries.move_to_end((model, h))
                    out[h] = list(vector)
        return out

    def put_embeddings(self, model: str, items: Mapping[str, Sequence[float]]) -> None:
        with self._lock:
            for h, vector in items.items():
                self._entries[(model, h)] = tuple(float(x) for x in vector)
                self._entries.move_to_end((model, h))
            if self.max_entries is not None:
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
