"""An in-process vector index for one cache partition: exact while small, HNSW (usearch) when large.

Most partitions are small (one route, one tenant, one conversation prefix): for them a float32
matrix product is exact and takes microseconds. Past ``hnsw_from`` vectors the partition moves to
a usearch HNSW index that stores the vectors as int8: at 100k × 384 its search takes ~0.5 ms on one
core where float16 or float32 took ~0.87 ms (and numpy brute force ~12 ms). Beside it the partition
keeps a float16 copy of its vectors, which scores the few candidates HNSW returns: so a similarity
from :meth:`VectorIndex.search` is within :attr:`VectorIndex.error` (float16 rounding: at most
~0.0005) of the exact cosine in both modes, where the int8 scores were off by up to 0.017, and a
caller comparing them with a threshold had to read the stored float vectors of most candidates
(``SemanticCache.lookup`` now reads them only for a candidate within ``error`` of its threshold).
Memory: int8 graph vectors plus the float16 copy are three quarters of float32's.
Vectors are L2-normalised on the way in, so the score is the cosine similarity in both modes. Building
the HNSW index of 2,048 vectors takes ~0.2 s: the semantic cache builds it in a worker thread
(``move_later``), searching exactly until it is adopted.
"""

from __future__ import annotations

import math

import numpy as np
from usearch.index import Index

#: Vectors from which a partition switches from brute force to HNSW.
HNSW_FROM = 2048
#: The most a similarity scored on the float16 copy (HNSW mode) may differ from the exact cosine:
#: a unit vector's float16 rounding moves a cosine by at most 2**-11 ≈ 0.00049; with a margin.
HNSW_ERROR = 0.001


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
    # Not v.dot(v): the same float, but dot lets go of the GIL, and the event loop then waits to get
    # it back behind any busy worker thread (bench/gil_waits.py: 0.8 µs alone, ~130 µs beside one).
    norm = math.sqrt(float(v @ v))
    return v / norm if norm > 0 else v


class VectorIndex:
    """Labels (ints) to unit vectors; :meth:`search` returns ``(label, cosine)`` best first.

    The vectors are rows of one matrix (float32 while exact, float16 beside the HNSW index); a label's
    row is in ``_rows``, and a removal moves the last row into the hole."""

    def __init__(self, dim: int, *, hnsw_from: int = HNSW_FROM, move_later: bool = False) -> None:
        self.dim = dim
        self._hnsw_from = hnsw_from
        self._matrix = np.zeros((16, dim), dtype=np.float32)
        self._labels: list[int] = []
        self._rows: dict[int, int] = {}
        self._hnsw: Index | None = None
        # With ``move_later``, growing past ``hnsw_from`` does not move to HNSW inside add(): the owner
        # builds the HNSW index off its thread (:meth:`snapshot`, :func:`build_hnsw`, :meth:`adopt`);
        # building it from 2,048 vectors took ~0.2 s, a stall of every request on the event loop.
        self._move_later = move_later
        self._moved_since: set[int] | None = None  # labels added since the snapshot of a move in progress

    @property
    def due(self) -> bool:
        """Whether the index has outgrown brute force and waits for :meth:`adopt` (``move_later`` only)."""
        return self._hnsw is None and self._move_later and len(self._labels) >= self._hnsw_from

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
        self._matrix = self._matrix[: len(self._labels)].astype(np.float16)

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def error(self) -> float:
        """How far a similarity from :meth:`search` may be from the exact cosine (0.0: exact)."""
        return HNSW_ERROR if self._hnsw is not None else 0.0

    def __contains__(self, label: int) -> bool:
        return label in self._rows

    def add(self, label: int, vector: np.ndarray | list[float]) -> None:
        v = normalised(vector)
        if v.shape[0] != self.dim:
            raise ValueError(
                f"a vector of dimension {v.shape[0]} cannot join an index of dimension {self.dim}"
            )
        if label in self._rows:
            self.remove(label)
        if self._hnsw is not None:
            self._hnsw.add(label, v)
        self._append([label], v[None, :])
        if self._moved_since is not None:
            self._moved_since.add(label)
        if self._hnsw is None and len(self._labels) >= self._hnsw_from and not self._move_later:
            self._to_hnsw()

    def add_many(self, labels: list[int], vectors: np.ndarray) -> None:
        """Add new labels in one batch (loading an index at start): HNSW inserts them in parallel."""
        if not labels:
            return
        raw = np.asarray(vectors, dtype=np.float32).reshape(len(labels), -1)
        norms = np.linalg.norm(raw, axis=1, keepdims=True)
        matrix = (raw / np.where(norms == 0, 1, norms)).astype(np.float32)
        if self._hnsw is None and len(self._labels) + len(labels) >= self._hnsw_from:
            self._to_hnsw()
        if self._hnsw is not None and not any(label in self._rows for label in labels):
            self._hnsw.add(np.asarray(labels, dtype=np.uint64), matrix)
            self._append(labels, matrix)
            return
        for label, vector in zip(labels, matrix, strict=True):
            self.add(label, vector)

    def _append(self, labels: list[int], rows: np.ndarray) -> None:
        """Store ``rows`` (unit vectors) as the vectors of new ``labels``, growing the matrix by doubling."""
        n, more = len(self._labels), len(labels)
        if n + more > self._matrix.shape[0]:
            grown = np.zeros((max(16, 2 * (n + more)), self.dim), dtype=self._matrix.dtype)
            grown[:n] = self._matrix[:n]
            self._matrix = grown
        self._matrix[n : n + more] = rows
        for offset, label in enumerate(labels):
            self._rows[label] = n + offset
        self._labels.extend(labels)

    def remove(self, label: int) -> None:
        row = self._rows.pop(label, None)
        if row is None:
            return
        if self._hnsw is not None:
            self._hnsw.remove(label)
        last = len(self._labels) - 1
        if row != last:  # move the last row into the hole
            moved = self._labels[last]
            self._matrix[row] = self._matrix[last]
            self._labels[row] = moved
            self._rows[moved] = row
        self._labels.pop()

    def search(self, vector: np.ndarray | list[float], k: int = 4) -> list[tuple[int, float]]:
        n = len(self._labels)
        if n == 0:
            return []
        q = normalised(vector)
        labels = self._labels
        if self._hnsw is not None:  # HNSW's candidates, scored on the float16 copy
            keys = self._hnsw.search(q, min(k, n)).keys.tolist()
            found = [int(key) for key in keys if key in self._rows]
            if not found:
                return []
            scores = self._matrix[[self._rows[key] for key in found]].astype(np.float32) @ q
            order = np.argsort(-scores, kind="stable")
            return list(zip([found[i] for i in order.tolist()], scores[order].tolist(), strict=True))
        scores = self._matrix[:n] @ q
        negated = -scores
        if n <= k:
            order = np.argsort(negated)
        else:
            top = np.argpartition(negated, k)[:k]
            order = top[np.argsort(negated[top])]
        return list(zip([labels[i] for i in order.tolist()], scores[order].tolist(), strict=True))

    def _to_hnsw(self) -> None:
        n = len(self._labels)
        self._hnsw = build_hnsw(self.dim, self._labels, self._matrix[:n])
        self._moved_since = None
        self._matrix = self._matrix[:n].astype(np.float16)


def build_hnsw(dim: int, labels: list[int], matrix: np.ndarray) -> Index:
    """An HNSW (int8) index of ``labels`` → rows of ``matrix`` (unit vectors); safe in a worker thread."""
    index = Index(ndim=dim, metric="cos", dtype="i8", connectivity=16, expansion_add=64, expansion_search=64)
    if labels:
        index.add(np.asarray(labels, dtype=np.uint64), matrix)
    return index
