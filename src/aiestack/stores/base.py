"""Storage protocols: one per capability, not per backend (ARCHITECTURE.md §4).

Every backend passes the same conformance tests (:mod:`aiestack.testing.conformance`).
Stores are synchronous: the background writer calls them from its own thread, and read paths
(CLI, console) call them directly or from a thread pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from aiestack.types import SpanRecord


@dataclass(frozen=True, slots=True)
class ExchangeRecord:
    """An exchange as stored: flat, queryable columns plus JSON for the rest.

    ``request`` always holds the model and parameters; it holds the messages only when content
    tracing is on. ``response`` is the answer's text, likewise only with content tracing.
    """

    id: str
    created_at: float  # epoch seconds
    model: str
    outcome: str  # ok | error | blocked | cached
    tenant: str = "default"
    key_id: str | None = None
    route: str | None = None
    provider: str | None = None
    stream: bool = False
    finish_reason: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    queue_ms: float | None = None
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    total_ms: float | None = None
    cost_usd: float | None = None
    cached: bool = False
    trace_id: str | None = None
    request: Mapping[str, Any] = field(default_factory=dict)
    response: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class ExchangeStore(Protocol):
    """Exchanges and their spans (and, in later migrations, feedback, eval runs, prompts, keys)."""

    def migrate(self) -> None:
        """Bring the schema to the latest version. Safe to run again, and after a crash."""
        ...

    def write_exchanges(self, records: Sequence[ExchangeRecord]) -> None:
        """Insert records; a record whose id exists replaces the old one (idempotent retries)."""
        ...

    def write_spans(self, spans: Sequence[SpanRecord]) -> None: ...

    def get_exchange(self, exchange_id: str) -> ExchangeRecord | None: ...

    def list_exchanges(
        self,
        *,
        limit: int = 50,
        before: float | None = None,
        model: str | None = None,
        tenant: str | None = None,
    ) -> list[ExchangeRecord]:
        """Newest first; ``before`` (epoch seconds, exclusive) pages backwards."""
        ...

    def spans(self, *, trace_id: str | None = None, exchange_id: str | None = None) -> list[SpanRecord]:
        """Spans of one trace or exchange, ordered by start time."""
        ...

    def ping(self) -> None:
        """Raise :class:`aiestack.errors.StoreError` if the store cannot be reached."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class EmbeddingCacheStore(Protocol):
    """Vectors keyed by (model, sha256 of the text)."""

    def get_embeddings(self, model: str, hashes: Sequence[str]) -> dict[str, list[float]]: ...

    def put_embeddings(self, model: str, items: Mapping[str, Sequence[float]]) -> None: ...
