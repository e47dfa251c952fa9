"""Open a storage capability at a URL: the one place that maps URL schemes to backends.

``open_store(url, capability)`` returns the implementation of ``capability`` for the backend the URL
names. Capabilities and the backends that implement them:

=================  ===========  ===============================  ===========  ========
capability         ``memory``   ``sqlite``                       ``postgres`` ``redis``
=================  ===========  ===============================  ===========  ========
``exchanges``      yes          yes                              yes          --
``documents``      yes          yes (embedded: tantivy, usearch) yes (pgvector) --
``cache``          yes          yes                              yes          yes
``context_cache``  yes          yes                              yes          --
``kv``             yes          --                               --           yes
``queries``        yes (scan)   yes                              yes          --
=================  ===========  ===============================  ===========  ========

``queries`` (the console's, :mod:`aiestack.stores.queries`) and ``cache`` are opened *beside* an open
exchange store (``beside=store``): the SQL store answers the queries itself, the memory store by a
scan. Plugins add backends for any capability through the ``register_stores`` hook: pass what
they registered as ``extra``. Nothing is
migrated or connected here: call ``migrate()`` (SQL stores) before use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, overload

from aiestack.errors import StoreError

if TYPE_CHECKING:
    from aiestack.stores.base import ExchangeStore
    from aiestack.stores.cache import CacheBackend
    from aiestack.stores.context_cache import ContextCache
    from aiestack.stores.documents import DocumentStore
    from aiestack.stores.kv import KV
    from aiestack.stores.queries import ExchangeQueries

Capability = Literal["exchanges", "documents", "cache", "context_cache", "kv", "queries"]
CAPABILITIES: tuple[Capability, ...] = ("exchanges", "documents", "cache", "context_cache", "kv", "queries")

StoreFactory = Callable[..., Any]
"""(url, **options) → the capability's implementation (not yet migrated)."""

StoreFactories = Mapping[tuple[str, str], StoreFactory]
"""(scheme, capability) → factory: the backends plugins registered (``register_stores``)."""


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """A backend for one capability, chosen by URL scheme (``scheme://...``), as plugins register it."""

    scheme: str
    capability: Capability
    factory: StoreFactory


_URL_HELP = (
    "Use sqlite:///path/to/aiestack.db, postgresql+psycopg://user@host:5432/dbname or memory:// "
    "(set store.url in aiestack.toml or AIESTACK_STORE__URL)."
)


@overload
def open_store(url: str, capability: Literal["exchanges"], *, extra: StoreFactories | None = ..., **options: Any) -> ExchangeStore: ...
@overload
def open_store(url: str, capability: Literal["documents"], *, extra: StoreFactories | None = ..., **options: Any) -> DocumentStore: ...
@overload
def open_store(url: str, capability: Literal["cache"], *, extra: StoreFactories | None = ..., **options: Any) -> CacheBackend: ...
@overload
def open_store(url: str, capability: Literal["context_cache"], *, extra: StoreFactories | None = ..., **options: Any) -> ContextCache: ...
@overload
def open_store(url: str, capability: Literal["kv"], *, extra: StoreFactories | None = ..., **options: Any) -> KV: ...
@overload
def open_store(url: str, capability: Literal["queries"], *, extra: StoreFactories | None = ..., **options: Any) -> ExchangeQueries: ...
def open_store(
    url: str, capability: Capability, *, extra: StoreFactories | None = None, **options: Any
) -> Any:
    """The ``capability`` store for ``url``, not yet migrated.

    - ``memory://``: in process, gone when the process ends (tests).
    - ``sqlite:///path/to/aiestack.db``: the default; the directory is created if missing.
    - ``postgresql+psycopg://user@host:5432/db`` (``postgresql://`` means the same).
    - ``redis://host:6379/0`` (``rediss://`` with TLS): the cache and the KV counters.

    ``options`` go to the backend: ``index_dir`` (embedded documents), ``postings_cache_bytes``
    (PostgreSQL documents: the BM25 postings cache's bound), ``hnsw_build_memory_mb`` (PostgreSQL
    documents: the HNSW build's memory cap), ``prefix`` (Redis key prefix),
    ``max_entries`` (memory cache), ``beside`` (the open exchange store at ``url``: whose connections
    a SQL cache shares, and which the queries read). ``extra`` maps (scheme, capability) to plugin factories.

    Raises :class:`StoreError` for a URL that is malformed, names an unsupported backend, or a
    backend that does not offer ``capability``.
    """
    url = url.strip()
    if not url:
        raise StoreError(
            "The store URL is empty.",
            hint="Set store.url (AIESTACK_STORE__URL) to sqlite:///path.db, postgresql+psycopg://... or memory://.",
        )
    if capability not in CAPABILITIES:
        raise StoreError(f"There is no storage capability {capability!r}.", hint=f"Use one of {', '.join(CAPABILITIES)}.")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    factory = (extra or {}).get((scheme, capability))
    if factory is not None:
        return factory(url, **options)
    backend = _backend(scheme, url)
    opener = _OPENERS.get((backend, capability))
    if opener is None:
        offered = sorted(c for b, c in _OPENERS if b == backend)
        raise StoreError(
            f"The {backend} backend cannot hold the {capability.replace('_', ' ')} (it offers: {', '.join(offered)}).",
            hint=_hint(capability),
        )
    return opener(url, **options)


def backend_of(url: str, *, extra: StoreFactories | None = None) -> str:
    """The backend a URL names: ``memory``, ``sqlite``, ``postgresql``, ``redis``, or a plugin's scheme.

    Raises :class:`StoreError` for a URL no built-in backend or plugin understands.
    """
    scheme = url.strip().split("://", 1)[0].lower() if "://" in url else ""
    if any(s == scheme for s, _ in (extra or {})):
        return scheme
    return _backend(scheme, url.strip())


def offers(url: str, capability: Capability, *, extra: StoreFactories | None = None) -> bool:
    """Whether :func:`open_store` can open ``capability`` at ``url`` (a built-in backend or a plugin's)."""
    backend = backend_of(url, extra=extra)
    return (backend, capability) in (extra or {}) or (backend, capability) in _OPENERS


def _backend(scheme: str, url: str) -> str:
    if scheme == "memory":
        return "memory"
    if scheme in ("redis", "rediss"):
        return "redis"
    from aiestack.stores.sql.engine import parse_url

    return str(parse_url(url).get_backend_name())  # sqlite or postgresql; anything else raises


def _hint(capability: Capability) -> str:
    if capability == "kv":
        return "Set gateway.redis_url to a redis:// URL, or leave it empty for in-process counters."
    if capability == "cache":
        return "Use a redis://, SQL or memory:// URL (cache.redis_url, store.url)."
    return _URL_HELP


# --------------------------------------------------------------------------- built-in backends


def _exchanges_memory(url: str) -> ExchangeStore:
    from aiestack.stores.exchanges_memory import MemoryExchangeStore

    return MemoryExchangeStore()


def _exchanges_sql(url: str) -> ExchangeStore:
    from aiestack.stores.exchanges_sql import SqlExchangeStore

    return SqlExchangeStore(url)


def _documents_memory(url: str) -> DocumentStore:
    from aiestack.stores.documents_memory import MemoryDocumentStore

    return MemoryDocumentStore()


def _documents_sqlite(url: str, *, index_dir: str | Path | None = None) -> DocumentStore:
    from aiestack.stores.documents_embedded import EmbeddedDocumentStore

    return EmbeddedDocumentStore(url, index_dir=index_dir)


def _documents_postgres(
    url: str,
    *,
    index_dir: str | Path | None = None,
    postings_cache_bytes: int | None = None,
    hnsw_build_memory_mb: int | None = None,
) -> DocumentStore:
    if index_dir is not None:
        raise StoreError(
            "index_dir applies to the embedded (SQLite) document store only.",
            hint="Leave it out for PostgreSQL: its indexes live in the database.",
        )
    from aiestack.stores.documents_postgres import PostgresDocumentStore

    options: dict[str, int] = {}
    if postings_cache_bytes is not None:
        options["postings_cache_bytes"] = postings_cache_bytes
    if hnsw_build_memory_mb is not None:
        options["hnsw_build_memory_mb"] = hnsw_build_memory_mb
    return PostgresDocumentStore(url, **options)


def _cache_memory(url: str, *, max_entries: int = 100_000) -> CacheBackend:
    from aiestack.stores.cache_memory import MemoryCacheBackend

    return MemoryCacheBackend(max_entries=max_entries)


def _cache_sql(url: str, *, beside: object | None = None) -> CacheBackend:
    from aiestack.stores.cache_sql import SqlCacheBackend
    from aiestack.stores.exchanges_sql import SqlExchangeStore

    if isinstance(beside, SqlExchangeStore):
        return SqlCacheBackend(beside.engine)  # the exchange store disposes of its engine
    return SqlCacheBackend.open(url)


def _cache_redis(url: str, *, prefix: str = "aiestack:") -> CacheBackend:
    try:
        from aiestack.stores.cache_redis import RedisCacheBackend
    except ImportError:
        raise StoreError("The redis package is not installed.", hint="pip install 'aiestack[redis]'") from None
    return RedisCacheBackend(url, prefix=prefix)


def _context_cache_memory(url: str) -> ContextCache:
    from aiestack.stores.context_cache_memory import MemoryContextCache

    return MemoryContextCache()


def _context_cache_sql(url: str) -> ContextCache:
    from aiestack.stores.context_cache_sql import SqlContextCache

    return SqlContextCache(url)


def _kv_memory(url: str, *, prefix: str = "") -> KV:  # one process's counters need no namespace
    from aiestack.stores.kv_memory import MemoryKV

    return MemoryKV()


def _kv_redis(url: str, *, prefix: str = "aiestack:") -> KV:
    try:
        from aiestack.stores.kv_redis import RedisKV
    except ImportError:
        raise StoreError("The redis package is not installed.", hint="pip install 'aiestack[redis]'") from None
    return RedisKV(url, prefix=prefix)


def _queries(url: str, *, beside: ExchangeStore | None = None) -> ExchangeQueries:
    from aiestack.stores.queries import exchange_queries

    if beside is None:
        raise StoreError(
            "The exchange queries are opened beside an open exchange store.",
            hint='Pass it: open_store(store.url, "queries", beside=store).',
        )
    return exchange_queries(beside)


_OPENERS: Mapping[tuple[str, str], StoreFactory] = MappingProxyType({
    ("memory", "exchanges"): _exchanges_memory,
    ("sqlite", "exchanges"): _exchanges_sql,
    ("postgresql", "exchanges"): _exchanges_sql,
    ("memory", "documents"): _documents_memory,
    ("sqlite", "documents"): _documents_sqlite,
    ("postgresql", "documents"): _documents_postgres,
    ("memory", "cache"): _cache_memory,
    ("sqlite", "cache"): _cache_sql,
    ("postgresql", "cache"): _cache_sql,
    ("redis", "cache"): _cache_redis,
    ("memory", "context_cache"): _context_cache_memory,
    ("sqlite", "context_cache"): _context_cache_sql,
    ("postgresql", "context_cache"): _context_cache_sql,
    ("memory", "kv"): _kv_memory,
    ("redis", "kv"): _kv_redis,
    ("memory", "queries"): _queries,
    ("sqlite", "queries"): _queries,
    ("postgresql", "queries"): _queries,
})
