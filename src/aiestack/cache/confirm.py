"""A second opinion on word swaps: the stronger embedder judges what the cheap one cannot.

The default semantic-cache embedder is a static model (:mod:`aiestack.models.static_embeddings`):
a mean of token vectors, 0.1 ms per question, but blind to which word of a phrase changed. It
scores "How do I cook brown rice?" / "... white rice?" at 0.935, where MiniLM scores them below
the substitution margin. So when the lexical verifier finds nothing but a swapped content word
(``substitution``), the candidate is served only if the ``[embeddings]`` model (MiniLM by default)
also puts the two questions at ``threshold + substitution_margin`` or closer.

Only such candidates pay for it (two short texts embedded by MiniLM, milliseconds); a lookup with
no candidate above the threshold, or one the lexical checks refuse, never does. The model is
loaded on first need, in the background: until it is, a word-swap candidate is refused (the cache
misses: the safe side) and no request waits for a model to load.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np

from aiestack.cache.index import normalised
from aiestack.cache.keying import normalise_query
from aiestack.errors import AiestackError
from aiestack.models.base import EmbeddingModel

_log = logging.getLogger(__name__)


class SwapConfirmer:
    """The similarity of two questions by ``embeddings``, or ``None`` while that model is not loaded yet."""

    def __init__(self, embeddings: Callable[[], EmbeddingModel], *, ready: Callable[[], bool]) -> None:
        self._embeddings = embeddings
        self._ready = ready
        self._loading: asyncio.Task[None] | None = None

    async def similarity(self, query: str, candidate: str) -> float | None:
        if not self._ready():
            self._start_loading()
            return None
        a, b = await self._embeddings().embed([normalise_query(query), normalise_query(candidate)])
        return float(normalised(np.asarray(a, dtype=np.float32)) @ normalised(np.asarray(b, dtype=np.float32)))

    def _start_loading(self) -> None:
        if self._loading is None:
            self._loading = asyncio.get_running_loop().create_task(self._load())

    async def _load(self) -> None:
        try:
            load = getattr(self._embeddings(), "load", None)
            if load is not None:
                await load()
        except AiestackError as exc:  # word swaps stay refused; the reason is in the log once
            _log.warning("the semantic cache cannot confirm word swaps: %s", exc)
