"""The DocumentStore protocol: collections of documents, their chunks, a term and a vector index.

Every backend (the embedded store, PostgreSQL + pgvector, memory) implements this protocol and
passes the same conformance tests (:mod:`aiestack.testing`). The context wing (ingestion,
retrieval, RAG) talks only to this protocol.

- A *collection* belongs to one tenant; its name is unique in the store. A key sees only its
  tenant's collections (the context wing checks ``CollectionInfo.tenant``).
- A document's id is the hash of its content; its ``source`` (a path or URL) is unique within a
  collection. :meth:`DocumentStore.put_document` is atomic: it replaces the document previously
  stored for the same source together with its chunks, or changes nothing.
  :meth:`DocumentStore.put_documents` does the same for a batch in one transaction (ingestion
  writes batches: one commit and one index update per batch instead of per document).
- ``CollectionInfo.version`` grows on every change to a collection, so caches of RAG answers can
  key on it and a re-ingest invalidates them.
- A *pointer* makes one collection name stand for another (:meth:`DocumentStore.set_pointer`,
  :meth:`DocumentStore.resolve`): a collection's "current version". Re-indexing ``docs`` with a
  finetuned embedding model writes a new collection ``docs.v2`` and pointing ``docs`` at it switches
  every reader (retrieval, RAG, ingestion) to it in one write; pointing ``docs`` back at itself
  switches back. The stores keep the pointers; the context wing resolves names through them
  (:mod:`aiestack.context.versions`), so the other methods take the collection's own name.
- Filters use the portable grammar: ``{"field": "lang", "op": "eq", "value": "en"}`` and
  ``{"and" | "or": [f, ...]}``, ``{"not": f}``; ops: eq, ne, gt, gte, lt, lte, in, nin, contains.
  ``field`` names chunk metadata; ``source`` and ``document_id`` are always there.

Methods are synchronous (like :class:`~aiestack.stores.base.ExchangeStore`); async callers use
``asyncio.to_thread`` for the slow ones (writes), while searches are fast enough to call inline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from aiestack.types import Chunk, Document, Hit

#: A filter in the portable grammar (see the module docstring).
Filter = Mapping[str, Any]
#: A :meth:`DocumentStore.bulk_load` of fewer documents changes nothing (row-by-row indexing is cheap enough).
BULK_MIN_DOCUMENTS = 1_000
#: One document for :meth:`DocumentStore.put_documents`: the document, its chunks, their vectors.
DocumentItem = tuple[Document, Sequence[Chunk], Sequence[Sequence[float]]]


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    name: str
    tenant: str
    embedding_model: str
    dim: int
    created_at: float
    version: int = 0
    documents: int = 0
    chunks: int = 0
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """What the store knows of one document (its text lives in its chunks)."""

    id: str  # content hash
    collection: str
    source: str
    title: str
    chunks: int
    ingested_at: float
    metadata: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class DocumentStore(Protocol):
    def migrate(self) -> None:
        """Create or upgrade the schema and open the indexes; safe to call every start."""

    def create_collection(
        self,
        name: str,
        *,
        tenant: str = "default",
        embedding_model: str,
        dim: int,
        metadata: Mapping[str, Any] | None = None,
    ) -> CollectionInfo:
        """Create a collection, or return it if it exists with the same tenant, model and dim.

        Raises :class:`~aiestack.errors.InvalidRequest` when it exists with a different tenant,
        embedding model or dimension (say which, and how to fix it).
        """

    def get_collection(self, name: str) -> CollectionInfo | None: ...

    def list_collections(self, *, tenant: str | None = None) -> list[CollectionInfo]: ...

    def drop_collection(self, name: str) -> bool:
        """Delete a collection with its documents, chunks and index entries; False if absent."""

    def documents(self, collection: str, *, source: str | None = None) -> list[StoredDocument]: ...

    def put_document(
        self,
        collection: str,
        document: Document,
        chunks: Sequence[Chunk],
        vectors: Sequence[Sequence[float]],
    ) -> bool:
        """Atomically store a document with its chunks and their vectors (one per chunk).

        Replaces the document stored for the same ``document.source``. Returns False (and
        changes nothing) when that source already holds a document with the same id.
        """

    def put_documents(self, collection: str, items: Sequence[DocumentItem]) -> list[bool]:
        """Store a batch of documents in one transaction: all of them, or (on an error) none.

        Each item behaves as :meth:`put_document` (replace by source, False when unchanged), so
        running the same batch again writes nothing, and an interrupted ingestion resumes by
        putting the batches again. Every item is checked before anything is written.
        """

    def bulk_load(self, collection: str, documents: int) -> AbstractContextManager[None]:
        """A block in which about ``documents`` documents will be put (ingestion, a copy).

        A store may defer, to the end of the block, index work that is cheaper done once for the
        whole load than row by row (PostgreSQL builds the collection's HNSW index after the load
        when the load at least doubles a collection of :data:`BULK_MIN_DOCUMENTS` or more). Every
        write inside is committed and searchable at once, exactly (vector search scans the chunks
        while the index is away), and writes by others go on as usual. A crash inside leaves
        nothing to repair by hand: :meth:`migrate` restores what the block had deferred.
        """

    def read_documents(self, collection: str, sources: Sequence[str]) -> list[DocumentItem]:
        """The documents stored for ``sources`` (in that order, missing ones left out), each with
        its chunks in position order and their stored unit vectors: what :meth:`put_documents`
        takes, so a collection can be copied to another store without embedding again.
        ``Document.text`` is the chunk texts joined by newlines (stores keep only the chunks)."""

    def delete_documents(self, collection: str, ids: Sequence[str]) -> int:
        """Delete documents (and their chunks) by id; returns how many existed."""

    def get_chunks(self, collection: str, ids: Sequence[str]) -> list[Chunk]:
        """Chunks by id, in the order asked (missing ids are left out)."""

    def term_search(self, collection: str, query: str, *, k: int = 10, filter: Filter | None = None) -> list[Hit]:
        """BM25 over chunk texts, best first; ``Hit.retriever == "bm25"``."""

    def vector_search(
        self, collection: str, vector: Sequence[float], *, k: int = 10, filter: Filter | None = None
    ) -> list[Hit]:
        """Nearest chunks by cosine similarity (the score), best first; ``Hit.retriever == "vector"``."""

    def set_pointer(self, name: str, collection: str) -> None:
        """Make ``name`` resolve to ``collection`` (:meth:`resolve`); ``collection == name`` removes the pointer.

        ``collection`` must exist and must not itself point elsewhere (one hop, no chains); when
        ``name`` is a collection too, both must belong to the same tenant. Raises
        :class:`~aiestack.errors.NotFound` or :class:`~aiestack.errors.InvalidRequest` saying which.
        Dropping a collection removes the pointers to it and from it.
        """

    def resolve(self, name: str) -> str:
        """The collection ``name`` points at, else ``name`` itself (cheap: called on every search)."""

    def pointers(self) -> dict[str, str]:
        """Every pointer, name → collection."""

    def close(self) -> None: ...
