"""A small stack for cache tests: Cache stage → (optional inner stages) → Generate on a fake model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from aiestack.cache.config import CachePolicy
from aiestack.cache.exact import ExactCache
from aiestack.cache.semantic import SemanticCache
from aiestack.cache.stage import CacheStage, Fingerprint
from aiestack.gateway.generate import Generate
from aiestack.models.fake import FakeModel
from aiestack.models.pricing import Price, PriceTable
from aiestack.models.registry import ModelEntry, ModelRegistry
from aiestack.monitoring import Metrics
from aiestack.pipeline import Pipeline, Stage
from aiestack.plans import RoutePlans
from aiestack.stores.cache import CacheBackend
from aiestack.stores.cache_memory import MemoryCacheBackend
from aiestack.testing.embeddings import BagOfWordsEmbeddings
from aiestack.types import ChatRequest, Exchange, Message, Params, RoutePlan

MODEL = "paid-model"


@dataclass
class Kit:
    model: FakeModel
    embeddings: BagOfWordsEmbeddings
    backend: CacheBackend
    stage: CacheStage
    pipeline: Pipeline
    metrics: Metrics
    fingerprints: dict[str, str] = field(default_factory=dict)

    async def ask(
        self,
        text: str,
        *,
        tenant: str = "default",
        temperature: float | None = 0,
        stream: bool = False,
        metadata: dict[str, str] | None = None,
        model: str = MODEL,
    ) -> Exchange:
        request = ChatRequest(
            model=model,
            messages=(Message("system", "Answer briefly."), Message("user", text)),
            params=Params(temperature=temperature),
            stream=stream,
            metadata=metadata or {},
        )
        ex = await self.pipeline(Exchange(request=request, tenant=tenant))
        if not stream:  # answers are stored in the background: let the tests read the backend after
            await self.stage.settle()
        return ex


def make_kit(
    *,
    backend: CacheBackend | None = None,
    inner: Sequence[Stage] = (),
    policies: dict[str, CachePolicy] | None = None,
    threshold: float = 0.8,
) -> Kit:
    model = FakeModel()
    embeddings = BagOfWordsEmbeddings(dim=512)
    backend = backend if backend is not None else MemoryCacheBackend()
    metrics = Metrics()
    fingerprints: dict[str, str] = {}
    fingerprint: Fingerprint = lambda route, ex: fingerprints.get(route, "")  # noqa: E731
    stage = CacheStage(
        ExactCache(backend),
        SemanticCache(backend, embeddings, threshold=threshold),
        default=CachePolicy(threshold=threshold),
        fingerprint=fingerprint,
        metrics=metrics,
    )
    registry = ModelRegistry([ModelEntry(MODEL, model, MODEL)])
    prices = PriceTable({MODEL: Price(input_per_mtok=1_000_000.0, output_per_mtok=2_000_000.0)})
    # A policy per name, as the composition root compiles [routes.NAME.cache] into the route plans.
    plans = RoutePlans({name: RoutePlan(route=name) for name in policies or {}}).with_part(
        CachePolicy, CachePolicy(threshold=threshold), policies
    )
    pipeline = Pipeline([stage, *inner, Generate(registry, prices, metrics=metrics)], plans=plans)
    return Kit(model, embeddings, backend, stage, pipeline, metrics, fingerprints)


@pytest.fixture
def kit() -> Kit:
    return make_kit()
