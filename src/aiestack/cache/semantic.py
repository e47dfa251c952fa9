"""The semantic cache: a question answered before, asked again in other words.

Lookup: embed the normalised last user turn, search the in-process vector index of the request's
partition (tenant, route, fingerprint, parameters and earlier conversation: see
:mod:`aiestack.cache.keying`), and take the best candidate whose similarity reaches the threshold
*and* that the verifier accepts (:mod:`aiestack.cache.verify`). Entries themselves live in a
:class:`~aiestack.stores.cache.CacheBackend`; the index holds, per entry, its vector, its key, its
question, its tenant and its expiry, so a lookup touches the backend only to read the answer of
an accepted candidate.

The index is loaded from the backend on first use (the SQLite default survives restarts) and, for
a backend shared by several processes (SQL, Redis), follows entries the other processes wrote:
at most every ``sync_interval_s`` a lookup first reads the entries created since the last sync.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from aiestack.cache.confirm import SwapConfirmer
from aiestack.cache.index import VectorIndex, build_hnsw, normalised
from aiestack.cache.keying import normalise_query
from aiestack.cache.verify import LexicalVerifier, Verifier
from aiestack.models.base import EmbeddingModel, LazyEmbeddings
from aiestack.stores.cache import CacheBackend, CachedAnswer, Entry

#: Seconds subtracted from the last sync time: entries written by another process whose clock
#: is slightly behind, or whose write committed late, are still picked up (duplicates are ignored).
SYNC_SLACK_S = 5.0


@dataclass(frozen=True, slots=True)
class _Ref:
    key: str
    partition: str
    tenant: str
    query: str
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class Rejection:
    similarity: float
    reason: str


@dataclass(frozen=True, slots=True)
class SemanticHit:
    entry: Entry
    similarity: float


@dataclass(frozen=True, slots=True)
class SemanticLookup:
    """A lookup's result: the hit (or None) and the candidates the verifier turned down."""

    hit: SemanticHit | None
    rejected: tuple[Rejection, ...] = ()
    best: float | None = None  # the best similarity seen, hit or not


def semantic_key(partition: str, query: str) -> str:
    """One entry per (partition, normalised question): asking again replaces, never duplicates."""
    return "s:" + hashlib.sha256(f"{partition}\x00{normalise_query(query)}".encode()).hexdigest()


class SemanticCache:
    """Semantic entries in ``backend``, found through per-partition vector indexes in process."""

    def __init__(
        self,
        backend: CacheBackend,
        embeddings: EmbeddingModel | Callable[[], EmbeddingModel],
        *,
        threshold: float = 0.80,
        verifier: Verifier | None = None,
        confirm: SwapConfirmer | None = None,
        candidates: int = 4,
        sync_interval_s: float | None = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self._embeddings = LazyEmbeddings(embeddings)
        self.threshold = threshold
        self.verifier: Verifier | None = verifier if verifier is not None else LexicalVerifier()
        self.confirm = confirm
        self._candidates = candidates
        # A backend that only this process writes (memory) is loaded once and never re-read.
        self._sync_interval_s = sync_interval_s if getattr(backend, "shared", True) else None
        self._clock = clock
        self._partitions: dict[str, VectorIndex] = {}
        self._refs: dict[int, _Ref] = {}
        self._labels: dict[str, int] = {}
        self._next = itertools.count(1)
        self._synced_at: float | None = None
        self._sync_lock = asyncio.Lock()
        #: Entries indexed but still being written to the backend (the cache stores off the request path).
        self._pending: dict[str, Entry] = {}
        #: Partitions whose HNSW index is being built in a worker thread (see :meth:`_move`).
        self._moves: dict[str, asyncio.Task[None]] = {}

    def __len__(self) -> int:
        return len(self._refs)

    @property
    def own_embeddings(self) -> EmbeddingModel | None:
        """The embedder if it exists already: given ready-made, or built by an earlier request."""
        return self._embeddings.ready

    @property
    def embeddings(self) -> EmbeddingModel:
        return self._embeddings.get()  # read twice on every cache-eligible request

    async def embed(self, text: str) -> np.ndarray:
        """The vector of a user turn as the cache compares it (normalised text, unit length).

        An embedder with ``embed_array`` (the static one) gives it as an array: the same values, without
        a list of floats turned back into an array (~80 k instructions of the event loop a miss)."""
        model = self.embeddings
        as_array = getattr(model, "embed_array", None)
        if as_array is not None:
            return normalised((await as_array([normalise_query(text)]))[0])
        (vector,) = await model.embed([normalise_query(text)])
        return normalised(vector)

    async def lookup(
        self,
        partition: str,
        *,
        tenant: str,
        query: str,
        vector: np.ndarray,
        threshold: float | None = None,
    ) -> SemanticLookup:
        """The best verified entry of ``partition`` for ``query`` (embedded as ``vector``)."""
        await self._sync()
        index = self._partitions.get(partition)
        if index is None:
            return SemanticLookup(None)
        limit = self.threshold if threshold is None else threshold
        now = self._clock()
        q = normalised(vector)
        rejected: list[Rejection] = []
        best: float | None = None
        for label, similarity in index.search(q, self._candidates):
            ref = self._refs.get(label)
            if ref is None:
                continue
            if ref.expires_at is not None and ref.expires_at <= now:
                self._forget(label)
                continue
            if ref.tenant != tenant:
                continue  # another tenant's entry: not even its similarity is reported
            if similarity < limit - index.error:
                best = similarity if best is None else max(best, similarity)
                continue
            entry = None
            if index.error and similarity < limit + index.error:  # too close to call: the stored vector decides
                entry = await self._get(ref.key)
                if entry is None or entry.tenant != tenant or entry.partition != partition:
                    self._forget(label)
                    continue
                if entry.vector is not None:
                    similarity = float(normalised(entry.vector) @ q)
            best = similarity if best is None else max(best, similarity)
            if similarity < limit:
                continue
            reason = await self.verify(query, ref.query, similarity=similarity, threshold=limit)
            if reason is not None:
                rejected.append(Rejection(similarity, reason))
                continue
            if entry is None:
                entry = await self._get(ref.key)
                if entry is None or entry.tenant != tenant or entry.partition != partition:
                    self._forget(label)
                    continue
                if index.error and entry.vector is not None:  # a hit reports the exact similarity
                    similarity = float(normalised(entry.vector) @ q)
            return SemanticLookup(SemanticHit(entry, similarity), tuple(rejected), best)
        return SemanticLookup(None, tuple(rejected), best)

    async def verify(self, query: str, candidate: str, *, similarity: float, threshold: float) -> str | None:
        """Why ``candidate``'s answer may not be served for ``query`` (``None``: it may).

        The verifier decides; with a :attr:`confirm` model, a word swap is judged by that model's
        similarity instead of the index's (see :mod:`aiestack.cache.confirm`).
        """
        if self.verifier is None:
            return None
        if self.confirm is None:
            return self.verifier(query, candidate, similarity=similarity, threshold=threshold)
        # At the lowest passing similarity, a word swap is reported whatever the index's similarity was.
        reason = self.verifier(query, candidate, similarity=threshold, threshold=threshold)
        if reason != "substitution":
            return reason
        confirmed = await self.confirm.similarity(query, candidate)
        if confirmed is None:
            return "substitution"  # the confirming model is not loaded yet: the safe side
        return self.verifier(query, candidate, similarity=confirmed, threshold=threshold)

    async def store(
        self,
        partition: str,
        *,
        tenant: str,
        route: str,
        query: str,
        vector: np.ndarray,
        answer: CachedAnswer,
        ttl_s: float | None,
    ) -> Entry:
        """Index an entry and write it to the backend (the Cache stage writes a miss's two entries at once:
        :meth:`index_now`, then :meth:`written`)."""
        entry = self.index_now(
            partition, tenant=tenant, route=route, query=query, vector=vector, answer=answer, ttl_s=ttl_s
        )
        try:
            await self.backend.put(entry)
        finally:
            self.written(entry)
        return entry

    def index_now(
        self,
        partition: str,
        *,
        tenant: str,
        route: str,
        query: str,
        vector: np.ndarray,
        answer: CachedAnswer,
        ttl_s: float | None,
    ) -> Entry:
        """Index an entry now (the next lookup finds it, read from here until :meth:`written`); the caller
        writes it to the backend."""
        now = self._clock()
        entry = Entry(
            key=semantic_key(partition, query),
            kind="semantic",
            partition=partition,
            tenant=tenant,
            route=route,
            answer=answer,
            created_at=now,
            expires_at=now + ttl_s if ttl_s is not None else None,
            query=query,
            vector=np.asarray(vector, dtype=np.float32),
        )
        self._index(entry)  # found by the next lookup already, while the write is in progress
        self._pending[entry.key] = entry
        return entry

    def written(self, entry: Entry) -> None:
        """The write of an entry from :meth:`index_now` has ended (stored, or failed): lookups read it
        from the backend from now on."""
        if self._pending.get(entry.key) is entry:
            del self._pending[entry.key]

    async def _get(self, key: str) -> Entry | None:
        pending = self._pending.get(key)
        return pending if pending is not None else await self.backend.get(key)

    async def clear(self, *, tenant: str | None = None) -> None:
        """Forget the index entries (of one tenant); the caller clears the backend."""
        for label, ref in list(self._refs.items()):
            if tenant is None or ref.tenant == tenant:
                self._forget(label)

    # ------------------------------------------------------------------ index upkeep

    def _index(self, entry: Entry) -> None:
        if entry.vector is None:
            return
        label = self._labels.get(entry.key)
        if label is not None:
            self._forget(label)
        label = next(self._next)
        index = self._partitions.get(entry.partition)
        if index is None:
            index = self._partitions[entry.partition] = VectorIndex(int(entry.vector.shape[0]), move_later=True)
        index.add(label, entry.vector)
        self._refs[label] = _Ref(entry.key, entry.partition, entry.tenant, entry.query, entry.expires_at)
        self._labels[entry.key] = label
        if index.due and entry.partition not in self._moves:
            self._move(entry.partition, index)

    def _move(self, partition: str, index: VectorIndex) -> None:
        """Build the HNSW index of a partition that outgrew brute force in a worker thread, then switch to it.

        Lookups stay exact (brute force) until then; entries added or removed meanwhile are replayed."""
        labels, matrix = index.snapshot()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no event loop to wait on: build it here
            index.adopt(build_hnsw(index.dim, labels, matrix), labels)
            return

        async def move() -> None:
            try:
                built = await asyncio.to_thread(build_hnsw, index.dim, labels, matrix)
                if self._partitions.get(partition) is index:
                    index.adopt(built, labels)
            finally:
                self._moves.pop(partition, None)

        self._moves[partition] = loop.create_task(move())

    def _index_many(self, entries: list[Entry]) -> None:
        """Index many entries at once, one batch per partition (the load at start)."""
        batches: dict[str, tuple[list[int], list[np.ndarray]]] = {}
        for entry in entries:
            if entry.vector is None:
                continue
            old = self._labels.get(entry.key)
            if old is not None:
                self._forget(old)
            label = next(self._next)
            self._refs[label] = _Ref(entry.key, entry.partition, entry.tenant, entry.query, entry.expires_at)
            self._labels[entry.key] = label
            labels, vectors = batches.setdefault(entry.partition, ([], []))
            labels.append(label)
            vectors.append(entry.vector)
        for partition, (labels, vectors) in batches.items():
            index = self._partitions.get(partition)
            if index is None:
                index = self._partitions[partition] = VectorIndex(int(vectors[0].shape[0]), move_later=True)
            index.add_many(labels, np.stack(vectors))

    def _forget(self, label: int) -> None:
        ref = self._refs.pop(label, None)
        if ref is None:
            return
        self._labels.pop(ref.key, None)
        index = self._partitions.get(ref.partition)
        if index is not None:
            index.remove(label)
            if len(index) == 0:
                del self._partitions[ref.partition]

    def _holds(self, key: str, expires_at: float | None) -> bool:
        """Whether the index has the entry ``key`` with this expiry (the backend need not read it whole).

        Called from the backend's worker thread: single dictionary reads, each atomic; a stale
        answer only means an entry is read again and skipped below."""
        label = self._labels.get(key)
        ref = self._refs.get(label) if label is not None else None
        return ref is not None and ref.expires_at == expires_at

    async def _sync(self) -> None:
        """Load the index on first use; then, if due, read what other processes added since.

        The lookup that finds a sync due waits for it; lookups arriving while it runs search the
        index as it is (as between two syncs) instead of queueing behind it: its read waits for a
        worker thread, behind the cache's writes, and at c = 64 every miss in flight waited ~1 s."""
        now = self._clock()
        if self._synced_at is not None and (
            self._sync_interval_s is None or now - self._synced_at < self._sync_interval_s
        ):
            return
        if self._synced_at is not None and self._sync_lock.locked():
            return
        async with self._sync_lock:
            if self._synced_at is not None and (
                self._sync_interval_s is None or self._clock() - self._synced_at < self._sync_interval_s
            ):
                return
            since = 0.0 if self._synced_at is None else self._synced_at - SYNC_SLACK_S
            started = self._clock()
            fresh = []
            for entry in await self.backend.semantic_since(since, known=self._holds):
                label = self._labels.get(entry.key)
                if label is None or self._refs[label].expires_at != entry.expires_at:
                    fresh.append(entry)
            self._index_many(fresh)
            self._synced_at = started
