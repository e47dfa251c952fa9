"""Ingestion throughput vs raw sentence-transformers encoding of the same chunks.

Ingests the first ``--docs`` SciFact records (``corpus.jsonl``, BEIR layout) with ``aiestack``'s
:func:`~aiestack.context.ingest.ingest` (load, chunk with the model's tokenizer, embed in batches taken
across documents, write each document atomically) into a fresh collection, and records the chunk texts
it embedded. The anchor encodes exactly those texts with ``SentenceTransformer.encode`` on the same
model, batch size and thread count, nothing else. Both are warmed up first; then ``--reps`` repetitions
alternate which goes first, and the table shows the median chunks/s of each and the ratio.

Target: ingestion ≥ 90% of the anchor's throughput (the script exits 1 when it is missed).

    .venv/bin/python bench/ingest.py [--docs 1000] [--reps 3] [--store memory]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from aiestack.context.chunking import tokenizer_for
from aiestack.context.ingest import IngestOptions, ingest
from aiestack.models.local_embeddings import SentenceTransformerEmbeddings
from aiestack.stores.documents import DocumentStore
from aiestack.stores.documents_memory import MemoryDocumentStore
from aiestack.stores.open import open_store

TARGET = 0.90
SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact" / "corpus.jsonl"


class Recording:
    """The embedding model, recording every text ingestion asks it to embed."""

    def __init__(self, inner: SentenceTransformerEmbeddings) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.texts: list[str] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.texts.extend(texts)
        return await self.inner.embed(texts)

    async def aclose(self) -> None:
        return None


def _store(kind: str, tmp: Path) -> DocumentStore:
    store: DocumentStore
    if kind == "memory":
        store = MemoryDocumentStore()
    elif kind == "sqlite":
        store = open_store(f"sqlite:///{tmp / 'docs.db'}", "documents")
    else:
        store = open_store(kind, "documents")  # a PostgreSQL URL
    store.migrate()
    return store


def _cpu() -> float:
    """CPU seconds used so far by this process, all threads (torch's included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def ingest_once(
    corpus: Path, model: SentenceTransformerEmbeddings, store_kind: str, batch: int
) -> tuple[float, float, list[str]]:
    """Wall and CPU seconds to ingest ``corpus`` into a fresh store, and the chunk texts it embedded."""
    with tempfile.TemporaryDirectory() as tmp:
        store = _store(store_kind, Path(tmp))
        recording = Recording(model)
        cpu, start = _cpu(), time.perf_counter()
        report = await ingest(
            [str(corpus)],
            "bench",
            store,
            recording,
            options=IngestOptions(batch_chunks=batch),
        )
        seconds, cpu = time.perf_counter() - start, _cpu() - cpu
        store.close()
    assert not report.failed and report.chunks == len(recording.texts), report
    return seconds, cpu, recording.texts


def encode_once(model: SentenceTransformerEmbeddings, texts: list[str]) -> tuple[float, float]:
    st = model._load()
    cpu, start = _cpu(), time.perf_counter()
    st.encode(
        texts,
        batch_size=model.batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=False,
    )
    return time.perf_counter() - start, _cpu() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=SCIFACT)
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-chunks", type=int, default=512)
    parser.add_argument("--store", default="memory", help="memory, or sqlite (the embedded store)")
    args = parser.parse_args(argv)
    lines = args.corpus.read_text(encoding="utf-8").splitlines()[: args.docs]
    model = SentenceTransformerEmbeddings()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
        asyncio.run(model.load())
        _, _, texts = asyncio.run(ingest_once(corpus, model, args.store, args.batch_chunks))  # warm-up
        encode_once(model, texts)
        ours: list[tuple[float, float]] = []
        anchor: list[tuple[float, float]] = []
        for rep in range(args.reps):
            order = ("ours", "anchor") if rep % 2 == 0 else ("anchor", "ours")
            for which in order:
                if which == "ours":
                    seconds, cpu, again = asyncio.run(
                        ingest_once(corpus, model, args.store, args.batch_chunks)
                    )
                    assert again == texts
                    ours.append((seconds, cpu))
                else:
                    anchor.append(encode_once(model, texts))
    n = len(texts)
    ours_s, ours_cpu = (statistics.median(x[i] for x in ours) for i in (0, 1))
    anchor_s, anchor_cpu = (statistics.median(x[i] for x in anchor) for i in (0, 1))
    ratio, cpu_ratio = anchor_s / ours_s, anchor_cpu / ours_cpu
    print(
        f"SciFact, first {len(lines)} records → {n} chunks; MiniLM-L6-v2 on CPU, {os.cpu_count()} cores; "
        f"{args.reps} reps (median); store: {args.store}; batch_chunks {args.batch_chunks}; "
        f"chunk tokenizer: {tokenizer_for(Recording(model)).name}; load average at start {os.getloadavg()[0]:.1f}\n"
    )
    print("| path | wall s | chunks/s | throughput ratio | CPU s | chunks per CPU s | CPU-efficiency ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(
        f"| sentence-transformers encode (anchor) | {anchor_s:.2f} | {n / anchor_s:.1f} | 1.000 "
        f"| {anchor_cpu:.2f} | {n / anchor_cpu:.1f} | 1.000 |"
    )
    print(
        f"| aiestack ingest | {ours_s:.2f} | {n / ours_s:.1f} | {ratio:.3f} "
        f"| {ours_cpu:.2f} | {n / ours_cpu:.1f} | {cpu_ratio:.3f} |"
    )
    ok = ratio >= TARGET
    print(f"\ningestion / raw encode throughput: {ratio:.3f} (target ≥ {TARGET}) {'ok' if ok else 'MISSED'}")
    print(f"ingestion / raw encode CPU efficiency: {cpu_ratio:.3f} (the same ratio, robust to other load)")
    asyncio.run(model.aclose())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
