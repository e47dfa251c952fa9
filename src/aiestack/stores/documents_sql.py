"""The records of the SQL document stores: collections, documents and chunks in SQL tables.

The embedded store (SQLite + tantivy + usearch) and the PostgreSQL store share this layout
(migration 0004, :mod:`aiestack.stores.sql.tables`) and this code; they differ only in their
indexes. Every write here is one transaction, so a document (or a batch of them) is either wholly stored or
not at all; an index kept in the same database (PostgreSQL's BM25 postings) changes inside it.
Embeddings are float32 bytes on SQLite and ``real[]`` on PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from aiestack.stores.documents import CollectionInfo, StoredDocument
from aiestack.stores.documents_common import (
    check_collection_name,
    check_existing,
    check_new_collection,
    check_pointer,
    json_copy,
    missing_collection,
)
from aiestack.stores.filters import Node, SqlTarget, node_to_sql
from aiestack.stores.sql import copy as pg_copy
from aiestack.stores.sql.copy import copy_binary
from aiestack.stores.sql.engine import store_errors, write_transaction
from aiestack.stores.sql.migrate import upgrade
from aiestack.stores.sql.tables import chunks as chunks_table
from aiestack.stores.sql.tables import collection_pointers as pointers_table
from aiestack.stores.sql.tables import collections as collections_table
from aiestack.stores.sql.tables import documents as documents_table
from aiestack.stores.sql.vectors import FLOAT32_LE
from aiestack.types import Chunk, Document

#: Rows per IN (...) list: below SQLite's and PostgreSQL's limits on bound parameters.
_BATCH = 900


@dataclass(frozen=True, slots=True)
class Change:
    """What a committed write did: the collection's new version, chunk keys removed and added
    (and, for a batch put, where each added chunk came from: (item index, chunk index))."""

    version: int
    removed: tuple[int, ...]
    added: tuple[int, ...]
    origins: tuple[tuple[int, int], ...] = ()


def _batches(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), _BATCH):
        yield items[start : start + _BATCH]


#: One document to write: the document, its chunks and their unit vectors (one row per chunk).
Prepared = tuple[Document, Sequence[Chunk], np.ndarray]


class TransactionalIndex(Protocol):
    """An index kept in the same database, changed inside each write's transaction."""

    def on_create(self, connection: sa.Connection, collection: str) -> None: ...

    def on_write(
        self,
        connection: sa.Connection,
        collection: str,
        removed: Sequence[int],
        added: Sequence[int],
        texts: Sequence[str],
    ) -> None:
        """Chunks ``removed`` are gone, chunks ``added`` (with their ``texts``) are new."""

    def on_drop(self, connection: sa.Connection, collection: str) -> None: ...


_CHUNK_COPY_COLUMNS = ("key", "collection", "document_key", "id", "document_id", "source", "position", "text", "metadata", "embedding")


_DOCUMENT_COPY_COLUMNS = ("key", "collection", "id", "source", "title", "chunks", "ingested_at", "metadata")


def _next_keys(connection: sa.Connection, table: str, n: int) -> list[int]:
    """``n`` keys drawn from ``table``'s key sequence (PostgreSQL), for rows written by COPY."""
    return list(
        connection.scalars(
            sa.text(f"SELECT nextval(pg_get_serial_sequence('{table}', 'key')) FROM generate_series(1, :n)"),
            {"n": n},
        )
    )


def copy_documents(connection: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert document rows on PostgreSQL with a binary COPY (keys taken from the sequence first);
    their keys. An ``INSERT ... RETURNING`` of a batch's documents cost as much server time as
    the COPY of its chunks with their vectors."""
    keys = _next_keys(connection, "documents", len(rows))
    columns = [
        ("bigint", keys),
        ("bytes", [pg_copy.text(row["collection"]) for row in rows]),
        ("bytes", [pg_copy.text(row["id"]) for row in rows]),
        ("bytes", [pg_copy.text(row["source"]) for row in rows]),
        ("bytes", [pg_copy.text(row["title"]) for row in rows]),
        ("integer", [row["chunks"] for row in rows]),
        ("double", [row["ingested_at"] for row in rows]),
        ("bytes", [pg_copy.jsonb(orjson.dumps(row["metadata"])) for row in rows]),
    ]
    copy_binary(connection, "documents", _DOCUMENT_COPY_COLUMNS, [pg_copy.packed_rows(len(rows), columns)])
    return [int(k) for k in keys]


def copy_chunks(connection: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert chunk rows on PostgreSQL with a binary COPY (keys taken from the sequence first); their keys.

    COPY formats rows without an INSERT's per-parameter quoting (a 384-d vector as a float array
    costs ~1 ms that way); the vectors go as float32 bit for bit (:mod:`aiestack.stores.sql.copy`).
    """
    keys = _next_keys(connection, "chunks", len(rows))
    columns = [
        ("bigint", keys),
        ("bytes", [pg_copy.text(row["collection"]) for row in rows]),
        ("bigint", [row["document_key"] for row in rows]),
        ("bytes", [pg_copy.text(row["id"]) for row in rows]),
        ("bytes", [pg_copy.text(row["document_id"]) for row in rows]),
        ("bytes", [pg_copy.text(row["source"]) for row in rows]),
        ("integer", [row["position"] for row in rows]),
        ("bytes", [pg_copy.text(row["text"]) for row in rows]),
        ("bytes", [pg_copy.jsonb(orjson.dumps(row["metadata"])) for row in rows]),
        ("real[]", np.stack([np.asarray(row["embedding"], dtype=np.float32) for row in rows])),
    ]
    copy_binary(connection, "chunks", _CHUNK_COPY_COLUMNS, [pg_copy.packed_rows(len(rows), columns)])
    return [int(k) for k in keys]


class SqlRecords:
    """Collections, documents and chunks in the SQL tables, one transaction per write."""

    def __init__(self, engine: Engine, url: URL, index: TransactionalIndex | None = None) -> None:
        self.engine = engine
        self.url = url
        self.index = index
        self.dialect = engine.dialect.name
        self._target = SqlTarget(
            metadata=chunks_table.c.metadata,
            columns={"source": chunks_table.c.source, "document_id": chunks_table.c.document_id},
            dialect="postgresql" if self.dialect == "postgresql" else "sqlite",
        )

    def migrate(self) -> None:
        with store_errors(self.url, "migrate"):
            upgrade(self.engine)

    # ----------------------------------------------------------------------- collections

    def create_collection(
        self, name: str, tenant: str, embedding_model: str, dim: int, metadata: Mapping[str, Any] | None
    ) -> tuple[CollectionInfo, bool]:
        """The collection, and whether this call created it."""
        check_new_collection(name, tenant, embedding_model, dim)
        with store_errors(self.url, "write to"), write_transaction(self.engine) as connection:
            existing = self._info(connection, name)
            if existing is not None:
                return check_existing(existing, tenant, embedding_model, dim), False
            connection.execute(
                collections_table.insert().values(
                    name=name,
                    tenant=tenant,
                    embedding_model=embedding_model,
                    dim=dim,
                    created_at=time.time(),
                    version=0,
                    metadata=json_copy(metadata or {}),
                )
            )
            if self.index is not None:
                self.index.on_create(connection, name)
            info = self._info(connection, name)
        assert info is not None
        return info, True

    def get_collection(self, name: str) -> CollectionInfo | None:
        with store_errors(self.url, "read from"), self.engine.connect() as connection:
            return self._info(connection, name)

    def require(self, name: str) -> CollectionInfo:
        """The collection (without its document and chunk counts: cheap), or NotFound."""
        check_collection_name(name)
        with store_errors(self.url, "read from"), self.engine.connect() as connection:
            info = self._info(connection, name, counts=False)
        if info is None:
            raise missing_collection(name)
        return info

    def list_collections(self, tenant: str | None) -> list[CollectionInfo]:
        query = sa.select(collections_table.c.name).order_by(collections_table.c.name)
        if tenant is not None:
            query = query.where(collections_table.c.tenant == tenant)
        with store_errors(self.url, "read from"), self.engine.connect() as connection:
            names = list(connection.scalars(query))
            infos = [self._info(connection, name) for name in names]
        return [info for info in infos if info is not None]

    def drop_collection(self, name: str) -> bool:
        with store_errors(self.url, "write to"), write_transaction(self.engine) as connection:
            if self.index is not None:
                self.index.on_drop(connection, name)
            connection.execute(
                pointers_table.delete().where(sa.or_(pointers_table.c.name == name, pointers_table.c.collection == name))
            )
            result = connection.execute(collections_table.delete().where(collections_table.c.name == name))
            return bool(result.rowcount)

    # ----------------------------------------------------------------------- pointers

    def set_pointer(self, name: str, collection: str) -> None:
        with store_errors(self.url, "write to"), write_transaction(self.engine) as connection:
            if self.dialect == "postgresql":  # one pointer change at a time, so the one-hop checks hold
                connection.execute(sa.text("LOCK TABLE collection_pointers IN SHARE ROW EXCLUSIVE MODE"))
            pointers = self._pointers(connection)
            check_pointer(name, self._info(connection, collection, counts=False), self._info(connection, name, counts=False), pointers)
            connection.execute(pointers_table.delete().where(pointers_table.c.name == name))
            if collection != name:
                connection.execute(pointers_table.insert().values(name=name, collection=collection, updated_at=time.time()))

    def resolve(self, name: str) -> str:
        with store_errors(self.url, "read from"), self.engine.connect() as connection:
            target = connection.scalar(sa.select(pointers_table.c.collection).where(pointers_table.c.name == name))
        return name if target is None else str(target)

    def pointers(self) -> dict[str, str]:
        with store_errors(self.url, "read from"), self.engine.connect() as connection:
            return self._pointers(connection)

    @staticmethod
    def _pointers(connection: sa.Connection) -> dict[str, str]:
        rows = connection.execute(sa.select(pointers_table.c.name, pointers_table.c.collection).order_by(pointers_table.c.name))
        return {str(name): str(target) for name, target in rows}

    def version(self, name: str) -> int | None:
        with store_errors(self.url, "read from"), self.engine.connect() as connection:
            value = connection.scalar(
                sa.select(collections_table.c.version).where(collections_table.c.name == name)
            )
        return None if value is None else int(value)

    @staticmethod
    def _info(connection: sa.Connection, name: str, *, counts: bool = True) -> CollectionInfo | None:
        row = connection.execute(
            sa.select(collections_table).where(collections_table.c.name == name)
        ).mappings().first()
        if row is None:
            return None
        documents = chunks = 0
        if counts:
            documents = connection.scalar(
                sa.select(sa.func.count()).select_from(documents_table).where(documents_table.c.collection == name)
            ) or 0
            chunks = connection.scalar(
                sa.select(sa.func.count()).select_from(chunks_table).where(chunks_table.c.collection == name)
            ) or 0
        return CollectionInfo(
            name=row["name"],
            tenant=row["tenant"],
            embedding_model=row["embedding_model"],
            dim=row["dim"],
            created_at=row["created_at"],
            version=int(row["version"]),
            documents=int(documents or 0),
            chunks=int(chunks or 0),
            metadata=row["metadata"],
        )

    # ----------------------------------------------------------------------- documents

    def documents(self, collection: str, source: str | None) -> list[StoredDocument]:
        self.require(collection)
        query = (
            sa.select(documents_table)
            .where(documents_table.c.collection == collection)
            .order_by(documents_table.c.source)
        )
        if source is not None:
            query = query.where(documents_table.c.source == source)
        with store_errors(self.url, "read from"), self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [
            StoredDocument(
                id=row["id"],
                collection=row["collection"],
                source=row["source"],
                title=row["title"],
                chunks=row["chunks"],
                ingested_at=row["ingested_at"],
                metadata=row["metadata"],
            )
            for row in rows
        ]

    def put_documents(self, collection: str, items: Sequence[Prepared]) -> tuple[list[bool], Change | None]:
        """Store documents in one transaction: whether each was written (False: its source already
        holds this id), and the change (None when nothing was written).

        A source that appears twice in ``items`` ends with its last version, as if put one by one.
        The batch costs a fixed number of statements, whatever its size (one round trip per
        statement matters on a network database).
        """
        with store_errors(self.url, "write to"), write_transaction(self.engine) as connection:
            stored = self._stored(connection, collection, list(dict.fromkeys(d.source for d, _, _ in items)))
            # Replay the batch in order: what each item finds, and which item each source ends with.
            current = {source: doc_id for source, (_, doc_id) in stored.items()}
            results: list[bool] = []
            final: dict[str, int] = {}
            for number, (document, _, _) in enumerate(items):
                results.append(current.get(document.source) != document.id)
                current[document.source] = document.id
                final[document.source] = number
            writes = [n for source, n in final.items() if stored.get(source, (0, None))[1] != items[n][0].id]
            if not writes:
                return results, None
            replaced = [stored[items[n][0].source][0] for n in writes if items[n][0].source in stored]
            removed = self._remove_documents(connection, replaced)
            added, origins = self._insert(connection, collection, [(n, items[n]) for n in writes])
            if self.index is not None:
                texts = [items[n][1][position].text for n, position in origins]
                self.index.on_write(connection, collection, removed, added, texts)
            version = self._bump(connection, collection)
        return results, Change(version, tuple(removed), tuple(added), tuple(origins))

    def _stored(self, connection: sa.Connection, collection: str, sources: Sequence[str]) -> dict[str, tuple[int, str]]:
        """source -> (document key, document id) for the sources stored in the collection."""
        found: dict[str, tuple[int, str]] = {}
        for batch in _batches(sources):
            rows = connection.execute(
                sa.select(documents_table.c.key, documents_table.c.id, documents_table.c.source).where(
                    documents_table.c.collection == collection, documents_table.c.source.in_(batch)
                )
            )
            found.update((row.source, (row.key, row.id)) for row in rows)
        return found

    @staticmethod
    def _remove_documents(connection: sa.Connection, document_keys: Sequence[int]) -> list[int]:
        """Delete documents and their chunks by document key; the chunk keys removed."""
        removed: list[int] = []
        for batch in _batches(document_keys):
            removed.extend(
                connection.scalars(sa.select(chunks_table.c.key).where(chunks_table.c.document_key.in_(batch)))
            )
            connection.execute(chunks_table.delete().where(chunks_table.c.document_key.in_(batch)))
            connection.execute(documents_table.delete().where(documents_table.c.key.in_(batch)))
        return removed

    def _insert(
        self, connection: sa.Connection, collection: str, numbered: Sequence[tuple[int, Prepared]]
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """Insert documents with their chunks: the chunk keys, and (item number, chunk index) of each."""
        now = time.time()
        documents = [
            {
                "collection": collection,
                "id": document.id,
                "source": document.source,
                "title": document.title,
                "chunks": len(chunks),
                "ingested_at": now,
                "metadata": json_copy(document.metadata),
            }
            for _, (document, chunks, _) in numbered
        ]
        if self.dialect == "postgresql":
            document_keys = copy_documents(connection, documents)
        else:
            document_keys = list(
                connection.scalars(
                    documents_table.insert().returning(documents_table.c.key, sort_by_parameter_order=True), documents
                )
            )
        rows: list[dict[str, Any]] = []
        origins: list[tuple[int, int]] = []
        for document_key, (number, (document, chunks, matrix)) in zip(document_keys, numbered, strict=True):
            for position, (chunk, vector) in enumerate(zip(chunks, matrix, strict=True)):
                origins.append((number, position))
                rows.append(
                    {
                        "collection": collection,
                        "document_key": document_key,
                        "id": chunk.id,
                        "document_id": document.id,
                        "source": document.source,
                        "position": chunk.position,
                        "text": chunk.text,
                        "metadata": json_copy(chunk.metadata),
                        "embedding": vector,
                    }
                )
        if not rows:
            return [], []
        if self.dialect == "postgresql":
            return copy_chunks(connection, rows), origins
        for row in rows:
            row["embedding"] = np.asarray(row["embedding"], dtype=FLOAT32_LE).tobytes()
        added = list(connection.scalars(chunks_table.insert().returning(chunks_table.c.key, sort_by_parameter_order=True), rows))
        return added, origins

    def read_documents(self, collection: str, sources: Sequence[str], dim: int) -> list[tuple[Document, list[Chunk], np.ndarray]]:
        """See :meth:`DocumentStore.read_documents` (vectors as a float32 matrix per document)."""
        with store_errors(self.url, "read from"), self.engine.connect() as connection:
            stored: dict[str, Any] = {}
            for batch in _batches(list(dict.fromkeys(sources))):
                rows = connection.execute(
                    sa.select(documents_table).where(
                        documents_table.c.collection == collection, documents_table.c.source.in_(batch)
                    )
                ).mappings()
                stored.update((row["source"], row) for row in rows)
            chunks: dict[int, list[Any]] = {row["key"]: [] for row in stored.values()}
            for batch in _batches(list(chunks)):
                query = (
                    sa.select(*self._CHUNK_COLUMNS, chunks_table.c.document_key, chunks_table.c.embedding)
                    .where(chunks_table.c.document_key.in_(batch))
                    .order_by(chunks_table.c.document_key, chunks_table.c.position, chunks_table.c.key)
                )
                for row in connection.execute(query):
                    chunks[row.document_key].append(row)
        out = []
        for source in sources:
            if source not in stored:
                continue
            row = stored[source]
            found = chunks[row["key"]]
            document = Document(
                id=row["id"],
                text="\n".join(c.text for c in found),
                source=row["source"],
                title=row["title"],
                metadata=row["metadata"],
            )
            matrix = np.stack([self._vector(c.embedding) for c in found]) if found else np.zeros((0, dim), np.float32)
            out.append((document, [self._chunk(c) for c in found], matrix))
        return out

    @staticmethod
    def _vector(value: Any) -> np.ndarray:
        if isinstance(value, bytes | memoryview):
            return np.frombuffer(value, dtype=FLOAT32_LE).astype(np.float32)
        return np.asarray(value, dtype=np.float32)

    def delete_documents(self, collection: str, ids: Sequence[str]) -> tuple[int, Change | None]:
        self.require(collection)
        if not ids:
            return 0, None
        with store_errors(self.url, "write to"), write_transaction(self.engine) as connection:
            keys: list[int] = []
            for batch in _batches(list(dict.fromkeys(ids))):
                keys.extend(
                    connection.scalars(
                        sa.select(documents_table.c.key).where(
                            documents_table.c.collection == collection, documents_table.c.id.in_(batch)
                        )
                    )
                )
            if not keys:
                return 0, None
            removed: list[int] = []
            for batch in _batches(keys):
                removed.extend(
                    connection.scalars(sa.select(chunks_table.c.key).where(chunks_table.c.document_key.in_(batch)))
                )
                connection.execute(chunks_table.delete().where(chunks_table.c.document_key.in_(batch)))
                connection.execute(documents_table.delete().where(documents_table.c.key.in_(batch)))
            if self.index is not None:
                self.index.on_write(connection, collection, removed, [], [])
            version = self._bump(connection, collection)
        return len(keys), Change(version, tuple(removed), ())

    @staticmethod
    def _bump(connection: sa.Connection, collection: str) -> int:
        version = connection.scalar(
            collections_table.update()
            .where(collections_table.c.name == collection)
            .values(version=collections_table.c.version + 1)
            .returning(collections_table.c.version)
        )
        return int(version or 0)

    # ----------------------------------------------------------------------- chunks

    _CHUNK_COLUMNS = (
        chunks_table.c.key,
        chunks_table.c.id,
        chunks_table.c.document_id,
        chunks_table.c.text,
        chunks_table.c.position,
        chunks_table.c.metadata,
    )

    def get_chunks(self, collection: str, ids: Sequence[str]) -> list[Chunk]:
        self.require(collection)
        found: dict[str, tuple[int, Chunk]] = {}
        with store_errors(self.url, "read from"), self.engine.connect() as connection:
            for batch in _batches(list(dict.fromkeys(ids))):
                rows = connection.execute(
                    sa.select(*self._CHUNK_COLUMNS).where(
                        chunks_table.c.collection == collection, chunks_table.c.id.in_(batch)
                    )
                )
                for row in rows:
                    if row.id not in found or row.key < found[row.id][0]:
                        found[row.id] = (row.key, self._chunk(row))
        return [found[i][1] for i in ids if i in found]

    def chunks_by_key(self, keys: Sequence[int]) -> dict[int, Chunk]:
        result: dict[int, Chunk] = {}
        with store_errors(self.url, "read from"), self.engine.connect() as connection:
            for batch in _batches(list(keys)):
                for row in connection.execute(sa.select(*self._CHUNK_COLUMNS).where(chunks_table.c.key.in_(batch))):
                    result[row.key] = self._chunk(row)
        return result

    @staticmethod
    def _chunk(row: Any) -> Chunk:
        return Chunk(id=row.id, document_id=row.document_id, text=row.text, position=row.position, metadata=row.metadata)

    def candidate_keys(self, collection: str, node: Node) -> list[int]:
        """The keys of the collection's chunks that the filter selects (the pre-filter)."""
        query = sa.select(chunks_table.c.key).where(chunks_table.c.collection == collection, node_to_sql(node, self._target))
        with store_errors(self.url, "read from"), self.engine.connect() as connection:
            return list(connection.scalars(query))

    def filter_clause(self, node: Node) -> sa.ColumnElement[bool]:
        return node_to_sql(node, self._target)

    def all_keys(self, collection: str) -> np.ndarray:
        with store_errors(self.url, "read from"), self.engine.connect() as connection:
            keys = list(connection.scalars(sa.select(chunks_table.c.key).where(chunks_table.c.collection == collection)))
        return np.asarray(keys, dtype=np.uint64)

    def texts_and_vectors(self, keys: Sequence[int], dim: int) -> tuple[list[str], np.ndarray]:
        """Chunk texts and float32 vectors by key, in the order given (for rebuilding indexes)."""
        texts: dict[int, str] = {}
        vectors: dict[int, np.ndarray] = {}
        with store_errors(self.url, "read from"), self.engine.connect() as connection:
            for batch in _batches(list(keys)):
                query = sa.select(chunks_table.c.key, chunks_table.c.text, chunks_table.c.embedding).where(
                    chunks_table.c.key.in_(batch)
                )
                for row in connection.execute(query):
                    texts[row.key] = row.text
                    vectors[row.key] = self._vector(row.embedding)
        ordered = [int(k) for k in keys]
        matrix = np.stack([vectors[k] for k in ordered]) if ordered else np.zeros((0, dim), np.float32)
        return [texts[k] for k in ordered], matrix.astype(np.float32, copy=False)
