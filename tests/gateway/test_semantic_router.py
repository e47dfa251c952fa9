"""The semantic router: picks the closest route above its threshold, else the default; fitting thresholds."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from aiestack.errors import ConfigError, InvalidRequest
from aiestack.gateway.routes import build_route_table
from aiestack.gateway.semantic_router import (
    ROUTER_MATCHED,
    ROUTER_ROUTE,
    ROUTER_SCORE,
    RouteStage,
    SemanticRouter,
    accuracy,
    build_route_stage,
    choose,
    fit,
    fit_thresholds,
    load_labelled,
)
from aiestack.models.fake import FakeModel
from aiestack.models.registry import ModelEntry, ModelRegistry
from aiestack.plans import RoutePlans
from aiestack.settings import RouterSettings, Settings
from aiestack.testing.embeddings import BagOfWordsEmbeddings
from aiestack.types import ChatRequest, Exchange, Message, RoutePlan

pytestmark = pytest.mark.unit

EXAMPLES = {
    "billing": ["refund my invoice payment", "why was my card charged twice", "update credit card payment"],
    "shipping": ["where is my parcel delivery", "track my package shipment", "parcel arrived damaged"],
}


def router(**kwargs: object) -> SemanticRouter:
    return SemanticRouter(EXAMPLES, BagOfWordsEmbeddings(dim=512), default_route="chat", **kwargs)  # type: ignore[arg-type]


async def test_the_closest_route_wins_and_an_unrelated_request_gets_the_default() -> None:
    r = router(default_threshold=0.3)
    billing = await r.route("my card was charged twice for one invoice")
    assert billing.route == "billing" and billing.matched and billing.score is not None
    shipping = await r.route("where is my parcel")
    assert shipping.route == "shipping" and shipping.matched
    other = await r.route("tell me a joke about cats")
    assert other.route == "chat" and not other.matched


async def test_a_per_route_threshold_can_refuse_a_weak_match() -> None:
    loose = await router(default_threshold=0.3).route("parcel")
    strict = await router(default_threshold=0.3, thresholds={"shipping": 0.95}).route("parcel")
    assert loose.route == "shipping"
    assert strict.route == "chat" and not strict.matched


async def test_centroid_scores_by_the_mean_of_the_examples() -> None:
    text = "why was my card charged twice"
    by_max = await router(method="max").scores(text)
    by_centroid = await router(method="centroid").scores(text)
    assert by_max["billing"] == pytest.approx(1.0, abs=1e-6)  # an example itself
    assert by_centroid["billing"] < by_max["billing"]
    assert max(by_centroid, key=by_centroid.__getitem__) == "billing"


def test_choose_and_accuracy_follow_the_thresholds() -> None:
    scores = [{"a": 0.9, "b": 0.5}, {"a": 0.4, "b": 0.6}, {"a": 0.2, "b": 0.3}]
    labels: list[str | None] = ["a", "b", None]
    assert choose(scores[0], {"a": 0.5, "b": 0.5}, "d").route == "a"
    assert accuracy(scores, labels, {"a": 0.5, "b": 0.5}) == pytest.approx(3 / 3)
    assert accuracy(scores, labels, {"a": 0.1, "b": 0.1}) == pytest.approx(2 / 3)  # the last routes to b


def test_fit_thresholds_finds_per_route_values_that_separate_the_labels() -> None:
    # Route "a" matches at 0.7+ and "b" only at 0.4+; out-of-scope texts score up to 0.6 on "a".
    scores = [
        {"a": 0.80, "b": 0.1}, {"a": 0.75, "b": 0.2},  # a
        {"a": 0.20, "b": 0.45}, {"a": 0.1, "b": 0.5},  # b
        {"a": 0.60, "b": 0.2}, {"a": 0.55, "b": 0.3},  # none
    ]  # fmt: skip
    labels: list[str | None] = ["a", "a", "b", "b", None, None]
    fitted = fit_thresholds(scores, labels, ["a", "b"])
    assert accuracy(scores, labels, fitted) == 1.0
    assert 0.60 < fitted["a"] <= 0.75 and 0.30 < fitted["b"] <= 0.45


async def test_fit_on_labelled_utterances_never_counts_an_example_as_its_own_match(tmp_path: Path) -> None:
    r = router(default_threshold=0.99)
    rows: list[tuple[str, str | None]] = [(text, route) for route, texts in EXAMPLES.items() for text in texts]
    rows += [("tell me a joke", None), ("what is the weather today", None)]
    path = tmp_path / "labelled.jsonl"
    path.write_text("\n".join(json.dumps({"text": t, "route": r, "split": "train"}) for t, r in rows) + "\n")
    loaded = load_labelled(path, split="train")
    assert loaded == rows
    result = await fit(r, loaded)
    assert result.before < result.after  # 0.99 routes nothing; fitted thresholds route the examples
    assert set(result.thresholds) == {"billing", "shipping"}
    with pytest.raises(InvalidRequest, match="returns"):
        await fit(r, [("a text", "returns")])


def test_a_malformed_labelled_file_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "ok", "route": null}\nnot json\n')
    with pytest.raises(InvalidRequest, match=r"bad\.jsonl:2"):
        load_labelled(path)


class Capture:
    """Stands for the rest of the pipeline: records what the route stage hands on."""

    def __init__(self) -> None:
        self.seen: list[Exchange] = []

    async def __call__(self, ex: Exchange) -> Exchange:
        self.seen.append(ex)
        return ex


async def test_the_stage_rewrites_requests_naming_auto_and_records_the_choice() -> None:
    stage, capture = RouteStage(router(default_threshold=0.3), model="auto"), Capture()

    async def run(model: str, text: str) -> Exchange:
        ex = Exchange(request=ChatRequest(model=model, messages=(Message("user", text),)))
        return await stage(ex, capture)

    routed = await run("auto", "track my package")
    assert routed.request.model == "shipping"
    assert routed.attributes[ROUTER_ROUTE] == "shipping" and routed.attributes[ROUTER_MATCHED] is True
    assert isinstance(routed.attributes[ROUTER_SCORE], float)
    fallback = await run("auto", "sing me a song")
    assert fallback.request.model == "chat" and fallback.attributes[ROUTER_MATCHED] is False
    untouched = await run("billing", "track my package")
    assert untouched.request.model == "billing" and ROUTER_ROUTE not in untouched.attributes


async def test_the_stage_replaces_the_plan_with_the_chosen_routes() -> None:
    plans = RoutePlans({name: RoutePlan(route=name) for name in ("shipping", "billing", "chat")})
    stage, capture = RouteStage(router(default_threshold=0.3), model="auto", plans=plans), Capture()
    ex = Exchange(request=ChatRequest(model="auto", messages=(Message("user", "track my package"),)), plan=plans.default)
    routed = await stage(ex, capture)
    assert routed.plan is plans.for_name("shipping")
    other = Exchange(request=ChatRequest(model="billing", messages=(Message("user", "track my package"),)), plan=plans.for_name("billing"))
    assert (await stage(other, capture)).plan is plans.for_name("billing")  # not routed: the plan stays


def _table(names: Sequence[str]) -> tuple[ModelRegistry, dict[str, dict[str, object]]]:
    registry = ModelRegistry([ModelEntry("m", FakeModel(), "m")])
    routes: dict[str, dict[str, object]] = {
        "billing": {"deployments": ["m"], "examples": EXAMPLES["billing"], "threshold": 0.4},
        "chat": {"deployments": ["m"]},
    }
    return registry, {k: v for k, v in routes.items() if k in names}


def test_build_route_stage_from_config() -> None:
    registry, routes = _table(["billing", "chat"])
    table = build_route_table(routes, registry)
    stage = build_route_stage(
        RouterSettings(default_route="chat"), table, BagOfWordsEmbeddings(), default_model="m", models=["m"]
    )
    assert stage is not None and stage.model == "auto"
    assert stage.router.thresholds == {"billing": 0.4} and stage.router.default_route == "chat"
    no_examples = build_route_table(_table(["chat"])[1], registry)
    assert build_route_stage(RouterSettings(), no_examples, BagOfWordsEmbeddings(), default_model="m", models=["m"]) is None


@pytest.mark.parametrize(
    ("router_settings", "key"),
    [
        (RouterSettings(default_route="nowhere"), "router.default_route"),
        (RouterSettings(model="m"), "router.model"),
    ],
)
def test_router_config_errors_name_the_key(router_settings: RouterSettings, key: str) -> None:
    registry, routes = _table(["billing", "chat"])
    table = build_route_table(routes, registry)
    with pytest.raises(ConfigError) as raised:
        build_route_stage(router_settings, table, BagOfWordsEmbeddings(), default_model="m", models=["m"])
    assert raised.value.key == key


def test_choose_takes_the_best_route_over_its_own_threshold_else_the_default() -> None:
    scores = {"a": 0.9, "b": 0.7, "c": 0.95}
    # c scores best but misses its (higher) threshold: the best route that reaches its own wins
    choice = choose(scores, {"a": 0.5, "b": 0.5, "c": 0.99}, "d")
    assert (choice.route, choice.matched, choice.score) == ("a", True, 0.9)
    assert choice.scores == scores
    # none reaches its threshold: the default, not matched, with the top score for the trace
    missed = choose(scores, {"a": 0.95, "b": 0.8, "c": 0.99}, "d")
    assert (missed.route, missed.matched, missed.score) == ("d", False, 0.95)
    # a score equal to the threshold reaches it
    assert choose({"a": 0.5}, {"a": 0.5}, "d").route == "a"
    assert choose({}, {}, "d") == choose({}, {}, "d")
    assert (choose({}, {}, "d").route, choose({}, {}, "d").score) == ("d", None)


def _echo_stack(tmp_path: Path, router: RouterSettings, **route: object) -> Settings:
    """Settings for a stack on the echoing fake model with the billing and shipping routes (``route``:
    extra fields of both)."""
    return Settings(
        data_dir=tmp_path,
        embedded_model=False,
        default_model="echo",
        models={"echo": {"provider": "fake"}},
        routes={name: {"deployments": ["echo"], "examples": EXAMPLES[name], **route} for name in ("billing", "shipping")},
        router=router,
    )


async def test_a_stack_routes_auto_requests_and_records_the_route(tmp_path: Path) -> None:
    from aiestack.build import open_stack

    settings = _echo_stack(tmp_path, RouterSettings(default_route="echo", method="max"), threshold=0.3)
    async with open_stack(settings) as stack:
        stack.resources.use(embeddings=BagOfWordsEmbeddings(dim=512))
        ex = await stack.chat(ChatRequest(model="auto", messages=(Message("user", "track my package please"),)))
        other = await stack.chat(ChatRequest(model="auto", messages=(Message("user", "sing a song"),)))
    assert ex.route == "shipping" and ex.attributes[ROUTER_ROUTE] == "shipping"
    assert ex.completion is not None and ex.completion.text == "track my package please"
    assert other.route is None and other.attributes[ROUTER_MATCHED] is False


async def test_a_static_router_shares_the_caches_static_embedder_and_is_warm_before_the_first_request(
    tmp_path: Path,
) -> None:
    from aiestack.build import open_stack
    from aiestack.models.static_embeddings import StaticEmbeddings

    settings = _echo_stack(tmp_path, RouterSettings(default_route="echo", embedder="static", threshold=0.3))
    async with open_stack(settings) as stack:
        (route_stage,) = [s for s in stack.pipeline.stages if isinstance(s, RouteStage)]
        cache = next(s for s in stack.pipeline.stages if s.name == "cache")
        router_embedder = route_stage.router.embeddings
        assert isinstance(router_embedder, StaticEmbeddings)
        assert router_embedder is cache.semantic.embeddings  # type: ignore[attr-defined]  # one model, loaded once
        assert not router_embedder.loaded
        await stack.warm()
        assert router_embedder.loaded and route_stage.router._matrices is not None  # examples embedded at start
        ex = await stack.chat(ChatRequest(model="auto", messages=(Message("user", "where is my parcel"),)))
    assert ex.route == "shipping" and ex.attributes[ROUTER_ROUTE] == "shipping"
    assert not stack.resources.embeddings_built  # the [embeddings] model was never needed
