"""Open the DocumentStore a URL names: the one place that maps URL schemes to document backends."""

from __future__ import annotations

from pathlib import Path

from aiestack.errors import StoreError
from aiestack.stores.documents import DocumentStore
from aiestack.stores.sql.engine import parse_url


def open_document_store(url: str, *, index_dir: str | Path | None = None) -> DocumentStore:
    """The document store for ``url``, not yet migrated: call ``migrate()`` before use.

    - ``memory://``: :class:`~aiestack.stores.documents_memory.MemoryDocumentStore` (tests).
    - ``sqlite:///path/aiestack.db``: :class:`~aiestack.stores.documents_embedded.EmbeddedDocumentStore`,
      the default, with its indexes in ``index_dir`` (default: ``indexes/`` beside the database).
    - ``postgresql+psycopg://...``: :class:`~aiestack.stores.documents_postgres.PostgresDocumentStore`
      (needs pgvector on the server).
    """
    url = url.strip()
    if url.split("://", 1)[0].lower() == "memory":
        from aiestack.stores.documents_memory import MemoryDocumentStore

        return MemoryDocumentStore()
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        from aiestack.stores.documents_embedded import EmbeddedDocumentStore

        return EmbeddedDocumentStore(url, index_dir=index_dir)
    if index_dir is not None:
        raise StoreError(
            "index_dir applies to the embedded (SQLite) document store only.",
            hint="Leave it out for PostgreSQL: its indexes live in the database.",
        )
    from aiestack.stores.documents_postgres import PostgresDocumentStore

    return PostgresDocumentStore(url)
