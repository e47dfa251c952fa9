"""One route plan: every [routes.NAME] compiled once at build time, set on the exchange once, read by the stages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aiestack.build import Stack, build_stack
from aiestack.cache.config import CachePolicy, RouteCacheConfig
from aiestack.context.config import RagRoute
from aiestack.errors import ConfigError
from aiestack.guardrails import Guards
from aiestack.pipeline import Next
from aiestack.plans import RoutePlans
from aiestack.prompts.registry import PromptSpec
from aiestack.settings import CacheSettings, Settings
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.types import ChatRequest, Exchange, Message, RoutePlan

pytestmark = pytest.mark.unit


class Seen:
    """A stage that records the plan each exchange carries when it passes."""

    name = "seen"

    def __init__(self) -> None:
        self.plans: list[RoutePlan | None] = []

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        self.plans.append(ex.plan)
        return await call_next(ex)


def _settings(tmp_path: Path, **routes: dict[str, Any]) -> Settings:
    return Settings(
        data_dir=tmp_path,
        embedded_model=False,
        default_model="fake",
        models={"fake": {"provider": "fake"}, "other": {"provider": "fake"}},
        routes=routes,
    )


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    stack = build_stack(
        _settings(
            tmp_path,
            support={
                "deployments": ["fake"],
                "fallbacks": ["other"],
                "guards": {"secrets": "block"},
                "cache": {"semantic": False, "ttl_s": 60},
                "prompt": "support@production",
            },
            docs={"deployments": ["fake"], "collection": "kb", "rag": {"k": 3}},
        ),
        store=MemoryExchangeStore(),
    )
    yield stack
    await stack.aclose()


def test_each_route_is_compiled_once_into_a_frozen_plan_with_every_wings_part(stack: Stack) -> None:
    plans = stack.pipeline.plans
    assert plans is not None and set(plans) == {"support", "docs"}
    support = plans.for_name("support")
    assert (support.route, support.deployments, support.fallbacks) == ("support", ("fake",), ("other",))
    guards, cache = support.part(Guards), support.part(CachePolicy)
    assert guards is not None and guards.policy.secrets.action == "block"
    assert cache is not None and (cache.semantic, cache.ttl_s, cache.exact) == (False, 60.0, True)
    assert str(support.part(PromptSpec)) == "support@production"
    assert support.part(RagRoute) is None
    docs = plans.for_name("docs")
    rag = docs.part(RagRoute)
    assert rag is not None and (rag.collection, rag.options.k) == ("kb", 3)
    assert docs.part(PromptSpec) is None
    # a route without its own guards or cache table gets the defaults, compiled once and shared
    assert docs.part(Guards) is plans.default.part(Guards)
    assert docs.part(CachePolicy) == plans.default.part(CachePolicy) == CachePolicy()
    with pytest.raises(AttributeError):
        support.route = "x"  # type: ignore[misc]


def test_a_name_no_route_declares_gets_the_default_plan(stack: Stack) -> None:
    plans = stack.pipeline.plans
    assert plans is not None
    bare = plans.for_name("fake")
    assert bare is plans.default and bare.route is None
    assert plans.for_name("no-such-thing") is plans.default


async def test_the_pipeline_sets_the_plan_once_and_every_stage_sees_it(tmp_path: Path) -> None:
    seen = Seen()
    stack = build_stack(
        _settings(tmp_path, support={"deployments": ["fake"], "guards": {"secrets": "block"}}),
        store=MemoryExchangeStore(),
        extra_stages=[seen],
    )
    try:
        ex = await stack.chat(ChatRequest(model="support", messages=(Message("user", "hello"),)))
        assert stack.pipeline.plans is not None
        assert seen.plans == [stack.pipeline.plans.for_name("support")]
        assert ex.plan is stack.pipeline.plans.for_name("support") and ex.route == "support"
        # The input guard read the route's policy from the plan: this route blocks secrets.
        blocked = await stack.chat(
            ChatRequest(model="support", messages=(Message("user", "my key is sk-proj-abcdefghijklmnopqrstuvwxyz012345"),))
        )
        assert blocked.outcome == "blocked"
        redacted = await stack.chat(
            ChatRequest(model="fake", messages=(Message("user", "my key is sk-proj-abcdefghijklmnopqrstuvwxyz012345"),))
        )
        assert redacted.outcome == "ok"  # the default policy redacts
    finally:
        await stack.aclose()


async def test_a_stage_reads_the_plan_the_exchange_carries_not_the_name(tmp_path: Path) -> None:
    """An exchange planned for one route keeps that route's guards whatever its request names."""
    stack = build_stack(
        _settings(tmp_path, support={"deployments": ["fake"], "guards": {"secrets": "block"}}), store=MemoryExchangeStore()
    )
    try:
        assert stack.pipeline.plans is not None
        secret = (Message("user", "my key is sk-proj-abcdefghijklmnopqrstuvwxyz012345"),)
        planned = Exchange(request=ChatRequest(model="fake", messages=secret), plan=stack.pipeline.plans.for_name("support"))
        assert (await stack.run(planned)).outcome == "blocked"
    finally:
        await stack.aclose()


def test_with_part_rejects_parts_for_routes_that_are_not_planned() -> None:
    with pytest.raises(ValueError, match="nope"):
        RoutePlans({"a": RoutePlan(route="a")}).with_part(CachePolicy, CachePolicy(), {"nope": CachePolicy()})


def test_a_routes_cache_table_is_derived_from_the_cache_settings() -> None:
    """One declaration per setting: [routes.NAME.cache] has [cache]'s bounds and descriptions, optional."""
    for name, field in RouteCacheConfig.model_fields.items():
        declared = CacheSettings.model_fields[name]
        assert field.default is None and field.description == declared.description
        assert field.metadata == declared.metadata
    assert set(RouteCacheConfig.model_fields) == {f for f in CachePolicy.__slots__}
    defaults = CacheSettings()
    assert all(getattr(CachePolicy(), f) == getattr(defaults, f) for f in CachePolicy.__slots__)


def test_an_invalid_route_cache_key_names_the_route(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        build_stack(_settings(tmp_path, r={"deployments": ["fake"], "cache": {"ttl_s": -1}}), store=MemoryExchangeStore())
    assert info.value.key == "routes.r.cache.ttl_s"
