"""Building the cache stage from settings (called by the composition root, :mod:`aiestack.build`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiestack.cache.config import CachePolicy, default_policy, route_policies
from aiestack.cache.confirm import SwapConfirmer
from aiestack.cache.exact import ExactCache
from aiestack.cache.keying import fingerprint_of
from aiestack.cache.semantic import SemanticCache
from aiestack.cache.stage import CacheStage
from aiestack.cache.verify import LexicalVerifier
from aiestack.errors import ConfigError
from aiestack.models.base import EmbeddingModel
from aiestack.monitoring import Metrics
from aiestack.settings import Settings
from aiestack.stores.base import ExchangeStore
from aiestack.stores.cache import CacheBackend
from aiestack.stores.open import StoreFactories, backend_of, offers, open_store
from aiestack.types import Exchange


def build_backend(
    settings: Settings, *, store: ExchangeStore | None, extra: StoreFactories | None = None
) -> CacheBackend:
    """``cache.backend``, opened through the store capability ``cache`` (:func:`~aiestack.stores.open.open_store`).

    ``auto`` picks Redis if a Redis URL is set, else the cache the exchange store's backend offers
    (its SQL database, sharing ``store``'s connections; a plugin's backend), else memory. ``extra``
    are the plugins' store factories.
    """
    cfg = settings.cache
    redis_url = cfg.redis_url or settings.gateway.redis_url
    url = store.url if store is not None else settings.store_url
    kind: str = cfg.backend
    if kind == "auto":
        sql_or_plugin = backend_of(url, extra=extra) != "memory" and offers(url, "cache", extra=extra)
        kind = "redis" if redis_url else "store" if sql_or_plugin else "memory"
    if kind == "redis":
        if not redis_url:
            raise ConfigError(
                "cache.redis_url",
                "cache.backend is redis but no Redis URL is set",
                "set cache.redis_url or gateway.redis_url",
            )
        return open_store(redis_url, "cache", extra=extra, prefix=settings.gateway.redis_prefix)
    if kind == "sql" and backend_of(url, extra=extra) not in ("sqlite", "postgresql"):
        raise ConfigError(
            "cache.backend",
            "the store is not a SQL database",
            'use a SQLite or PostgreSQL store.url, or cache.backend = "memory"',
        )
    if kind in ("sql", "store"):
        return open_store(url, "cache", extra=extra, beside=store)
    return open_store("memory://", "cache", max_entries=cfg.max_entries)


def config_fingerprints(routes: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """A hash of each route's configuration: editing a route (its prompt, model...) invalidates its entries."""
    return {name: fingerprint_of(dict(table)) for name, table in routes.items()}


def cache_policies(settings: Settings) -> dict[str, CachePolicy]:
    """The cache policy of each route (``[routes.NAME.cache]`` over ``[cache]``), validated; for the route plans."""
    return route_policies(settings.cache, {name: table.get("cache", {}) for name, table in settings.routes.items()})


def build_cache_stage(
    settings: Settings,
    *,
    store: ExchangeStore | None,
    policies: Mapping[str, CachePolicy] | None = None,
    embeddings: EmbeddingModel | Callable[[], EmbeddingModel],
    metrics: Metrics | None = None,
    fingerprint: Callable[[str, Exchange], str] | None = None,
    backend: CacheBackend | None = None,
    semantic_ready: Callable[[], bool] | None = None,
    confirm: SwapConfirmer | None = None,
    carry: Sequence[str] = (),
    extra_stores: StoreFactories | None = None,
) -> CacheStage | None:
    """The Cache stage for ``settings``, or None when ``cache.enabled`` is false.

    ``policies`` are the routes' (:func:`cache_policies`; computed here when not given): they decide
    which caches are built, and the route plans carry them to the stage. ``fingerprint(route,
    exchange)`` adds what else invalidates a route's answers (a collection or prompt version); the
    route's config hash is always part of it. ``confirm`` judges word swaps with a second model
    (:mod:`aiestack.cache.confirm`).
    """
    cfg = settings.cache
    if not cfg.enabled:
        return None
    if policies is None:
        policies = cache_policies(settings)
    entries = backend if backend is not None else build_backend(settings, store=store, extra=extra_stores)
    exact = ExactCache(entries) if cfg.exact or any(p.exact for p in policies.values()) else None
    semantic = None
    if cfg.semantic or any(p.semantic for p in policies.values()):
        verifier = LexicalVerifier(substitution_margin=cfg.substitution_margin) if cfg.verify else None
        semantic = SemanticCache(
            entries,
            embeddings,
            threshold=cfg.threshold,
            verifier=verifier,
            confirm=confirm if cfg.verify else None,
            sync_interval_s=cfg.sync_interval_s,
        )
        if not cfg.verify:
            semantic.verifier = None
    hashes = config_fingerprints(settings.routes)

    def route_fingerprint(route: str, ex: Exchange) -> str:
        extra = fingerprint(route, ex) if fingerprint is not None else ""
        return f"{hashes.get(route, '')}:{extra}" if extra else hashes.get(route, "")

    return CacheStage(
        exact,
        semantic,
        default=default_policy(cfg),
        fingerprint=route_fingerprint,
        metrics=metrics,
        semantic_ready=semantic_ready,
        carry=carry,
    )
