"""The PostgreSQL DocumentStore: the shared record tables, full-text search and pgvector HNSW.

- Records: the same tables as the embedded store (migration 0004), one transaction per write.
- Term search: each chunk's ``tsvector`` (``english`` configuration) in ``chunks.tsv`` with a GIN
  index; a query becomes the disjunction of its lexemes and is ranked with ``ts_rank`` (term
  frequency, normalised by 1 + log of the document length). PostgreSQL has no built-in BM25; of
  its rankings, this one scored best on SciFact's train queries (nDCG@10 0.617 against 0.424 for
  ``ts_rank_cd``, whose cover density suits phrase-like queries, not disjunctions), still below
  tantivy's BM25 (``bench/retrieval.py --sections postgres`` reports both).
- Vector search: ``chunks.embedding`` is ``real[]``; each collection gets its own partial HNSW index
  on ``embedding::vector(dim)`` with cosine distance (the dimension is per collection), created with
  the collection. A filtered search lets pgvector's iterative index scan keep looking until it has
  ``k`` rows that pass the filter.

:meth:`migrate` creates the ``vector`` extension (pgvector must be installed on the server) and the
GIN index, which the migrations leave out so the schema migrates on any PostgreSQL.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import UserDefinedType

from aiestack.errors import StoreError
from aiestack.stores.documents import CollectionInfo, Filter, StoredDocument
from aiestack.stores.documents_common import check_k, check_put, check_query_vector, normalize
from aiestack.stores.documents_sql import SqlRecords
from aiestack.stores.filters import parse_filter
from aiestack.stores.sql.engine import create_store_engine, parse_url, safe_url, store_errors
from aiestack.stores.sql.tables import chunks as chunks_table
from aiestack.types import Chunk, Document, Hit

#: Candidates the HNSW scan visits per query (pgvector's default is 40).
EF_SEARCH = 64
#: The disjunction of a query's lexemes, as a tsquery (NULL when it has none).
_TSQUERY = (
    "(SELECT CAST((SELECT string_agg(quote_literal(lexeme), ' | ') "
    "FROM unnest(to_tsvector('english', :query))) AS tsquery) AS q) AS terms"
)


class _Vector(UserDefinedType[Any]):
    """pgvector's ``vector(dim)``, for casts (no pgvector Python package needed)."""

    cache_ok = True

    def __init__(self, dim: int) -> None:
        self.dim = dim

    def get_col_spec(self, **kw: Any) -> str:
        return f"vector({int(self.dim)})"


def _index_name(collection: str) -> str:
    return "ix_chunks_hnsw_" + hashlib.sha256(collection.encode()).hexdigest()[:24]


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class PostgresDocumentStore:
    """Collections in PostgreSQL: tsvector + GIN for terms, pgvector HNSW per collection for vectors."""

    def __init__(self, url: str) -> None:
        self._url = parse_url(url)
        if self._url.get_backend_name() != "postgresql":
            raise StoreError(
                f"The PostgreSQL document store needs a postgresql:// URL, got {safe_url(self._url)}.",
                hint="Use postgresql+psycopg://user@host:5432/db, or the embedded store for SQLite.",
            )
        self.url = safe_url(self._url)
        self._engine = create_store_engine(self._url)
        self._records = SqlRecords(self._engine, self._url)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PostgresDocumentStore({self.url!r})"

    def migrate(self) -> None:
        self._records.migrate()
        with store_errors(self._url, "migrate"), self._engine.begin() as connection:
            try:
                with connection.begin_nested():
                    connection.execute(sa.text("CREATE EXTENSION IF NOT EXISTS vector"))
            except sa.exc.DBAPIError as exc:
                raise StoreError(
                    f"Cannot enable pgvector on {self.url}: {str(getattr(exc, 'orig', exc)).strip().splitlines()[0]}.",
                    hint="Install the pgvector extension on the server (https://github.com/pgvector/pgvector), "
                    "or use the embedded document store.",
                ) from None
            connection.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_chunks_tsv ON chunks USING gin (tsv)"))

    def close(self) -> None:
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
        info, _ = self._records.create_collection(name, tenant, embedding_model, dim, metadata)
        if dim <= 2000:  # pgvector's HNSW limit for vector; larger collections are searched exactly
            with store_errors(self._url, "write to"), self._engine.begin() as connection:
                connection.execute(
                    sa.text(
                        f"CREATE INDEX IF NOT EXISTS {_index_name(name)} ON chunks USING hnsw "
                        f"((embedding::vector({int(dim)})) vector_cosine_ops) WHERE collection = {_literal(name)}"
                    )
                )
        return info

    def get_collection(self, name: str) -> CollectionInfo | None:
        return self._records.get_collection(name)

    def list_collections(self, *, tenant: str | None = None) -> list[CollectionInfo]:
        return self._records.list_collections(tenant)

    def drop_collection(self, name: str) -> bool:
        dropped = self._records.drop_collection(name)
        with store_errors(self._url, "write to"), self._engine.begin() as connection:
            connection.execute(sa.text(f"DROP INDEX IF EXISTS {_index_name(name)}"))
        return dropped

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
        info = self._records.require(collection)
        matrix = normalize(check_put(info, document, chunks, vectors))
        return self._records.put_document(collection, document, chunks, matrix) is not None

    def delete_documents(self, collection: str, ids: Sequence[str]) -> int:
        count, _ = self._records.delete_documents(collection, ids)
        return count

    def get_chunks(self, collection: str, ids: Sequence[str]) -> list[Chunk]:
        return self._records.get_chunks(collection, ids)

    # ----------------------------------------------------------------------- search

    _COLUMNS = "key, id, document_id, text, position, metadata"

    def term_search(self, collection: str, query: str, *, k: int = 10, filter: Filter | None = None) -> list[Hit]:
        check_k(k)
        node = None if filter is None else parse_filter(filter)
        self._records.require(collection)
        statement = (
            sa.select(
                *self._chunk_columns(),
                sa.func.ts_rank(chunks_table.c.tsv, sa.literal_column("terms.q"), 1).label("score"),
            )
            .select_from(chunks_table, sa.text(_TSQUERY))
            .where(chunks_table.c.collection == collection, chunks_table.c.tsv.op("@@")(sa.literal_column("terms.q")))
            .order_by(sa.desc("score"), chunks_table.c.key)
            .limit(k)
        )
        if node is not None:
            statement = statement.where(self._records.filter_clause(node))
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            rows = connection.execute(statement, {"query": query}).all()
        return [Hit(self._chunk(row), float(row.score), "bm25") for row in rows]

    def vector_search(
        self, collection: str, vector: Sequence[float], *, k: int = 10, filter: Filter | None = None
    ) -> list[Hit]:
        check_k(k)
        node = None if filter is None else parse_filter(filter)
        info = self._records.require(collection)
        query = check_query_vector(info, vector)
        literal = "[" + ",".join(repr(float(x)) for x in query) + "]"
        vector_type = _Vector(info.dim)
        distance = sa.cast(chunks_table.c.embedding, vector_type).op("<=>")(
            sa.cast(sa.bindparam("vector", literal, type_=sa.Text), vector_type)
        )
        statement = (
            sa.select(*self._chunk_columns(), (1 - distance).label("score"))
            .where(sa.text(f"collection = {_literal(collection)}"))
            .order_by(distance)
            .limit(k)
        )
        if node is not None:
            statement = statement.where(self._records.filter_clause(node))
        with store_errors(self._url, "read from"), self._engine.begin() as connection:
            connection.execute(sa.text(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, k)}"))
            if node is not None:
                connection.execute(sa.text("SET LOCAL hnsw.iterative_scan = strict_order"))
            rows = connection.execute(statement).all()
        return [Hit(self._chunk(row), float(row.score), "vector") for row in rows]

    @staticmethod
    def _chunk_columns() -> tuple[Any, ...]:
        c = chunks_table.c
        return (c.key, c.id, c.document_id, c.text, c.position, c.metadata)

    @staticmethod
    def _chunk(row: Any) -> Chunk:
        return Chunk(id=row.id, document_id=row.document_id, text=row.text, position=row.position, metadata=row.metadata)
