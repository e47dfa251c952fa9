"""One seam for the model calls a stage or wing makes for its own work (side-calls).

The injection judge, the LLM reranker, the query rewriter, contextual retrieval — and, on the same
seam, eval judges, agent steps and synthesis — ask a model something while serving a request (or a
batch job). Each such call is an ordinary exchange through a short pipeline of the stack's own
stages (Trace → side-call Limits → Generate), so it gets what a client's request gets:

- **routes**: the name may be a model or a route; a route's retries, backoff, time limit,
  fallbacks and circuit breakers apply (the stack's breakers: a judge failing counts against its
  upstream like any other call);
- **pricing and budgets**: the completion is priced, and its cost goes on the budget of the key
  whose request made the call (a key over budget gets no side-calls either); its RPM, TPM and
  model allowlist bound what clients send, not what the stack's own wings ask;
- **tracing**: the side-call is recorded as an exchange of its own (attributes
  :data:`SIDE_CALL_PURPOSE`, :data:`SIDE_CALL_PARENT`) whose root span is a child span of the
  request's exchange (of the stage that made the call).

The request a side-call serves is found in the OpenTelemetry context (the Trace stage puts the
exchange there, :func:`aiestack.tracing.current_exchange`), so a wing need not pass it down.

Two shapes, one seam: :meth:`SideCalls.caller` gives a :class:`ModelCaller` (``await
call(request) -> Completion``, the shape of the evals' judge call), and :meth:`SideCalls.model`
gives a :class:`~aiestack.models.base.ChatModel` whose ``stream`` goes through the seam, for the
wings written against a provider. Tests use :class:`aiestack.testing.sidecalls.ScriptedCaller`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, runtime_checkable

from aiestack.models.base import Health
from aiestack.pipeline import PipelineError
from aiestack.types import ChatRequest, Completion, Delta, Exchange

#: Exchange attributes of a side-call: what it was for, and the exchange that made it.
SIDE_CALL_PURPOSE = "aiestack.side_call.purpose"
SIDE_CALL_PARENT = "aiestack.side_call.parent"

Run = Callable[[Exchange], Awaitable[Exchange]]


@runtime_checkable
class ModelCaller(Protocol):
    """``await call(request)``: one model call through the stack, its completion collected."""

    async def __call__(self, request: ChatRequest) -> Completion: ...


class SideCalls:
    """The seam: runs side-calls through ``run`` (the stack's side pipeline), on behalf of ``parent()``.

    ``parent()`` returns the exchange being served, if any (outside a request, e.g. at ingestion,
    a side-call is on no key and its span is a root).
    """

    def __init__(self, run: Run, *, parent: Callable[[], Exchange | None]) -> None:
        self._run = run
        self._parent = parent

    async def complete(self, request: ChatRequest, *, purpose: str) -> Completion:
        """Send ``request`` (its ``model`` a configured model or route) and return the whole answer."""
        parent = self._parent()
        attributes = {SIDE_CALL_PURPOSE: purpose}
        fields: dict[str, object] = {}
        if parent is not None:
            attributes[SIDE_CALL_PARENT] = parent.id
            fields = {"tenant": parent.tenant, "key_id": parent.key_id}
        ex = Exchange(request=dataclasses.replace(request, stream=False), attributes=attributes, **fields)  # type: ignore[arg-type]
        result = await self._run(ex)
        if result.completion is None:
            raise PipelineError(f"the side-call for {purpose} ended without an answer ({result.outcome})")
        return result.completion

    def caller(self, purpose: str) -> ModelCaller:
        """A :class:`ModelCaller` whose calls are recorded as made for ``purpose``."""

        async def call(request: ChatRequest) -> Completion:
            return await self.complete(request, purpose=purpose)

        return call

    def model(self, name: str, *, purpose: str) -> SideModel:
        """A chat model that answers as the configured model or route ``name``, through the seam."""
        return SideModel(self, name, purpose)


class SideModel:
    """A :class:`~aiestack.models.base.ChatModel` over the seam: every request goes to the model or route ``name``.

    The answer arrives whole (a side-call is never streamed to anyone) as one delta carrying the
    text, tool calls, finish reason, usage and cost.
    """

    provider = "aiestack"

    def __init__(self, calls: SideCalls, name: str, purpose: str) -> None:
        self._calls = calls
        self.name = name
        self.purpose = purpose

    async def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        completion = await self._calls.complete(dataclasses.replace(request, model=self.name), purpose=self.purpose)
        yield Delta(
            text=completion.text,
            finish_reason=completion.finish_reason,
            usage=completion.usage,
            timing=completion.timing,
            cost_usd=completion.cost_usd,
        )

    async def check(self, model: str) -> Health:
        return Health(ok=True, detail=f"side-calls go to {self.name}")

    async def aclose(self) -> None:
        return None
