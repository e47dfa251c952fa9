"""The PostgreSQL store's BM25 scoring in numpy (MaxScore) and its bounded postings cache, without a server."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from aiestack.stores import documents_postgres_postings as pp


def _random_lists(rng: np.random.Generator, terms: int) -> tuple[list[pp.Postings], list[float]]:
    lists, weights = [], []
    for t in range(terms):
        size = int(rng.integers(1, 3_000 if t % 2 else 40))  # rare and frequent terms
        keys = np.sort(rng.choice(np.arange(10, 20_000), size=size, replace=False)).astype(np.int64)
        tfs = rng.integers(1, 6, size)
        norms = rng.choice([3, 8, 20, 40, 48, 64, 120], size)
        blocks = [(keys[i::3], tfs[i::3], norms[i::3]) for i in range(3)]  # interleaved blocks, as merges leave them
        lists.append(pp.postings(blocks, 0.3, 0.02))
        weights.append(float(rng.uniform(0.5, 9.0)))
    return lists, weights


def _exhaustive(lists: list[pp.Postings], weights: list[float], k: int) -> list[tuple[int, float]]:
    scores: dict[int, float] = {}
    for p, w in zip(lists, weights, strict=True):
        for key, s in zip(p.keys.tolist(), p.saturation.tolist(), strict=True):
            scores[key] = scores.get(key, 0.0) + w * s
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]


def test_maxscore_gives_the_exhaustive_answer_and_prunes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    accumulate = pp.accumulate

    def spy(lists: Any, weights: Any) -> Any:
        calls.append(len(lists))
        return accumulate(lists, weights)

    monkeypatch.setattr(pp, "accumulate", spy)
    rng = np.random.default_rng(3)
    pruned = 0
    for trial in range(60):
        lists, weights = _random_lists(rng, int(rng.integers(1, 7)))
        k = int(rng.choice([1, 5, 10, 50]))
        calls.clear()
        got = pp.top_k(lists, weights, k)
        want = _exhaustive(lists, weights, k)
        assert [key for key, _ in got] == [key for key, _ in want], trial
        assert np.allclose([s for _, s in got], [s for _, s in want], rtol=1e-12)
        pruned += len(lists) > 1 and max(calls) < len(lists)
    assert pruned >= 10  # most multi-term queries never scored every posting


def test_ties_go_by_key_and_sparse_keys_add_up() -> None:
    far = np.array([5, 10**12, 3 * 10**12], dtype=np.int64)  # too sparse to add by position
    one = pp.Postings(far, np.array([0.5, 0.5, 0.25]), 0.5)
    two = pp.Postings(far[1:], np.array([0.25, 0.5]), 0.5)
    assert pp.top_k([one, two], [2.0, 2.0], 3) == [(10**12, 1.5), (3 * 10**12, 1.5), (5, 1.0)]
    keys, scores = pp.accumulate([one, two], [1.0, 1.0])
    assert keys.tolist() == far.tolist() and scores.tolist() == [0.5, 0.75, 0.75]


def test_array_send_is_decoded() -> None:
    def sent(values: list[int], code: str, oid: int) -> bytes:
        head = struct.pack(">iiiii", 1, 0, oid, len(values), 1)
        width = struct.calcsize(">" + code)
        return head + b"".join(struct.pack(">i" + code, width, v) for v in values)

    assert pp.decode_bigints(sent([3, -1, 2**40], "q", 20)).tolist() == [3, -1, 2**40]
    assert pp.decode_integers(sent([7, 0, 65_536], "i", 23)).tolist() == [7, 0, 65_536]
    assert pp.decode_integers(struct.pack(">iii", 0, 0, 23)).tolist() == []  # an empty array


def test_the_cache_keeps_one_generation_and_stays_within_its_bound() -> None:
    def entry(size: int) -> pp.Postings:
        return pp.Postings(np.arange(size, dtype=np.int64), np.ones(size), 1.0)

    cache = pp.PostingsCache(limit_bytes=entry(100).nbytes * 3)
    cache.keep("c", 1, {"a": entry(100), "b": entry(100)})
    assert cache.held("c", ["a", "b", "x"])[0] == 1 and set(cache.held("c", ["a", "b", "x"])[1]) == {"a", "b"}
    cache.held("c", ["a"])  # a is now the most recently used
    cache.keep("c", 1, {"d": entry(100), "e": entry(100)})
    _, held = cache.held("c", ["a", "b", "d", "e"])
    assert set(held) == {"a", "d", "e"} and cache.nbytes <= cache.limit_bytes
    cache.keep("c", 2, {"f": entry(10)})  # a new generation drops the old lists
    assert cache.held("c", ["a", "f"]) == (2, {"f": cache.held("c", ["f"])[1]["f"]})
    cache.keep("c", 2, {"huge": entry(10_000)})  # larger than the whole bound: not kept
    assert "huge" not in cache.held("c", ["huge"])[1]
    cache.forget("c")
    assert cache.held("c", ["f"]) == (None, {}) and cache.nbytes == 0
    with pytest.raises(ValueError, match="0 or more bytes"):
        pp.PostingsCache(limit_bytes=-1)
