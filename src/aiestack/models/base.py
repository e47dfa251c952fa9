"""What a model provider is: one async streaming call, plus a reachability check.

Request and response translation for each API lives in the provider's own module.
A provider receives a :class:`ChatRequest` whose ``model`` is already the upstream model name
(the registry maps configured names to providers), and yields :class:`Delta` events. The last
delta carries ``finish_reason``, ``usage`` and ``timing``. Failures are raised as
:class:`aiestack.errors.ProviderError` subclasses so callers can decide whether to retry or fall back.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from aiestack.types import ChatRequest, Delta, Timing


@dataclass(frozen=True, slots=True)
class Health:
    ok: bool
    detail: str = ""
    latency_ms: float | None = None


@runtime_checkable
class ChatModel(Protocol):
    """A chat model provider."""

    provider: str

    def stream(self, request: ChatRequest) -> AsyncIterator[Delta]:
        """Yield the answer as deltas; the last one has finish_reason, usage and timing."""
        ...

    async def check(self, model: str) -> Health:
        """Whether ``model`` can be reached/loaded now, without generating."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class EmbeddingModel(Protocol):
    """Turns texts into vectors. ``name`` identifies the model for caching."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    async def aclose(self) -> None: ...



class LazyEmbeddings:
    """An embedder given ready-made or as a factory called on first use, resolved once.

    Used on the request path (the semantic cache, the semantic router): ``isinstance`` against the
    runtime-checkable :class:`EmbeddingModel` walks the protocol's members, 10-20 µs of the event
    loop each time, so the answer is kept instead of asked on every request.
    """

    __slots__ = ("_factory", "_model")

    def __init__(self, given: EmbeddingModel | Callable[[], EmbeddingModel]) -> None:
        self._model: EmbeddingModel | None = None
        self._factory: Callable[[], EmbeddingModel] | None = None
        if isinstance(given, EmbeddingModel):
            self._model = given
        else:
            self._factory = given

    @property
    def ready(self) -> EmbeddingModel | None:
        """The embedder if it exists already (given ready-made, or built by an earlier :meth:`get`)."""
        return self._model

    def get(self) -> EmbeddingModel:
        """The embedder, built by the factory on the first call."""
        model = self._model
        if model is None:
            assert self._factory is not None  # one of the two is always set
            model = self._model = self._factory()
        return model

class TimingMeter:
    """Measures queue time, TTFT and TPOT of one generation (milliseconds, monotonic clock).

    ``start`` is when the request arrived; ``began()`` when the model started working on it
    (after any queue); ``token()`` at each emitted token; ``timing(n)`` at the end.
    """

    __slots__ = ("_began", "_first", "_last", "_start")

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._began: float | None = None
        self._first: float | None = None
        self._last: float | None = None

    def began(self) -> None:
        self._began = time.perf_counter()

    def token(self) -> None:
        now = time.perf_counter()
        if self._first is None:
            self._first = now
        self._last = now

    @property
    def has_first_token(self) -> bool:
        return self._first is not None

    def timing(self, output_tokens: int) -> Timing:
        end = time.perf_counter()
        began = self._began if self._began is not None else self._start
        ttft = None if self._first is None else (self._first - self._start) * 1000
        tpot = None
        if self._first is not None and self._last is not None and output_tokens > 1:
            tpot = (self._last - self._first) * 1000 / (output_tokens - 1)
        return Timing(queue_ms=(began - self._start) * 1000, ttft_ms=ttft, tpot_ms=tpot, total_ms=(end - self._start) * 1000)
