"""The embedded DocumentStore (the default): SQLite records, tantivy BM25 and usearch HNSW beside them.

Layout, in the data directory::

    aiestack.db                          collections, documents, chunks (+ the exchange store's tables)
    indexes/<collection>/tantivy/        the term index (BM25)
    indexes/<collection>/vectors.usearch the vector index (cosine HNSW)
    indexes/<collection>/state.json      which collection version each index reflects

SQLite is the source of truth. ``put_documents`` (a batch) and ``delete_documents`` commit the
records in one transaction, then update the indexes once. When a collection's indexes are opened, each is checked
against the collection's version in SQLite: the tantivy index is rebuilt from the records if it
does not reflect the current version, and the usearch index is reconciled by key (chunk keys are
never reused, so "in SQLite but not in the index" and "in the index but not in SQLite" are exact).
A crash between the record commit and the index update therefore never shows a half-written
document and never loses one: the next open replays what is missing.

Concurrency: any number of threads; one writing process at a time (tantivy takes a writer lock).
Other processes (a server while ``aiestack ingest`` runs) notice the writes through SQLite's
``data_version``: their vector index catches up by key at once, their term index at the writer's
next term-index commit (its next search, its close, or every 20,000 changed chunks).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from aiestack.errors import StoreError
from aiestack.stores.documents import CollectionInfo, DocumentItem, Filter, StoredDocument
from aiestack.stores.documents_common import (
    check_collection_name,
    check_k,
    check_put,
    check_query_vector,
    normalize,
)
from aiestack.stores.documents_sql import Change, SqlRecords
from aiestack.stores.documents_tantivy import TermIndex
from aiestack.stores.documents_usearch import VectorIndex
from aiestack.stores.filters import parse_filter
from aiestack.stores.sql.engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    create_store_engine,
    parse_url,
    safe_url,
    sqlite_path,
)
from aiestack.types import Chunk, Document, Hit

#: Save the usearch file after this many changed vectors (and always on close).
SAVE_EVERY = 20_000
_REBUILD_BATCH = 2_000


@dataclass(slots=True)
class _Indexes:
    """A collection's open indexes and the collection version each reflects."""

    info: CollectionInfo
    directory: Path
    terms: TermIndex
    vectors: VectorIndex
    term_version: int
    vector_version: int
    unsaved: int = 0
    #: The version the term index reaches at its next commit (None: nothing uncommitted).
    pending_terms: int | None = None


class EmbeddedDocumentStore:
    """Collections in SQLite, with a tantivy term index and a usearch vector index per collection."""

    def __init__(self, url: str, *, index_dir: str | Path | None = None) -> None:
        self._url = parse_url(url)
        path = sqlite_path(self._url)
        if self._url.get_backend_name() != "sqlite" or path is None:
            raise StoreError(
                f"The embedded document store needs a SQLite file, got {safe_url(self._url)}.",
                hint="Use sqlite:///path/to/aiestack.db (or the PostgreSQL document store for postgresql:// URLs).",
            )
        self.url = safe_url(self._url)
        self.index_dir = Path(index_dir) if index_dir is not None else path.expanduser().parent / "indexes"
        self._engine = create_store_engine(self._url)
        self._records = SqlRecords(self._engine, self._url)
        self._path = path.expanduser()
        self._lock = threading.RLock()
        self._open: dict[str, _Indexes] = {}
        self._reader: sqlite3.Connection | None = None
        self._data_version: int | None = None

    def __repr__(self) -> str:
        return f"EmbeddedDocumentStore({self.url!r})"

    def migrate(self) -> None:
        self._records.migrate()
        self.index_dir.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        with self._lock:
            for indexes in self._open.values():
                self._commit_terms(indexes)
                if indexes.unsaved:
                    self._save_vectors(indexes)
                indexes.terms.close()
            self._open.clear()
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            self._engine.dispose()

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
        with self._lock:
            info, created = self._records.create_collection(name, tenant, embedding_model, dim, metadata)
            if created:
                self._forget(name)
                shutil.rmtree(self.index_dir / name, ignore_errors=True)  # left by a crash during a drop
            return info

    def get_collection(self, name: str) -> CollectionInfo | None:
        return self._records.get_collection(name)

    def list_collections(self, *, tenant: str | None = None) -> list[CollectionInfo]:
        return self._records.list_collections(tenant)

    def drop_collection(self, name: str) -> bool:
        check_collection_name(name)
        with self._lock:
            dropped = self._records.drop_collection(name)
            self._forget(name)
            shutil.rmtree(self.index_dir / name, ignore_errors=True)
            return dropped

    def _forget(self, name: str) -> None:
        indexes = self._open.pop(name, None)
        if indexes is not None:
            indexes.terms.close()

    def set_pointer(self, name: str, collection: str) -> None:
        self._records.set_pointer(name, collection)

    def resolve(self, name: str) -> str:
        return self._records.resolve(name)

    def pointers(self) -> dict[str, str]:
        return self._records.pointers()

    # ----------------------------------------------------------------------- documents

    def documents(self, collection: str, *, source: str | None = None) -> list[StoredDocument]:
        return self._records.documents(collection, source)

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
            indexes = self._indexes(collection)
            prepared = [(d, c, normalize(check_put(indexes.info, d, c, v))) for d, c, v in items]
            if not prepared:
                return []
            indexes.terms.acquire()  # fail before the records change if another process is writing
            try:
                written, change = self._records.put_documents(collection, prepared)
            except BaseException:
                self._release_if_idle(indexes)
                raise
            if change is None:
                self._release_if_idle(indexes)
                return written
            texts = [prepared[i][1][j].text for i, j in change.origins]
            rows = [prepared[i][2][j] for i, j in change.origins]
            matrix = np.stack(rows) if rows else np.zeros((0, indexes.info.dim), np.float32)
            self._apply(indexes, change, texts, matrix)
            return written

    def bulk_load(self, collection: str, documents: int) -> AbstractContextManager[None]:
        self._records.require(collection)
        return nullcontext()  # its indexes take rows one by one as fast as in bulk

    def read_documents(self, collection: str, sources: Sequence[str]) -> list[DocumentItem]:
        dim = self._records.require(collection).dim
        return [(d, c, m.tolist()) for d, c, m in self._records.read_documents(collection, sources, dim)]

    def delete_documents(self, collection: str, ids: Sequence[str]) -> int:
        with self._lock:
            indexes = self._indexes(collection)
            indexes.terms.acquire()
            try:
                count, change = self._records.delete_documents(collection, ids)
            except BaseException:
                self._release_if_idle(indexes)
                raise
            if change is None:
                self._release_if_idle(indexes)
            else:
                self._apply(indexes, change, [], np.zeros((0, indexes.info.dim), np.float32))
            return count

    @staticmethod
    def _release_if_idle(indexes: _Indexes) -> None:
        """Nothing staged in the term index: release its writer lock so other processes can write."""
        if indexes.pending_terms is None:
            indexes.terms.close()

    def get_chunks(self, collection: str, ids: Sequence[str]) -> list[Chunk]:
        return self._records.get_chunks(collection, ids)

    def _apply(self, indexes: _Indexes, change: Change, texts: Sequence[str], matrix: Any) -> None:
        """Bring the indexes from the previous version to ``change.version`` (records are committed)."""
        other_writers = change.version != indexes.vector_version + 1  # another process wrote in between
        indexes.terms.delete(change.removed)
        indexes.terms.add(change.added, texts)
        indexes.pending_terms = change.version
        indexes.vectors.remove(change.removed)
        indexes.vectors.add(change.added, matrix)
        if other_writers:
            self._reconcile_vectors(indexes)
        indexes.vector_version = change.version
        indexes.unsaved += len(change.removed) + len(change.added)
        if indexes.unsaved >= SAVE_EVERY:
            self._commit_terms(indexes)
            self._save_vectors(indexes)

    # ----------------------------------------------------------------------- search

    def term_search(self, collection: str, query: str, *, k: int = 10, filter: Filter | None = None) -> list[Hit]:
        check_k(k)
        node = None if filter is None else parse_filter(filter)
        indexes = self._indexes(collection)
        if indexes.pending_terms is not None:
            with self._lock:
                self._commit_terms(indexes)
        keys = None if node is None else self._records.candidate_keys(collection, node)
        found = indexes.terms.search(query, k, keys)
        return self._hits(found, "bm25")

    def vector_search(
        self, collection: str, vector: Sequence[float], *, k: int = 10, filter: Filter | None = None
    ) -> list[Hit]:
        check_k(k)
        node = None if filter is None else parse_filter(filter)
        indexes = self._indexes(collection)
        query = check_query_vector(indexes.info, vector)
        keys = None if node is None else self._records.candidate_keys(collection, node)
        with self._lock:
            found = indexes.vectors.search(query, k, keys)
        return self._hits(found, "vector")

    def _hits(self, found: Sequence[tuple[int, float]], retriever: str) -> list[Hit]:
        if not found:
            return []
        chunks = self._chunks_by_key([key for key, _ in found])
        return [Hit(chunks[key], score, retriever) for key, score in found if key in chunks]

    def _chunks_by_key(self, keys: Sequence[int]) -> dict[int, Chunk]:
        """The hot path of every search: one indexed SELECT on a plain sqlite3 connection."""
        marks = ",".join("?" * len(keys))
        sql = f"SELECT key, id, document_id, text, position, metadata FROM chunks WHERE key IN ({marks})"
        with self._lock:
            rows = self._read().execute(sql, list(keys)).fetchall()
        return {
            row[0]: Chunk(id=row[1], document_id=row[2], text=row[3], position=row[4], metadata=orjson.loads(row[5]))
            for row in rows
        }

    def _read(self) -> sqlite3.Connection:
        """The plain sqlite3 connection for the search hot path (call with the lock held)."""
        if self._reader is None:
            self._reader = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            self._reader.execute("PRAGMA query_only=ON")
            self._reader.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        return self._reader

    # ----------------------------------------------------------------------- index life cycle

    def _catch_up(self) -> None:
        """See what another process wrote: if the database changed since the last look (SQLite's
        data_version, a microsecond to read), compare each open collection's version with its
        indexes'; on a difference, reload the term index (the other writer's commits) and
        reconcile the vector index by key. Call with the lock held."""
        reader = self._read()
        data_version = reader.execute("PRAGMA data_version").fetchone()[0]
        if data_version == self._data_version:
            return
        self._data_version = data_version
        for name, indexes in list(self._open.items()):
            row = reader.execute("SELECT version, created_at FROM collections WHERE name = ?", (name,)).fetchone()
            if row is None or row[1] != indexes.info.created_at:
                self._forget(name)  # dropped (and perhaps created again) elsewhere: reopen on next use
                continue
            if row[0] != indexes.vector_version:
                indexes.terms.refresh()
                self._reconcile_vectors(indexes)
                indexes.vector_version = row[0]

    def _indexes(self, collection: str) -> _Indexes:
        """The collection's indexes, opened and reconciled with the records on first use."""
        with self._lock:
            self._catch_up()
            indexes = self._open.get(collection)
            if indexes is not None:
                return indexes
            info = self._records.require(collection)
            directory = self.index_dir / collection
            state = self._read_state(directory)
            if state.get("created_at") != info.created_at:
                shutil.rmtree(directory, ignore_errors=True)  # a collection dropped and created again
                state = {}
            directory.mkdir(parents=True, exist_ok=True)
            try:
                terms = TermIndex(directory / "tantivy")
            except ValueError as exc:
                raise StoreError(
                    f"Cannot open the term index of collection {collection!r} in {directory}: {exc}.",
                    hint="Another process may be writing to it (one writer at a time), or the files are damaged: "
                    f"stop the other process, or delete {directory} to rebuild it from the database.",
                ) from None
            vectors = VectorIndex(directory / "vectors.usearch", info.dim)
            indexes = _Indexes(info, directory, terms, vectors, int(state.get("terms", -1)), int(state.get("vectors", -1)))
            if indexes.term_version != info.version and indexes.terms.writable():
                # (When another live process holds the writer lock, it owns the index and brings it
                # up to date at its next commit; rebuilding here would fight it.)
                self._rebuild_terms(indexes)
                indexes.term_version = info.version
                self._write_state(indexes)
            if indexes.vector_version != info.version:
                self._reconcile_vectors(indexes)
                indexes.vector_version = info.version
                self._save_vectors(indexes)
            self._open[collection] = indexes
            return indexes

    def _commit_terms(self, indexes: _Indexes) -> None:
        """Commit the term index (a commit fsyncs: ~0.1 s on a busy disk, so writes only stage
        their changes, and the next search, the next batch boundary or close commits them)."""
        if indexes.pending_terms is None:
            return
        indexes.terms.commit()
        indexes.term_version = indexes.pending_terms
        indexes.pending_terms = None
        self._write_state(indexes)

    def _rebuild_terms(self, indexes: _Indexes) -> None:
        keys = self._records.all_keys(indexes.info.name).tolist()
        indexes.terms.clear()
        for start in range(0, len(keys), _REBUILD_BATCH):
            batch = keys[start : start + _REBUILD_BATCH]
            texts, _ = self._records.texts_and_vectors(batch, indexes.info.dim)
            indexes.terms.add(batch, texts)
        indexes.terms.commit()

    def _reconcile_vectors(self, indexes: _Indexes) -> None:
        stored = set(self._records.all_keys(indexes.info.name).tolist())
        present = set(indexes.vectors.keys().tolist())
        indexes.vectors.remove(sorted(present - stored))
        missing = sorted(stored - present)
        for start in range(0, len(missing), _REBUILD_BATCH):
            batch = missing[start : start + _REBUILD_BATCH]
            _, matrix = self._records.texts_and_vectors(batch, indexes.info.dim)
            indexes.vectors.add(batch, normalize(matrix))

    def _save_vectors(self, indexes: _Indexes) -> None:
        indexes.vectors.save()
        indexes.unsaved = 0
        self._write_state(indexes, saved_vectors=True)

    @staticmethod
    def _read_state(directory: Path) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads((directory / "state.json").read_text())
            return state
        except (OSError, ValueError):
            return {}

    def _write_state(self, indexes: _Indexes, *, saved_vectors: bool = False) -> None:
        """Record which version each index reflects on disk (the vector file only once saved)."""
        previous = self._read_state(indexes.directory)
        state = {
            "created_at": indexes.info.created_at,
            "terms": indexes.term_version,
            "vectors": indexes.vector_version if saved_vectors else previous.get("vectors", -1),
        }
        temporary = indexes.directory / "state.json.tmp"
        temporary.write_text(json.dumps(state))
        temporary.replace(indexes.directory / "state.json")
