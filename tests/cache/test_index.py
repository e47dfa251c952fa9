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
    assert score == pytest.approx(expected, abs=max(index.error, 1e-5))
    assert index.error == (0.0 if hnsw_from > 200 else pytest.approx(0.001))  # HNSW: scored on a float16 copy


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


async def test_semantic_hits_from_the_hnsw_index_carry_the_exact_similarity() -> None:
    """HNSW similarities are approximate (int8); the cache re-scores what it serves with the stored vector."""
    import time

    from aiestack.cache.index import HNSW_FROM, normalised
    from aiestack.cache.semantic import SemanticCache
    from aiestack.stores.cache import CachedAnswer, Entry
    from aiestack.stores.cache_memory import MemoryCacheBackend

    n, dim = HNSW_FROM + 50, 16
    data = vectors(n, dim)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    backend = MemoryCacheBackend(max_entries=n + 1)
    cache = SemanticCache(backend, lambda: None, threshold=0.9)  # type: ignore[arg-type,return-value]
    now = time.time()
    for i, v in enumerate(data):
        await backend.put(Entry(f"k{i}", "semantic", "p", "t", "r", CachedAnswer(text=str(i), model="m", provider="x"), now, None, f"q{i}", v))
    rng = np.random.default_rng(3)
    served = 0
    for i in rng.integers(0, n, size=40):
        query = normalised(data[i] + 0.05 * rng.standard_normal(dim).astype(np.float32))
        found = await cache.lookup("p", tenant="t", query=f"q{i}", vector=query)
        assert cache._partitions["p"].error > 0  # the partition is past the HNSW switch point
        if found.hit is not None:
            served += 1
            exact = float(normalised(found.hit.entry.vector) @ query)
            assert found.hit.similarity == pytest.approx(exact, abs=1e-5) and exact >= 0.9
    assert served >= 30
    # Just under the threshold (exact): never served, whatever the int8 similarity says.
    target = data[7]
    other = normalised(rng.standard_normal(dim).astype(np.float32))
    other = normalised(other - (other @ target) * target)
    below = normalised(0.895 * target + np.sqrt(1 - 0.895**2) * other)
    found = await cache.lookup("p", tenant="t", query="q7", vector=below)
    assert found.hit is None or found.hit.entry.key != "k7"


def test_moving_later_builds_hnsw_from_a_snapshot_and_replays_what_changed_meanwhile() -> None:
    from aiestack.cache.index import build_hnsw

    data = vectors(120)
    index = VectorIndex(32, hnsw_from=50, move_later=True)
    for label, v in enumerate(data[:60]):
        index.add(label, v)
    assert index.due and index.error == 0.0  # outgrown, still brute force: add() did not move it
    labels, matrix = index.snapshot()
    built = build_hnsw(32, labels, matrix)  # what a worker thread does
    for label, v in enumerate(data[60:], start=60):  # meanwhile: new entries, a removal, a replaced vector
        index.add(label, v)
    index.remove(7)
    index.add(3, data[100])
    index.adopt(built, labels)
    assert not index.due and index.error > 0 and len(index) == 119
    assert 7 not in index and all(label != 7 for label, _ in index.search(data[7], k=5))
    for label in (0, 59, 60, 119):
        assert index.search(data[label], k=1)[0][0] == label  # old and new entries found
    assert 3 in {label for label, _ in index.search(data[100], k=2)}  # label 3 now holds its new vector


async def test_the_cache_builds_a_partitions_hnsw_index_off_the_event_loop() -> None:
    import time

    from aiestack.cache.index import HNSW_FROM
    from aiestack.cache.semantic import SemanticCache
    from aiestack.stores.cache import CachedAnswer
    from aiestack.stores.cache_memory import MemoryCacheBackend

    data = vectors(HNSW_FROM + 20, 16)
    cache = SemanticCache(MemoryCacheBackend(), lambda: None, threshold=0.9)  # type: ignore[arg-type,return-value]
    answer = CachedAnswer(text="a", model="m", provider="x")
    for i, v in enumerate(data):
        cache.index_now("p", tenant="t", route="r", query=f"q{i}", vector=v, answer=answer, ttl_s=None)
    index = cache._partitions["p"]
    assert index.error == 0.0 and "p" in cache._moves  # past the switch point: still exact, a build under way
    started = time.perf_counter()
    await cache._moves["p"]
    assert time.perf_counter() - started < 30 and index.error > 0 and not cache._moves
    assert len(index) == len(data)
    found = await cache.lookup("p", tenant="t", query="q5", vector=data[5])
    assert found.hit is not None and found.hit.entry.query == "q5"


def test_hnsw_scores_come_from_the_float16_copy_within_its_error_and_follow_every_change() -> None:
    """Past the switch point every score is within ``error`` (float16 rounding) of the exact
    cosine, best first (int8 scores were off by up to 0.017); removals, replaced vectors and a
    batch load keep the copy in step with the graph."""
    data = vectors(400)
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    index = VectorIndex(32, hnsw_from=50)
    for label, v in enumerate(data[:300]):
        index.add(label, v)
    index.add_many(list(range(300, 400)), data[300:])
    for label in range(0, 40, 3):
        index.remove(label)
    index.add(1, data[399])  # label 1 now holds another vector
    assert len(index) == 400 - 14 and index.error == pytest.approx(0.001)
    expected = {label: unit[label] for label in range(400) if label not in range(0, 40, 3)} | {1: unit[399]}
    rng = np.random.default_rng(9)
    for query in rng.standard_normal((50, 32)).astype(np.float32):
        q = query / np.linalg.norm(query)
        found = index.search(q, k=8)
        assert len(found) == 8 and [s for _, s in found] == sorted((s for _, s in found), reverse=True)
        for label, score in found:
            assert label in expected and abs(score - float(expected[label] @ q)) <= 0.0006
    assert {label for label, _ in index.search(data[399], k=2)} == {1, 399}


async def test_the_hnsw_lookup_reads_stored_vectors_only_near_the_threshold() -> None:
    """A candidate's float16 score decides unless it is within ``error`` of the threshold: a clear
    hit reads its entry once (to serve it), a clear miss reads nothing (it read ~2 rows a lookup)."""
    import time

    from aiestack.cache.index import HNSW_FROM, normalised
    from aiestack.cache.semantic import SemanticCache
    from aiestack.stores.cache import CachedAnswer, Entry
    from aiestack.stores.cache_memory import MemoryCacheBackend

    n, dim = HNSW_FROM + 50, 16
    data = vectors(n, dim)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    backend = MemoryCacheBackend(max_entries=n + 1)
    reads: list[str] = []
    get = backend.get

    async def counted(key: str) -> Entry | None:
        reads.append(key)
        return await get(key)

    backend.get = counted  # type: ignore[method-assign]
    cache = SemanticCache(backend, lambda: None, threshold=0.9)  # type: ignore[arg-type,return-value]
    now = time.time()
    for i, v in enumerate(data):
        await backend.put(Entry(f"k{i}", "semantic", "p", "t", "r", CachedAnswer(text=str(i), model="m", provider="x"), now, None, f"q{i}", v))
    await cache.lookup("p", tenant="t", query="q0", vector=data[0])
    reads.clear()
    found = await cache.lookup("p", tenant="t", query="q5", vector=data[5])
    assert found.hit is not None and found.hit.entry.key == "k5" and reads == ["k5"]
    assert found.hit.similarity == pytest.approx(1.0, abs=1e-5)
    reads.clear()
    far = normalised(-data[5])
    assert (await cache.lookup("p", tenant="t", query="nothing", vector=far)).hit is None and reads == []
    target, other = data[7], normalised(np.random.default_rng(4).standard_normal(dim).astype(np.float32))
    other = normalised(other - (other @ target) * target)
    edge = normalised(0.9003 * target + np.sqrt(1 - 0.9003**2) * other)  # within error of the threshold
    found = await cache.lookup("p", tenant="t", query="q7", vector=edge)
    assert "k7" in reads and found.hit is not None and found.hit.entry.key == "k7"


def test_brute_force_ranks_a_large_partition_exactly() -> None:
    """1,000 vectors (the matrix grown several times, by doubling) rank exactly as one NumPy product
    over all of them, with the same scores."""
    data = vectors(1000)
    unit = data / np.linalg.norm(data, axis=1, keepdims=True)
    index = VectorIndex(32, hnsw_from=10_000)
    for label, v in enumerate(data):
        index.add(label, v)
    for query in vectors(20, seed=11):
        q = query / np.linalg.norm(query)
        want = np.argsort(-(unit @ q))[:5]
        found = index.search(query, k=5)
        assert [label for label, _ in found] == want.tolist()
        assert [s for _, s in found] == pytest.approx((unit @ q)[want].tolist(), abs=1e-6)


def test_normalised_is_numpys_own_arithmetic_bit_for_bit() -> None:
    from aiestack.cache.index import normalised

    rng = np.random.default_rng(12)
    for scale in (1e-3, 1.0, 1e3):
        for v in (rng.standard_normal((200, 384)) * scale).astype(np.float32):
            assert np.array_equal(normalised(v), v / np.linalg.norm(v))
            assert np.array_equal(normalised(v.tolist()), v / np.linalg.norm(v))
