"""A plugin may provide every storage capability (``register_stores``): each one it registers passes
that capability's conformance suite when opened through ``open_store`` with the plugin's factories,
and a stack whose URLs name the plugin's scheme opens every capability from the plugin."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aiestack.build import open_stack
from aiestack.cache.stage import CacheStage
from aiestack.hookspecs import StoreSpec, hookimpl
from aiestack.plugins import collect_plugins, plugin_manager
from aiestack.settings import Settings
from aiestack.stores.base import ExchangeStore
from aiestack.stores.cache import CacheBackend
from aiestack.stores.cache_memory import MemoryCacheBackend
from aiestack.stores.context_cache_memory import MemoryContextCache
from aiestack.stores.documents import DocumentStore
from aiestack.stores.documents_memory import MemoryDocumentStore
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.stores.kv import KV
from aiestack.stores.kv_memory import MemoryKV
from aiestack.stores.open import StoreFactories, open_store
from aiestack.stores.queries import ScanQueries
from aiestack.testing.cache_conformance import CacheBackendConformance, ContextCacheConformance, ManualClock
from aiestack.testing.conformance import ExchangeStoreConformance, KVConformance
from aiestack.testing.documents import DocumentStoreConformance
from aiestack.types import ChatRequest, Message

pytestmark = pytest.mark.unit


class PlugExchanges(MemoryExchangeStore):
    url = "plug://db"


class PlugQueries(ScanQueries):
    """The plugin's own queries (a scan, told apart by its type)."""


class PlugStores:
    """A plugin backend, ``plug://``, for every capability; it records what was opened, with which options."""

    def __init__(self) -> None:
        self.opened: list[tuple[str, str, tuple[str, ...]]] = []

    def _factory(self, capability: str, build: Callable[..., Any]) -> Callable[..., Any]:
        def factory(url: str, **options: Any) -> Any:
            self.opened.append((capability, url, tuple(sorted(options))))
            return build(**options)

        return factory

    @hookimpl
    def register_stores(self, register: Callable[[StoreSpec], None]) -> None:
        register(StoreSpec("plug", "exchanges", self._factory("exchanges", PlugExchanges)))
        register(StoreSpec("plug", "documents", self._factory("documents", MemoryDocumentStore)))
        register(StoreSpec("plug", "cache", self._factory(
            "cache", lambda clock=None, **_: MemoryCacheBackend(**({"clock": clock} if clock else {}))
        )))
        register(StoreSpec("plug", "context_cache", self._factory("context_cache", MemoryContextCache)))
        register(StoreSpec("plug", "kv", self._factory("kv", lambda **_: MemoryKV())))
        register(StoreSpec("plug", "queries", self._factory("queries", lambda beside: PlugQueries(beside))))


def _factories(plugin: PlugStores | None = None) -> StoreFactories:
    return collect_plugins(plugin_manager([plugin or PlugStores()], entry_points=False)).stores


class TestPluginExchangeStore(ExchangeStoreConformance):
    @pytest.fixture
    def store(self) -> ExchangeStore:
        store = open_store("plug://db", "exchanges", extra=_factories())
        store.migrate()
        return store


class TestPluginDocumentStore(DocumentStoreConformance):
    @pytest.fixture
    def store(self) -> DocumentStore:
        return open_store("plug://db", "documents", extra=_factories())


class TestPluginCacheBackend(CacheBackendConformance):
    @pytest.fixture
    def cache_backend(self, clock: ManualClock) -> CacheBackend:
        return open_store("plug://db", "cache", extra=_factories(), clock=clock)


class TestPluginContextCache(ContextCacheConformance):
    @pytest.fixture
    def context_cache(self) -> Any:
        return open_store("plug://db", "context_cache", extra=_factories())


class TestPluginKV(KVConformance):
    @pytest.fixture
    def kv(self) -> KV:
        return open_store("plug://counters", "kv", extra=_factories())


async def test_a_stack_on_the_plugins_urls_opens_every_capability_from_the_plugin(tmp_path: Path) -> None:
    plugin = PlugStores()
    settings = Settings.model_validate({
        "data_dir": tmp_path,
        "embedded_model": False,
        "default_model": "fake",
        "models": {"fake": {"provider": "fake"}},
        "store": {"url": "plug://db"},
        "guards": {"enabled": False},
        "gateway": {"redis_url": "plug://counters"},
    })
    async with open_stack(settings, plugins=[plugin]) as stack:
        await stack.chat(ChatRequest(model="fake", messages=(Message("user", "hello"),)))
        assert isinstance(stack.store, PlugExchanges)
        assert isinstance(stack.queries, PlugQueries)
        assert isinstance(stack.documents, MemoryDocumentStore)
        assert isinstance(stack.resources.context_cache, MemoryContextCache)
        assert isinstance(stack.kv, MemoryKV)
        cache = next(s for s in stack.pipeline.stages if isinstance(s, CacheStage))
        assert cache.exact is not None and isinstance(cache.exact.backend, MemoryCacheBackend)
    opened = {(capability, url) for capability, url, _ in plugin.opened}
    assert opened == {
        ("exchanges", "plug://db"), ("queries", "plug://db"), ("documents", "plug://db"),
        ("context_cache", "plug://db"), ("kv", "plug://counters"), ("cache", "plug://counters"),
    }
    assert ("queries", "plug://db", ("beside",)) in plugin.opened  # opened beside the exchange store
