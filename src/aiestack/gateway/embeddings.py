"""Embedding calls metered like chat: the key's model allowlist, RPM, TPM and budgets, cost, a span
and a stored exchange record (``request.operation = "embeddings"``), so usage, budgets and the
console see them.

Before the call the tokens are estimated (characters / 4) and the cost reserved from them; after it
the real count (the model's own tokenizer when it has one) and cost replace the estimates, as for
chat. Inputs are content: the record keeps their number and size, never their text.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.span import format_trace_id

from aiestack.gateway.limits import Grant, Limits
from aiestack.models.base import EmbeddingModel
from aiestack.models.pricing import PriceTable
from aiestack.offload import run_cpu
from aiestack.stores.base import ExchangeRecord
from aiestack.tracing import (
    EXCHANGE_ID,
    GEN_AI_OPERATION_NAME,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_USAGE_INPUT_TOKENS,
    TENANT,
    Tracing,
)
from aiestack.types import Usage

OPERATION_EMBEDDINGS = "embeddings"


def estimate_embedding_tokens(texts: Sequence[str]) -> int:
    """About four characters a token, as for chat: good enough to admit or refuse."""
    return sum(math.ceil(len(t) / 4) for t in texts)


def count_tokens(model: EmbeddingModel, texts: Sequence[str]) -> int:
    """Exact when the model offers ``count_tokens(texts)``; otherwise whitespace-separated words."""
    counter: Callable[[Sequence[str]], int] | None = getattr(model, "count_tokens", None)
    if callable(counter):
        return int(counter(texts))
    return sum(len(t.split()) for t in texts)


class MeteredEmbeddings:
    """``await metered.embed(model, texts, ...)``: vectors and tokens, with limits, cost and a record."""

    def __init__(self, tracing: Tracing, prices: PriceTable, limits: Limits | None, *, local: bool) -> None:
        self._tracing = tracing
        self._prices = prices
        self._limits = limits
        self._local = local  # the embedding model runs here: it costs nothing without a configured price

    async def embed(
        self, model: EmbeddingModel, texts: Sequence[str], *, exchange_id: str, key_id: str | None, tenant: str
    ) -> tuple[list[list[float]], int]:
        started_at, start = time.time(), time.perf_counter()
        estimate = estimate_embedding_tokens(texts)
        grant: Grant | None = None
        if key_id is not None and self._limits is not None:
            grant = await self._limits.admit(
                key_id, model.name, estimate, cost_usd=self._cost(model, estimate), exact_tokens=True
            )
        span = self._tracing.start_span(
            f"{OPERATION_EMBEDDINGS} {model.name}",
            kind=SpanKind.CLIENT,
            attributes={GEN_AI_OPERATION_NAME: OPERATION_EMBEDDINGS, GEN_AI_REQUEST_MODEL: model.name,
                        EXCHANGE_ID: exchange_id, TENANT: tenant},
        )
        tokens, cost, error = 0, None, None
        try:
            vectors = await model.embed(texts)
            tokens = await run_cpu(sum(map(len, texts)), count_tokens, model, texts)
            cost = self._cost(model, tokens)
            return vectors, tokens
        except BaseException as exc:
            error = exc
            raise
        finally:
            if grant is not None and self._limits is not None:
                await self._limits.settle(grant, tokens=tokens, cost_usd=cost)
            self._record(span, model, texts, exchange_id, key_id, tenant, tokens, cost, error, started_at, start)

    def _cost(self, model: EmbeddingModel, tokens: int) -> float | None:
        return self._prices.cost(model.name, Usage(input_tokens=tokens), local=self._local)

    def _record(
        self, span: Span, model: EmbeddingModel, texts: Sequence[str], exchange_id: str, key_id: str | None,
        tenant: str, tokens: int, cost: float | None, error: BaseException | None, started_at: float, start: float,
    ) -> None:
        if span.is_recording():
            span.set_attribute(GEN_AI_USAGE_INPUT_TOKENS, tokens)
            if error is not None:
                span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        trace_id = format_trace_id(span.get_span_context().trace_id) if span.is_recording() else None
        span.end()
        self._tracing.submit_exchange(
            ExchangeRecord(
                id=exchange_id,
                created_at=started_at,
                model=model.name,
                outcome="error" if error is not None else "ok",
                tenant=tenant,
                key_id=key_id,
                provider=OPERATION_EMBEDDINGS,
                error_type=type(error).__name__ if error is not None else None,
                input_tokens=tokens,
                total_ms=(time.perf_counter() - start) * 1000,
                cost_usd=cost,
                trace_id=trace_id,
                request={"model": model.name, "operation": OPERATION_EMBEDDINGS, "inputs": len(texts),
                         "chars": sum(map(len, texts))},
            )
        )
