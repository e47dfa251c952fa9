"""Open the exchange store a URL names: the one place that maps URL schemes to backends."""

from __future__ import annotations

from aiestack.errors import StoreError
from aiestack.stores.memory import MemoryExchangeStore
from aiestack.stores.sql import SqlExchangeStore


def open_exchange_store(url: str) -> SqlExchangeStore | MemoryExchangeStore:
    """The store for ``url``, not yet migrated: call ``migrate()`` (then ``ping()``) before use.

    - ``memory://``: in process, gone when the process ends (tests).
    - ``sqlite:///path/to/aiestack.db``: the default; the directory is created if missing.
    - ``postgresql+psycopg://user@host:5432/db`` (``postgresql://`` means the same).

    Raises :class:`StoreError` for a URL that is malformed or names an unsupported database.
    """
    url = url.strip()
    if not url:
        raise StoreError(
            "The store URL is empty.",
            hint="Set store.url (AIESTACK_STORE__URL) to sqlite:///path.db, postgresql+psycopg://... or memory://.",
        )
    if url.split("://", 1)[0].lower() == "memory":
        return MemoryExchangeStore()
    return SqlExchangeStore(url)
