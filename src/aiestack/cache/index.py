"""An in-process vector index for one cache partition: exact while small, HNSW (usearch) when large.

Most partitions are small (one route, one tenant, one conversation prefix): for them a float32
matrix product is exact and takes microseconds. Past ``hnsw_from`` vectors the partition moves to
a usearch HNSW index that stores the vectors as int8: at 100k × 384 its search takes ~0.5 ms on one
core where float32 took ~1.4 ms (and numpy brute force ~14 ms), and it holds a quarter of the memory.
Vectors are L2-normalised on the way in, so the score is the cosine similarity in both modes; in HNSW
mode it is approximate, within :attr:`VectorIndex.error` of the exact cosine (int8 rounding: at most
0.017 measured on 100k random unit vectors), and callers that compare it with a threshold re-score
the candidates they keep with the stored float vectors (see ``SemanticCache.lookup``). Building the
HNSW index of 2,048 vectors takes ~0.2 s: the semantic cache builds it in a worker thread
(``move_later``), searching exactly until it is adopted.
"""

from __future__ import annotations

import math

import numpy as np
from usearch.index import Index

#: Vectors from which a partition switches from brute force to HNSW.
HNSW_FROM = 2048
#: The most an HNSW (int8) similarity may differ from the exact cosine, with a margin.
HNSW_ERROR = 0.03


def normalised(vector: np.ndarray | list[float]) -> np.ndarray:
    """``vector`` as float32 of unit length, in two NumPy calls for a 1-D float32 array.

    The norm is ``np.linalg.norm``'s own arithmetic (``sqrt(v·v)``, float32 ``v·v``) with the square
    root taken in double precision, which rounds to the same float32 (a double has more than twice a
    float's bits); the same vectors, bit for bit. On the request path each NumPy call on a small array
    costs a few microseconds, and a lookup and its write normalise the query four times.
    """
    if type(vector) is np.ndarray and vector.dtype == np.float32 and vector.ndim == 1:
        v = vector
    else:
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = math.sqrt(float(v.dot(v)))
    return v / norm if norm > 0 else v


class VectorIndex:
    """Labels (ints) to unit vectors; :meth:`search` returns ``(label, cosine)`` best first."""

    def __init__(self, dim: int, *, hnsw_from: int = HNSW_FROM, move_later: bool = False) -> None:
        self.dim = dim
        self._hnsw_from = hnsw_from
        self._matrix = np.zeros((16, dim), dtype=np.float32)
        self._labels: list[int] = []
        self._rows: dict[int, int] = {}
        self._hnsw: Index | None = None
        self._count = 0
        # With ``move_later``, growing past ``hnsw_from`` does not move to HNSW inside add(): the owner
        # builds the HNSW index off its thread (:meth:`snapshot`, :func:`build_hnsw`, :meth:`adopt`);
        # building it from 2,048 vectors took ~0.2 s, a stall of every request on the event loop.
        self._move_later = move_later
        self._moved_since: set[int] | None = None  # labels added since the snapshot of a move in progress

    @property
    def due(self) -> bool:
        """Whether the index has outgrown brute force and waits for :meth:`adopt` (``move_later`` only)."""
        return self._hnsw is None and self._move_later and self._count >= self._hnsw_from

    def snapshot(self) -> tuple[list[int], np.ndarray]:
        """The labels and (copied) vectors to build the HNSW index from; later adds are replayed by :meth:`adopt`."""
        self._moved_since = set()
        n = len(self._labels)
        return list(self._labels), self._matrix[:n].copy()

    def adopt(self, built: Index, labels: list[int]) -> None:
        """Switch to ``built`` (made by :func:`build_hnsw` from :meth:`snapshot`'s ``labels``), with the
        adds and removals made since the snapshot applied to it."""
        if self._hnsw is not None:  # a load moved it meanwhile (add_many)
            return
        changed, self._moved_since = self._moved_since or set(), None
        for label in [*(set(labels) - set(self._rows)), *changed]:
            if built.contains(label):
                built.remove(label)
        again = [label for label in changed if label in self._rows]
        if again:
            built.add(np.asarray(again, dtype=np.uint64), self._matrix[[self._rows[label] for label in again]])
        self._hnsw = built
        self._count = len(self._rows)
        self._matrix = np.zeros((0, self.dim), dtype=np.float32)
        self._labels = []
        self._rows = {}

    def __len__(self) -> int:
        return self._count

    @property
    def error(self) -> float:
        """How far a similarity from :meth:`search` may be from the exact cosine (0.0: exact)."""
        return HNSW_ERROR if self._hnsw is not None else 0.0

    def __contains__(self, label: int) -> bool:
        if self._hnsw is not None:
            return bool(self._hnsw.contains(label))
        return label in self._rows

    def add(self, label: int, vector: np.ndarray | list[float]) -> None:
        v = normalised(vector)
        if v.shape[0] != self.dim:
            raise ValueError(
                f"a vector of dimension {v.shape[0]} cannot join an index of dimension {self.dim}"
            )
        if label in self:
            self.remove(label)
        if self._hnsw is not None:
            self._hnsw.add(label, v)
            self._count += 1
            return
        n = len(self._labels)
        if n == self._matrix.shape[0]:
            grown = np.zeros((n * 2, self.dim), dtype=np.float32)
            grown[:n] = self._matrix
            self._matrix = grown
        self._matrix[n] = v
        self._labels.append(label)
        self._rows[label] = n
        self._count += 1
        if self._moved_since is not None:
            self._moved_since.add(label)
        if self._count >= self._hnsw_from and not self._move_later:
            self._to_hnsw()

    def add_many(self, labels: list[int], vectors: np.ndarray) -> None:
        """Add new labels in one batch (loading an index at start): HNSW inserts them in parallel."""
        if not labels:
            return
        raw = np.asarray(vectors, dtype=np.float32).reshape(len(labels), -1)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        matrix = (raw / np.where(norms == 0, 1, norms)).astype(np.float32)
        if self._hnsw is None and self._count + len(labels) >= self._hnsw_from:
            self._to_hnsw()
        if self._hnsw is not None:
            self._hnsw.add(np.asarray(labels, dtype=np.uint64), matrix)
            self._count += len(labels)
            return
        for label, vector in zip(labels, matrix, strict=True):
            self.add(label, vector)

    def remove(self, label: int) -> None:
        if self._hnsw is not None:
            if self._hnsw.contains(label):
                self._hnsw.remove(label)
                self._count -= 1
            return
        row = self._rows.pop(label, None)
        if row is None:
            return
        last = len(self._labels) - 1
        if row != last:  # move the last row into the hole
            moved = self._labels[last]
            self._matrix[row] = self._matrix[last]
            self._labels[row] = moved
            self._rows[moved] = row
        self._labels.pop()
        self._count -= 1

    def search(self, vector: np.ndarray | list[float], k: int = 4) -> list[tuple[int, float]]:
        if self._count == 0:
            return []
        q = normalised(vector)
        if self._hnsw is not None:
            matches = self._hnsw.search(q, min(k, self._count))
            return [
                (int(key), 1.0 - float(d)) for key, d in zip(matches.keys, matches.distances, strict=True)
            ]
        n = len(self._labels)
        scores = self._matrix[:n] @ q
        negated = -scores
        if n <= k:
            order = np.argsort(negated)
        else:
            top = np.argpartition(negated, k)[:k]
            order = top[np.argsort(negated[top])]
        labels = self._labels
        return list(zip([labels[i] for i in order.tolist()], scores[order].tolist(), strict=True))

    def _to_hnsw(self) -> None:
        n = len(self._labels)
        self._hnsw = build_hnsw(self.dim, self._labels, self._matrix[:n])
        self._moved_since = None
        self._matrix = np.zeros((0, self.dim), dtype=np.float32)
        self._labels = []
        self._rows = {}


def build_hnsw(dim: int, labels: list[int], matrix: np.ndarray) -> Index:
    """An HNSW (int8) index of ``labels`` → rows of ``matrix`` (unit vectors); safe in a worker thread."""
    index = Index(ndim=dim, metric="cos", dtype="i8", connectivity=16, expansion_add=64, expansion_search=64)
    if labels:
        index.add(np.asarray(labels, dtype=np.uint64), matrix)
    return index
