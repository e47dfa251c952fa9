"""BM25 top ``k`` over posting lists held as numpy arrays, and the per-process cache of those lists.

The PostgreSQL store's term search (:mod:`aiestack.stores.documents_postgres_bm25`) reads a query's
posting lists from ``bm25_blocks`` in binary (``array_send``) and scores them here: the server only
looks rows up by primary key, and no posting becomes a Python object.

**Scoring.** A term's list is its chunk keys (sorted) and, per chunk, BM25's saturation
``tf / (tf + k1 * (1 - b + b * dl / avgdl))``; a chunk's score is the sum over the query's terms
of ``weight * saturation`` (``weight = idf * (k1 + 1) * repeats``), in float64 as
:func:`aiestack.stores.analysis.term_score` computes it. :func:`top_k` runs MaxScore: the terms
with the highest bounds (the rare ones) are *essential* and scored alone; the ``k``-th best partial
score ``θ`` bounds the final ``k``-th score from below, so when the other terms' bounds add up to
less than ``θ`` only the chunks whose partial score plus that sum reaches ``θ`` can still make the
top ``k``; they are completed by binary search in the other terms' lists. Otherwise one more term
becomes essential, down to scoring every posting.

**The cache.** Lists depend on the collection's statistics (``avgdl``) and change with every write,
so each is kept with the collection's *generation* (``bm25_stats.generation``: the 64-bit id of the
transaction that last changed the collection's postings, set in that transaction). A query sends
the generation it holds; the server returns the lists it lacks, or all of them when the generation
moved, in the same statement (one snapshot), so a list from before a write is never scored with
statistics from after it, in this process or any other. Memory: 16 bytes a posting (an int64 key
and a float64 saturation) plus ~200 bytes a term, least recently used terms evicted past
``limit_bytes`` (:data:`CACHE_BYTES` by default: about 16M postings, a 250,000-abstract corpus
whole; a 1M-chunk corpus of ~70 distinct terms a chunk keeps its most used terms). A list larger
than the whole limit is scored and not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: The cache's default bound, in bytes of arrays (see the module docstring).
CACHE_BYTES = 256 * 2**20
#: Fixed cost counted per cached term (its entry, key and array headers), bytes.
_TERM_OVERHEAD = 200
#: ``array_send`` of a one-dimensional array: ndim, flags, element type, then its length and lower bound.
_ARRAY_HEADER = 20
_INT8_ITEMS = np.dtype([("length", ">i4"), ("value", ">i8")])
_INT4_ITEMS = np.dtype([("length", ">i4"), ("value", ">i4")])


@dataclass(frozen=True, slots=True)
class Generation:
    """A collection's postings generation and the statistics that go with it."""

    number: int  # bm25_stats.generation
    chunks: int
    tokens: int


@dataclass(frozen=True, slots=True)
class Postings:
    """One term's posting list in one generation of a collection."""

    keys: np.ndarray  # int64, sorted
    saturation: np.ndarray  # float64, tf / (tf + k1 * (1 - b + b * dl / avgdl)) per key
    most: float  # the largest saturation (the term's bound is its weight times this)

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + self.saturation.nbytes) + _TERM_OVERHEAD


def decode_bigints(sent: bytes) -> np.ndarray:
    """A ``bigint[]`` as ``array_send`` writes it (one dimension, no NULLs) → int64 array."""
    return _decode(sent, _INT8_ITEMS).astype(np.int64)


def decode_integers(sent: bytes) -> np.ndarray:
    """An ``integer[]`` as ``array_send`` writes it (one dimension, no NULLs) → int32 array."""
    return _decode(sent, _INT4_ITEMS).astype(np.int32)


def _decode(sent: bytes, items: np.dtype) -> np.ndarray:
    if len(sent) <= _ARRAY_HEADER:  # an empty array has no dimension
        return np.empty(0, dtype=items["value"])
    return np.frombuffer(sent, dtype=items, offset=_ARRAY_HEADER)["value"]


def postings(
    blocks: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], a: float, c: float
) -> Postings:
    """A term's list from its blocks' (keys, tfs, norms), with ``a = k1 * (1 - b)`` and
    ``c = k1 * b / avgdl``."""
    if not blocks:
        return Postings(np.empty(0, dtype=np.int64), np.empty(0), 0.0)
    keys = np.concatenate([b[0] for b in blocks])
    tfs = np.concatenate([b[1] for b in blocks]).astype(np.float64)
    norms = np.concatenate([b[2] for b in blocks]).astype(np.float64)
    if len(keys) > 1 and not bool(np.all(keys[1:] > keys[:-1])):  # merged blocks may interleave
        order = np.argsort(keys, kind="stable")
        keys, tfs, norms = keys[order], tfs[order], norms[order]
    saturation = tfs / (tfs + a + c * norms)
    return Postings(keys, saturation, float(saturation.max()) if len(saturation) else 0.0)


def top_k(lists: Sequence[Postings], weights: Sequence[float], k: int) -> list[tuple[int, float]]:
    """The ``k`` best (chunk key, score), best first, ties by key (MaxScore; see the module docstring)."""
    bounds = [w * p.most * (1 + 1e-9) for p, w in zip(lists, weights, strict=True)]
    order = sorted(range(len(lists)), key=lambda i: -bounds[i])
    lists, weights, bounds = [lists[i] for i in order], [weights[i] for i in order], [bounds[i] for i in order]
    for split in range(1, len(lists)):
        keys, partial = accumulate(lists[:split], weights[:split])
        if len(keys) < k:
            continue
        rest = sum(bounds[split:])
        theta = float(np.partition(partial, len(partial) - k)[len(partial) - k])
        if not rest < theta:
            continue
        kept = partial + rest >= theta
        keys, scores = keys[kept], partial[kept]
        for p, w in zip(lists[split:], weights[split:], strict=True):
            at = np.searchsorted(p.keys, keys)
            found = at < len(p.keys)
            found[found] = p.keys[at[found]] == keys[found]
            scores[found] += w * p.saturation[at[found]]
        return best(keys, scores, k)
    keys, scores = accumulate(lists, weights)
    return best(keys, scores, k)


def accumulate(lists: Sequence[Postings], weights: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct keys of ``lists`` (sorted) and each one's summed ``weight * saturation``."""
    if not lists:
        return np.empty(0, dtype=np.int64), np.empty(0)
    if len(lists) == 1:
        return lists[0].keys, weights[0] * lists[0].saturation
    keys = np.concatenate([p.keys for p in lists])
    contributions = np.concatenate([w * p.saturation for p, w in zip(lists, weights, strict=True)])
    low, high = int(keys.min()), int(keys.max())
    if high - low < 4 * len(keys) + 65_536:  # dense enough to add by position: no sort
        sums = np.bincount(keys - low, weights=contributions, minlength=high - low + 1)
        present = np.bincount(keys - low, minlength=high - low + 1) > 0
        return np.flatnonzero(present).astype(np.int64) + low, sums[present]
    distinct, inverse = np.unique(keys, return_inverse=True)
    return distinct, np.bincount(inverse, weights=contributions)


def best(keys: np.ndarray, scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The ``k`` best (key, score), best first, ties by key."""
    return [(int(keys[i]), float(scores[i])) for i in ranked(keys, scores)[:k]]


def ranked(keys: np.ndarray, scores: np.ndarray, depth: int | None = None) -> np.ndarray:
    """Positions of the best ``depth`` (all when None) by score, best first, ties by key."""
    if depth is not None and depth < len(scores):
        cut = float(np.partition(scores, len(scores) - depth)[len(scores) - depth])
        within = np.flatnonzero(scores >= cut)
        return within[np.lexsort((keys[within], -scores[within]))][:depth]
    return np.lexsort((keys, -scores))


class PostingsCache:
    """Posting lists by (collection, term), each valid for one generation of its collection;
    least recently used terms go past ``limit_bytes``. Safe to share between threads."""

    def __init__(self, limit_bytes: int = CACHE_BYTES) -> None:
        if limit_bytes < 0:
            raise ValueError(f"The postings cache limit must be 0 or more bytes, got {limit_bytes}.")
        self.limit_bytes = limit_bytes
        self._lock = threading.Lock()
        self._generations: dict[str, Generation] = {}
        self._lists: OrderedDict[tuple[str, str], Postings] = OrderedDict()
        self.nbytes = 0

    def held(self, collection: str, terms: Sequence[str]) -> tuple[Generation | None, dict[str, Postings]]:
        """The generation held for ``collection`` (None: nothing) and the lists held of ``terms``."""
        with self._lock:
            generation = self._generations.get(collection)
            found = {}
            for term in terms:
                entry = self._lists.get((collection, term))
                if entry is not None:
                    self._lists.move_to_end((collection, term))
                    found[term] = entry
            return generation, found

    def keep(self, collection: str, generation: Generation, lists: dict[str, Postings]) -> None:
        """Hold ``lists`` for ``generation`` (dropping the collection's lists of any other one)."""
        with self._lock:
            if self._generations.get(collection) != generation:
                self._forget(collection)
                self._generations[collection] = generation
            for term, entry in lists.items():
                if entry.nbytes > self.limit_bytes:
                    continue
                previous = self._lists.pop((collection, term), None)
                self.nbytes += entry.nbytes - (previous.nbytes if previous else 0)
                self._lists[(collection, term)] = entry
            while self.nbytes > self.limit_bytes:
                _, gone = self._lists.popitem(last=False)
                self.nbytes -= gone.nbytes

    def forget(self, collection: str) -> None:
        with self._lock:
            self._forget(collection)

    def _forget(self, collection: str) -> None:
        self._generations.pop(collection, None)
        for key in [key for key in self._lists if key[0] == collection]:
            self.nbytes -= self._lists.pop(key).nbytes
