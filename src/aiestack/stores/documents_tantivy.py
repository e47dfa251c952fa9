"""The term index of the embedded document store: one tantivy index per collection (BM25).

tantivy (Rust, via tantivy-py) answers one BM25 query over SciFact in about 0.1 ms and takes
incremental adds and deletes, committed durably on disk. A chunk is a tantivy document with two
fields: ``key`` (the chunk's integer key in SQLite: a fast field, read back for the hits without
touching the document store) and ``text`` (indexed with term frequencies, not positions, and not
stored: SQLite holds the text).

The analyser is the shared one (:mod:`aiestack.stores.analysis`), registered as this index's
tokenizer; a query goes through the same analyser and becomes a disjunction of term queries, so no
user text is ever parsed as query syntax.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import tantivy

from aiestack.errors import StoreError
from aiestack.stores.analysis import TOKENIZER_NAME, Analyzer

_HEAP_BYTES = 32_000_000


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_unsigned_field("key", stored=False, indexed=True, fast=True)
    builder.add_text_field("text", stored=False, tokenizer_name=TOKENIZER_NAME, index_option="freq")
    return builder.build()


class TermIndex:
    """One collection's tantivy index: add and delete chunks by key, commit, search."""

    def __init__(self, path: Path, analyzer: Analyzer | None = None) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._schema = _schema()
        self._index = tantivy.Index(self._schema, path=str(path), reuse=True)
        self._analyzer = analyzer or Analyzer()
        self._index.register_tokenizer(TOKENIZER_NAME, self._analyzer.tantivy)
        self._writer: tantivy.IndexWriter | None = None
        self._searcher = self._index.searcher()

    def acquire(self) -> None:
        """Take the writer lock now (StoreError if another process holds it)."""
        self._write()

    def _write(self) -> tantivy.IndexWriter:
        if self._writer is None:
            try:
                self._writer = self._index.writer(heap_size=_HEAP_BYTES, num_threads=1)
            except ValueError as exc:
                raise StoreError(
                    f"Cannot write to the term index in {self._path}: {exc}.",
                    hint="Another process is writing to this collection (the embedded store takes one writer "
                    "at a time): wait for it to finish, or use the PostgreSQL store for concurrent writers.",
                ) from None
        return self._writer

    def writable(self) -> bool:
        """Whether this index can be written here (no other live process holds its writer lock)."""
        try:
            self._write()
        except StoreError:
            return False
        return True

    def add(self, keys: Sequence[int], texts: Sequence[str]) -> None:
        writer = self._write()
        for key, text in zip(keys, texts, strict=True):
            document = tantivy.Document()
            document.add_unsigned("key", int(key))
            document.add_text("text", text)
            writer.add_document(document)

    def delete(self, keys: Sequence[int]) -> None:
        if not keys:
            return
        self._write().delete_documents_by_query(tantivy.Query.term_set_query(self._schema, "key", [int(k) for k in keys]))

    def clear(self) -> None:
        self._write().delete_all_documents()

    def commit(self) -> None:
        """Make the changes durable and visible to the next search."""
        if self._writer is None:
            return
        self._writer.commit()
        # Release the writer (and its lock) until the next change, so that another process (a CLI
        # ingest beside a running server) can write between this process's batches.
        self._writer.wait_merging_threads()
        self._writer = None
        self._index.reload()
        self._searcher = self._index.searcher()

    def refresh(self) -> None:
        """See what another process committed."""
        self._index.reload()
        self._searcher = self._index.searcher()

    @property
    def count(self) -> int:
        return int(self._searcher.num_docs)

    def search(self, query: str, limit: int, keys: Sequence[int] | None = None) -> list[tuple[int, float]]:
        """(key, BM25 score) best first; only among ``keys`` when given."""
        terms = self._analyzer.analyze(query)
        if not terms or limit < 1:
            return []
        parsed = tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(self._schema, "text", term, "freq")) for term in terms]
        )
        if keys is not None:
            if not keys:
                return []
            allowed = tantivy.Query.term_set_query(self._schema, "key", [int(k) for k in keys])
            parsed = tantivy.Query.boolean_query(
                [(tantivy.Occur.Must, parsed), (tantivy.Occur.Must, tantivy.Query.const_score_query(allowed, 0.0))]
            )
        searcher = self._searcher
        hits = searcher.search(parsed, limit, count=False).hits
        if not hits:
            return []
        found = searcher.fast_field_values("key", [address for _, address in hits])
        return [(int(key or 0), float(score)) for (score, _), key in zip(hits, found, strict=True)]

    def close(self) -> None:
        """Release the writer and its lock, dropping uncommitted changes (searching still works)."""
        if self._writer is not None:
            self._writer.rollback()
            self._writer.wait_merging_threads()
            self._writer = None
