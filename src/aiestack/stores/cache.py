"""Cache entries and the protocol every cache backend implements.

An :class:`Entry` is one stored answer. Exact entries are found by their key (the request's
canonical hash). Semantic entries carry the embedding of the question they answered, and the
question itself (for the verification step); they are found through an in-process vector index
that the :class:`~aiestack.cache.semantic.SemanticCache` keeps in sync with the backend.

Backends (memory, SQL, Redis) store entries and expire them; they do no vector search. That keeps
one design for all three: the index is rebuilt from the backend at start (so the SQLite default
persists across restarts) and follows new entries through :meth:`CacheBackend.semantic_since`,
which is how several gateway processes sharing Redis or PostgreSQL see each other's entries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np

from aiestack.types import Chunk, Completion, FinishReason, Hit, Message, ToolCall, Usage

if TYPE_CHECKING:
    import asyncio

Kind = Literal["exact", "semantic"]


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """What a cache hit serves: the answer, and what producing it cost (for the saved-cost figures)."""

    text: str
    model: str
    provider: str
    finish_reason: FinishReason | None = "stop"
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    exchange_id: str | None = None
    #: Exchange attributes that describe how the answer was made (e.g. the prompt version); a hit
    #: records them on its own exchange.
    origin: Mapping[str, Any] = field(default_factory=dict)
    #: The retrieved chunks the answer was made from (a RAG route): a hit serves them again, so its
    #: citations are those of the original answer.
    hits: tuple[Hit, ...] = ()

    @classmethod
    def of(
        cls,
        completion: Completion,
        exchange_id: str | None = None,
        origin: Mapping[str, Any] | None = None,
        hits: Sequence[Hit] = (),
    ) -> CachedAnswer:
        return cls(
            text=completion.text,
            model=completion.model,
            provider=completion.provider,
            finish_reason=completion.finish_reason,
            tool_calls=completion.message.tool_calls,
            usage=completion.usage,
            cost_usd=completion.cost_usd,
            exchange_id=exchange_id,
            origin=dict(origin or {}),
            hits=tuple(hits),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "model": self.model,
            "provider": self.provider,
            "finish_reason": self.finish_reason,
            "tool_calls": [[t.id, t.name, t.arguments] for t in self.tool_calls],
            "usage": [self.usage.input_tokens, self.usage.output_tokens, self.usage.cached_tokens],
            "cost_usd": self.cost_usd,
            "exchange_id": self.exchange_id,
            "origin": dict(self.origin),
            "hits": [_hit_json(h) for h in self.hits],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CachedAnswer:
        usage = data.get("usage") or [0, 0, 0]
        return cls(
            text=str(data["text"]),
            model=str(data["model"]),
            provider=str(data["provider"]),
            finish_reason=data.get("finish_reason"),
            tool_calls=tuple(ToolCall(id=a, name=b, arguments=c) for a, b, c in data.get("tool_calls") or ()),
            usage=Usage(int(usage[0]), int(usage[1]), int(usage[2])),
            cost_usd=data.get("cost_usd"),
            exchange_id=data.get("exchange_id"),
            origin=dict(data.get("origin") or {}),
            hits=tuple(_hit_of(h) for h in data.get("hits") or ()),
        )

    def completion(self) -> Completion:
        """The answer as a completion served from the cache: no tokens used, no cost."""
        return Completion(
            message=Message(role="assistant", content=self.text, tool_calls=self.tool_calls),
            model=self.model,
            provider=self.provider,
            finish_reason=self.finish_reason,
            usage=Usage(),
            cost_usd=0.0,
            cached=True,
        )


@dataclass(frozen=True, slots=True)
class Entry:
    """One cached answer. ``vector`` (float32) and ``query`` are set for semantic entries."""

    key: str
    kind: Kind
    partition: str
    tenant: str
    route: str
    answer: CachedAnswer
    created_at: float
    expires_at: float | None = None
    query: str = ""
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


#: A put waiting for a backend's writer: its entries and the future its caller awaits (SQL, Redis).
QueuedPut = tuple[Sequence[Entry], "asyncio.Future[None]"]


def settle(puts: Sequence[QueuedPut], error: BaseException | None = None) -> None:
    """Tell the callers of ``puts`` how their write ended (``error``: it failed); a put already
    settled (its caller's future cancelled) is left as it is."""
    for _, done in puts:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)


#: ``known(key, expires_at)``: whether the caller of :meth:`CacheBackend.semantic_since` holds that entry already.
Known = Callable[[str, float | None], bool]


@runtime_checkable
class CacheBackend(Protocol):
    """Where cache entries live. Every method is safe to call concurrently from one event loop."""

    name: str
    #: Whether other processes write it too (then the semantic index re-reads new entries).
    shared: bool

    async def get(self, key: str) -> Entry | None:
        """The live entry stored under ``key``, or None (missing or expired)."""
        ...

    async def put(self, entry: Entry) -> None:
        """Store ``entry`` (replacing any entry with its key): :meth:`put_many` of one entry."""
        ...

    async def put_many(self, entries: Sequence[Entry]) -> None:
        """Store ``entries`` in one write (replacing any entry with one of their keys; of two with one
        key, the later wins): one round trip, in one transaction where the backend has them.

        A cache miss stores its answer as two entries, exact and semantic, through one call. Returns
        once all are stored; a failed write raises :class:`~aiestack.errors.StoreError`."""
        ...

    async def delete(self, keys: Sequence[str]) -> None: ...

    async def semantic_since(self, since: float, *, known: Known | None = None) -> list[Entry]:
        """Live semantic entries created at or after ``since`` (epoch seconds), oldest first.

        ``known(key, expires_at)`` is true for an entry the caller holds already as stored (its own
        writes, earlier reads): a backend may leave those out rather than read them whole. The
        semantic index re-reads the last seconds of entries every second, its own included."""
        ...

    async def clear(self, *, tenant: str | None = None) -> int:
        """Delete every entry (of one tenant); returns how many were removed."""
        ...

    async def aclose(self) -> None: ...


def _hit_json(hit: Hit) -> dict[str, Any]:
    c = hit.chunk
    chunk = {"id": c.id, "document_id": c.document_id, "text": c.text, "position": c.position, "metadata": dict(c.metadata)}
    return {"chunk": chunk, "score": hit.score, "retriever": hit.retriever}


def _hit_of(data: Mapping[str, Any]) -> Hit:
    c = data["chunk"]
    chunk = Chunk(
        id=str(c["id"]),
        document_id=str(c["document_id"]),
        text=str(c["text"]),
        position=int(c.get("position", 0)),
        metadata=dict(c.get("metadata") or {}),
    )
    return Hit(chunk, float(data["score"]), str(data["retriever"]))
