"""Retrieval evaluation on a BEIR-layout data set: loading it, and the IR metrics.

BEIR layout (``corpus.jsonl``, ``queries.jsonl``, ``qrels/{split}.tsv``)::

    corpus.jsonl    {"_id": "d1", "title": "...", "text": "..."}
    queries.jsonl   {"_id": "q1", "text": "..."}
    qrels/test.tsv  query-id <TAB> corpus-id <TAB> score   (a header line first)

Metrics follow trec_eval / BEIR: nDCG@k with linear gain ``grade / log2(rank + 1)`` and the ideal
ranking from the qrels; recall@k = relevant found in the top k / all relevant; MRR@k = 1 / rank of
the first relevant hit in the top k (0 if none). A retriever returning a document twice gets credit
for its best rank only. Queries without relevant documents in the split are left out.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiestack.context.retrieval import Retriever, SearchOptions
from aiestack.errors import InvalidRequest
from aiestack.models.base import EmbeddingModel
from aiestack.retrieval_metrics import mrr_at_k, ndcg_at_k, recall_at_k
from aiestack.stores.documents import DocumentStore
from aiestack.types import Chunk, Document

Qrels = Mapping[str, Mapping[str, float]]


@dataclass(frozen=True, slots=True)
class BeirSplit:
    """The queries of one split that have judgements, with those judgements."""

    path: Path
    split: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, float]]


def evaluate(runs: Mapping[str, Sequence[str]], qrels: Qrels) -> dict[str, float]:
    """Mean nDCG@10, recall@10, recall@100 and MRR@10 of ``runs`` (query id → ranked doc ids)."""
    judged = [q for q, g in qrels.items() if any(v > 0 for v in g.values())]
    if not judged:
        raise InvalidRequest("No query has a relevant document.", hint="Check the qrels file.")
    out = {"ndcg@10": 0.0, "recall@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    for q in judged:
        ranked, grades = runs.get(q, ()), qrels[q]
        out["ndcg@10"] += ndcg_at_k(ranked, grades, 10)
        out["recall@10"] += recall_at_k(ranked, grades, 10)
        out["recall@100"] += recall_at_k(ranked, grades, 100)
        out["mrr@10"] += mrr_at_k(ranked, grades, 10)
    return {name: value / len(judged) for name, value in out.items()}


# --------------------------------------------------------------------------- loading


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise InvalidRequest(
            f"{path} does not exist, so this is not a BEIR data set ({what} is missing).",
            hint="Point --beir at a folder holding corpus.jsonl, queries.jsonl and qrels/<split>.tsv.",
        )
    return path


def _jsonl(path: Path) -> Iterator[dict[str, object]]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidRequest(f"{path}:{n} is not valid JSON ({exc}).", hint="Fix that line.") from None
            if not isinstance(record, dict) or "_id" not in record:
                raise InvalidRequest(f"{path}:{n} has no '_id'.", hint="Each BEIR record needs an '_id'.")
            yield record


def load_corpus(path: Path) -> list[Document]:
    """The corpus as documents: id ``_id``, title, and text ``title + "\\n" + text`` (BEIR's convention)."""
    docs = []
    for r in _jsonl(_require(Path(path) / "corpus.jsonl", "corpus.jsonl")):
        title, text = str(r.get("title") or ""), str(r.get("text") or "")
        body = f"{title}\n{text}" if title else text
        docs.append(Document(id=str(r["_id"]), text=body, source=str(r["_id"]), title=title))
    return docs


def load_split(path: Path, split: str = "test") -> BeirSplit:
    """The queries of ``split`` that have judgements, and their qrels."""
    root = Path(path)
    qrels: dict[str, dict[str, float]] = {}
    qrels_path = _require(root / "qrels" / f"{split}.tsv", f"qrels/{split}.tsv")
    with qrels_path.open(encoding="utf-8", newline="") as f:
        for row in csv.reader(f, delimiter="\t"):
            if len(row) < 3 or row[0] == "query-id":
                continue
            try:
                grade = float(row[2])
            except ValueError:
                continue
            qrels.setdefault(row[0], {})[row[1]] = grade
    queries = {
        str(r["_id"]): str(r.get("text") or "")
        for r in _jsonl(_require(root / "queries.jsonl", "queries.jsonl"))
        if str(r["_id"]) in qrels
    }
    qrels = {q: g for q, g in qrels.items() if q in queries}
    if not queries:
        raise InvalidRequest(
            f"No query of {root / 'queries.jsonl'} is judged in qrels/{split}.tsv.",
            hint="Check the split name (e.g. --split test) and that the ids match.",
        )
    return BeirSplit(root, split, queries, qrels)


# --------------------------------------------------------------------------- indexing and running


def beir_chunk(doc: Document) -> Chunk:
    """One chunk per BEIR document (BEIR scores whole documents), id from the document id and text."""
    digest = hashlib.sha256(f"{doc.id}\x00{doc.text}".encode()).hexdigest()[:32]
    return Chunk(
        id=f"ch_{digest}",
        document_id=doc.id,
        text=doc.text,
        position=0,
        metadata={"source": doc.source, "title": doc.title, "start": 0, "end": len(doc.text)},
    )


async def index_corpus(
    store: DocumentStore,
    embeddings: EmbeddingModel,
    collection: str,
    docs: Sequence[Document],
    *,
    tenant: str = "default",
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Store ``docs`` (one chunk each) in ``collection``, embedding only those not stored yet.

    Re-running on the same corpus embeds nothing. Returns how many documents were added.
    """
    store.create_collection(collection, tenant=tenant, embedding_model=embeddings.name, dim=embeddings.dim)
    stored = {d.source: d.id for d in store.documents(collection)}
    todo = [d for d in docs if stored.get(d.source) != d.id]
    added = 0
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        chunks = [beir_chunk(d) for d in batch]
        vectors = await embeddings.embed([c.text for c in chunks])
        items = [(doc, [chunk], [vector]) for doc, chunk, vector in zip(batch, chunks, vectors, strict=True)]
        added += sum(store.put_documents(collection, items))
        if progress is not None:
            progress(min(start + batch_size, len(todo)), len(todo))
    return added


async def run_queries(
    retriever: Retriever,
    collection: str,
    queries: Mapping[str, str],
    options: SearchOptions,
    *,
    depth: int = 100,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, list[str]], list[float]]:
    """Ranked document ids per query (``depth`` deep) and each query's latency in milliseconds."""
    opts = dataclasses.replace(options, k=depth, candidates=max(depth, options.candidates))
    runs: dict[str, list[str]] = {}
    latencies: list[float] = []
    for i, (qid, text) in enumerate(queries.items(), start=1):
        t0 = time.perf_counter()
        found = await retriever.search(collection, text, opts)
        latencies.append((time.perf_counter() - t0) * 1000.0)
        runs[qid] = list(dict.fromkeys(h.chunk.document_id for h in found.hits))  # a document once, at its best rank
        if progress is not None:
            progress(i, len(queries))
    return runs, latencies
