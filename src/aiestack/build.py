"""The composition root: settings → store, writer, tracing, metrics, models, pipeline.

This is the only module that knows every wing. The server and the CLI call :func:`open_stack`;
the wings never import this module. Everything is built once and owned by the :class:`Stack`;
nothing is global, so two stacks in one process (tests do this) never see each other.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from aiestack.cache.config import CachePolicy, default_policy
from aiestack.cache.confirm import SwapConfirmer
from aiestack.cache.setup import build_cache_stage, cache_policies
from aiestack.datasets.dicl import Dicl, DiclPlan, build_dicl_routes
from aiestack.errors import AiestackError, ConfigError
from aiestack.feedback.signals import Signals
from aiestack.gateway.breaker import BreakerBoard
from aiestack.gateway.generate import Generate
from aiestack.gateway.keys import ADMIN_TENANT, Authenticator, KeyService
from aiestack.gateway.limits import CostEstimate, Limits
from aiestack.gateway.routes import RouteAttempts, RouteTable, build_route_table, route_plans
from aiestack.gateway.semantic_router import build_route_stage
from aiestack.guardrails import Guardrails, Guards, TraceRedactor, build_guardrails
from aiestack.hookspecs import MetricSpec, ProviderSpec, ToolSpec
from aiestack.models.base import ChatModel, EmbeddingModel, Health
from aiestack.models.pricing import Price, PriceTable
from aiestack.models.registry import ModelEntry, ModelRegistry
from aiestack.models.static_embeddings import StaticEmbeddings
from aiestack.monitoring import Metrics
from aiestack.pipeline import Pipeline, Stage
from aiestack.plans import RoutePlans
from aiestack.plugins import Plugins, collect_plugins, plugin_manager
from aiestack.prompts.registry import PromptRegistry, PromptSpec, choose
from aiestack.prompts.stage import Prompt, bucket, route_prompt_specs
from aiestack.resources import Resources
from aiestack.sampling.config import SamplingPlan, build_sampling_routes
from aiestack.sampling.stage import Sampling
from aiestack.settings import EMBEDDED_MODEL, Settings, config_error, load_settings
from aiestack.sidecalls import SideCalls
from aiestack.stores.base import EmbeddingCacheStore, ExchangeStore, KeyStore, SpendSource, UsageStore
from aiestack.stores.context_cache import ContextCache
from aiestack.stores.datasets import DatasetStore
from aiestack.stores.documents import DocumentStore
from aiestack.stores.feedback import FeedbackStore
from aiestack.stores.kv import KV
from aiestack.stores.open import StoreFactories, backend_of, offers, open_store
from aiestack.stores.prompts import PROMPT_LABEL_ATTR, PROMPT_NAME_ATTR, PROMPT_VERSION_ATTR, PromptStore
from aiestack.stores.queries import ExchangeQueries, exchange_queries
from aiestack.stores.writer import BatchWriter
from aiestack.tracing import Tracing, current_exchange
from aiestack.tracing.stage import Trace
from aiestack.types import ChatRequest, Exchange, Usage

if TYPE_CHECKING:
    from aiestack.context.stage import CheckContext, Context


@dataclass
class Stack:
    """Everything a running aiestack holds. Close it (``aclose``) to flush traces and free models."""

    settings: Settings
    store: ExchangeStore
    writer: BatchWriter
    tracing: Tracing
    metrics: Metrics
    models: ModelRegistry
    prices: PriceTable
    pipeline: Pipeline
    routes: RouteTable
    breakers: BreakerBoard
    kv: KV
    keys: KeyService
    auth: Authenticator
    resources: Resources  # the embeddings and stores the stages share, built before them
    queries: ExchangeQueries  # what the console reads: the store's own queries (SQL), a plugin's, or a scan
    side_calls: SideCalls  # the one seam for the models the wings call for their own work
    prompts: PromptRegistry | None = None  # None: the store cannot hold prompts
    signals: Signals | None = None  # None: implicit feedback is off
    limits: Limits | None = None  # the keys' limits and budgets, for calls outside the chat pipeline
    #: The tools plugins registered (``register_tools``), by name: what an agent may call.
    tools: Mapping[str, ToolSpec] = field(default_factory=dict)
    #: The eval metrics plugins registered (``register_metrics``), by name: suites may name them.
    eval_metrics: Mapping[str, MetricSpec] = field(default_factory=dict)
    #: ``[agents.NAME]``, validated (:mod:`aiestack.agents.config`; ``make_agent`` builds one).
    agent_specs: Mapping[str, Any] = field(default_factory=dict)
    #: The live connections to the agents' MCP servers (:class:`aiestack.agents.mcp_agents.McpPool`),
    #: made on an agent's first run by ``open_agent``; closed by :meth:`aclose`.
    mcp: Any = None
    _closed: bool = field(default=False, repr=False)

    @property
    def embeddings(self) -> EmbeddingModel:
        """The configured embedding model, built on first use (loading it takes a moment)."""
        return self.resources.embeddings

    @property
    def batch_embeddings(self) -> EmbeddingModel:
        """The embedding model for batch work (ingestion): on Ray when ``[compute] ray_address`` is set,
        else :attr:`embeddings` itself."""
        return self.resources.batch_embeddings

    @property
    def documents(self) -> DocumentStore:
        """The document store (collections, chunks, term and vector indexes), opened and migrated on first use."""
        return self.resources.documents

    async def warm(self) -> None:
        """Load now what a first request would otherwise wait for: the embedding model's weights, when a wing uses it."""
        await self.resources.warm()
        for stage in self.pipeline.stages:
            warm = getattr(stage, "warm", None)  # a stage with a model of its own (the cache's embedder)
            if warm is not None:
                await warm()

    async def run(self, exchange: Exchange) -> Exchange:
        """Send one exchange through the pipeline."""
        return await self.pipeline(exchange)

    async def chat(self, request: ChatRequest, **exchange_fields: Any) -> Exchange:
        """Send one request through the pipeline (``model`` empty means the default model)."""
        if not request.model:
            from dataclasses import replace

            request = replace(request, model=self.settings.default_model)
        plans = self.pipeline.plans
        if plans is not None and "plan" not in exchange_fields:  # planned here: the pipeline need not copy the exchange
            exchange_fields["plan"] = plans.for_name(request.model)
        return await self.pipeline(Exchange(request=request, **exchange_fields))

    def native_tools(self, model: str) -> bool:
        """Whether ``model`` (a model or a route: every model it may reach) takes the OpenAI ``tools`` parameter.

        A provider says it cannot with ``native_tools = False`` (the embedded llama_cpp model); agents
        then use the grammar-constrained text protocol.
        """
        name = model or self.settings.default_model
        plan = self.pipeline.plans.for_name(name) if self.pipeline.plans is not None else None
        attempts = plan.part(RouteAttempts) if plan is not None else None
        names = [a.model for a in attempts.order(random.Random(0))] if attempts is not None else [name]
        return all(getattr(self.models.resolve(n).provider, "native_tools", True) for n in names if n in self.models)

    async def check_models(self) -> dict[str, Health]:
        """Whether each configured model can be reached now (concurrently, each bounded in time)."""

        async def one(entry: ModelEntry) -> Health:
            try:
                return await asyncio.wait_for(entry.provider.check(entry.upstream), timeout=30)
            except TimeoutError:
                return Health(ok=False, detail="no answer within 30 s")
            except Exception as exc:  # a check must report, not crash the listing
                return Health(ok=False, detail=str(exc))

        entries = list(self.models)
        results = await asyncio.gather(*(one(e) for e in entries))
        return {e.name: h for e, h in zip(entries, results, strict=True)}

    async def aclose(self) -> None:
        """Flush traces and exchanges, close providers and the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.signals is not None:  # store the implicit feedback still queued, stop its thread
                await self.signals.aclose()
            if self.mcp is not None:  # the agents' MCP servers: stdio processes end, HTTP sessions close
                await self.mcp.aclose()
            await self.models.aclose()
            await self.resources.aclose()  # embedding models (a local Ray instance), then the document store
            await self.kv.aclose()
            for stage in self.pipeline.stages:  # stages that hold connections (the cache's Redis)
                closer = getattr(stage, "aclose", None)
                if closer is not None:
                    await closer()
        finally:
            self.tracing.shutdown()
            await asyncio.to_thread(self.writer.close)
            self.store.close()


def build_models(
    settings: Settings,
    specs: Mapping[str, ProviderSpec],
    *,
    env: Mapping[str, str] | None = None,
    extra: Iterable[ModelEntry] = (),
) -> ModelRegistry:
    """Validate each ``[models.NAME]`` table against its provider's config and build the provider."""
    env = os.environ if env is None else env
    registry = ModelRegistry(extra)
    tables: dict[str, dict[str, Any]] = {}
    if settings.embedded_model and EMBEDDED_MODEL not in settings.models:
        tables[EMBEDDED_MODEL] = {"provider": "llama_cpp"}
    tables.update(settings.models)
    for name, table in tables.items():
        spec = specs.get(str(table["provider"]))
        if spec is None:
            raise ConfigError(
                f"models.{name}.provider",
                f"unknown provider {table['provider']!r}",
                f"use one of {', '.join(sorted(specs))} (or install the plugin that provides it)",
            )
        try:
            cfg = spec.config.model_validate(table)
        except ValidationError as exc:
            raise config_error(exc, spec.config, source="aiestack.toml", prefix=f"models.{name}") from None
        upstream = spec.upstream(name, cfg) if spec.upstream else name
        provider: ChatModel = spec.factory(name, cfg, env)
        local = spec.local or bool(getattr(cfg, "local", False))
        registry.add(ModelEntry(name=name, provider=provider, upstream=upstream, local=local))
    return registry


def build_routes(settings: Settings, registry: ModelRegistry) -> RouteTable:
    """Validate ``[routes.NAME]`` against the models; ``default_model`` may name a model or a route."""
    routes = build_route_table(settings.routes, registry)
    if settings.default_model not in registry and settings.default_model not in routes:
        names = [*(e.name for e in registry), *routes.names]
        raise ConfigError(
            "default_model",
            f"{settings.default_model!r} is not a configured model or route",
            f"set default_model to one of {', '.join(names) or '(none configured)'}",
        )
    return routes


def build_embeddings(settings: Settings, store: object) -> EmbeddingModel:
    """The embedding model from ``[embeddings]``, cached by (model, text hash) in the store if asked."""
    from aiestack.models.embeddings_open import open_embedding_model

    cfg = settings.embeddings
    model = open_embedding_model(**cfg.model_dump())
    if cfg.cache and isinstance(store, EmbeddingCacheStore):
        from aiestack.models.embedding_cache import CachedEmbeddings

        return CachedEmbeddings(model, store)
    return model


def build_batch_embeddings(settings: Settings, store: object) -> EmbeddingModel:
    """The ``[embeddings]`` model run by the ``[compute]`` batch runner (cached in the store like the other)."""
    from aiestack.batch import open_runner
    from aiestack.models.embeddings_batch import RunnerEmbeddings

    model: EmbeddingModel = RunnerEmbeddings(open_runner(settings.compute), settings.embeddings.model_dump())
    if settings.embeddings.cache and isinstance(store, EmbeddingCacheStore):
        from aiestack.models.embedding_cache import CachedEmbeddings

        return CachedEmbeddings(model, store)
    return model


def build_documents(settings: Settings, extra: StoreFactories | None = None) -> DocumentStore:
    """The document store beside the exchange store: embedded (SQLite + indexes in the data dir), PostgreSQL,
    or a plugin's (``extra``: the plugins' store factories)."""
    options: dict[str, Any] = {}
    scheme = settings.store_url.split("://", 1)[0].lower()
    if backend_of(settings.store_url, extra=extra) == "postgresql" and (scheme, "documents") not in (extra or {}):
        options["postings_cache_bytes"] = settings.store.postings_cache_mb * 2**20
        options["hnsw_build_memory_mb"] = settings.store.hnsw_build_memory_mb
    store = open_store(settings.store_url, "documents", extra=extra, **options)
    store.migrate()
    return store


def build_context_cache(settings: Settings, extra: StoreFactories | None = None) -> ContextCache:
    """Where contextual retrieval keeps its contexts: the store's database (migrated), memory for memory://,
    or a plugin's backend."""
    return open_store(settings.store_url, "context_cache", extra=extra)


def build_resources(settings: Settings, store: ExchangeStore, extra: StoreFactories | None = None) -> Resources:
    """The embeddings, document store and context cache the stages share, each opened on first use
    (``extra``: the plugins' store factories, for a ``store.url`` a plugin serves)."""
    return Resources(
        embeddings=lambda: build_embeddings(settings, store),
        documents=lambda: build_documents(settings, extra),
        context_cache=lambda: build_context_cache(settings, extra),
        batch_embeddings=(lambda: build_batch_embeddings(settings, store)) if settings.compute.ray_address else None,
        versions=lambda name: open_embedding_version(settings, store, name),
    )


def open_embedding_version(settings: Settings, store: object, name: str) -> EmbeddingModel | None:
    """The registered embedding model version ``name`` (a finetuned model in the data directory), run like
    the ``[embeddings]`` model (batch size, threads, cache); None if ``name`` is not a registered version."""
    from aiestack.models.embedding_versions import EmbeddingVersions

    registry = EmbeddingVersions.in_data_dir(settings.data_dir)
    if registry.get(name) is None:
        return None
    cfg = settings.embeddings
    model = registry.open(name, batch_size=cfg.batch_size, threads=cfg.threads)
    if cfg.cache and isinstance(store, EmbeddingCacheStore):
        from aiestack.models.embedding_cache import CachedEmbeddings

        return CachedEmbeddings(model, store)
    return model


def build_context(
    resources: Resources,
    *,
    check_context: CheckContext | None = None,
    plugins: Plugins | None = None,
    registry: ModelRegistry | None = None,
) -> Context:
    """The Context (RAG) stage; its stores are opened on first use. The routes' RAG plans are in their route plans.

    The plugins' retrievers each add a ranked list to every search's fusion.
    """
    from aiestack.context.stage import Context

    retrievers = [spec.factory() for spec in plugins.retrievers.values()] if plugins is not None else []
    window = context_window(registry) if registry is not None else None
    return Context(resources, check_context=check_context, admin_tenant=ADMIN_TENANT, retrievers=retrievers, window=window)


def context_window(registry: ModelRegistry) -> Callable[[Exchange], int | None]:
    """The smallest context window of the models that may answer an exchange: its route's deployments
    and fallbacks, or the model it names (a provider states its window as ``context_window``; None: unknown)."""

    def window(ex: Exchange) -> int | None:
        plan = ex.plan
        names = (*plan.deployments, *plan.fallbacks) if plan is not None and plan.route else (ex.request.model,)
        sizes = [
            size
            for name in names
            if name in registry and (size := getattr(registry.resolve(name).provider, "context_window", None))
        ]
        return min(sizes) if sizes else None

    return window


def cost_estimator(registry: ModelRegistry, prices: PriceTable) -> CostEstimate:
    """The most a call may cost: the dearest price among the models its route plan may reach
    (a route's deployments and fallback models; a fallback route is not priced here)."""

    def estimate(names: Sequence[str], input_tokens: int, output_tokens: int) -> float | None:
        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        costs = [
            prices.cost(entry.upstream, usage, local=entry.local)
            for entry in (registry.resolve(n) for n in names if n in registry)
        ]
        known = [c for c in costs if c is not None]
        return max(known) if known else None

    return estimate


def build_queries(store: ExchangeStore, extra: StoreFactories | None = None) -> ExchangeQueries:
    """The console's queries, opened beside the exchange store; a plugin backend that registers no
    ``queries`` of its own gets the store's own queries, or a scan through its protocol."""
    if offers(store.url, "queries", extra=extra):
        return open_store(store.url, "queries", beside=store, extra=extra)
    return exchange_queries(store)


def build_kv(settings: Settings, extra: StoreFactories | None = None) -> KV:
    """Redis when ``gateway.redis_url`` is set (limits exact across processes; a plugin's backend for
    its scheme), else in-process."""
    return open_store(
        settings.gateway.redis_url or "memory://", "kv", extra=extra, prefix=settings.gateway.redis_prefix
    )


def build_prices(settings: Settings) -> PriceTable:
    return PriceTable({name: Price(**p.model_dump()) for name, p in settings.pricing.items()})


def _gateway_stores(store: ExchangeStore) -> tuple[KeyStore, UsageStore, SpendSource]:
    """The store seen as the keys, usage and spend stores the gateway needs (the SQL and memory stores are all)."""
    if isinstance(store, KeyStore) and isinstance(store, UsageStore) and isinstance(store, SpendSource):
        return store, store, store
    raise ConfigError(
        "store.url",
        f"the store {type(store).__name__} cannot hold API keys and usage",
        "use the SQLite, PostgreSQL or memory store (or a plugin store that implements KeyStore and UsageStore)",
    )


def _feedback_and_prompts(
    settings: Settings, store: ExchangeStore, routes: RouteTable
) -> tuple[PromptRegistry | None, dict[str, PromptSpec], Signals | None]:
    """The prompt registry, the routes' prompt specs (validated) and the implicit-signal stage."""
    specs = route_prompt_specs({name: routes.config(name).prompt for name in routes})
    prompts = PromptRegistry(store, ttl_s=settings.prompts.label_cache_s) if isinstance(store, PromptStore) else None
    if specs and prompts is None:
        raise ConfigError(
            f"routes.{next(iter(specs))}.prompt",
            f"the store {type(store).__name__} cannot hold prompts",
            "use the SQLite, PostgreSQL or memory store, or remove the route's prompt",
        )
    signals = None
    if settings.feedback.implicit and isinstance(store, FeedbackStore):
        signals = Signals(store, window_s=settings.feedback.window_s)
    return prompts, specs, signals


def route_fingerprint(prompts: PromptRegistry | None, resources: Resources) -> Callable[[str, Exchange], str]:
    """What a route's cached answers are keyed on beyond the request: the prompt arm and its version, the collection's version.

    Both come from the exchange's route plan. The arm is the one the Prompt stage will choose for
    this exchange (an A/B split is stable per user, key or conversation), so an answer made with
    one arm is never served to the other; a new version of the prompt, or a re-ingest of the
    collection, invalidates the route's entries.
    """

    def fingerprint(route: str, ex: Exchange) -> str:
        parts: list[str] = []
        plan = ex.plan
        if plan is None or plan.route is None:
            return ""
        spec = plan.part(PromptSpec)
        if spec is not None and prompts is not None:
            ref = choose(spec, bucket(ex))
            try:
                parts.append(f"{ref}={prompts.get(ref).version}")
            except AiestackError:
                parts.append(f"{ref}=?")
        if plan.collection:
            target = resources.documents.resolve(plan.collection)  # a switch of version is a new fingerprint
            info = resources.documents.get_collection(target)
            parts.append(f"{plan.collection}={target}:{info.version if info is not None else 0}")
        return ",".join(parts)

    return fingerprint


def _cache_and_router(
    settings: Settings,
    store: ExchangeStore,
    routes: RouteTable,
    plans: RoutePlans,
    registry: ModelRegistry,
    metrics: Metrics,
    prompts: PromptRegistry | None,
    resources: Resources,
    *,
    between: Sequence[Stage] = (),
    extra_stores: StoreFactories | None = None,
    static: StaticEmbeddings,
) -> list[Stage]:
    """The Cache stage, ``between`` (the output guard), then the Route (semantic router) stage; each only when configured.

    A route's cached answers are keyed on its config hash, the versions its prompt references
    name now, and its collection's version, so a new prompt version or a re-ingest invalidates them.
    """

    fingerprint = route_fingerprint(prompts, resources)
    embeddings = resources.get_embeddings  # built on first use, shared with the other stages
    cache_embeddings: EmbeddingModel | Callable[[], EmbeddingModel] = embeddings
    semantic_ready = lambda: resources.embeddings_built  # noqa: E731 - loaded by `serve`, RAG or the router
    confirm = None
    # One static embedder for the cache, the router and the injection guard (``static``, built by the
    # caller), loaded by `serve` (Stack.warm) when one of them uses it.
    if settings.cache.embedder == "static":
        cache_embeddings, semantic_ready = static, lambda: static.loaded
        if settings.cache.confirm_swaps:  # word swaps judged by the [embeddings] model (cache/confirm.py)
            confirm = SwapConfirmer(embeddings, ready=lambda: resources.embeddings_built)
    cache = build_cache_stage(
        settings,
        store=store,
        policies={name: p for name in plans if (p := plans.for_name(name).part(CachePolicy)) is not None},
        embeddings=cache_embeddings,
        metrics=metrics,
        fingerprint=fingerprint,
        semantic_ready=semantic_ready,
        confirm=confirm,
        carry=(PROMPT_NAME_ATTR, PROMPT_VERSION_ATTR, PROMPT_LABEL_ATTR),  # a hit records the answer's prompt version
        extra_stores=extra_stores,
    )
    router = build_route_stage(
        settings.router,
        routes,
        static if settings.router.embedder == "static" else embeddings,
        default_model=settings.default_model,
        models=[e.name for e in registry],
        plans=plans,
    )
    return [*([cache] if cache is not None else []), *between, *([router] if router is not None else [])]


def build_side_calls(
    trace: Stage, limits: Limits, generate: Stage, tracing: Tracing, routes: RouteTable
) -> SideCalls:
    """The side-call seam: Trace → side-call Limits → Generate, the stack's own stage instances
    (the same breakers, prices and store), on behalf of the exchange the current task serves.

    Its exchanges carry the gateway's share of the route plans (what a route is made of: the
    deployments and fallbacks Generate tries); no wing stage runs on a side-call."""
    pipeline = Pipeline([trace, limits.side_calls(), generate], observer=tracing, plans=route_plans(routes))
    return SideCalls(pipeline, parent=current_exchange)


def _dicl(store: ExchangeStore, plans: RoutePlans, resources: Resources) -> list[Stage]:
    """The DICL stage, when a route has a ``dicl`` table (its dataset lives in the exchange store)."""
    if not any(plans.for_name(n).part(DiclPlan) for n in plans):
        return []
    if not isinstance(store, DatasetStore):
        raise ConfigError("routes.*.dicl", f"the store {type(store).__name__} cannot hold datasets", "use SQLite, PostgreSQL or memory")
    return [Dicl(store, resources.get_embeddings)]


def compile_plans(
    settings: Settings,
    routes: RouteTable,
    registry: ModelRegistry,
    guards: Guardrails,
    prompt_specs: Mapping[str, PromptSpec],
    side_calls: SideCalls | None = None,
) -> RoutePlans:
    """Every ``[routes.NAME]`` compiled into one frozen :class:`~aiestack.types.RoutePlan`, each wing adding its part.

    Each wing validates its own table of the route (a ConfigError names ``routes.NAME.<table>.<key>``)
    with its existing compiler; the pipeline sets the plan on each exchange.
    """
    from aiestack.context.config import RagRoute, build_rag_routes

    configs = {name: routes.config(name) for name in routes}
    sampling = build_sampling_routes(configs, lambda name: name in registry or name in routes)
    cache_default = default_policy(settings.cache)
    return (
        route_plans(routes)
        .with_part(Guards, guards.table.default, guards.table.routes)
        .with_part(CachePolicy, cache_default, cache_policies(settings))
        .with_part(PromptSpec, None, prompt_specs)
        .with_part(RagRoute, None, build_rag_routes(configs, registry, side_calls=side_calls))
        .with_part(SamplingPlan, None, sampling)
        .with_part(DiclPlan, None, build_dicl_routes(configs))
    )


def build_stack(
    settings: Settings | None = None,
    *,
    store: ExchangeStore | None = None,
    plugins: Iterable[object] = (),
    models: Iterable[ModelEntry] = (),
    extra_stages: Iterable[Stage] = (),
) -> Stack:
    """Build a stack from settings. ``models`` adds ready-made entries (tests pass fakes here)."""
    settings = settings or load_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    found = collect_plugins(plugin_manager(plugins))
    registry = build_models(settings, found.providers, extra=models)
    routes = build_routes(settings, registry)
    from aiestack.agents.config import agent_specs

    agents = agent_specs(settings.agents, known_models=frozenset([*(e.name for e in registry), *routes.names]))
    breakers = BreakerBoard(routes.breaker_settings)
    store = store or open_store(settings.store_url, "exchanges", extra=found.stores)
    store.migrate()
    writer = BatchWriter(
        store, batch_size=settings.store.batch_size, flush_interval_s=settings.store.flush_interval_s
    )
    tracing = Tracing(settings.tracing, writer)
    metrics = Metrics()
    prices = build_prices(settings)
    key_store, usage, spend = _gateway_stores(store)
    gw = settings.gateway
    kv = build_kv(settings, found.stores)
    keys = KeyService(key_store, usage)
    admin_key = os.environ.get(gw.admin_key_env) or None
    auth = Authenticator(key_store, admin_key=admin_key, mode=gw.auth, cache_ttl_s=gw.key_cache_ttl_s)
    limits = Limits(
        key_store, kv, spend, metrics=metrics, key_cache_ttl_s=gw.key_cache_ttl_s, default_output_tokens=gw.default_output_tokens,
        fail_open=gw.limits_fail_open, cost_estimate=cost_estimator(registry, prices),
    )
    prompts, prompt_specs, signals = _feedback_and_prompts(settings, store, routes)
    resources = build_resources(settings, store, found.stores)  # built before the stages, handed down to them
    redact = TraceRedactor()
    tracing.redact = redact
    trace_stage = Trace(tracing, metrics=metrics, redact=redact)
    generate = Generate(registry, prices, routes=routes, breakers=breakers, metrics=metrics)
    side_calls = build_side_calls(trace_stage, limits, generate, tracing, routes)
    static = StaticEmbeddings()  # nothing loads until a stage uses it: the cache, the router, the injection guard's `static` head
    guards = build_guardrails(
        settings.guards.model_dump(),
        {name: {"guards": routes.config(name).guards} for name in routes},
        registry=registry,
        embeddings=resources.get_embeddings,
        metrics=metrics,
        side_calls=side_calls,
        static=static,
    )
    plans = compile_plans(settings, routes, registry, guards, prompt_specs, side_calls)
    stages: list[Stage] = [
        trace_stage,
        limits,
        *([signals] if signals is not None else []),
        guards.input,
        *(spec.factory() for spec in found.guardrails.values()),  # the plugins' guards
        *extra_stages,
        *_cache_and_router(
            settings, store, routes, plans, registry, metrics, prompts, resources, between=[guards.output],
            extra_stores=found.stores, static=static,
        ),
        *([Prompt(prompts)] if prompts is not None and prompt_specs else []),
        *_dicl(store, plans, resources),
        build_context(resources, check_context=guards.context, plugins=found, registry=registry),
        *([Sampling(side_calls)] if any(plans.for_name(n).part(SamplingPlan) for n in plans) else []),
        generate,
    ]
    pipeline = Pipeline(stages, observer=tracing, plans=plans)
    stack = Stack(
        settings, store, writer, tracing, metrics, registry, prices, pipeline, routes, breakers, kv, keys, auth, resources,
        build_queries(store, found.stores), side_calls,
    )
    stack.prompts, stack.signals, stack.limits = prompts, signals, limits
    stack.tools, stack.eval_metrics, stack.agent_specs = found.tools, found.metrics, agents
    return stack


@asynccontextmanager
async def open_stack(settings: Settings | None = None, **kwargs: Any) -> AsyncIterator[Stack]:
    """``async with open_stack() as stack:`` — builds a stack and always closes it (flushing traces)."""
    stack = build_stack(settings, **kwargs)
    try:
        yield stack
    finally:
        await stack.aclose()
