"""What one call on the event loop costs beside a busy worker thread, when it lets go of the GIL.

A call that releases the GIL (BLAS, many NumPy loops over ~500 elements or more, usearch, a socket)
has to take it back afterwards; while a worker thread runs Python (the exchange writer, a guard's
model), that can wait the interpreter's whole switch interval (5 ms). Each call below is timed alone,
then with a thread running pure Python beside it; the anchor is the same call alone, in the same run.
A ratio of 1–4 is no wait or a fair share of the GIL, a ratio of 10 or more is a wait for it. How
often a wait happens depends on the worker: with ``while not event.is_set(): ...`` as the busy loop
instead of a list flag, the same calls showed ratios of 1–4 only. The cache's ``normalised`` (``v @
v``) is shown beside the ``v.dot(v)`` it replaced; its brute-force search still makes several such
calls (the product, the negation, the partial sort), and scoring in blocks of 256 rows, tried,
removed only one of them.

    .venv/bin/python bench/gil_waits.py            # --rows 2000 --entries 4000 --calls 200
"""

from __future__ import annotations

import argparse
import threading
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from aiestack.cache.index import VectorIndex, build_hnsw, normalised


def _per_call_us(call: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=2000, help="vectors in the brute-force partition")
    parser.add_argument("--entries", type=int, default=4000, help="vectors in the HNSW index")
    parser.add_argument("--calls", type=int, default=200, help="calls timed per row and setting")
    args = parser.parse_args()
    threadpool_limits(limits=1, user_api="blas")  # as app_factory does
    rng = np.random.default_rng(0)
    v = rng.standard_normal(384).astype(np.float32)
    exact = VectorIndex(384, hnsw_from=args.rows + 1)
    for label, row in enumerate(rng.standard_normal((args.rows, 384)).astype(np.float32)):
        exact.add(label, row)
    matrix = exact.snapshot()[1]
    vectors = rng.standard_normal((args.entries, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    hnsw = build_hnsw(384, list(range(args.entries)), vectors)
    added = [10 * args.entries]

    def add() -> None:
        added[0] += 1
        hnsw.add(added[0], vectors[added[0] % args.entries])

    rows: list[tuple[str, Callable[[], object]]] = [
        ("numpy v.dot(v) (what normalised() used)", lambda: v.dot(v)),
        ("normalised(v) (v @ v)", lambda: normalised(v)),
        (f"numpy one product, {args.rows} × 384", lambda: matrix @ v),
        (f"VectorIndex.search, brute force, {args.rows} entries", lambda: exact.search(v, 4)),
        (f"usearch search, {args.entries} entries", lambda: hnsw.search(vectors[5], 4)),
        (f"usearch add, {args.entries}+ entries", add),
    ]
    alone = {name: _per_call_us(call, args.calls) for name, call in rows}
    stop = [False]

    def busy() -> None:
        while not stop[0]:
            sum(range(1000))

    worker = threading.Thread(target=busy, daemon=True)
    worker.start()
    time.sleep(0.05)
    try:
        beside = {name: _per_call_us(call, args.calls) for name, call in rows}
    finally:
        stop[0] = True
        worker.join()
    print(f"{'call':<52} {'alone µs':>10} {'beside µs':>10} {'ratio':>7}")
    for name, _ in rows:
        print(f"{name:<52} {alone[name]:>10.1f} {beside[name]:>10.1f} {beside[name] / alone[name]:>7.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
