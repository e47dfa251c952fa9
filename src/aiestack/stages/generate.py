"""The terminal stage: call the model the request names and attach its completion."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator

from aiestack.errors import StreamBroken
from aiestack.models.pricing import PriceTable
from aiestack.models.registry import ModelEntry, ModelRegistry
from aiestack.pipeline import Next
from aiestack.streams import collect
from aiestack.types import Completion, Delta, Exchange, Message, Timing


class Generate:
    """Resolves the model, streams from its provider and prices the result.

    The first delta is awaited before returning, so that a provider that fails at once
    (connection refused, 4xx/5xx) raises from the pipeline call as a typed error, where a
    caller can still retry or fall back; a failure after that reaches the stream's reader.
    """

    name = "generate"

    def __init__(self, models: ModelRegistry, prices: PriceTable) -> None:
        self._models = models
        self._prices = prices

    async def __call__(self, ex: Exchange, call_next: Next) -> Exchange:
        entry = self._models.resolve(ex.request.model)
        completion = await self.start(entry, ex)
        if not ex.request.stream:
            completion = await collect(completion)
        return dataclasses.replace(ex, completion=completion, outcome="ok")

    async def start(self, entry: ModelEntry, ex: Exchange) -> Completion:
        upstream = dataclasses.replace(ex.request, model=entry.upstream)
        started = time.perf_counter()
        source = entry.provider.stream(upstream)
        try:
            first = await anext(source)
        except StopAsyncIteration:
            raise StreamBroken(
                "the provider returned an empty stream", provider=entry.provider.provider
            ) from None
        # Until the stream ends, the header's timing says how long the first delta took to arrive.
        waited = Timing(ttft_ms=(time.perf_counter() - started) * 1000)
        header = Completion(
            message=Message(role="assistant"),
            model=entry.name,
            provider=entry.provider.provider,
            timing=waited,
        )
        return dataclasses.replace(header, stream=self._priced(entry, first, source))

    async def _priced(
        self, entry: ModelEntry, first: Delta, rest: AsyncIterator[Delta]
    ) -> AsyncIterator[Delta]:
        try:
            yield self._price(entry, first)
            async for delta in rest:
                yield self._price(entry, delta)
        finally:
            aclose = getattr(rest, "aclose", None)
            if aclose is not None:
                await aclose()

    def _price(self, entry: ModelEntry, delta: Delta) -> Delta:
        if delta.usage is None:
            return delta
        cost = self._prices.cost(entry.upstream, delta.usage, local=entry.local)
        return dataclasses.replace(delta, cost_usd=cost)
