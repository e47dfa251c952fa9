"""The contextual-retrieval cache on SQL (SQLite or PostgreSQL): the ``context_cache`` table of 0004.

Implements :class:`~aiestack.stores.context_cache.ContextCache`: contexts keyed by (model, ``document_hash:chunk_hash``).
Each ``put_contexts`` is one transaction, so an interrupted ingest leaves whole rows or none.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from aiestack.stores.sql.engine import create_store_engine, parse_url, store_errors, write_transaction
from aiestack.stores.sql.tables import context_cache

_IN_CHUNK = 500


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SqlContextCache:
    """Situating contexts in the store's database (migrate the store first: the table comes with 0004)."""

    def __init__(self, url: str) -> None:
        self._url = parse_url(url)
        self._engine = create_store_engine(self._url)

    def get_contexts(self, model: str, keys: Sequence[str]) -> dict[str, str]:
        wanted = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        c = context_cache.c
        with store_errors(self._url, "read from"), self._engine.connect() as connection:
            for chunk in _chunks(wanted, _IN_CHUNK):
                query = sa.select(c.key, c.context).where(c.model == model, c.key.in_(chunk))
                found.update({key: text for key, text in connection.execute(query)})
        return found

    def put_contexts(self, model: str, items: Mapping[str, str]) -> None:
        if not items:
            return
        now = time.time()
        rows = [
            {"model": model, "key": key, "context": text, "created_at": now} for key, text in items.items()
        ]
        insert: Any = (postgresql if self._engine.dialect.name == "postgresql" else sqlite).insert(
            context_cache
        )
        statement = insert.on_conflict_do_update(
            index_elements=[context_cache.c.model, context_cache.c.key],
            set_={"context": insert.excluded.context, "created_at": insert.excluded.created_at},
        )
        with store_errors(self._url, "write contexts to"), write_transaction(self._engine) as connection:
            connection.execute(statement, rows)

    def close(self) -> None:
        self._engine.dispose()
