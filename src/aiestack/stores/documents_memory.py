"""An in-memory DocumentStore: BM25 in pure Python (the shared analyser), exact cosine search in numpy.

For tests and throwaway sessions: it passes the same conformance tests as the embedded and
PostgreSQL stores (:mod:`aiestack.testing.documents`), so code tested against it holds for them.
Metadata goes through a JSON round trip as it would in a database. Everything is guarded by one
lock; searches are exact (no approximate index), which is fine for the few thousand chunks tests use.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aiestack.stores import analysis
from aiestack.stores.documents import CollectionInfo, DocumentItem, Filter, StoredDocument
from aiestack.stores.documents_common import (
    check_collection_name,
    check_existing,
    check_k,
    check_new_collection,
    check_pointer,
    check_put,
    check_query_vector,
    chunk_fields,
    json_copy,
    missing_collection,
    normalize,
)
from aiestack.stores.filters import Node, evaluate, parse_filter
from aiestack.types import Chunk, Document, Hit


@dataclass(slots=True)
class _Entry:
    """One stored chunk: its unit vector, term counts, token count and the fields filters see."""

    chunk: Chunk
    vector: np.ndarray
    terms: Counter[str]
    length: int
    fields: dict[str, Any]

    @property
    def norm(self) -> int:
        return analysis.fieldnorm(self.length)


@dataclass(slots=True)
class _Collection:
    info: CollectionInfo
    documents: dict[str, StoredDocument] = field(default_factory=dict)  # by source
    keys_by_source: dict[str, list[int]] = field(default_factory=dict)
    entries: dict[int, _Entry] = field(default_factory=dict)  # by key, in insertion order
    postings: dict[str, dict[int, int]] = field(default_factory=dict)  # term -> key -> tf
    total_length: int = 0

    def add(self, key: int, entry: _Entry) -> None:
        self.entries[key] = entry
        self.total_length += entry.length
        for term, count in entry.terms.items():
            self.postings.setdefault(term, {})[key] = count

    def remove(self, key: int) -> None:
        entry = self.entries.pop(key)
        self.total_length -= entry.length
        for term in entry.terms:
            posting = self.postings[term]
            del posting[key]
            if not posting:
                del self.postings[term]


class MemoryDocumentStore:
    """Collections, documents and chunks in dictionaries, guarded by one lock."""

    url = "memory://"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._collections: dict[str, _Collection] = {}
        self._pointers: dict[str, str] = {}
        self._next_key = 1
        self._analyzer = analysis.Analyzer()

    def __repr__(self) -> str:
        return "MemoryDocumentStore()"

    def migrate(self) -> None:
        """Nothing to migrate."""

    def close(self) -> None:
        """Nothing to release (the data stays until the object is gone)."""

    # ----------------------------------------------------------------------- collections

    def create_collection(
        self,
        name: str,
        *,
        tenant: str = "default",
        embedding_model: str,
        dim: int,
        metadata: Mapping[str, Any] | None = None,
    ) -> CollectionInfo:
        check_new_collection(name, tenant, embedding_model, dim)
        with self._lock:
            existing = self._collections.get(name)
            if existing is not None:
                return check_existing(self._info(existing), tenant, embedding_model, dim)
            info = CollectionInfo(
                name=name,
                tenant=tenant,
                embedding_model=embedding_model,
                dim=dim,
                created_at=time.time(),
                metadata=json_copy(metadata or {}),
            )
            self._collections[name] = _Collection(info)
            return self._info(self._collections[name])

    def get_collection(self, name: str) -> CollectionInfo | None:
        with self._lock:
            collection = self._collections.get(name)
            return None if collection is None else self._info(collection)

    def list_collections(self, *, tenant: str | None = None) -> list[CollectionInfo]:
        with self._lock:
            return [
                self._info(c)
                for name, c in sorted(self._collections.items())
                if tenant is None or c.info.tenant == tenant
            ]

    def drop_collection(self, name: str) -> bool:
        with self._lock:
            self._pointers = {k: v for k, v in self._pointers.items() if name not in (k, v)}
            return self._collections.pop(name, None) is not None

    def set_pointer(self, name: str, collection: str) -> None:
        with self._lock:
            target, named = self._collections.get(collection), self._collections.get(name)
            check_pointer(
                name,
                None if target is None else target.info,
                None if named is None else named.info,
                self._pointers,
            )
            if collection == name:
                self._pointers.pop(name, None)
            else:
                self._pointers[name] = collection

    def resolve(self, name: str) -> str:
        with self._lock:
            return self._pointers.get(name, name)

    def pointers(self) -> dict[str, str]:
        with self._lock:
            return dict(sorted(self._pointers.items()))

    @staticmethod
    def _info(collection: _Collection) -> CollectionInfo:
        return dataclasses.replace(
            collection.info,
            documents=len(collection.documents),
            chunks=len(collection.entries),
            metadata=json_copy(collection.info.metadata),
        )

    def _get(self, name: str) -> _Collection:
        check_collection_name(name)
        collection = self._collections.get(name)
        if collection is None:
            raise missing_collection(name)
        return collection

    # ----------------------------------------------------------------------- documents

    def documents(self, collection: str, *, source: str | None = None) -> list[StoredDocument]:
        with self._lock:
            stored = self._get(collection).documents
            if source is not None:
                return [stored[source]] if source in stored else []
            return [stored[s] for s in sorted(stored)]

    def put_document(
        self,
        collection: str,
        document: Document,
        chunks: Sequence[Chunk],
        vectors: Sequence[Sequence[float]],
    ) -> bool:
        return self.put_documents(collection, [(document, chunks, vectors)])[0]

    def put_documents(self, collection: str, items: Sequence[DocumentItem]) -> list[bool]:
        with self._lock:
            target = self._get(collection)
            prepared = [(d, c, normalize(check_put(target.info, d, c, v))) for d, c, v in items]
            written = [self._put(collection, target, d, c, m) for d, c, m in prepared]
            if any(written):
                target.info = dataclasses.replace(target.info, version=target.info.version + 1)
            return written

    def _put(self, collection: str, target: _Collection, document: Document, chunks: Sequence[Chunk], matrix: np.ndarray) -> bool:
        previous = target.documents.get(document.source)
        if previous is not None and previous.id == document.id:
            return False
        entries = []
        for chunk, vector in zip(chunks, matrix, strict=True):
            stored = Chunk(
                id=chunk.id,
                document_id=document.id,
                text=chunk.text,
                position=chunk.position,
                metadata=json_copy(chunk.metadata),
            )
            terms, length = self._analyzer.counts(chunk.text)
            fields = chunk_fields(stored.metadata, document.source, document.id)
            entries.append(_Entry(stored, vector, terms, length, fields))
        for key in target.keys_by_source.pop(document.source, []):
            target.remove(key)
        keys = list(range(self._next_key, self._next_key + len(entries)))
        self._next_key += len(entries)
        for key, entry in zip(keys, entries, strict=True):
            target.add(key, entry)
        target.keys_by_source[document.source] = keys
        target.documents[document.source] = StoredDocument(
            id=document.id,
            collection=collection,
            source=document.source,
            title=document.title,
            chunks=len(chunks),
            ingested_at=time.time(),
            metadata=json_copy(document.metadata),
        )
        return True

    def bulk_load(self, collection: str, documents: int) -> AbstractContextManager[None]:
        with self._lock:
            self._get(collection)
        return nullcontext()  # its indexes take rows one by one as fast as in bulk

    def read_documents(self, collection: str, sources: Sequence[str]) -> list[DocumentItem]:
        with self._lock:
            target = self._get(collection)
            out: list[DocumentItem] = []
            for source in sources:
                stored = target.documents.get(source)
                if stored is None:
                    continue
                entries = [target.entries[key] for key in target.keys_by_source.get(source, [])]
                chunks = [dataclasses.replace(e.chunk, metadata=json_copy(e.chunk.metadata)) for e in entries]
                document = Document(
                    id=stored.id,
                    text="\n".join(c.text for c in chunks),
                    source=source,
                    title=stored.title,
                    metadata=json_copy(stored.metadata),
                )
                out.append((document, chunks, [e.vector.tolist() for e in entries]))
            return out

    def delete_documents(self, collection: str, ids: Sequence[str]) -> int:
        wanted = set(ids)
        with self._lock:
            target = self._get(collection)
            sources = [s for s, d in target.documents.items() if d.id in wanted]
            for source in sources:
                del target.documents[source]
                for key in target.keys_by_source.pop(source, []):
                    target.remove(key)
            if sources:
                target.info = dataclasses.replace(target.info, version=target.info.version + 1)
            return len(sources)

    def get_chunks(self, collection: str, ids: Sequence[str]) -> list[Chunk]:
        with self._lock:
            target = self._get(collection)
            by_id: dict[str, Chunk] = {}
            for entry in target.entries.values():
                by_id.setdefault(entry.chunk.id, entry.chunk)
            return [by_id[i] for i in ids if i in by_id]

    # ----------------------------------------------------------------------- search

    def term_search(self, collection: str, query: str, *, k: int = 10, filter: Filter | None = None) -> list[Hit]:
        check_k(k)
        node = None if filter is None else parse_filter(filter)
        with self._lock:
            target = self._get(collection)
            allowed = self._allowed(target, node)
            count = len(target.entries)
            if not count:
                return []
            average = target.total_length / count
            scores: dict[int, float] = {}
            for term, repeats in self._analyzer.query(query).items():
                posting = target.postings.get(term)
                if not posting:
                    continue
                weight = analysis.term_weight(count, len(posting)) * repeats
                for key, tf in posting.items():
                    if allowed is not None and key not in allowed:
                        continue
                    norm = target.entries[key].norm
                    scores[key] = scores.get(key, 0.0) + analysis.term_score(weight, tf, norm, average)
            best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
            return [Hit(target.entries[key].chunk, score, "bm25") for key, score in best]

    def vector_search(
        self, collection: str, vector: Sequence[float], *, k: int = 10, filter: Filter | None = None
    ) -> list[Hit]:
        check_k(k)
        node = None if filter is None else parse_filter(filter)
        with self._lock:
            target = self._get(collection)
            query = check_query_vector(target.info, vector)
            allowed = self._allowed(target, node)
            keys = [key for key in target.entries if allowed is None or key in allowed]
            if not keys:
                return []
            matrix = np.stack([target.entries[key].vector for key in keys])
            scores = matrix @ query
            order = np.lexsort((np.arange(len(keys)), -scores))[:k]
            return [Hit(target.entries[keys[i]].chunk, float(scores[i]), "vector") for i in order]

    @staticmethod
    def _allowed(target: _Collection, node: Node | None) -> set[int] | None:
        if node is None:
            return None
        return {key for key, entry in target.entries.items() if evaluate(node, entry.fields)}
