"""Dynamic in-context learning: a route shows the model the most similar rows of a dataset version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aiestack.build import build_stack
from aiestack.datasets import DatasetRow, normalise
from aiestack.datasets.dicl import (
    DICL_DATASET_ATTR,
    DICL_EXAMPLES_ATTR,
    Dicl,
    DiclPlan,
    DiclUnavailable,
    compile_dicl,
)
from aiestack.errors import ConfigError
from aiestack.models.fake import FakeModel
from aiestack.settings import Settings
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.testing.embeddings import BagOfWordsEmbeddings
from aiestack.types import ChatRequest, Exchange, Message, RoutePlan

pytestmark = pytest.mark.unit

ROWS = [
    DatasetRow(normalise({"question": "How do I reset my password?", "answer": "Settings, then Security, then Reset."}, "chat")),
    DatasetRow(normalise({"question": "When are you open on Sundays?", "answer": "From 10 to 4."}, "chat")),
    DatasetRow(normalise({"question": "Can I get a refund for my order?", "answer": "Within 30 days, from Orders."}, "chat")),
]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def exchange(text: str, plan: DiclPlan | None, *, system: str | None = "Be brief.") -> Exchange:
    messages = ([Message("system", system)] if system else []) + [Message("user", text)]
    return Exchange(request=ChatRequest(model="support", messages=tuple(messages)),
                    plan=RoutePlan(route="support", parts={DiclPlan: plan} if plan else {}))


async def run(stage: Dicl, ex: Exchange) -> Exchange:
    seen: list[Exchange] = []

    async def call_next(inner: Exchange) -> Exchange:
        seen.append(inner)
        return inner

    await stage(ex, call_next)
    return seen[0]


def plan(**changes: Any) -> DiclPlan:
    return compile_dicl({"dataset": "good", "k": 2, "min_similarity": 0.2, **changes}, key="routes.support.dicl")


@pytest.fixture
def store() -> MemoryExchangeStore:
    store = MemoryExchangeStore()
    store.push_dataset("good", "chat", ROWS, created_at=1.0)
    return store


async def test_the_most_similar_examples_go_between_the_system_prompt_and_the_question(store: MemoryExchangeStore) -> None:
    embeddings = BagOfWordsEmbeddings(dim=256)
    stage = Dicl(store, lambda: embeddings)
    sent = await run(stage, exchange("I forgot my password, how do I reset it?", plan(k=1)))
    assert [(m.role, m.text) for m in sent.request.messages] == [
        ("system", "Be brief."),
        ("user", "How do I reset my password?"), ("assistant", "Settings, then Security, then Reset."),
        ("user", "I forgot my password, how do I reset it?"),
    ]
    assert sent.attributes[DICL_DATASET_ATTR] == "good@1" and sent.attributes[DICL_EXAMPLES_ATTR] == [ROWS[0].id]
    again = await run(stage, exchange("refund for my password reset order", plan(k=2), system=None))
    assert [m.role for m in again.request.messages] == ["user", "assistant", "user", "assistant", "user"]
    assert again.request.messages[2].text in {r.data["messages"][0]["content"] for r in ROWS[:1] + ROWS[2:]}
    assert len(embeddings.calls) == 1 + 1 + 1  # the pool once, then one query each


async def test_nothing_similar_enough_adds_nothing_and_routes_without_a_plan_are_untouched(store: MemoryExchangeStore) -> None:
    stage = Dicl(store, lambda: BagOfWordsEmbeddings(dim=256))
    far = await run(stage, exchange("zebra quantum lattice", plan(min_similarity=0.5)))
    assert len(far.request.messages) == 2 and far.attributes[DICL_EXAMPLES_ATTR] == []
    plain = exchange("How do I reset my password?", None)
    assert await run(stage, plain) is plain


async def test_a_newer_version_is_picked_up_after_refresh_s_and_a_pinned_one_never(store: MemoryExchangeStore) -> None:
    clock = Clock()
    stage = Dicl(store, lambda: BagOfWordsEmbeddings(dim=256), clock=clock)
    newest, pinned = plan(refresh_s=60), plan(dataset="good@1")
    assert (await run(stage, exchange("password reset", newest))).attributes[DICL_DATASET_ATTR] == "good@1"
    store.push_dataset("good", "chat", ROWS[:1], created_at=2.0)
    clock.now = 30
    assert (await run(stage, exchange("password reset", newest))).attributes[DICL_DATASET_ATTR] == "good@1"
    clock.now = 61
    assert (await run(stage, exchange("password reset", newest))).attributes[DICL_DATASET_ATTR] == "good@2"
    assert (await run(stage, exchange("password reset", pinned))).attributes[DICL_DATASET_ATTR] == "good@1"


async def test_a_missing_or_preference_dataset_is_the_operators_error(store: MemoryExchangeStore) -> None:
    stage = Dicl(store, lambda: BagOfWordsEmbeddings())
    with pytest.raises(DiclUnavailable, match="does not exist") as caught:
        await run(stage, exchange("hi", plan(dataset="nope")))
    assert "aiestack datasets build nope" in (caught.value.hint or "")
    store.push_dataset("pairs", "preference", [], created_at=1.0)
    with pytest.raises(DiclUnavailable, match="holds preference rows"):
        await run(stage, exchange("hi", plan(dataset="pairs")))


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"routes\.support\.dicl\.k"):
        compile_dicl({"dataset": "good", "k": 0}, key="routes.support.dicl")
    with pytest.raises(ConfigError, match=r"routes\.support\.dicl"):
        compile_dicl({"dataset": "good", "shots": 2}, key="routes.support.dicl")
    with pytest.raises(ConfigError, match="a version is a number"):
        compile_dicl({"dataset": "good@latest"}, key="routes.support.dicl")


async def test_a_dicl_route_through_the_whole_stack(tmp_path: Path) -> None:
    store = MemoryExchangeStore()
    store.push_dataset("good", "chat", ROWS, created_at=1.0)
    settings = Settings(data_dir=tmp_path, embedded_model=False, default_model="fake", models={"fake": {"provider": "fake"}},
                        routes={"support": {"deployments": ["fake"], "dicl": {"dataset": "good", "k": 1}}})
    stack = build_stack(settings, store=store)
    try:
        stack.resources.use(embeddings=BagOfWordsEmbeddings(dim=256))
        ex = await stack.chat(ChatRequest(model="support", messages=(Message("user", "When are you open on Sundays?"),)))
        provider = stack.models.resolve("fake").provider
        assert isinstance(provider, FakeModel)
        assert [m.text for m in provider.requests[-1].messages] == [
            "When are you open on Sundays?", "From 10 to 4.", "When are you open on Sundays?",
        ]
        assert ex.attributes[DICL_EXAMPLES_ATTR] == [ROWS[1].id]
        stack.writer.flush(5)
        stored = stack.store.get_exchange(ex.id)
        assert stored is not None and stored.attributes[DICL_DATASET_ATTR] == "good@1"
    finally:
        await stack.aclose()
