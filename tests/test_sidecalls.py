"""The side-call seam: a wing's own model call goes through routes, is billed to the request's key, and is a child span."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiestack.build import Stack, build_stack
from aiestack.context.config import RagRoute
from aiestack.errors import ProviderUnavailable
from aiestack.gateway.generate import DEPLOYMENT, FALLBACK
from aiestack.gateway.limits import KeyBudgetExceeded
from aiestack.guardrails import Guards
from aiestack.models.fake import FakeModel, Script
from aiestack.models.registry import ModelEntry
from aiestack.pipeline import Next
from aiestack.settings import Settings
from aiestack.sidecalls import SIDE_CALL_PARENT, SIDE_CALL_PURPOSE, ModelCaller, SideCalls, SideModel
from aiestack.stores.base import ExchangeRecord
from aiestack.stores.exchanges_memory import MemoryExchangeStore
from aiestack.testing.sidecalls import ScriptedCaller
from aiestack.types import ChatRequest, Exchange, Message

pytestmark = pytest.mark.unit


class AsksTheJudge:
    """A stage that, like a guard or a reranker, asks a model something for its own work."""

    name = "asks_the_judge"

    def __init__(self) -> None:
        self.calls: SideCalls | None = None
        self.answers: list[str] = []

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        assert self.calls is not None
        judge = ChatRequest(model="judge", messages=(Message("user", "is this fine? " * 5),))
        self.answers.append((await self.calls.complete(judge, purpose="test.judge")).text)
        return await call_next(ex)


def _stack(tmp_path: Path, asker: AsksTheJudge) -> tuple[Stack, FakeModel, FakeModel]:
    down, up = FakeModel(), FakeModel()
    settings = Settings(
        data_dir=tmp_path,
        embedded_model=False,
        default_model="main",
        routes={"judge": {"deployments": ["judge-a"], "fallbacks": ["judge-b"], "retries": 1, "backoff_base_s": 0, "backoff_max_s": 0}},
        pricing={"judge-b": {"input_per_mtok": 100_000.0, "output_per_mtok": 100_000.0}},  # 0.1 USD a token
    )
    models = [ModelEntry("main", FakeModel(), "main"), ModelEntry("judge-a", down, "judge-a"), ModelEntry("judge-b", up, "judge-b")]
    stack = build_stack(settings, store=MemoryExchangeStore(), models=models, extra_stages=[asker])
    asker.calls = stack.side_calls
    return stack, down, up


def _side_calls_of(stack: Stack, parent: str) -> list[ExchangeRecord]:
    stack.writer.flush(timeout=10)
    return [r for r in stack.store.list_exchanges(limit=100) if r.attributes.get(SIDE_CALL_PARENT) == parent]


async def test_a_side_call_goes_through_the_route_is_billed_to_the_key_and_is_a_child_span(tmp_path: Path) -> None:
    asker = AsksTheJudge()
    stack, down, up = _stack(tmp_path, asker)
    try:
        # The key may call only "main": its allowlist bounds what its clients send, not the wings' own calls.
        key, _ = stack.keys.create(tenant="acme", budget_day_usd=1.0, models=["main"])
        down.enqueue([Script(error=ProviderUnavailable("down", provider="fake"))] * 2)
        up.enqueue(["yes"])
        ex = await stack.chat(ChatRequest(model="main", messages=(Message("user", "hello"),)), key_id=key.id, tenant="acme")
        assert ex.outcome == "ok" and asker.answers == ["yes"]
        # Through the route: judge-a retried once, then its fallback judge-b answered.
        assert len(down.requests) == 2 and len(up.requests) == 1
        (side,) = _side_calls_of(stack, ex.id)
        assert side.attributes[SIDE_CALL_PURPOSE] == "test.judge"
        assert side.attributes[DEPLOYMENT] == "judge-b" and side.attributes[FALLBACK] is True
        # Priced, and on the request's key and tenant.
        assert side.key_id == key.id and side.tenant == "acme"
        assert side.cost_usd is not None and side.cost_usd > 1.0
        assert stack.store.spend(key.id, since=0) == pytest.approx(side.cost_usd)
        # A child span of the exchange: same trace, its parent one of the exchange's spans.
        parent_spans = {s.span_id: s for s in stack.store.spans(exchange_id=ex.id)}
        side_spans = stack.store.spans(exchange_id=side.id)
        root = next(s for s in side_spans if s.parent_id not in {t.span_id for t in side_spans})
        assert root.parent_id in parent_spans
        assert parent_spans[root.parent_id].name == "aiestack.stage.asks_the_judge"
        assert root.trace_id == parent_spans[root.parent_id].trace_id == side.trace_id
        # The side-call's cost went on the key's budget: the key is now over it.
        with pytest.raises(KeyBudgetExceeded):
            await stack.chat(ChatRequest(model="main", messages=(Message("user", "again"),)), key_id=key.id, tenant="acme")
    finally:
        await stack.aclose()


async def test_a_key_over_budget_gets_no_side_calls(tmp_path: Path) -> None:
    asker = AsksTheJudge()
    stack, _, up = _stack(tmp_path, asker)
    try:
        key, _ = stack.keys.create(tenant="acme", budget_day_usd=0.5)
        up.enqueue(["yes"])
        limits = next(s for s in stack.pipeline.stages if s.name == "limits")
        grant = await stack.side_calls.complete(ChatRequest(model="judge-b", messages=(Message("user", "a b c d e"),)), purpose="warm")
        assert grant.cost_usd is not None  # outside a request: on no key, still priced
        spent = await limits.admit_side_call(key.id)  # type: ignore[attr-defined]
        await limits.settle(spent, tokens=0, cost_usd=grant.cost_usd)  # type: ignore[attr-defined]
        with pytest.raises(KeyBudgetExceeded):
            await limits.admit_side_call(key.id)  # type: ignore[attr-defined]
    finally:
        await stack.aclose()


async def test_outside_a_request_a_side_call_is_on_no_key_and_a_root_span(tmp_path: Path) -> None:
    asker = AsksTheJudge()
    stack, _, up = _stack(tmp_path, asker)
    try:
        up.enqueue(["fine"])
        model = stack.side_calls.model("judge-b", purpose="rag.contextual")
        deltas = [d async for d in model.stream(ChatRequest(model="ignored", messages=(Message("user", "x"),)))]
        assert "".join(d.text for d in deltas) == "fine" and deltas[-1].finish_reason == "stop"
        assert up.requests[-1].model == "judge-b"
        stack.writer.flush(timeout=10)
        (side,) = [r for r in stack.store.list_exchanges(limit=10) if r.attributes.get(SIDE_CALL_PURPOSE) == "rag.contextual"]
        assert side.key_id is None and SIDE_CALL_PARENT not in side.attributes
        assert all(s.parent_id is None for s in stack.store.spans(exchange_id=side.id) if s.name.startswith("chat"))
    finally:
        await stack.aclose()


async def test_the_scripted_caller_is_a_model_caller() -> None:
    caller = ScriptedCaller(["first", "second"])
    assert isinstance(caller, ModelCaller)
    one = await caller(ChatRequest(model="m", messages=(Message("user", "q"),)))
    assert one.text == "first" and caller.requests[0].model == "m"
    assert (await caller(ChatRequest(model="m", messages=()))).text == "second"
    with pytest.raises(LookupError):
        await caller(ChatRequest(model="m", messages=()))


def test_the_judge_reranker_and_rewriter_of_a_stack_call_through_the_seam(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        embedded_model=False,
        default_model="main",
        models={"main": {"provider": "fake"}, "helper": {"provider": "fake"}},
        guards={"injection": {"action": "block", "judge": "helper"}},
        routes={"docs": {"deployments": ["main"], "collection": "kb", "rag": {"rerank": "llm", "rerank_model": "helper", "rewrite_model": "helper"}}},
    )
    stack = build_stack(settings, store=MemoryExchangeStore())
    assert stack.pipeline.plans is not None
    judge = stack.pipeline.plans.default.part(Guards).injection.judge  # type: ignore[union-attr]
    rag = stack.pipeline.plans.for_name("docs").part(RagRoute)
    assert rag is not None
    seen = [judge.model, rag.reranker._model, rag.rewriter._model]  # type: ignore[union-attr]
    assert all(isinstance(m, SideModel) and m.name == "helper" for m in seen)
    assert [m.purpose for m in seen] == ["guard.injection_judge", "rag.rerank", "rag.rewrite"]
