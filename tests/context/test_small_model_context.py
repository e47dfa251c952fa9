"""Fewer and shorter sources for a small model (context window ≤ 4,096 tokens), unless the route says otherwise."""

from __future__ import annotations

import pytest

from aiestack.build import context_window
from aiestack.context.config import RagRoute, build_rag_routes, rag_route
from aiestack.context.extractive import focus
from aiestack.context.stage import Context
from aiestack.gateway.generate import Generate
from aiestack.gateway.routes import build_route_table, route_plans
from aiestack.models.fake import FakeModel
from aiestack.models.pricing import PriceTable
from aiestack.models.registry import ModelEntry, ModelRegistry
from aiestack.pipeline import Pipeline
from aiestack.resources import Resources
from aiestack.stores.documents_memory import MemoryDocumentStore
from aiestack.types import ChatRequest, Exchange, Message

from ._rag_kit import CORPUS, BowEmbeddings, fill

pytestmark = pytest.mark.unit

FILLER = "This sentence is about something else entirely and says nothing useful. " * 30
LONG = (
    f"{FILLER}Green tea is brewed at 80 degrees, never boiling. {FILLER}",
    "tea",
)


class Sized(FakeModel):
    def __init__(self, window: int) -> None:
        super().__init__()
        self.context_window = window


def _rig(window: int | None, rag: dict[str, object]) -> tuple[Pipeline, FakeModel]:
    model = FakeModel() if window is None else Sized(window)
    registry = ModelRegistry([ModelEntry("m", model, "m")])
    routes = build_route_table({"docs": {"deployments": ["m"], "collection": "kb", "rag": {"fallback": "off", **rag}}}, registry)
    plans = route_plans(routes).with_part(RagRoute, None, build_rag_routes({n: routes.config(n) for n in routes}, registry))
    corpus = (*CORPUS, *((f"docs/tea{i}.md", f"Tea {i}", f"Tea note {i}: {LONG[0]}") for i in range(4)))
    store = fill(MemoryDocumentStore(), "kb", tenant="acme", corpus=corpus)
    resources = Resources(embeddings=BowEmbeddings, documents=lambda: store)
    stage = Context(resources, window=context_window(registry))
    return Pipeline([stage, Generate(registry, PriceTable(), routes=routes)], plans=plans), model


async def _prompt(window: int | None, rag: dict[str, object] | None = None) -> str:
    pipeline, model = _rig(window, rag or {})
    req = ChatRequest(model="docs", messages=(Message("user", "what temperature for green tea"),))
    await pipeline(Exchange(request=req, tenant="acme"))
    return model.requests[0].messages[-1].text


def _sources(prompt: str) -> int:
    return sum(f"\n[{n}] " in prompt for n in range(1, 11))


async def test_a_small_model_gets_three_short_sources_that_keep_the_relevant_sentence() -> None:
    small = await _prompt(4096)
    assert _sources(small) == 3
    cut = [s for s in small.split("\n[")[1:] if "…" in s]
    assert cut and all("80 degrees" in s for s in cut)  # a cut source kept the sentence that answers, from its middle
    large = await _prompt(32768)
    assert _sources(large) == 5
    unknown = await _prompt(None)  # a provider that states no window: not small
    assert _sources(unknown) == 5
    assert len(small) < len(large)


async def test_a_route_that_sets_k_and_max_source_chars_keeps_them_for_a_small_model() -> None:
    prompt = await _prompt(4096, {"k": 5, "max_source_chars": 1500})
    assert _sources(prompt) == 5


def test_for_window_sizes_only_what_the_route_left_open() -> None:
    plan = rag_route("kb", {"k": 4}, ModelRegistry())
    small = plan.for_window(2048)
    assert small.options.k == 4 and small.max_source_chars == 600
    assert plan.for_window(8192) is plan and plan.for_window(None) is plan
    default = rag_route("kb", {}, ModelRegistry())
    assert (default.options.k, default.max_source_chars) == (5, 1500)
    assert (default.for_window(4096).options.k, default.for_window(4096).max_source_chars) == (3, 600)


def test_the_window_is_the_smallest_of_a_routes_deployments_and_fallbacks() -> None:
    registry = ModelRegistry([ModelEntry("big", Sized(32768), "big"), ModelEntry("small", Sized(4096), "small"),
                              ModelEntry("plain", FakeModel(), "plain")])
    routes = build_route_table({"r": {"deployments": ["big"], "fallbacks": ["small"]}}, registry)
    plans = route_plans(routes)
    window = context_window(registry)

    def ex(model: str) -> Exchange:
        return Exchange(request=ChatRequest(model=model, messages=(Message("user", "q"),)), plan=plans.for_name(model))

    assert window(ex("r")) == 4096
    assert window(ex("big")) == 32768
    assert window(ex("plain")) is None


def test_focus_keeps_the_sentences_about_the_question_in_order() -> None:
    text = "Cats purr. " * 40 + "Green tea is brewed at 80 degrees. " + "Dogs bark. " * 40
    cut = focus(text, "what temperature is green tea brewed at", 200)
    assert "Green tea is brewed at 80 degrees." in cut and len(cut) <= 200 + 4
    assert focus(text, "nothing in common zzz", 50).startswith("Cats purr.")  # no overlap: the head
    assert focus("short", "q", 50) == "short"
