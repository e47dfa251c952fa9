"""Embedding as a batch step: texts embedded by a :class:`~aiestack.batch.BatchRunner` (in-process or on Ray).

:class:`EmbedTexts` is the picklable task — it carries only the ``[embeddings]`` fields and opens
the model on its first call, once per worker (a Ray actor, or this process). :class:`RunnerEmbeddings`
is an :class:`~aiestack.models.base.EmbeddingModel` that splits the texts into batches of
``batch_size`` and maps :class:`EmbedTexts` over them with the runner, so ingestion uses it like
any other embedding model and gets the same vectors (the same model computes them, wherever).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aiestack.models.base import EmbeddingModel
from aiestack.models.embeddings_open import open_embedding_model

if TYPE_CHECKING:
    from aiestack.batch import BatchRunner


class EmbedTexts:
    """``EmbedTexts(config)(texts) -> vectors``: a batch task that embeds with the model ``config`` names."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = dict(config)
        self._model: EmbeddingModel | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # one embedding at a time per worker; the loop is not thread-safe

    def __getstate__(self) -> dict[str, Any]:
        return {"config": self._config}  # never the loaded model: each worker opens its own

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["config"])  # type: ignore[misc]

    def __call__(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            if self._model is None or self._loop is None:
                self._model = open_embedding_model(**self._config)
                self._loop = asyncio.new_event_loop()
            return self._loop.run_until_complete(self._model.embed(texts))

    def close(self) -> None:
        with self._lock:
            if self._model is not None and self._loop is not None:
                self._loop.run_until_complete(self._model.aclose())
            if self._loop is not None:
                self._loop.close()
            self._model, self._loop = None, None


class RunnerEmbeddings:
    """An embedding model whose work a batch runner does; ``inner`` is the same model opened here
    (for its name, dimension and tokenizer; it computes nothing unless asked directly)."""

    def __init__(self, runner: BatchRunner, config: Mapping[str, Any]) -> None:
        self._runner = runner
        self._config = dict(config)
        self._batch_size = int(self._config.get("batch_size", 64))
        self._task = EmbedTexts(self._config)
        self.inner = open_embedding_model(**self._config)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def runner(self) -> BatchRunner:
        return self._runner

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        batches = [list(texts[i : i + self._batch_size]) for i in range(0, len(texts), self._batch_size)]
        results = await self._runner.map(self._task, batches)
        return [vector for batch in results for vector in batch]

    async def aclose(self) -> None:
        await asyncio.to_thread(self._task.close)
        await self.inner.aclose()
        await self._runner.aclose()
