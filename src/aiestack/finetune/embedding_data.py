"""Training examples for an embedding model, from a qrels dataset and the collection's own index.

- :func:`qrels_from_dataset`: the relevance judgements of a dataset version — every chat row with
  ``sources`` is a question and the chunks (documents) that answer it. ``datasets synthesize`` makes
  such rows from a collection's chunks (synthetic questions), ``datasets build --from exchanges``
  from RAG exchanges people rated well (the sources their answers used: feedback as clicks), and
  ``datasets build --from file`` from any ``{"question", "answer", "sources": [...]}`` file (qrels
  you have). The same rows are what ``datasets export --format qrels`` writes.
- :func:`split_queries`: a seeded, content-based split of the questions into train and held out.
- :func:`build_examples`: each question's positive passage (its judged chunk; for a judgement that
  names only a document, that document's chunk nearest the question) and its **hard negatives** —
  chunks the collection's own index ranks high for the question (hybrid or vector search with the
  model being finetuned) that are not judged relevant. The first ``skip`` such chunks are passed
  over: the very top of an unjudged list is where unlabelled positives hide (false negatives hurt
  contrastive training more than easy negatives do; RocketQA, Qu et al. 2021).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from aiestack.context.fusion import weighted
from aiestack.datasets.export import iter_rows, qrels_lines
from aiestack.errors import InvalidRequest
from aiestack.finetune.embeddings import Example
from aiestack.models.base import EmbeddingModel
from aiestack.stores.datasets import DatasetStore, DatasetVersion
from aiestack.stores.documents import DocumentStore
from aiestack.types import Hit


@dataclass(frozen=True, slots=True)
class Qrel:
    """One judgement: ``query`` is answered by ``document_id`` (by its chunk ``chunk_id`` when known)."""

    query_id: str
    query: str
    document_id: str
    chunk_id: str = ""
    text: str = ""  # the source's text as the dataset recorded it (used when the chunk is gone)


@dataclass(frozen=True, slots=True)
class MiningOptions:
    """How hard negatives are mined from the collection's index."""

    mode: str = "hybrid"  # or "vector"
    depth: int = 30  # candidates looked at per question
    skip: int = 3  # unjudged top candidates passed over (likely unlabelled positives)
    count: int = 1  # hard negatives kept per question
    vector_weight: float = 0.4  # the hybrid fusion's, with z-scores (the retrieval default until issue #18's session 8; mining was not re-tuned)

    def __post_init__(self) -> None:
        if self.mode not in ("hybrid", "vector"):
            raise InvalidRequest(f"Unknown mining mode {self.mode!r}.", hint="Use hybrid or vector.")
        if self.depth < 1 or self.skip < 0 or self.count < 0:
            raise InvalidRequest("Mining needs depth ≥ 1, skip ≥ 0 and count ≥ 0.", hint="E.g. depth 30, skip 3, count 1.")


def qrels_from_dataset(store: DatasetStore, version: DatasetVersion) -> list[Qrel]:
    """Every judgement of ``version`` (chat rows with ``sources``); :class:`InvalidRequest` if it has none."""
    out: list[Qrel] = []
    for row in iter_rows(store, version):
        texts = {str(s.get("chunk_id") or ""): str(s.get("text") or "") for s in row.data.get("sources") or () if isinstance(s, Mapping)}
        for line in qrels_lines(row):
            if not line["query"].strip() or not line.get("corpus_id"):
                continue
            chunk = str(line.get("chunk_id") or "")
            out.append(Qrel(str(line["query_id"]), str(line["query"]), str(line["corpus_id"]), chunk, texts.get(chunk, "")))
    if not out:
        raise InvalidRequest(
            f"The dataset {version.ref} holds no relevance judgements (no chat row has 'sources').",
            hint="Use a dataset of questions with sources: `aiestack datasets synthesize -c COLLECTION`, or a file "
            'of {"question", "answer", "sources": [{"document_id", "chunk_id"}]} rows (`datasets build --from file`).',
        )
    return out


def split_queries(qrels: Sequence[Qrel], holdout: float, seed: int = 0) -> tuple[list[Qrel], list[Qrel]]:
    """(train, held out): a question is held out when a hash of its id and the seed falls under ``holdout``."""
    if not 0 <= holdout < 1:
        raise InvalidRequest(f"holdout is a share in [0, 1), got {holdout}.", hint="Use 0.2, or 0 with an eval dataset.")

    def held(qid: str) -> bool:
        digest = hashlib.sha256(f"{seed}:{qid}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < holdout

    train = [q for q in qrels if not held(q.query_id)]
    out = [q for q in qrels if held(q.query_id)]
    return train, out


def judged(qrels: Sequence[Qrel]) -> tuple[dict[str, str], dict[str, dict[str, float]]]:
    """Queries (id → text) and their judgements (id → {document id: 1}), as the retrieval metrics take them."""
    queries: dict[str, str] = {}
    grades: dict[str, dict[str, float]] = {}
    for q in qrels:
        queries.setdefault(q.query_id, q.query)
        grades.setdefault(q.query_id, {})[q.document_id] = 1.0
    return queries, grades


async def build_examples(
    store: DocumentStore,
    collection: str,
    model: EmbeddingModel,
    qrels: Sequence[Qrel],
    mining: MiningOptions | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> list[Example]:
    """One example per judgement: the question, its positive passage and mined hard negatives.

    ``collection`` is a stored collection's own name; ``model`` the model that embedded it (the
    questions are embedded by it to search). Judgements whose document is no longer in the
    collection and has no recorded text are left out.
    """
    opts = mining or MiningOptions()
    queries, grades = judged(qrels)
    ids = list(queries)
    vectors = np.asarray(await model.embed([queries[q] for q in ids]), dtype=np.float32) if ids else np.zeros((0, 1))
    by_id = dict(zip(ids, vectors, strict=True))
    positives = await asyncio.to_thread(_positives, store, collection, qrels, by_id)
    mined: dict[str, list[Hit]] = {}
    for n, qid in enumerate(ids, start=1):
        mined[qid] = await asyncio.to_thread(_candidates, store, collection, queries[qid], by_id[qid], opts)
        if progress is not None:
            progress(n, len(ids))
    examples: list[Example] = []
    for q in qrels:
        positive = positives.get((q.query_id, q.document_id, q.chunk_id))
        if positive is None:
            continue
        negatives = [h.chunk.text for h in mined[q.query_id] if h.chunk.document_id not in grades[q.query_id]]
        chosen = tuple(negatives[opts.skip : opts.skip + opts.count])
        examples.append(Example(q.query, positive, chosen, q.query_id, q.document_id))
    return examples


def _positives(
    store: DocumentStore, collection: str, qrels: Sequence[Qrel], vectors: Mapping[str, np.ndarray]
) -> dict[tuple[str, str, str], str]:
    """The positive passage of each judgement, keyed (query id, document id, chunk id)."""
    out: dict[tuple[str, str, str], str] = {}
    wanted = sorted({q.chunk_id for q in qrels if q.chunk_id})
    chunks = {c.id: c.text for start in range(0, len(wanted), 500) for c in store.get_chunks(collection, wanted[start : start + 500])}
    need_docs = {q.document_id for q in qrels if not (q.chunk_id and q.chunk_id in chunks)}
    sources = {d.id: d.source for d in store.documents(collection) if d.id in need_docs} if need_docs else {}
    docs: dict[str, tuple[list[str], np.ndarray]] = {}
    names = sorted(set(sources.values()))
    for start in range(0, len(names), 256):
        for document, cs, vs in store.read_documents(collection, names[start : start + 256]):
            docs[document.id] = ([c.text for c in cs], np.asarray(vs, dtype=np.float32))
    for q in qrels:
        key = (q.query_id, q.document_id, q.chunk_id)
        if q.chunk_id and q.chunk_id in chunks:
            out[key] = chunks[q.chunk_id]
        elif q.document_id in docs:
            texts, matrix = docs[q.document_id]
            out[key] = texts[int(np.argmax(matrix @ vectors[q.query_id]))] if len(texts) > 1 else texts[0]
        elif q.text:
            out[key] = q.text
    return out


def _candidates(store: DocumentStore, collection: str, query: str, vector: np.ndarray, opts: MiningOptions) -> list[Hit]:
    by_vector = store.vector_search(collection, vector.tolist(), k=opts.depth)
    if opts.mode == "vector":
        return by_vector
    by_terms = store.term_search(collection, query, k=opts.depth)
    return weighted([by_terms, by_vector], weights=(1.0 - opts.vector_weight, opts.vector_weight), norm="z")[: opts.depth]
