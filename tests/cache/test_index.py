"""The vector index: exact brute force while small, HNSW past the switch point, same answers."""

from __future__ import annotations

import numpy as np
import pytest

from aiestack.cache.index import VectorIndex

pytestmark = pytest.mark.unit


def vectors(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


@pytest.mark.parametrize("hnsw_from", [10_000, 50])
def test_search_finds_the_nearest_vector_and_scores_cosine(hnsw_from: int) -> None:
    data = vectors(200)
    index = VectorIndex(32, hnsw_from=hnsw_from)
    for label, v in enumerate(data):
        index.add(label + 1, v)
    assert len(index) == 200
    query = data[17] + 0.01 * vectors(1, seed=5)[0]
    (best, score), *_ = index.search(query, k=3)
    assert best == 18
    expected = float(data[17] @ query / (np.linalg.norm(data[17]) * np.linalg.norm(query)))
    assert score == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("hnsw_from", [10_000, 50])
def test_removed_labels_are_never_returned(hnsw_from: int) -> None:
    data = vectors(100)
    index = VectorIndex(32, hnsw_from=hnsw_from)
    for label, v in enumerate(data):
        index.add(label, v)
    index.remove(42)
    index.remove(42)  # twice is harmless
    assert len(index) == 99 and 42 not in index
    assert all(label != 42 for label, _ in index.search(data[42], k=5))
    index.add(42, data[42])  # and it can come back
    assert index.search(data[42], k=1)[0][0] == 42


def test_re_adding_a_label_replaces_its_vector() -> None:
    a, b = vectors(2)
    index = VectorIndex(32)
    index.add(1, a)
    index.add(1, b)
    assert len(index) == 1
    assert index.search(b, k=1)[0][1] == pytest.approx(1.0, abs=1e-5)


def test_an_empty_index_and_a_wrong_dimension() -> None:
    index = VectorIndex(8)
    assert index.search(np.ones(8), k=3) == []
    with pytest.raises(ValueError, match="dimension 4"):
        index.add(1, np.ones(4))
