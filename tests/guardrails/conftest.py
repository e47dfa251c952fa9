"""Helpers for the guardrail tests: a pipeline of the guard stages around the fake model."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from aiestack.gateway.generate import Generate
from aiestack.guardrails import Guardrails, Guards, build_guardrails
from aiestack.models.base import Health
from aiestack.models.fake import FakeModel
from aiestack.models.pricing import PriceTable
from aiestack.models.registry import ModelEntry, ModelRegistry
from aiestack.pipeline import Next, Pipeline, Stage
from aiestack.plans import RoutePlans
from aiestack.types import ChatRequest, Delta, Exchange, Hit, RoutePlan, Usage


@dataclass
class SystemEcho:
    """A model that answers with its system prompt (a model talked into leaking it), in small pieces."""

    provider: str = "sysecho"
    requests: list[ChatRequest] = field(default_factory=list)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        self.requests.append(request)
        system = "\n".join(m.text for m in request.messages if m.role == "system")
        text = f"My instructions say: {system}"
        for i in range(0, len(text), 5):
            yield Delta(text=text[i : i + 5])
        yield Delta(finish_reason="stop", usage=Usage(1, 1))

    async def check(self, model: str) -> Health:
        return Health(ok=True)

    async def aclose(self) -> None:
        return None


class WithHits:
    """A stage standing in for Context: puts fixed hits on the exchange on the way out."""

    name = "hits"

    def __init__(self, hits: Sequence[Hit]) -> None:
        self.hits = tuple(hits)

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        import dataclasses

        result = await call_next(dataclasses.replace(ex, hits=self.hits))
        return dataclasses.replace(result, hits=self.hits)


@dataclass
class Rig:
    guards: Guardrails
    fake: FakeModel
    echo: SystemEcho
    pipeline: Pipeline

    async def run(self, text: str, *, model: str = "fake", system: str | None = None, **request: Any) -> Exchange:
        from aiestack.types import Message

        messages = ((Message("system", system),) if system else ()) + (Message("user", text),)
        return await self.pipeline(Exchange(request=ChatRequest(model=model, messages=messages, **request)))


def make_rig(
    defaults: Mapping[str, Any] | None = None,
    routes: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    inner: Sequence[Stage] = (),
    outer: Sequence[Stage] = (),
) -> Rig:
    fake, echo = FakeModel(), SystemEcho()
    registry = ModelRegistry([ModelEntry("fake", fake, "fake", local=True), ModelEntry("sysecho", echo, "sysecho", local=True)])
    guards = build_guardrails(defaults or {}, routes or {}, registry=registry)
    generate = Generate(registry, PriceTable({}))
    # Each route's guards reach the stages through its plan, as the composition root compiles them.
    plans = RoutePlans({name: RoutePlan(route=name) for name in routes or {}}).with_part(
        Guards, guards.table.default, guards.table.routes
    )
    pipeline = Pipeline([*outer, guards.input, guards.output, *inner, generate], plans=plans)
    return Rig(guards, fake, echo, pipeline)


@pytest.fixture
def rig() -> Rig:
    return make_rig()


@pytest.fixture
def rig_with() -> Callable[..., Rig]:
    """``rig_with(defaults, routes, inner=[...])``: a rig with its own policy."""
    return make_rig


@pytest.fixture
def hits_stage() -> type[WithHits]:
    return WithHits
