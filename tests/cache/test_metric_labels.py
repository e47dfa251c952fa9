"""The cache's metrics and the exchange log's hit counter name a request's route alike, so that a
route's hit rate (hits / lookups) can be read by joining them: a route by its name, a bare model as
``none``, like every exchange metric."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiestack.build import build_stack
from aiestack.settings import Settings
from aiestack.types import ChatRequest, Message, Params

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("model", "route"), [("fake", "none"), ("support", "support")])
async def test_lookups_hits_and_savings_share_the_route_label(tmp_path: Path, model: str, route: str) -> None:
    settings = Settings(
        data_dir=tmp_path,
        embedded_model=False,
        default_model="fake",
        models={"fake": {"provider": "fake"}},
        routes={"support": {"deployments": ["fake"]}},
        cache={"semantic": False},
    )
    stack = build_stack(settings)
    try:
        request = ChatRequest(model=model, messages=(Message("user", "how do I reset my password"),), params=Params(temperature=0))
        first = await stack.chat(request)
        second = await stack.chat(request)
        assert first.outcome == "ok" and second.outcome == "cached"
    finally:
        await stack.aclose()  # the trace writer's last records reach the metrics
    get = stack.metrics.registry.get_sample_value
    # the second request found the first's answer (in the cache, or in its flight while the write was
    # still under way): two requests, two lookups, one served from the cache
    lookups = {
        result: get("aiestack_cache_lookups_total", {"route": route, "kind": "exact", "result": result}) or 0
        for result in ("hit", "miss", "coalesced")
    }
    assert lookups["miss"] == 1 and lookups["hit"] + lookups["coalesced"] == 1, lookups
    assert get("aiestack_cache_hits_total", {"route": route, "kind": "exact"}) == 1
    assert get("aiestack_cache_saved_tokens_total", {"route": route, "kind": "exact"}) > 0
